"""The dashboard in Debian's Chromium (Playwright) against a real server.

Behaviours that touch the database (what is shown, what the buttons change, live updates) run
on SQLite and PostgreSQL; those of the page alone (sign-in, headers, what it loads and how it
shows text) on the embedded default.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from canaryguard.dashboard import CONTENT_SECURITY_POLICY
from tests.browser import chromium
from tests.servers import RunningServer, running_server

NAME = "payments/security"
DEPLOYMENT_PAGE = f"/#/deployments/{NAME}"
ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "canaryguard" / "dashboard" / "static"
DOCS = ROOT / "docs"

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
    row.get_by_role("button", name="Confirm").click()
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
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".status")).to_have_text("cancelled")
    assert deployment(server)["state"] == "canary_active"


def test_a_running_staged_rollback_shows_its_stages(server: RunningServer, page: Page) -> None:
    setup_canary(server, percent=12.5)
    with server.client() as client:
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
    page.get_by_role("button", name="Veto").click()
    expect(page.locator("#action-result")).to_contain_text("Automatic rollback vetoed")
    with server.client() as client:
        verdict = client.get(f"/api/v1/deployments/{NAME}/verdict").json()
    assert verdict["decision"]["vetoed_by"] == "admin"
    assert deployment(server)["state"] == "canary_active"


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
    resumed_from: list[str] = []
    stream = f"{server.url}/api/v1/events"
    page.on(
        "request",
        lambda r: (
            resumed_from.append(r.headers.get("last-event-id", "")) if r.url == stream else None
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
    assert resumed_from[0] == ""  # the first stream starts with the next event
    assert max(int(i or 0) for i in resumed_from) >= last_seen > 0


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
    assert [r for r in requests if sqlite_server.admin_token in r[0] or r[1]] == []
