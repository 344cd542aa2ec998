"""The composition root: which adapter fills which port, from settings.

``serve``, ``demo``, the walkthrough and the tests all open canaryguard through here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from canaryguard.adapters.bus import InProcessBus
from canaryguard.adapters.clock import SystemClock
from canaryguard.adapters.crypto import KEYS_ENV, AesGcmKeyRing
from canaryguard.adapters.store import open_store
from canaryguard.engine.app import CanaryGuard
from canaryguard.engine.ports import Clock, EventBus
from canaryguard.engine.unit import Ports

__all__ = ["Settings", "open_canaryguard"]

DEFAULT_DATA_DIR = Path(".canaryguard")


@dataclass(frozen=True)
class Settings:
    """Where canaryguard keeps its data and keys.

    ``db_url`` defaults to SQLite in ``data_dir``; the key ring comes from ``CANARYGUARD_KEYS``
    when set, else from ``key_file`` (default ``data_dir/keys.json``, created on first use).
    """

    data_dir: Path = DEFAULT_DATA_DIR
    db_url: str | None = None
    key_file: Path | None = None
    keys_env: str | None = field(default=None, repr=False)

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
) -> CanaryGuard:
    """Open canaryguard on ``settings`` (default: from the environment), migrating the database."""
    settings = settings or Settings.from_env()
    notices: list[str] = []
    if settings.db_url is None or settings.keys_env is None:
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if settings.keys_env is not None:
        keys = AesGcmKeyRing.from_env(settings.keys_env)
    else:
        keys, created = AesGcmKeyRing.load_or_create(settings.key_path)
        if created:
            notices.append(
                f"created the snapshot encryption key file {settings.key_path} (mode 0600): "
                "back it up; snapshots cannot be read without it"
            )
    store = await open_store(settings.database_url)
    app = CanaryGuard(
        Ports(store=store, bus=bus or InProcessBus(), clock=clock or SystemClock(), keys=keys)
    )
    app.notices.extend(notices)
    return app
