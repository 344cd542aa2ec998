"""The channel file: a good one builds the right notifiers and rules; a bad one is refused with
a message naming the file, the channel and the key, and builds nothing."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import canaryguard.adapters.notify.config as channel_config
from canaryguard.adapters.notify import EmailNotifier, SlackNotifier, WebhookNotifier, load_channels
from canaryguard.domain.errors import InvalidInput
from canaryguard.domain.models import AlertLevel
from canaryguard.engine.ports import Channel

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
ENV = {
    "OPS_WEBHOOK_SECRET": SECRET,
    "SLACK_URL": "https://hooks.slack.com/services/T1/B2/SECRETslackpath",
    "SMTP_PASSWORD": "smtp-pass-word",
}
GOOD = """
[[channels]]
name = "ops"
kind = "webhook"
url = "https://hooks.example/cg"
secret_env = "OPS_WEBHOOK_SECRET"
min_level = "critical"
deployments = ["checkout*", "payments-*"]
events = ["io.canaryguard.rollback.*"]
timeout_seconds = 3

[[channels]]
name = "team.slack"
kind = "slack"
url_env = "SLACK_URL"

[[channels]]
name = "oncall"
kind = "email"
host = "smtp.example.com"
port = 2525
security = "tls"
username = "cg"
password_env = "SMTP_PASSWORD"
from = "canaryguard@example.com"
to = ["oncall@example.com", "lead@example.com"]
"""
WEBHOOK = """
[[channels]]
name = "ops"
kind = "webhook"
url = "https://hooks.example/cg"
secret_env = "OPS_WEBHOOK_SECRET"
"""
EMAIL = """
[[channels]]
name = "oncall"
kind = "email"
host = "smtp.example.com"
from = "canaryguard@example.com"
to = ["oncall@example.com"]
"""


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "channels.toml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
async def channels() -> AsyncIterator[list[Channel]]:
    built: list[Channel] = []
    yield built
    for channel in built:
        await channel.notifier.close()


def refusal(path: Path, env: Mapping[str, str] = ENV) -> str:
    with pytest.raises(InvalidInput) as caught:
        load_channels(path, env)
    return str(caught.value)


def edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# --- a good file -----------------------------------------------------------------------------


def test_a_good_file_builds_a_notifier_of_each_kind(
    write: Callable[[str], Path], channels: list[Channel]
) -> None:
    channels += load_channels(write(GOOD), ENV)
    ops, team, oncall = channels
    assert isinstance(ops.notifier, WebhookNotifier)
    assert isinstance(team.notifier, SlackNotifier)
    assert isinstance(oncall.notifier, EmailNotifier)
    assert [c.name for c in channels] == ["ops", "team.slack", "oncall"]
    assert [c.notifier.kind for c in channels] == ["webhook", "slack", "email"]


def test_a_good_file_gives_each_channel_its_rule(
    write: Callable[[str], Path], channels: list[Channel]
) -> None:
    channels += load_channels(write(GOOD), ENV)
    ops, team, _ = channels
    assert ops.rule.min_level is AlertLevel.CRITICAL
    assert ops.rule.deployments == ("checkout*", "payments-*")
    assert ops.rule.events == ("io.canaryguard.rollback.*",)
    assert team.rule.min_level is AlertLevel.WARNING  # the default
    assert team.rule.deployments == ()
    assert team.rule.events == ()


def test_urls_and_secrets_come_from_the_environment_and_stay_out_of_reprs(
    write: Callable[[str], Path], channels: list[Channel]
) -> None:
    channels += load_channels(write(GOOD), ENV)
    reprs = " ".join(repr(channel.notifier) for channel in channels)
    assert "https://hooks.slack.com/" in reprs
    for secret in (SECRET, "SECRETslackpath", "smtp-pass-word"):
        assert secret not in reprs


def test_email_security_defaults_to_starttls_on_port_587(
    write: Callable[[str], Path], channels: list[Channel]
) -> None:
    channels += load_channels(write(EMAIL), ENV)
    assert "port=587, security='starttls'" in repr(channels[0].notifier)


def test_an_empty_file_gives_no_channels(write: Callable[[str], Path]) -> None:
    assert load_channels(write(""), ENV) == []


def test_an_empty_channels_array_gives_no_channels(write: Callable[[str], Path]) -> None:
    assert load_channels(write("channels = []\n"), ENV) == []


# --- the file --------------------------------------------------------------------------------


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    message = refusal(path)
    assert str(path) in message
    assert "no such" in message


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    message = refusal(tmp_path)  # a directory: reading it fails whoever runs the tests
    assert str(tmp_path) in message
    assert "cannot read" in message


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_bytes(b'name = "\xff"\n')
    assert "UTF-8" in refusal(path)


def test_a_file_that_is_not_toml_is_refused_with_line_and_column(
    write: Callable[[str], Path],
) -> None:
    path = write('[[channels]]\nname = "ops"\nkind = webhook\n')
    message = refusal(path)
    assert str(path) in message
    assert "line 3, column 8" in message


def test_an_unknown_top_level_key_is_refused(write: Callable[[str], Path]) -> None:
    message = refusal(write("chanels = []\n"))
    assert "'chanels'" in message


def test_channels_that_are_not_an_array_of_tables_are_refused(
    write: Callable[[str], Path],
) -> None:
    assert "[[channels]]" in refusal(write('[channels]\nname = "ops"\n'))


# --- keys ------------------------------------------------------------------------------------


def test_a_misspelt_channel_key_is_refused_with_a_suggestion(
    write: Callable[[str], Path],
) -> None:
    path = write(WEBHOOK + 'min_levle = "info"\n')
    message = refusal(path)
    assert str(path) in message
    assert "'ops'" in message
    assert "'min_levle'" in message
    assert "did you mean 'min_level'" in message


def test_a_key_of_another_kind_is_refused(write: Callable[[str], Path]) -> None:
    message = refusal(write(EMAIL + 'url = "https://hooks.example/cg"\n'))
    assert "'url'" in message
    assert "email channel" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('port = "587"\n', "port"),
        ("port = true\n", "port"),
        ("min_level = 3\n", "min_level"),
        ('deployments = "checkout"\n', "deployments"),
        ('timeout_seconds = "5"\n', "timeout_seconds"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(
    write: Callable[[str], Path], line: str, key: str
) -> None:
    message = refusal(write(EMAIL + line))
    assert f"'{key}'" in message
    assert "'oncall'" in message


def test_a_name_of_the_wrong_type_names_the_channel_by_index(
    write: Callable[[str], Path],
) -> None:
    message = refusal(write(WEBHOOK + '\n[[channels]]\nname = 7\nkind = "slack"\n'))
    assert "channel #2" in message
    assert "'name'" in message


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        (EMAIL.replace('kind = "email"', 'kind = "pager"'), "kind", "pager"),
        (EMAIL + 'min_level = "fatal"\n', "min_level", "fatal"),
        (EMAIL + 'security = "ssl"\n', "security", "ssl"),
    ],
)
def test_an_unknown_kind_level_or_security_is_refused(
    write: Callable[[str], Path], text: str, key: str, value: str
) -> None:
    message = refusal(write(text))
    assert f"'{key}'" in message
    assert f"'{value}'" in message


def test_a_duplicate_name_is_refused(write: Callable[[str], Path]) -> None:
    message = refusal(write(WEBHOOK + EMAIL.replace('"oncall"', '"ops"')))
    assert "channel #2 ('ops')" in message
    assert "channel #1" in message
    assert "'name'" in message


def test_a_name_outside_the_allowed_form_is_refused(write: Callable[[str], Path]) -> None:
    message = refusal(write(edited(WEBHOOK, '"ops"', '"Ops Team"')))
    assert "'name'" in message
    assert "'Ops Team'" in message


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        (WEBHOOK, 'name = "ops"\n', "name"),
        (WEBHOOK, 'kind = "webhook"\n', "kind"),
        (WEBHOOK, 'url = "https://hooks.example/cg"\n', "url"),
        (WEBHOOK, 'secret_env = "OPS_WEBHOOK_SECRET"\n', "secret"),
        (EMAIL, 'host = "smtp.example.com"\n', "host"),
        (EMAIL, 'from = "canaryguard@example.com"\n', "from"),
        (EMAIL, 'to = ["oncall@example.com"]\n', "to"),
    ],
)
def test_a_missing_required_key_is_refused(
    write: Callable[[str], Path], text: str, line: str, key: str
) -> None:
    message = refusal(write(edited(text, line, "")))
    assert f"'{key}'" in message
    assert "missing" in message


# --- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["ftp://hooks.example/cg", "hooks.example/cg"])
def test_a_url_that_is_not_http_is_refused(write: Callable[[str], Path], url: str) -> None:
    message = refusal(write(edited(WEBHOOK, "https://hooks.example/cg", url)))
    assert "'url'" in message
    assert "http" in message


def test_an_unset_environment_variable_is_refused(write: Callable[[str], Path]) -> None:
    env = {k: v for k, v in ENV.items() if k != "OPS_WEBHOOK_SECRET"}
    message = refusal(write(WEBHOOK), env)
    assert "'secret_env'" in message
    assert "OPS_WEBHOOK_SECRET is not set" in message


def test_an_empty_environment_variable_is_refused(write: Callable[[str], Path]) -> None:
    message = refusal(write(WEBHOOK), {**ENV, "OPS_WEBHOOK_SECRET": " \n"})
    assert "OPS_WEBHOOK_SECRET is empty" in message


@pytest.mark.parametrize(
    ("line", "key"),
    [('url_env = "SLACK_URL"\n', "url"), (f'secret = "{SECRET}"\n', "secret")],
)
def test_a_value_given_both_inline_and_by_environment_is_refused(
    write: Callable[[str], Path], line: str, key: str
) -> None:
    message = refusal(write(WEBHOOK + line))
    assert f"'{key}'" in message
    assert "not both" in message


def test_a_bad_webhook_secret_is_refused_without_repeating_it(
    write: Callable[[str], Path],
) -> None:
    short = "whsec_" + base64.b64encode(b"too short").decode()
    message = refusal(write(WEBHOOK), {**ENV, "OPS_WEBHOOK_SECRET": short})
    assert "'secret_env'" in message
    assert "24 bytes" in message
    assert short not in message


def test_an_empty_recipient_list_is_refused(write: Callable[[str], Path]) -> None:
    message = refusal(write(edited(EMAIL, '["oncall@example.com"]', "[]")))
    assert "'to'" in message
    assert "at least one" in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('"canaryguard@example.com"', '"canaryguard"', "from"),
        ('["oncall@example.com"]', '["oncall@example.com", "lead"]', "to"),
    ],
)
def test_an_address_without_at_is_refused(
    write: Callable[[str], Path], old: str, new: str, key: str
) -> None:
    message = refusal(write(edited(EMAIL, old, new)))
    assert f"'{key}'" in message
    assert "'@'" in message


@pytest.mark.parametrize("port", [0, 65536, -25])
def test_a_port_out_of_range_is_refused(write: Callable[[str], Path], port: int) -> None:
    message = refusal(write(EMAIL + f"port = {port}\n"))
    assert "'port'" in message
    assert "1..65535" in message


@pytest.mark.parametrize("seconds", ["0", "-1", "61", "nan"])
def test_a_timeout_out_of_range_is_refused(write: Callable[[str], Path], seconds: str) -> None:
    message = refusal(write(WEBHOOK + f"timeout_seconds = {seconds}\n"))
    assert "'timeout_seconds'" in message


def test_a_username_without_a_password_is_refused(write: Callable[[str], Path]) -> None:
    message = refusal(write(EMAIL + 'username = "cg"\n'))
    assert "'password'" in message


def test_an_event_pattern_that_matches_no_event_type_is_refused(
    write: Callable[[str], Path],
) -> None:
    message = refusal(write(WEBHOOK + 'events = ["rollback.*"]\n'))
    assert "'events'" in message
    assert "'rollback.*' matches no event type" in message


def test_nothing_is_built_when_a_later_channel_is_bad(
    write: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    monkeypatch.setattr(channel_config, "WebhookNotifier", lambda *args, **_: built.append(args))
    assert "'port'" in refusal(write(WEBHOOK + EMAIL + "port = 0\n"))
    assert built == []


def test_a_password_sent_in_clear_to_another_host_is_refused(
    write: Callable[[str], Path],
) -> None:
    message = refusal(
        write(EMAIL + 'security = "none"\nusername = "cg"\npassword_env = "SMTP_PASSWORD"\n')
    )
    assert "'security'" in message
    assert "in clear to smtp.example.com" in message


async def test_a_password_to_a_relay_on_loopback_without_tls_is_accepted(
    write: Callable[[str], Path], channels: list[Channel]
) -> None:
    text = edited(EMAIL, "smtp.example.com", "127.0.0.1")
    channels += load_channels(
        write(text + 'security = "none"\nusername = "cg"\npassword_env = "SMTP_PASSWORD"\n'), ENV
    )
    assert [c.notifier.kind for c in channels] == ["email"]


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('events = ["io.canaryguard.policy.*"]\n', "'events'"),
        ('min_level = "emergency"\nevents = ["io.canaryguard.canary.*"]\n', "'events'"),
    ],
)
def test_a_channel_that_could_never_fire_is_refused(
    write: Callable[[str], Path], extra: str, key: str
) -> None:
    message = refusal(write(WEBHOOK + extra))
    assert key in message
    assert "would never fire" in message


@pytest.mark.parametrize("address", ["a@b.example, evil@d.example", "Ops, Team <ops@x.example>"])
def test_more_than_one_address_in_one_entry_is_refused(
    write: Callable[[str], Path], address: str
) -> None:
    message = refusal(write(edited(EMAIL, '"oncall@example.com"', f'"{address}"')))
    assert "'to'" in message
    assert "is not one email address" in message


def test_a_ca_file_that_does_not_exist_is_refused(
    write: Callable[[str], Path], tmp_path: Path
) -> None:
    message = refusal(write(WEBHOOK + f'ca_file = "{tmp_path / "nope.pem"}"\n'))
    assert "'ca_file'" in message
    assert "no such file" in message


def test_a_ca_file_that_holds_no_certificate_is_refused(
    write: Callable[[str], Path], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    message = refusal(write(WEBHOOK + f'ca_file = "{junk}"\n'))
    assert "'ca_file'" in message
    assert "cannot load CA certificates" in message
