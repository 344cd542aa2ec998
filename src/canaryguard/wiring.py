"""The composition root: which adapter fills which port, from settings.

``serve``, ``demo``, the walkthrough and the tests all open canaryguard through here.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from canaryguard.adapters.bus import InProcessBus
from canaryguard.adapters.clock import SystemClock
from canaryguard.adapters.crypto import KEYS_ENV, AesGcmKeyRing
from canaryguard.adapters.notify import load_channels
from canaryguard.adapters.prometheus import PrometheusSource
from canaryguard.adapters.store import SqlStore, open_store
from canaryguard.domain.checks import Extension
from canaryguard.domain.errors import InvalidInput
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.ports import Channel, Clock, EventBus, KeyRing
from canaryguard.engine.unit import Ports

__all__ = [
    "EXTENSION_GROUP",
    "NOTIFICATIONS_ENV",
    "PROMETHEUS_ENV",
    "Settings",
    "load_extensions",
    "open_canaryguard",
]

DEFAULT_DATA_DIR = Path(".canaryguard")
EXTENSION_GROUP = "canaryguard.conditions"  # entry points: Python rollback conditions
PROMETHEUS_ENV = "CANARYGUARD_PROMETHEUS_URL"
NOTIFICATIONS_ENV = "CANARYGUARD_NOTIFICATIONS"


@dataclass(frozen=True)
class Settings:
    """Where canaryguard keeps its data and keys.

    ``db_url`` defaults to SQLite in ``data_dir``; the key ring comes from ``CANARYGUARD_KEYS``
    when set, else from ``key_file`` (default ``data_dir/keys.json``, created on first use).
    """

    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str | None = field(default=None, repr=False)  # may hold a password
    key_file: Path | None = None
    keys_env: str | None = field(default=None, repr=False)
    # the Prometheus whose series deployments with ``prometheus`` selectors are read from
    prometheus_url: str | None = field(default=None, repr=False)  # may hold a password
    # the TOML file of notification channels (webhooks, Slack, email); None: no alerts sent
    notifications_file: Path | None = None

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "data_dir": Path(env.get("CANARYGUARD_DATA_DIR", str(DEFAULT_DATA_DIR))),
            "db_url": env.get("CANARYGUARD_DB") or None,
            "key_file": Path(env["CANARYGUARD_KEY_FILE"])
            if env.get("CANARYGUARD_KEY_FILE")
            else None,
            "keys_env": env.get(KEYS_ENV) or None,
            "prometheus_url": env.get(PROMETHEUS_ENV) or None,
            "notifications_file": Path(env[NOTIFICATIONS_ENV])
            if env.get(NOTIFICATIONS_ENV)
            else None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'canaryguard.db'}"

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "keys.json"


async def open_canaryguard(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    bus: EventBus | None = None,
    keys: KeyRing | None = None,
) -> CanaryGuard:
    """Open canaryguard on ``settings`` (default: from the environment), migrating the database.

    ``keys`` replaces the key ring from the settings (tests and tools that share one ring).
    """
    settings = settings or Settings.from_env()
    notices: list[str] = []
    created_key_file = False
    if settings.db_url is None or (settings.keys_env is None and keys is None):
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if keys is None:
        if settings.keys_env is not None:
            keys = AesGcmKeyRing.from_env(settings.keys_env)
        else:
            keys, created_key_file = AesGcmKeyRing.load_or_create(settings.key_path)
    channels, source = await _open_outside(settings)
    try:
        store = await open_store(settings.database_url)
    except BaseException:
        await _close_channels(channels)
        if source is not None:
            await source.close()
        raise
    if created_key_file:
        try:
            await _refuse_new_key_for_old_snapshots(store, settings.key_path)
        except BaseException:
            await _close_opened(store, source, channels)
            raise
        notices.append(
            f"created the snapshot encryption key file {settings.key_path} (mode 0600): "
            "back it up; snapshots cannot be read without it"
        )
    ports = Ports(
        store=store,
        bus=bus or InProcessBus(),
        clock=clock or SystemClock(),
        keys=keys,
        extensions=load_extensions(notices),
        metrics_source=source,
        channels=channels,
    )
    app = CanaryGuard(ports)
    app.notices.extend(notices)
    try:
        await app.observations.load()
        if source is None:
            app.notices.extend(await _unread_deployments(app))
    except BaseException:
        await _close_opened(store, source, channels)
        raise
    if channels:
        app.notices.append(
            "notifications to "
            + ", ".join(f"{c.name} ({c.rule.min_level.value} and up)" for c in channels)
        )
    return app


async def _open_outside(settings: Settings) -> tuple[list[Channel], PrometheusSource | None]:
    """The notification channels and the Prometheus source, made before the store opens: a bad
    channel file or URL is refused with nothing open yet."""
    channels: list[Channel] = []
    if settings.notifications_file is not None:
        channels = await asyncio.to_thread(
            load_channels, settings.notifications_file, dict(os.environ)
        )
    try:
        source = PrometheusSource(settings.prometheus_url) if settings.prometheus_url else None
    except BaseException:
        await _close_channels(channels)
        raise
    return channels, source


async def _unread_deployments(app: CanaryGuard) -> list[str]:
    """A notice per deployment that names Prometheus series a server without ``--prometheus``
    will not read: its canaries are judged on clients' reports only."""
    async with app.ports.store.read() as tx:
        names = [d.name for d in await tx.deployments.all() if d.config.prometheus is not None]
    return [
        f"deployment {name} names Prometheus series, but this server reads no Prometheus "
        f"(--prometheus URL or {PROMETHEUS_ENV}): its canaries are judged on what clients "
        "report only"
        for name in names
    ]


async def _close_channels(channels: list[Channel]) -> None:
    for channel in channels:
        await channel.notifier.close()


async def _close_opened(
    store: SqlStore, source: PrometheusSource | None, channels: list[Channel]
) -> None:
    """Close what ``open_canaryguard`` opened before it failed."""
    try:
        await _close_channels(channels)
        if source is not None:
            await source.close()
    finally:
        await store.close()


def load_extensions(notices: list[str]) -> dict[str, Extension]:
    """Python rollback conditions from the ``canaryguard.conditions`` entry points (one that
    fails to load is skipped, with a notice)."""
    loaded: dict[str, Extension] = {}
    for entry in entry_points(group=EXTENSION_GROUP):
        try:
            function = entry.load()
        except Exception as exc:
            notices.append(f"condition extension {entry.name!r} failed to load: {exc}")
            continue
        if not callable(function):
            notices.append(f"condition extension {entry.name!r} is not callable: skipped")
            continue
        loaded[entry.name] = function
    return loaded


async def _refuse_new_key_for_old_snapshots(store: SqlStore, key_path: Path) -> None:
    """A fresh key file next to a database that already holds snapshots means the real key file
    was lost or is elsewhere: starting would make every old snapshot unreadable."""
    async with store.read() as tx:
        sealed = await tx.snapshots.count()
    if sealed:
        await asyncio.to_thread(key_path.unlink, missing_ok=True)
        raise InvalidInput(
            f"the key file {key_path} is missing, but the database already holds {sealed} "
            "encrypted snapshots: restore the key file from your backup (or set CANARYGUARD_KEYS / "
            "CANARYGUARD_KEY_FILE); canaryguard will not start with a new key"
        )
