"""The channel file: which notification channels exist and what each wants, in TOML.

::

    [[channels]]
    name = "ops"                      # required, unique, [a-z0-9][a-z0-9_.-]{0,63}
    kind = "webhook"                  # webhook | slack | email
    url_env = "OPS_WEBHOOK_URL"       # or url = "https://..." (webhook, slack)
    secret_env = "OPS_WEBHOOK_SECRET" # or secret = "whsec_..." (webhook: required)
    min_level = "warning"             # info | warning | critical | emergency
    deployments = ["checkout*"]       # shell patterns (optional)
    events = ["io.canaryguard.rollback.*"]  # shell patterns of CloudEvents types (optional)
    timeout_seconds = 5               # 0 < t <= 60 (optional)

    [[channels]]
    name = "oncall"
    kind = "email"
    host = "smtp.example.com"
    port = 587                        # default: 587, 465 for tls, 25 for none
    security = "starttls"             # starttls | tls | none
    username = "cg"                   # optional, with password or password_env
    password_env = "SMTP_PASSWORD"
    from = "canaryguard@example.com"
    to = ["oncall@example.com"]

Every channel is checked before any is built, so a bad file opens no client; secrets are read
from the environment (``*_env``) or the file, and never repeated in a message.
"""

from __future__ import annotations

import difflib
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NoReturn, cast, get_args

from canaryguard.adapters.notify import email, slack, webhook
from canaryguard.adapters.notify._http import parse_http_url
from canaryguard.adapters.notify.email import EmailNotifier, SmtpSecurity
from canaryguard.adapters.notify.slack import SlackNotifier
from canaryguard.adapters.notify.webhook import WebhookNotifier, webhook_key
from canaryguard.domain.alerts import ChannelRule, can_fire
from canaryguard.domain.errors import InvalidInput
from canaryguard.domain.events import Event
from canaryguard.domain.models import AlertLevel
from canaryguard.engine.ports import Channel, Notifier

__all__ = ["load_channels"]

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_MAX_TIMEOUT = 60.0
_SECURITIES: tuple[str, ...] = get_args(SmtpSecurity)
_DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
_COMMON = frozenset({"name", "kind", "min_level", "deployments", "events", "timeout_seconds"})
_KEYS: dict[str, frozenset[str]] = {
    "webhook": _COMMON | {"url", "url_env", "secret", "secret_env", "ca_file"},
    "slack": _COMMON | {"url", "url_env"},
    "email": _COMMON
    | {"host", "port", "security", "username", "password", "password_env", "from", "to"},
}


def _event_types() -> tuple[str, ...]:
    union = get_args(Event)[0]  # Annotated[Union[...], discriminator]
    return tuple(sorted(member.model_fields["type"].default for member in get_args(union)))


_EVENT_TYPES = _event_types()


def load_channels(path: Path, env: Mapping[str, str]) -> list[Channel]:
    """The channels ``path`` describes, with secrets named by ``*_env`` keys read from ``env``.

    ``InvalidInput`` naming the file, the channel and the key when anything is wrong; then no
    notifier has been built. A file without ``[[channels]]`` gives no channels.
    """
    document = _read(path)
    unknown = sorted(set(document) - {"channels"})
    if unknown:
        raise InvalidInput(
            f"{path}: unknown top-level key {unknown[0]!r} (only [[channels]] tables belong here)"
        )
    tables = document.get("channels", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise InvalidInput(f"{path}: 'channels' must be an array of tables ([[channels]])")
    plans: list[_Plan] = []
    for index, data in enumerate(tables):
        table = _Table(path, index, data)
        plan = _plan(table, env)
        for earlier, other in enumerate(plans):
            if other.name == plan.name:
                table.fail("name", f"channel #{earlier + 1} has that name already")
        plans.append(plan)
    # checked in full above: building opens clients, and none may be left open by a bad file
    return [Channel(notifier=plan.build(), rule=plan.rule) for plan in plans]


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such channel file") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read the channel file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: the channel file is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message names the line and column
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from None


@dataclass(frozen=True)
class _Plan:
    """A checked channel, ready to build."""

    name: str
    rule: ChannelRule
    build: Callable[[], Notifier]


class _Table:
    """One ``[[channels]]`` table, read key by key with errors that say where."""

    def __init__(self, path: Path, index: int, data: dict[str, Any]) -> None:
        self.path = path
        self.index = index
        self.data = data
        self.name: str | None = None

    def fail(self, key: str, problem: str) -> NoReturn:
        who = f"channel #{self.index + 1}"
        if self.name is not None:
            who += f" ({self.name!r})"
        raise InvalidInput(f"{self.path}: {who}: key {key!r}: {problem}")

    def required(self, key: str) -> str:
        value = self.string(key)
        if value is None:
            self.fail(key, "missing (required)")
        return value

    def string(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_toml_type(value)}")
        if not value.strip():
            self.fail(key, "must not be empty")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            self.fail(key, "must be an array of strings")
        if not all(item.strip() for item in value):
            self.fail(key, "must not hold empty strings")
        return tuple(value)

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.string(key) or default
        if value not in options:
            self.fail(key, f"{value!r} is not one of {', '.join(options)}")
        return value

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            self.fail(key, f"must be an integer, not {_toml_type(value)}")
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(key, f"must be a number, not {_toml_type(value)}")
        return float(value)

    def secret(self, key: str, env: Mapping[str, str]) -> str | None:
        """``key`` from the file or, with ``<key>_env``, from the environment variable it
        names; the value is never repeated in a message."""
        env_key = f"{key}_env"
        if key in self.data and env_key in self.data:
            self.fail(key, f"give {key!r} or {env_key!r}, not both")
        variable = self.string(env_key)
        if variable is None:
            return self.string(key)
        value = env.get(variable)
        if value is None:
            self.fail(env_key, f"the environment variable {variable} is not set")
        if not value.strip():
            self.fail(env_key, f"the environment variable {variable} is empty")
        return value.strip()  # a trailing newline from a secrets file is not part of it

    def required_secret(self, key: str, env: Mapping[str, str]) -> str:
        """``secret(key)``, which must be given one way or the other."""
        value = self.secret(key, env)
        if value is None:
            self.fail(key, f"missing (give {key!r} or '{key}_env')")
        return value

    def given_as(self, key: str) -> str:
        """The key a secret was given under: ``<key>_env`` or ``key``, for messages."""
        return f"{key}_env" if f"{key}_env" in self.data else key


def _toml_type(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
    return "a date or time"


def _plan(table: _Table, env: Mapping[str, str]) -> _Plan:
    name = table.required("name")
    if not _NAME.fullmatch(name):
        table.fail("name", f"{name!r} must match [a-z0-9][a-z0-9_.-]{{0,63}}")
    table.name = name
    kind = table.required("kind")
    if kind not in _KEYS:
        table.fail("kind", f"{kind!r} is not one of {', '.join(_KEYS)}")
    for key in table.data:
        if key not in _KEYS[kind]:
            hint = difflib.get_close_matches(key, sorted(_KEYS[kind]), n=1)
            table.fail(
                key,
                f"unknown for a {kind} channel" + (f" (did you mean {hint[0]!r}?)" if hint else ""),
            )
    rule = _rule(table)
    timeout = table.number("timeout_seconds")
    if timeout is not None and not 0 < timeout <= _MAX_TIMEOUT:  # NaN fails this too
        table.fail("timeout_seconds", f"must be more than 0 and at most {_MAX_TIMEOUT:g}")
    if kind == "email":
        build = _email(table, name, timeout, env)
    else:
        build = _web(table, name, kind, timeout, env)
    return _Plan(name=name, rule=rule, build=build)


def _rule(table: _Table) -> ChannelRule:
    levels = tuple(level.value for level in AlertLevel)
    level = AlertLevel(table.choice("min_level", levels, AlertLevel.WARNING.value))
    events = table.strings("events")
    for pattern in events:
        # a typo here would silence the channel without a word: refuse what matches nothing
        if not any(fnmatchcase(event_type, pattern) for event_type in _EVENT_TYPES):
            table.fail("events", f"{pattern!r} matches no event type ({', '.join(_EVENT_TYPES)})")
    if not can_fire(level, events):
        # e.g. only policy events (which raise no alert), or canary events at "emergency"
        table.fail(
            "events" if events else "min_level",
            f"no event type these patterns match raises an alert at {level.value} or above: "
            "the channel would never fire",
        )
    return ChannelRule(min_level=level, deployments=table.strings("deployments"), events=events)


def _web(
    table: _Table, name: str, kind: str, timeout: float | None, env: Mapping[str, str]
) -> Callable[[], Notifier]:
    url = table.required_secret("url", env)
    try:
        parse_http_url(url)
    except ValueError as exc:
        table.fail(table.given_as("url"), str(exc))
    if kind == "slack":
        slack_timeout = timeout or slack.DEFAULT_TIMEOUT
        return lambda: SlackNotifier(name, url, timeout=slack_timeout)
    secret = table.required_secret("secret", env)
    try:
        webhook_key(secret)
    except ValueError as exc:
        table.fail(table.given_as("secret"), str(exc))
    webhook_timeout = timeout or webhook.DEFAULT_TIMEOUT
    tls = _tls(table)
    return lambda: WebhookNotifier(name, url, secret, timeout=webhook_timeout, tls=tls)


def _tls(table: _Table) -> ssl.SSLContext | None:
    """The context for a receiver behind a private CA (``ca_file``: PEM certificates), or None
    for httpx's default (certifi's CA bundle)."""
    ca_file = table.string("ca_file")
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except FileNotFoundError:
        table.fail("ca_file", f"no such file: {ca_file}")
    except (OSError, ssl.SSLError) as exc:
        table.fail("ca_file", f"cannot load CA certificates from {ca_file}: {exc}")


def _email(
    table: _Table, name: str, timeout: float | None, env: Mapping[str, str]
) -> Callable[[], Notifier]:
    host = table.required("host")
    security = cast(SmtpSecurity, table.choice("security", _SECURITIES, "starttls"))
    port = table.integer("port")
    if port is None:
        port = _DEFAULT_PORTS[security]
    elif not 1 <= port <= 65_535:
        table.fail("port", f"{port} is not in 1..65535")
    username = table.string("username")
    password = table.secret("password", env)
    if (username is None) != (password is None):
        table.fail(
            "username" if username is None else "password",
            "give username and password (or password_env) together, or neither",
        )
    if username is not None and security == "none" and host not in _LOOPBACK:
        # aiosmtplib would send AUTH in clear to a server that offers it
        table.fail(
            "security", f"'none' with a password sends it in clear to {host}: use tls or starttls"
        )
    sender = table.required("from")
    _check_address(table, "from", sender)
    if "to" not in table.data:
        table.fail("to", "missing (required)")
    recipients = table.strings("to")
    if not recipients:
        table.fail("to", "must name at least one address")
    for address in recipients:
        _check_address(table, "to", address)
    email_timeout = timeout or email.DEFAULT_TIMEOUT
    return lambda: EmailNotifier(
        name,
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        sender=sender,
        recipients=recipients,
        timeout=email_timeout,
    )


def _check_address(table: _Table, key: str, address: str) -> None:
    if any(char in address for char in "\r\n"):
        table.fail(key, f"{address!r} holds a line break")
    if "@" not in address:
        table.fail(key, f"{address!r} is not an email address (no '@')")
    try:
        # one bare address: no display name, and no second address after a comma
        Address(addr_spec=address)
    except (ValueError, IndexError) as exc:
        table.fail(key, f"{address!r} is not one email address ({exc})")
