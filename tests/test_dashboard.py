"""The dashboard in Debian's Chromium (Playwright) against a real server.

Behaviours that touch the database (what is shown, what the buttons change, live updates) run
on SQLite and PostgreSQL; those of the page alone (sign-in, headers, what it loads and how it
shows text) on the embedded default.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, expect

from canaryguard.dashboard import CONTENT_SECURITY_POLICY
from canaryguard.domain import rollout
from tests.browser import chromium
from tests.servers import RunningServer, running_server

NAME = "payments/security"
DEPLOYMENT_PAGE = f"/#/deployments/{NAME}"
ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "canaryguard" / "dashboard" / "static"
DOCS = ROOT / "docs"
STREAM = "/api/v1/events"
EVENT_LOG = "/api/v1/events/log"
REFRESH_MS = 3000  # app.js: the next poll, this long after a read ends
EVENT_GAP_MS = 1000  # app.js: events refresh a view at most this often

# Headless Chromium shows every tab: the tests hide one by overriding what the page reads
VISIBILITY_SWITCH = """
(() => {
  let hidden = false;
  Object.defineProperty(Document.prototype, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(Document.prototype, "visibilityState", {
    configurable: true,
    get: () => (hidden ? "hidden" : "visible"),
  });
  window.setTabHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event("visibilitychange"));
  };
})();
"""

# Every fetch() of the page, in order, logged when it is called (so a test reads it without a
# race), and a gate that holds the calls whose URL contains a given part until released.
FETCH_LOG = """
(() => {
  const realFetch = window.fetch.bind(window);
  let gate = null;
  window.fetchLog = [];
  window.holdFetches = (part) => {
    let release;
    const opened = new Promise((resolve) => (release = resolve));
    gate = { part, opened, release };
  };
  window.releaseFetches = () => {
    if (gate) gate.release();
    gate = null;
  };
  window.fetch = async (input, init) => {
    const url = String(input);
    window.fetchLog.push(url);
    const held = gate;
    if (held && url.includes(held.part)) await held.opened;
    return realFetch(input, init);
  };
})();
"""

# PostgreSQL commits and the live stream take a moment more than SQLite on a busy CI machine
expect.set_options(timeout=10_000)


@dataclass
class Browsing:
    """One page in a fresh browser context, with what went wrong in it."""

    page: Page
    problems: list[str] = field(default_factory=list)

    def watch(self, message: ConsoleMessage) -> None:
        # the browser logs refused responses (401, 403) as errors too: those are expected here
        if re.search(r"Content.Security.Policy|Trusted ?(HTML|Types)", message.text):
            self.problems.append(f"console: {message.text}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def browsing(browser: Browser) -> Iterator[Browsing]:
    """A fresh context (no storage shared between tests). Tests name their server first, so
    the page closes before the server stops and never sees it go."""
    context = browser.new_context()
    page = context.new_page()
    browsing = Browsing(page)
    page.on("pageerror", lambda error: browsing.problems.append(f"uncaught: {error}"))
    page.on("console", browsing.watch)
    yield browsing
    context.close()
    assert browsing.problems == [], "the page broke its own policy or threw"


@pytest.fixture
def page(browsing: Browsing) -> Page:
    return browsing.page


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A real server on the embedded default, for behaviours of the page alone."""
    with running_server(tmp_path / "data", heartbeat_seconds=0.5) as running:
        yield running


def setup_canary(server: RunningServer, percent: float = 12.5) -> None:
    """``NAME`` serving ``sec@1``, with ``sec@2`` as a canary on ``percent``."""
    with server.client() as client:
        for document in ({"rate_limit": 100}, {"rate_limit": 50}):
            client.post("/api/v1/policies/sec/versions", json={"document": document})
        client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        started = client.post(
            f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": percent}
        )
        assert started.status_code == 200, started.text


def report_outcomes(server: RunningServer) -> None:
    """19 settled seconds of both variants: the canary 190 requests, stable 1,710 (19 errors)."""
    now = int(time.time())
    observations = [
        {
            "deployment": NAME,
            "variant": variant,
            "second": second,
            "requests": requests,
            "errors": errors,
            "latency_sum_ms": requests * 10.0,
            "latency_max_ms": 40.0,
        }
        for second in range(now - 20, now - 1)
        for variant, requests, errors in (("canary", 10, 0), ("stable", 90, 1))
    ]
    with server.client() as client:
        response = client.post("/api/v1/observations", json={"observations": observations})
        assert response.status_code == 202, response.text


def decide_regression(server: RunningServer) -> None:
    """Report the canary failing half its requests until the monitor decides to roll back."""
    with server.client() as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = int(time.time())
            observations = [
                {
                    "deployment": NAME,
                    "variant": "canary",
                    "second": now,
                    "requests": 200,
                    "errors": 100,
                },
                {
                    "deployment": NAME,
                    "variant": "stable",
                    "second": now,
                    "requests": 200,
                    "errors": 0,
                },
            ]
            client.post("/api/v1/observations", json={"observations": observations})
            if client.get(f"/api/v1/deployments/{NAME}/verdict").json().get("decision"):
                return
            time.sleep(0.3)  # the monitor judges each settled second
    raise TimeoutError("the monitor did not decide")


def create_token(server: RunningServer, role: str, name: str | None = None) -> str:
    with server.client() as client:
        response = client.post("/api/v1/tokens", json={"name": name or role, "role": role})
        assert response.status_code == 201, response.text
        secret: str = response.json()["token"]
        return secret


def deployment(server: RunningServer) -> dict[str, Any]:
    with server.client() as client:
        body: dict[str, Any] = client.get(f"/api/v1/deployments/{NAME}").json()
        return body


def rollbacks(server: RunningServer) -> list[dict[str, Any]]:
    with server.client() as client:
        body: list[dict[str, Any]] = client.get(f"/api/v1/deployments/{NAME}/rollbacks").json()
        return body


def sign_in(page: Page, server: RunningServer, token: str, path: str = "/") -> None:
    page.goto(server.url + path)
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def start_rollback(page: Page, reason: str) -> None:
    """On the deployment page: open the rollback form, give the reason, go to the last step."""
    page.get_by_role("button", name="Roll back…").click()
    page.get_by_label("Reason").fill(reason)
    page.get_by_role("button", name="Continue…").click()


def wait_until_live(page: Page) -> None:
    expect(page.locator("#live")).to_have_text("live")


def is_stream(url: str) -> bool:
    return urlsplit(url).path == STREAM


def is_event_log(url: str) -> bool:
    return urlsplit(url).path == EVENT_LOG


def set_hidden(page: Page, hidden: bool) -> None:
    """Hide or show the tab (VISIBILITY_SWITCH must be in the page)."""
    page.evaluate("hidden => window.setTabHidden(hidden)", hidden)


def fetches(page: Page, part: str) -> int:
    """How many fetch() calls of the page had ``part`` in their URL (FETCH_LOG in the page)."""
    count: int = page.evaluate("part => window.fetchLog.filter(u => u.includes(part)).length", part)
    return count


def pause_clock(page: Page) -> None:
    """The page's timers run only when the test runs the clock (clock.run_for)."""
    now = time.time()
    page.clock.install(time=now)
    page.clock.pause_at(now + 1)


def newest_event(server: RunningServer) -> int:
    """The sequence number of ``NAME``'s newest event."""
    with server.client() as client:
        events = client.get(EVENT_LOG, params={"deployment": NAME, "limit": 10_000}).json()
    return int(events[-1]["id"])


def request_pending_rollback(server: RunningServer, reason: str = "errors") -> dict[str, Any]:
    with server.client() as client:
        response = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": reason, "confirm": False}
        )
        assert response.status_code == 201, response.text
        record: dict[str, Any] = response.json()
        return record


def take_snapshot(server: RunningServer, note: str) -> None:
    """A change with an event that leaves the deployment as it is."""
    with server.client() as client:
        response = client.post(f"/api/v1/deployments/{NAME}/snapshots", json={"note": note})
        assert response.status_code == 201, response.text


# ---------------------------------------------------------------- signing in and out


def test_signing_in_keeps_the_token_in_this_tab_and_shows_the_deployments(
    sqlite_server: RunningServer, page: Page
) -> None:
    setup_canary(sqlite_server)
    sign_in(page, sqlite_server, sqlite_server.admin_token)
    expect(page.locator(f'tr[data-deployment="{NAME}"]')).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('canaryguard.token')") == (
        sqlite_server.admin_token
    )
    assert page.evaluate("localStorage.length") == 0


def test_an_unknown_token_is_refused_plainly_and_not_kept(
    sqlite_server: RunningServer, page: Page
) -> None:
    sign_in(page, sqlite_server, "cg_not-a-token")
    refusal = page.get_by_role("alert")
    expect(refusal).to_contain_text("This token is unknown, revoked or expired.")
    expect(refusal.locator(".problem")).to_have_text("the token is unknown, revoked or expired")
    assert page.evaluate("sessionStorage.getItem('canaryguard.token')") is None


def test_a_reporter_token_is_told_which_roles_read_the_dashboard(
    sqlite_server: RunningServer, page: Page
) -> None:
    sign_in(page, sqlite_server, create_token(sqlite_server, "reporter"))
    expect(page.get_by_role("alert")).to_contain_text(
        "This token is a reporter: reading the dashboard needs viewer, operator or admin."
    )


def test_signing_out_forgets_the_token(sqlite_server: RunningServer, page: Page) -> None:
    sign_in(page, sqlite_server, sqlite_server.admin_token)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('canaryguard.token')") is None
    page.reload()
    expect(page.get_by_label("API token")).to_be_visible()


def test_a_token_revoked_while_signed_in_returns_to_the_sign_in(
    sqlite_server: RunningServer, page: Page
) -> None:
    secret = create_token(sqlite_server, "viewer", "alice")
    sign_in(page, sqlite_server, secret)
    expect(page.get_by_role("heading", name="Deployments")).to_be_visible()
    with sqlite_server.client() as client:
        assert client.delete("/api/v1/tokens/alice").status_code == 200
    expect(page.get_by_role("alert")).to_contain_text("The server no longer accepts this token")
    expect(page.get_by_label("API token")).to_be_visible()


# ---------------------------------------------------------------- what is shown


def test_the_overview_lists_a_canary_with_its_split_and_figures(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server, percent=12.5)
    report_outcomes(server)
    sign_in(page, server, server.admin_token)
    row = page.locator(f'tr[data-deployment="{NAME}"]')
    expect(row.locator(".state")).to_have_text("canary_active")
    expect(row.locator(".split")).to_have_text("12.5 %")
    expect(row).to_contain_text("sec@2")
    expect(row).to_contain_text("c 190")  # canary requests over the window
    expect(row).to_contain_text("s 1.11 %")  # stable's error rate: 19 of 1,710


def test_figures_refresh_without_an_event(server: RunningServer, page: Page) -> None:
    setup_canary(server)
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    canary_requests = page.locator('#figures tr[data-variant="canary"] td').first
    expect(canary_requests).to_have_text("0")
    report_outcomes(server)  # outcomes are no event: the periodic refresh shows them
    expect(canary_requests).to_have_text("190")


def test_user_typed_text_is_shown_as_text_never_as_html(
    sqlite_server: RunningServer, page: Page
) -> None:
    setup_canary(sqlite_server)
    reason = """<img src=x onerror="document.title='pwned'"><b>bold</b>"""
    with sqlite_server.client() as client:
        client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": reason})
    sign_in(page, sqlite_server, sqlite_server.admin_token, DEPLOYMENT_PAGE)
    expect(page.locator("#rollbacks td.reason")).to_have_text(reason)
    expect(page.locator("img[src=x]")).to_have_count(0)
    expect(page.locator("main b")).to_have_count(0)
    assert page.title() != "pwned"


def deployment_without_a_canary(server: RunningServer) -> str:
    """``NAME`` serving ``sec@1`` with no canary; the id of a snapshot to roll back to."""
    with server.client() as client:
        client.post("/api/v1/policies/sec/versions", json={"document": {"rate_limit": 100}})
        client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1"})
        known_good = client.post(
            f"/api/v1/deployments/{NAME}/snapshots", json={"note": "known good"}
        ).json()
        snapshot_id: str = known_good["id"]
        return snapshot_id


def request_rollback_to(server: RunningServer, snapshot_id: str) -> dict[str, Any]:
    with server.client() as client:
        response = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks",
            json={"reason": "back to known good", "to": snapshot_id, "confirm": False},
        )
        assert response.status_code == 201, response.text
        pending: dict[str, Any] = response.json()
        return pending


def test_the_overview_shows_an_open_rollback_of_a_deployment_without_a_canary(
    server: RunningServer, page: Page
) -> None:
    pending = request_rollback_to(server, deployment_without_a_canary(server))
    sign_in(page, server, server.admin_token)
    row = page.locator(f'tr[data-deployment="{NAME}"]')
    expect(row.locator(".state")).to_have_text("idle")
    expect(row).to_contain_text(f"rollback {pending['id']} pending")


def test_the_overview_drops_a_rollback_once_it_is_closed(server: RunningServer, page: Page) -> None:
    known_good = deployment_without_a_canary(server)
    pause_clock(page)
    sign_in(page, server, server.admin_token)
    row = page.locator(f'tr[data-deployment="{NAME}"]')
    expect(row.locator(".state")).to_have_text("idle")
    wait_until_live(page)
    pending = request_rollback_to(server, known_good)
    page.clock.run_for(EVENT_GAP_MS)  # the overview reads the open rollbacks again
    expect(row).to_contain_text(f"rollback {pending['id']} pending")
    page.clock.resume()
    with server.client() as client:
        cancelled = client.post(f"/api/v1/rollbacks/{pending['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    expect(row).not_to_contain_text(pending["id"])  # its event says to read them again


@pytest.mark.parametrize(
    "address",
    [
        "team000/svc/../../payments/security",  # the browser would read payments/security
        "team000/%2e%2e/payments/security",
        "Payments/Security",
    ],
)
def test_an_address_that_is_not_a_deployment_name_reads_nothing(
    sqlite_server: RunningServer, page: Page, address: str
) -> None:
    setup_canary(sqlite_server)
    read: list[str] = []
    page.on("request", lambda r: read.append(r.url) if "/api/v1/deployments/" in r.url else None)
    sign_in(page, sqlite_server, sqlite_server.admin_token, f"/#/deployments/{address}")
    expect(page.get_by_role("alert")).to_contain_text("not a deployment name")
    expect(page.locator(".summary")).to_have_count(0)
    assert read == []


# ---------------------------------------------------------------- actions


def test_a_rollback_from_the_page_rolls_the_deployment_back(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    sign_in(page, server, create_token(server, "operator", "olga"), DEPLOYMENT_PAGE)
    start_rollback(page, "canary errors up")
    page.get_by_role("button", name="Confirm rollback").click()
    expect(page.locator("#action-result")).to_contain_text("Rolled back payments/security")
    expect(page.locator(".summary .state")).to_have_text("rolled_back")
    assert (deployment(server)["state"], deployment(server)["canary"]) == ("rolled_back", None)
    [record] = rollbacks(server)
    assert (record["reason"], record["actor"], record["status"]) == (
        "canary errors up",
        "olga",
        "completed",
    )


def test_a_viewer_is_told_it_may_not_roll_back_and_nothing_changes(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    sign_in(page, server, create_token(server, "viewer"), DEPLOYMENT_PAGE)
    start_rollback(page, "canary errors up")
    page.get_by_role("button", name="Confirm rollback").click()
    refusal = page.locator("#action-result").get_by_role("alert")
    expect(refusal).to_contain_text("This token is a viewer: rolling back needs operator or admin.")
    expect(refusal.locator(".problem")).to_have_text(
        "the viewer role may not do this; it needs admin, operator"
    )
    assert (deployment(server)["state"], deployment(server)["revision"]) == ("canary_active", 2)
    assert rollbacks(server) == []


def test_a_refusal_shows_the_servers_detail_verbatim(server: RunningServer, page: Page) -> None:
    setup_canary(server)
    with server.client() as client:
        pending = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "first", "confirm": False}
        )
        assert pending.status_code == 201
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    expect(page.locator(".summary .revision")).to_have_text("2")
    start_rollback(page, "second")
    page.get_by_role("button", name="Confirm rollback").click()
    shown = page.locator("#action-result .problem")
    expect(shown).to_be_visible()
    with server.client() as client:  # the same request, refused the same way
        refused = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks",
            json={"reason": "second", "expected_revision": 2},
        )
    assert refused.status_code == 409
    expect(shown).to_have_text(refused.json()["detail"])


def test_a_deployment_needing_a_second_person_gets_a_pending_rollback_with_its_id(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    with server.client() as client:
        changed = client.patch(
            f"/api/v1/deployments/{NAME}/config", json={"changes": {"require_second_person": True}}
        )
        assert changed.status_code == 200
    sign_in(page, server, create_token(server, "operator"), DEPLOYMENT_PAGE)
    start_rollback(page, "canary errors up")
    page.get_by_role("button", name="Request rollback").click()
    result = page.locator("#action-result")
    expect(result).to_contain_text("waits for another operator's confirmation")
    [record] = rollbacks(server)
    assert record["status"] == "pending"
    expect(result).to_contain_text(f"Rollback {record['id']} waits")
    assert deployment(server)["state"] == "canary_active"


def test_another_operator_confirms_a_pending_rollback_from_the_page(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    starter = create_token(server, "operator", "olga")
    with server.client() as client:
        client.patch(
            f"/api/v1/deployments/{NAME}/config", json={"changes": {"require_second_person": True}}
        )
    with server.client(starter) as client:
        pending = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "errors", "confirm": False}
        ).json()
    sign_in(page, server, create_token(server, "operator", "omar"), DEPLOYMENT_PAGE)
    row = page.locator(f'tr[data-rollback="{pending["id"]}"]')
    row.get_by_role("button", name="Confirm…").click()
    page.get_by_role("button", name="Confirm rollback").click()
    expect(row.locator(".status")).to_have_text("completed")
    expect(page.locator(".summary .state")).to_have_text("rolled_back")
    [record] = rollbacks(server)
    assert (record["actor"], record["confirmed_by"]) == ("olga", "omar")


def test_a_pending_rollback_is_cancelled_from_the_page(server: RunningServer, page: Page) -> None:
    setup_canary(server)
    with server.client() as client:
        pending = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "errors", "confirm": False}
        ).json()
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    row = page.locator(f'tr[data-rollback="{pending["id"]}"]')
    row.get_by_role("button", name="Cancel…").click()
    page.get_by_role("button", name="Cancel rollback").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    assert deployment(server)["state"] == "canary_active"


def test_a_running_staged_rollback_shows_its_stages(server: RunningServer, page: Page) -> None:
    setup_canary(server, percent=12.5)
    with server.client() as client:
        # the next stage an hour away: the page sees the first stage, however slow the machine
        staged = client.get(f"/api/v1/deployments/{NAME}/config").json()["staged_rollback"]
        staged["stage_interval_seconds"] = 3600
        changed = client.patch(
            f"/api/v1/deployments/{NAME}/config", json={"changes": {"staged_rollback": staged}}
        )
        assert changed.status_code == 200, changed.text
        client.post(
            f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "slowly", "staged": True}
        )
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    row = page.locator('#rollbacks tr[data-status="running"]')
    # from 12.5 %, the stages at 50 % and 25 % are skipped: 10 % at once, then 0 %
    expect(row.locator(".progress")).to_contain_text("1/2 stages, canary at 10 %")


def test_a_staged_rollback_is_finished_now_from_the_page(server: RunningServer, page: Page) -> None:
    setup_canary(server)
    with server.client() as client:
        staged = client.post(
            f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "slowly", "staged": True}
        ).json()
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    page.get_by_role("button", name="Finish now…").click()
    page.get_by_label("Reason").fill("stage held too long")
    page.get_by_role("button", name="Finish now", exact=True).click()
    expect(page.locator(".summary .state")).to_have_text("rolled_back")
    with server.client() as client:
        record = client.get(f"/api/v1/rollbacks/{staged['id']}").json()
    assert record["status"] == "completed"
    assert deployment(server)["canary"] is None


def test_promote_from_the_page_makes_the_canary_stable(server: RunningServer, page: Page) -> None:
    setup_canary(server)
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    page.get_by_role("button", name="Promote…").click()
    page.get_by_role("button", name="Promote", exact=True).click()
    expect(page.locator("#action-result")).to_contain_text("Promoted: stable is now sec@2")
    after = deployment(server)
    assert (after["stable"]["version"], after["canary"]) == ("2", None)


def test_abort_from_the_page_stops_the_canary_with_the_reason(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    page.get_by_role("button", name="Abort…").click()
    page.get_by_label("Reason").fill("wrong release window")
    page.get_by_role("button", name="Abort canary").click()
    expect(page.locator("#action-result")).to_contain_text("Canary aborted")
    after = deployment(server)
    assert (after["canary"], after["state_reason"]) == (None, "wrong release window")


def test_an_automatic_rollback_in_its_veto_window_is_vetoed_from_the_page(
    server: RunningServer, page: Page
) -> None:
    with server.client() as client:
        for document in ({"rate_limit": 100}, {"rate_limit": 50}):
            client.post("/api/v1/policies/sec/versions", json={"document": document})
        config = {"veto_seconds": 600}
        client.post("/api/v1/deployments", json={"name": NAME, "stable": "sec@1", "config": config})
        client.post(f"/api/v1/deployments/{NAME}/canary", json={"policy": "sec@2", "percent": 50})
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    decide_regression(server)
    page.get_by_role("button", name="Veto…").click()
    page.get_by_role("button", name="Veto rollback").click()
    expect(page.locator("#action-result")).to_contain_text("Automatic rollback vetoed")
    with server.client() as client:
        verdict = client.get(f"/api/v1/deployments/{NAME}/verdict").json()
    assert verdict["decision"]["vetoed_by"] == "admin"
    assert deployment(server)["state"] == "canary_active"


@pytest.mark.parametrize(
    ("ask", "answer"), [("Confirm…", "Confirm rollback"), ("Cancel…", "Cancel rollback")]
)
def test_confirm_and_cancel_ask_first_naming_the_rollback(
    server: RunningServer, page: Page, ask: str, answer: str
) -> None:
    setup_canary(server)
    pending = request_pending_rollback(server, "canary errors up")
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    page.locator(f'tr[data-rollback="{pending["id"]}"]').get_by_role("button", name=ask).click()
    question = page.get_by_role("group", name=pending["id"])
    expect(question).to_contain_text(pending["id"])
    expect(question).to_contain_text("canary errors up")
    expect(question).to_contain_text(pending["target_snapshot_id"])
    expect(question.get_by_role("button", name=answer)).to_be_focused()
    question.get_by_role("button", name="Back", exact=True).click()
    expect(question).to_have_count(0)
    assert [r["status"] for r in rollbacks(server)] == ["pending"]


def test_an_action_awaiting_its_answer_keeps_its_buttons_disabled_across_redraws(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    pending = request_pending_rollback(server)
    page.add_init_script(FETCH_LOG)
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    wait_until_live(page)
    row = page.locator(f'tr[data-rollback="{pending["id"]}"]')
    row.get_by_role("button", name="Confirm…").click()
    page.evaluate("window.holdFetches('/confirm')")
    page.get_by_role("button", name="Confirm rollback").click()
    take_snapshot(server, "meanwhile")  # an event: the page is drawn again
    expect(page.locator("#snapshots tbody tr")).to_have_count(2)
    expect(row.get_by_role("button", name="Confirm…")).to_be_disabled()
    expect(row.get_by_role("button", name="Cancel…")).to_be_disabled()
    expect(page.get_by_role("button", name="Confirm rollback")).to_be_disabled()
    page.evaluate("window.releaseFetches()")
    expect(row.locator(".status")).to_have_text("completed")
    assert fetches(page, "/confirm") == 1


def test_a_redraw_keeps_the_focus_on_a_rollbacks_button(
    sqlite_server: RunningServer, page: Page
) -> None:
    setup_canary(sqlite_server)
    pending = request_pending_rollback(sqlite_server)
    sign_in(page, sqlite_server, sqlite_server.admin_token, DEPLOYMENT_PAGE)
    wait_until_live(page)
    cancel = page.locator(f'tr[data-rollback="{pending["id"]}"]').get_by_role(
        "button", name="Cancel…"
    )
    cancel.focus()
    take_snapshot(sqlite_server, "meanwhile")  # an event: the page is drawn again
    expect(page.locator("#snapshots tbody tr")).to_have_count(2)
    expect(cancel).to_be_focused()


def promote_after_a_change(server: RunningServer, page: Page) -> None:
    """Open Promote… on revision 2, move the split elsewhere (revision 3), then promote."""
    setup_canary(server)
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    expect(page.locator(".summary .revision")).to_have_text("2")
    page.get_by_role("button", name="Promote…").click()
    expect(page.get_by_role("form", name=f"Promote {NAME}")).to_contain_text("revision 2")
    with server.client() as client:
        moved = client.post(f"/api/v1/deployments/{NAME}/split", json={"percent": 20})
        assert moved.status_code == 200, moved.text
    page.get_by_role("button", name="Promote", exact=True).click()


def test_an_action_sends_the_revision_it_shows_and_a_change_in_between_is_refused(
    server: RunningServer, page: Page
) -> None:
    promote_after_a_change(server, page)
    expect(page.locator("#action-result").get_by_role("alert")).to_contain_text(
        "Refused (promoting): a conflict."
    )
    after = deployment(server)
    assert (after["revision"], after["stable"]["version"], after["canary"]["version"]) == (
        3,
        "1",
        "2",
    )


def test_after_a_conflict_the_form_closes_and_the_next_try_uses_the_current_revision(
    server: RunningServer, page: Page
) -> None:
    promote_after_a_change(server, page)
    expect(page.locator("#action-result")).to_contain_text("a conflict")
    form = page.get_by_role("form", name=f"Promote {NAME}")
    expect(form).to_have_count(0)
    expect(page.locator(".summary .revision")).to_have_text("3")
    page.get_by_role("button", name="Promote…").click()
    expect(form).to_contain_text("revision 3")
    page.get_by_role("button", name="Promote", exact=True).click()
    expect(page.locator("#action-result")).to_contain_text("Promoted: stable is now sec@2")
    assert deployment(server)["canary"] is None


# ---------------------------------------------------------------- live updates


def test_a_change_made_elsewhere_shows_without_a_reload(server: RunningServer, page: Page) -> None:
    setup_canary(server)
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    wait_until_live(page)
    with server.client() as client:
        client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "from the CLI"})
    # the event list is read once per visit: a new entry can only have come over the stream
    expect(page.locator('.events li[data-type="rollback.completed"]')).to_be_visible()
    expect(page.locator(".summary .state")).to_have_text("rolled_back")


def test_the_stream_resumes_after_a_drop_with_the_events_missed(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    read_until = newest_event(server)
    resumed_from: list[str] = []
    page.on(
        "request",
        lambda r: (
            resumed_from.append(r.headers.get("last-event-id", "")) if is_stream(r.url) else None
        ),
    )
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    wait_until_live(page)
    with server.client() as client:
        client.post(f"/api/v1/deployments/{NAME}/snapshots", json={"note": "before the drop"})
    # the canary's own snapshot, then this one, which came over the stream (the newest first)
    expect(page.locator('.events li[data-type="snapshot.created"]')).to_have_count(2)
    last_seen = int(page.locator(".events li").first.get_attribute("data-seq") or 0)
    assert server.app is not None
    assert server.loop is not None
    shutdown = server.app.state.shutdown
    server.loop.call_soon_threadsafe(shutdown.set)  # every open stream ends
    expect(page.locator("#live")).to_have_text("reconnecting…")
    with server.client() as client:
        client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "while away"})
    server.loop.call_soon_threadsafe(shutdown.clear)
    expect(page.locator('.events li[data-type="rollback.completed"]')).to_be_visible()
    assert resumed_from[0] == str(read_until)  # the first stream starts after the log read
    assert max(int(i or 0) for i in resumed_from) >= last_seen > 0


def test_an_event_committed_while_the_stream_connects_is_not_missed(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    read_until = newest_event(server)
    first_stream: list[str] = []

    def roll_back_then_connect(route: Route) -> None:
        if not first_stream:  # the page has read the event log; its stream is not open yet
            first_stream.append(route.request.headers.get("last-event-id", ""))
            with server.client() as client:
                client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "meanwhile"})
        route.continue_()

    page.route(is_stream, roll_back_then_connect)
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    expect(page.locator('.events li[data-type="rollback.completed"]')).to_be_visible()
    assert first_stream == [str(read_until)]


def test_a_stream_position_from_another_database_reads_the_events_again(
    sqlite_server: RunningServer, page: Page
) -> None:
    setup_canary(sqlite_server)
    foreign = {
        "specversion": "1.0",
        "id": "999999",  # beyond the server's newest event: the server refuses to resume there
        "source": f"/deployments/{NAME}",
        "type": "io.canaryguard.snapshot.created",
        "subject": NAME,
        "time": "2020-01-01T00:00:00Z",
        "data": {"snapshot_id": "snap-from-elsewhere", "kind": "manual", "pinned": False},
    }
    served: list[str] = []

    def first_read_from_elsewhere(route: Route) -> None:
        if served:
            route.continue_()
        else:
            served.append(route.request.url)
            route.fulfill(json=[foreign])

    page.route(is_event_log, first_read_from_elsewhere)
    sign_in(page, sqlite_server, sqlite_server.admin_token, DEPLOYMENT_PAGE)
    events = page.locator(".events")
    expect(events.locator('li[data-type="canary.started"]')).to_be_visible()
    expect(events).not_to_contain_text("snap-from-elsewhere")
    wait_until_live(page)


def test_hidden_tabs_let_go_of_their_streams_so_a_seventh_tab_still_loads(
    sqlite_server: RunningServer, page: Page
) -> None:
    setup_canary(sqlite_server)
    page.context.add_init_script(VISIBILITY_SWITCH)
    page.context.add_init_script(
        f"sessionStorage.setItem('canaryguard.token', {json.dumps(sqlite_server.admin_token)})"
    )
    for _ in range(6):  # Chromium opens six HTTP/1.1 connections to a host, no more
        tab = page.context.new_page()
        tab.goto(sqlite_server.url + DEPLOYMENT_PAGE)
        wait_until_live(tab)
        set_hidden(tab, True)
    page.goto(sqlite_server.url + DEPLOYMENT_PAGE)
    wait_until_live(page)
    expect(page.locator(".summary .state")).to_have_text("canary_active")


def test_a_tab_shown_again_resumes_the_stream_from_the_last_event_it_saw(
    server: RunningServer, page: Page
) -> None:
    setup_canary(server)
    page.add_init_script(VISIBILITY_SWITCH)
    streams: list[str] = []
    page.on(
        "request",
        lambda r: streams.append(r.headers.get("last-event-id", "")) if is_stream(r.url) else None,
    )
    sign_in(page, server, server.admin_token, DEPLOYMENT_PAGE)
    wait_until_live(page)
    last_seen = page.locator(".events li").first.get_attribute("data-seq")
    set_hidden(page, True)
    expect(page.locator("#live")).to_have_text("paused")
    with server.client() as client:
        client.post(f"/api/v1/deployments/{NAME}/rollbacks", json={"reason": "while hidden"})
    set_hidden(page, False)
    expect(page.locator('.events li[data-type="rollback.completed"]')).to_be_visible()
    expect(page.locator(".summary .state")).to_have_text("rolled_back")
    assert streams == [last_seen, last_seen]


def test_a_hidden_tab_reads_nothing(sqlite_server: RunningServer, page: Page) -> None:
    setup_canary(sqlite_server)
    pause_clock(page)
    page.add_init_script(VISIBILITY_SWITCH + FETCH_LOG)
    sign_in(page, sqlite_server, sqlite_server.admin_token, DEPLOYMENT_PAGE)
    wait_until_live(page)
    set_hidden(page, True)
    read_before = fetches(page, "/api/v1/")
    take_snapshot(sqlite_server, "while hidden")
    page.clock.run_for(REFRESH_MS * 5)
    assert fetches(page, "/api/v1/") == read_before
    set_hidden(page, False)
    expect(page.locator("#snapshots tbody tr")).to_have_count(2)


def test_the_next_poll_starts_a_fixed_delay_after_a_slow_read_ends(
    sqlite_server: RunningServer, page: Page
) -> None:
    setup_canary(sqlite_server)
    pause_clock(page)
    page.add_init_script(FETCH_LOG)
    sign_in(page, sqlite_server, sqlite_server.admin_token, DEPLOYMENT_PAGE)
    canary_requests = page.locator('#figures tr[data-variant="canary"] td').first
    expect(canary_requests).to_have_text("0")
    wait_until_live(page)
    page.evaluate("window.holdFetches('/status')")  # the server is slow to answer
    page.clock.run_for(REFRESH_MS)
    assert fetches(page, "/status") == 2
    page.clock.run_for(REFRESH_MS * 3)  # no read starts while one is running
    assert fetches(page, "/status") == 2
    report_outcomes(sqlite_server)
    page.evaluate("window.releaseFetches()")
    expect(canary_requests).to_have_text("190")
    assert fetches(page, "/status") == 2  # the next does not start at once
    page.clock.run_for(REFRESH_MS - 1)
    assert fetches(page, "/status") == 2
    page.clock.run_for(1)
    assert fetches(page, "/status") == 3


def test_a_burst_of_events_refreshes_the_page_once(
    sqlite_server: RunningServer, page: Page
) -> None:
    setup_canary(sqlite_server)
    pause_clock(page)
    page.add_init_script(FETCH_LOG)
    sign_in(page, sqlite_server, sqlite_server.admin_token, DEPLOYMENT_PAGE)
    expect(page.locator("#snapshots tbody tr")).to_have_count(1)
    wait_until_live(page)
    for i in range(5):
        take_snapshot(sqlite_server, f"burst {i}")
    expect(page.locator('.events li[data-type="snapshot.created"]')).to_have_count(6)
    page.clock.run_for(EVENT_GAP_MS - 1)
    assert fetches(page, "/status") == 1
    page.clock.run_for(1)
    assert fetches(page, "/status") == 2
    expect(page.locator("#snapshots tbody tr")).to_have_count(6)


# ---------------------------------------------------------------- what the page may do


def test_the_pages_carry_a_strict_content_security_policy(sqlite_server: RunningServer) -> None:
    for path in ("/", "/dashboard/app.js", "/dashboard/app.css", "/dashboard/icon.svg"):
        headers = httpx.get(sqlite_server.url + path).headers
        policy = headers["content-security-policy"]
        assert policy == CONTENT_SECURITY_POLICY, path
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe" not in policy
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"


def test_the_documented_policy_is_the_one_served() -> None:
    assert f"`{CONTENT_SECURITY_POLICY}`" in (DOCS / "dashboard.md").read_text()


def test_the_page_has_no_inline_script_or_style() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/dashboard/app.js">']
    assert "<style" not in html
    assert " style=" not in html
    assert " on" not in re.sub(r"\s+", " ", "".join(re.findall(r"<[^>]+>", html)))


def test_the_page_loads_nothing_from_elsewhere(sqlite_server: RunningServer, page: Page) -> None:
    setup_canary(sqlite_server)
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    sign_in(page, sqlite_server, sqlite_server.admin_token)
    page.get_by_role("link", name=NAME).click()
    wait_until_live(page)
    expect(page.locator("#figures")).to_be_visible()
    assert urls
    assert [url for url in urls if not url.startswith(f"{sqlite_server.url}/")] == []


def test_html_sinks_throw_under_the_pages_policy(
    sqlite_server: RunningServer, browsing: Browsing
) -> None:
    browsing.page.goto(sqlite_server.url + "/")
    outcome = browsing.page.evaluate(
        "() => { try { document.body.innerHTML = '<b>x</b>'; return 'assigned'; }"
        " catch (error) { return error.name; } }"
    )
    assert outcome == "TypeError"
    browsing.problems.clear()  # the browser reports the refused assignment, as it should


def test_the_token_never_leaves_in_a_url_or_a_referrer(
    sqlite_server: RunningServer, page: Page
) -> None:
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("referer"))))
    sign_in(page, sqlite_server, sqlite_server.admin_token)
    wait_until_live(page)
    assert requests
    assert [url for url, _ in requests if sqlite_server.admin_token in url] == []
    assert [referrer for _, referrer in requests if referrer] == []  # no-referrer: none at all


def test_the_pages_name_rule_is_the_servers() -> None:
    # app.js copies the server's rule for deployment names (it must refuse what the server
    # would never have made, such as ".." parts, before it builds a URL): keep them one rule
    script = (resources.files("canaryguard.dashboard") / "static" / "app.js").read_text()
    rule = re.search(r"const NAME_RULE = /(.+)/;", script)
    reserved = re.search(r"const RESERVED_LAST_PARTS = new Set\(\[(.*?)\]\);", script, re.S)
    assert rule is not None
    assert reserved is not None
    assert rule.group(1).replace("\\/", "/") == rollout._NAME.pattern
    assert set(re.findall(r'"([a-z_-]+)"', reserved.group(1))) == rollout.RESERVED_LAST_PARTS
