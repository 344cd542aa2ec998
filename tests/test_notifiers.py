"""The notifiers against real receivers on loopback: a minimal HTTP server for the webhook and
Slack, aiosmtpd for email. One attempt per send; failures sorted into retry or give up."""

from __future__ import annotations

import base64
import email.policy
import json
import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from canaryguard.adapters import notify
from canaryguard.adapters.notify import EmailNotifier, SlackNotifier, WebhookNotifier, load_channels
from canaryguard.adapters.notify._format import delivery_id
from canaryguard.domain.alerts import alert_for
from canaryguard.domain.errors import DeliveryFailed, InvalidInput
from canaryguard.domain.events import AutoRollbackTriggered, EventRecord, RollbackCompleted
from canaryguard.domain.models import (
    DeploymentState,
    MetricsSnapshot,
    RollbackAlert,
    VariantMetrics,
)
from tests.certificates import self_signed
from tests.receivers import Receiver
from tests.servers import free_port

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
METRICS = MetricsSnapshot(
    window_seconds=300,
    until=NOW,
    stable=VariantMetrics(requests=10_000, errors=12, p99_ms=120.0),
    canary=VariantMetrics(requests=1_234, errors=56, p99_ms=812.0),
)
SLACK_PATH = "/services/T0001/B0002/abcdefSECRETpath"


def rollback_record(
    *,
    seq: int = 42,
    reason: str = "error rate 4.54 % > 1 %",
    metrics: MetricsSnapshot | None = METRICS,
) -> EventRecord:
    event = AutoRollbackTriggered(
        rollback_id="rb_1", reason=reason, snapshot_id="snap_1", metrics=metrics
    )
    return EventRecord(seq=seq, deployment="checkout", time=NOW, revision=7, event=event)


def completed_record() -> EventRecord:
    event = RollbackCompleted(
        rollback_id="rb_1",
        snapshot_id="snap_1",
        duration_ms=1200,
        success=True,
        final_state=DeploymentState.ROLLED_BACK,
    )
    return EventRecord(seq=43, deployment="checkout", time=NOW, revision=8, event=event)


def alert_of(record: EventRecord) -> RollbackAlert:
    alert = alert_for(record)
    assert alert is not None
    return alert


@pytest.fixture
async def webhook(receiver: Receiver) -> AsyncIterator[WebhookNotifier]:
    notifier = WebhookNotifier("ops", f"{receiver.url}/hooks/cg", SECRET, timeout=2.0)
    yield notifier
    await notifier.close()


@pytest.fixture
async def slack(receiver: Receiver) -> AsyncIterator[SlackNotifier]:
    notifier = SlackNotifier("team", receiver.url + SLACK_PATH, timeout=2.0)
    yield notifier
    await notifier.close()


async def failure_of(notifier: WebhookNotifier | SlackNotifier | EmailNotifier) -> DeliveryFailed:
    record = rollback_record()
    with pytest.raises(DeliveryFailed) as caught:
        await notifier.send(alert_of(record), record)
    return caught.value


def test_the_package_exports_exactly_the_notifiers_and_the_loader() -> None:
    assert set(notify.__all__) == {
        "EmailNotifier",
        "SlackNotifier",
        "WebhookNotifier",
        "load_channels",
    }


# --- webhook ---------------------------------------------------------------------------------


async def test_webhook_posts_the_cloudevent_with_the_alert_level_and_message(
    receiver: Receiver, webhook: WebhookNotifier
) -> None:
    record = rollback_record()
    alert = alert_of(record)
    await webhook.send(alert, record)
    [request] = receiver.requests
    assert request.path == "/hooks/cg"
    assert request.headers["content-type"] == "application/cloudevents+json"
    assert json.loads(request.body) == {
        **record.to_cloudevent(),
        "canaryguardlevel": "critical",
        "canaryguardmessage": alert.message,
    }


async def test_webhook_signature_verifies_with_the_standard_webhooks_reference(
    receiver: Receiver, webhook: WebhookNotifier
) -> None:
    record = rollback_record()
    await webhook.send(alert_of(record), record)
    [request] = receiver.requests
    payload = Webhook(SECRET).verify(request.body, request.headers)
    assert payload["id"] == "42"


async def test_a_tampered_webhook_body_fails_the_reference_verification(
    receiver: Receiver, webhook: WebhookNotifier
) -> None:
    record = rollback_record()
    await webhook.send(alert_of(record), record)
    [request] = receiver.requests
    tampered = request.body.replace(b'"critical"', b'"info"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, request.headers)


async def test_webhook_id_is_the_same_on_every_attempt(
    receiver: Receiver, webhook: WebhookNotifier
) -> None:
    receiver.statuses = [503]
    record = rollback_record(seq=42)
    with pytest.raises(DeliveryFailed):
        await webhook.send(alert_of(record), record)
    await webhook.send(alert_of(record), record)
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == [delivery_id(record)] * 2
    assert ids[0].startswith("evt_42_")
    assert all(r.headers["webhook-timestamp"].isdigit() for r in receiver.requests)


def test_the_same_sequence_number_in_another_installation_is_another_delivery() -> None:
    # two databases both reach event 42; a receiver fed by both must not drop one as a copy
    here = rollback_record(seq=42)
    there = here.model_copy(update={"time": here.time.replace(microsecond=1)})
    assert delivery_id(here) != delivery_id(there)


async def test_a_2xx_whose_body_is_slow_to_come_is_delivered(
    receiver: Receiver,
) -> None:
    receiver.slow_body = True
    notifier = WebhookNotifier("ops", f"{receiver.url}/h", SECRET, timeout=0.5)
    try:
        record = rollback_record()
        await notifier.send(alert_of(record), record)  # no DeliveryFailed: it was taken
    finally:
        await notifier.close()


async def test_a_429_passes_on_how_long_the_receiver_asked_to_wait(
    receiver: Receiver, webhook: WebhookNotifier
) -> None:
    receiver.statuses = [429]
    receiver.retry_after = "7"
    failure = await failure_of(webhook)
    assert (failure.permanent, failure.retry_after) == (False, 7.0)


@pytest.mark.parametrize("status", [500, 503, 429, 408, 425])
async def test_webhook_answers_worth_retrying_fail_non_permanently(
    receiver: Receiver, webhook: WebhookNotifier, status: int
) -> None:
    receiver.statuses = [status]
    assert not (await failure_of(webhook)).permanent


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_webhook_refusals_fail_permanently(
    receiver: Receiver, webhook: WebhookNotifier, status: int
) -> None:
    receiver.statuses = [status]
    assert (await failure_of(webhook)).permanent


async def test_webhook_redirect_is_not_followed_and_fails_permanently(
    receiver: Receiver, webhook: WebhookNotifier
) -> None:
    receiver.statuses = [307]
    failure = await failure_of(webhook)
    assert failure.permanent
    assert [r.path for r in receiver.requests] == ["/hooks/cg"]


async def test_webhook_timeout_fails_non_permanently(receiver: Receiver) -> None:
    receiver.delay = 5.0
    notifier = WebhookNotifier("ops", receiver.url, SECRET, timeout=0.5)
    try:
        failure = await failure_of(notifier)
    finally:
        await notifier.close()
    assert not failure.permanent
    assert "0.5 s" in str(failure)


async def test_webhook_to_a_closed_port_fails_non_permanently() -> None:
    notifier = WebhookNotifier("ops", f"http://127.0.0.1:{free_port()}/", SECRET, timeout=2.0)
    try:
        failure = await failure_of(notifier)
    finally:
        await notifier.close()
    assert not failure.permanent


async def test_webhook_failure_names_channel_host_and_status_without_path_or_credentials(
    receiver: Receiver,
) -> None:
    receiver.statuses = [404]
    url = receiver.url.replace("http://", "http://user:hunter2@") + "/hooks/t0k3n?token=t0p"
    notifier = WebhookNotifier("ops", url, SECRET, timeout=2.0)
    try:
        message = str(await failure_of(notifier))
    finally:
        await notifier.close()
    assert "'ops'" in message
    assert f"{receiver.url}/..." in message
    assert "404" in message
    assert "hunter2" not in message
    assert "t0p" not in message
    assert "t0k3n" not in message  # a path may be a receiver's credential too


async def test_webhook_secret_is_in_neither_repr_nor_failure_messages(
    receiver: Receiver, webhook: WebhookNotifier
) -> None:
    receiver.statuses = [500, 400]
    messages = [str(await failure_of(webhook)), str(await failure_of(webhook)), repr(webhook)]
    encoded_key = SECRET.removeprefix("whsec_")
    assert not any(encoded_key in text or SECRET in text for text in messages)


@pytest.mark.parametrize(
    "secret",
    [
        base64.b64encode(KEY).decode(),  # no whsec_ prefix
        "whsec_not*base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
    ],
    ids=["no-prefix", "not-base64", "too-short"],
)
def test_webhook_refuses_a_bad_secret_naming_the_channel(secret: str) -> None:
    with pytest.raises(InvalidInput, match="'ops'") as caught:
        WebhookNotifier("ops", "https://hooks.example/cg", secret)
    assert secret not in str(caught.value)


def test_webhook_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(InvalidInput, match="http"):
        WebhookNotifier("ops", "ftp://hooks.example/cg", SECRET)


# --- Slack -----------------------------------------------------------------------------------


async def test_slack_posts_level_and_message_as_blocks_with_a_text_fallback(
    receiver: Receiver, slack: SlackNotifier
) -> None:
    record = completed_record()
    alert = alert_of(record)
    await slack.send(alert, record)
    [request] = receiver.requests
    assert request.headers["content-type"] == "application/json"
    payload = json.loads(request.body)
    assert "[INFO]" in payload["text"]
    assert alert.message in payload["text"]
    header, section, context = payload["blocks"]
    assert header["type"] == "header"
    assert "INFO" in header["text"]["text"]
    assert section == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": alert.message, "verbatim": True},
    }
    assert context["type"] == "context"
    assert "io.canaryguard.rollback.completed" in context["elements"][0]["text"]


async def test_slack_adds_canary_and_stable_metrics_fields_when_the_alert_has_metrics(
    receiver: Receiver, slack: SlackNotifier
) -> None:
    record = rollback_record()
    await slack.send(alert_of(record), record)
    blocks = json.loads(receiver.requests[0].body)["blocks"]
    [fields] = [block["fields"] for block in blocks if "fields" in block]
    texts = [cell["text"] for cell in fields]
    assert texts == [
        "*Canary requests*\n1,234",
        "*Stable requests*\n10,000",
        "*Canary error rate*\n4.54 %",
        "*Stable error rate*\n0.12 %",
        "*Canary p99*\n812 ms",
        "*Stable p99*\n120 ms",
    ]


async def test_slack_leaves_the_metrics_out_when_the_alert_has_none(
    receiver: Receiver, slack: SlackNotifier
) -> None:
    record = rollback_record(metrics=None)
    await slack.send(alert_of(record), record)
    blocks = json.loads(receiver.requests[0].body)["blocks"]
    assert not any("fields" in block for block in blocks)


async def test_slack_escapes_mentions_in_the_message(
    receiver: Receiver, slack: SlackNotifier
) -> None:
    record = rollback_record(reason="<!channel> errors & timeouts")
    await slack.send(alert_of(record), record)
    body = receiver.requests[0].body.decode()
    assert "<!channel>" not in body
    assert "&lt;!channel&gt; errors &amp; timeouts" in body


async def test_slack_503_fails_non_permanently(receiver: Receiver, slack: SlackNotifier) -> None:
    receiver.statuses = [503]
    assert not (await failure_of(slack)).permanent


async def test_slack_url_path_is_in_neither_repr_nor_failure_messages(
    receiver: Receiver, slack: SlackNotifier
) -> None:
    receiver.statuses = [404]
    failure = await failure_of(slack)
    assert failure.permanent
    assert "'team'" in str(failure)
    assert "404" in str(failure)
    for text in (str(failure), repr(slack)):
        assert receiver.url in text
        assert "SECRET" not in text
        assert "T0001" not in text


# --- email -----------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps what it accepts, refuses recipients at nobody@."""

    accepted: list[Envelope] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self,
        _server: SMTP,
        _session: Session,
        envelope: Envelope,
        address: str,
        _rcpt_options: list[str],
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, _server: SMTP, _session: Session, envelope: Envelope
    ) -> str:
        self.accepted.append(envelope)
        return "250 Message accepted"


@dataclass
class MailServer:
    mailbox: Mailbox
    port: int

    def notifier(self, *recipients: str) -> EmailNotifier:
        return EmailNotifier(
            "oncall",
            host="127.0.0.1",
            port=self.port,
            security="none",
            sender="canaryguard@example.com",
            recipients=recipients or ("oncall@example.com",),
            timeout=5.0,
        )

    def message(self) -> EmailMessage:
        [envelope] = self.mailbox.accepted
        assert isinstance(envelope.content, bytes)
        parsed = message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def mail_server() -> Iterator[MailServer]:
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield MailServer(mailbox, controller.port)
    finally:
        controller.stop()


async def test_email_subject_names_the_level_and_the_message(mail_server: MailServer) -> None:
    record = rollback_record()
    alert = alert_of(record)
    await mail_server.notifier().send(alert, record)
    assert mail_server.message()["Subject"] == f"[canaryguard CRITICAL] {alert.message}"


async def test_email_subject_cuts_a_long_message(mail_server: MailServer) -> None:
    record = rollback_record(reason="x" * 500)
    await mail_server.notifier().send(alert_of(record), record)
    subject = mail_server.message()["Subject"]
    assert subject.startswith("[canaryguard CRITICAL] checkout: canary rolled back")
    assert subject.endswith("…")
    assert len(subject) <= len("[canaryguard CRITICAL] ") + 120


async def test_email_body_has_deployment_time_level_metrics_and_the_cloudevent(
    mail_server: MailServer,
) -> None:
    record = rollback_record()
    alert = alert_of(record)
    await mail_server.notifier().send(alert, record)
    body = mail_server.message().get_content()
    assert isinstance(body, str)
    text, _, cloudevent = body.replace("\r\n", "\n").partition("CloudEvent:\n")
    assert text.startswith(alert.message)
    assert "Deployment: checkout" in text
    assert "Time:       2025-03-01T12:00:00Z" in text
    assert "Level:      critical" in text
    assert "  canary        1234        56      4.54 %     812.0\n" in text
    assert "  stable       10000        12      0.12 %     120.0\n" in text
    assert json.loads(cloudevent)["id"] == "42"


async def test_email_headers_carry_the_delivery_id_for_spotting_duplicates(
    mail_server: MailServer,
) -> None:
    record = rollback_record(seq=42)
    await mail_server.notifier().send(alert_of(record), record)
    message = mail_server.message()
    assert message["X-Canaryguard-Event-Id"] == delivery_id(record)
    assert message["Message-ID"] == f"<canaryguard.{delivery_id(record)}@example.com>"
    [envelope] = mail_server.mailbox.accepted
    assert envelope.mail_from == "canaryguard@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com"]


async def test_email_to_a_recipient_the_server_refuses_fails_permanently(
    mail_server: MailServer,
) -> None:
    failure = await failure_of(mail_server.notifier("nobody@example.com"))
    assert failure.permanent
    assert "550" in str(failure)
    assert mail_server.mailbox.accepted == []


async def test_email_refused_for_some_recipients_fails_permanently_after_the_others_got_it(
    mail_server: MailServer,
) -> None:
    failure = await failure_of(mail_server.notifier("oncall@example.com", "nobody@example.com"))
    assert failure.permanent
    assert "nobody@example.com" in str(failure)
    assert mail_server.mailbox.accepted[0].rcpt_tos == ["oncall@example.com"]


async def test_email_to_a_server_that_is_down_fails_non_permanently() -> None:
    notifier = MailServer(Mailbox(), free_port()).notifier()
    failure = await failure_of(notifier)
    assert not failure.permanent
    assert "'oncall'" in str(failure)


@pytest.fixture
async def https_receiver(tmp_path: Path) -> AsyncIterator[tuple[Receiver, Path]]:
    """A receiver over HTTPS whose certificate a private CA signed: it, and the CA file."""
    cert_file, key_file = self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert_file, key_file)
    running = Receiver()
    await running.start(tls)
    yield running, cert_file
    await running.stop()


def https_channel(receiver: Receiver, tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "channels.toml"
    path.write_text(
        f'[[channels]]\nname = "ops"\nkind = "webhook"\nurl = "{receiver.url}/h"\n'
        f'secret = "{SECRET}"\n{extra}'
    )
    return path


async def test_a_webhook_behind_a_private_ca_is_reached_with_its_ca_file(
    https_receiver: tuple[Receiver, Path], tmp_path: Path
) -> None:
    receiver, ca_file = https_receiver
    [channel] = load_channels(https_channel(receiver, tmp_path, f'ca_file = "{ca_file}"\n'), {})
    try:
        record = rollback_record()
        await channel.notifier.send(alert_of(record), record)
    finally:
        await channel.notifier.close()
    assert len(receiver.requests) == 1


async def test_a_webhook_behind_a_private_ca_is_refused_without_it(
    https_receiver: tuple[Receiver, Path], tmp_path: Path
) -> None:
    receiver, _ = https_receiver
    [channel] = load_channels(https_channel(receiver, tmp_path), {})
    try:
        record = rollback_record()
        with pytest.raises(DeliveryFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await channel.notifier.send(alert_of(record), record)
    finally:
        await channel.notifier.close()
    assert receiver.requests == []
