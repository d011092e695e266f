"""The operators' admin in a real browser at 1366 px: the dashboard's charts and figures, the
failed replies with their errors and the providers from the environment, with no CSP
violation and nothing cut off. With PARLEY_SCREENSHOTS=1 it also writes the screenshots in
docs/screenshots/ (docs/admin.md shows them)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.embedded import RunningParley, running_parley
from tests.harness.processes import manage, require_binary

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

WIDTH, HEIGHT = 1366, 900
WAIT_MS = 20_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Two weeks of business for two organisations, as the ledger and the cache record it; prints
# the dashboard's expected totals (every organisation, the last 14 days).
SEED = """
import json, random
from datetime import timedelta
from decimal import Decimal
from django.utils import timezone
from accounts.models import Membership, UsageLedger, User
from accounts.services import account_create, organisation_create
from accounts.usage import ledger_scoped, usage_totals
from chat.models import Conversation, Message
from llm.cache_models import CacheStat

rng = random.Random(16)
User.objects.create_superuser(username="root", password="operator passphrase")
now = timezone.now()
models = {"gpt-4o-mini": Decimal("0.0000006"), "claude-haiku": Decimal("0.000004"), "local": 0}
for name, scale in (("Acme Corp", 3), ("Globex", 1)):
    admin = account_create(username=name.split()[0].lower(), password=None)
    org = organisation_create(name=name, admin=admin)
    for day in range(14):
        for model, price in models.items():
            for _ in range(rng.randint(1, 4) * scale):
                failed = rng.random() < 0.06
                prompt, completion = rng.randint(50, 900), 0 if failed else rng.randint(20, 700)
                UsageLedger.objects.create(
                    organisation=org, user=admin, state="settled", model=model,
                    provider=model.split("-")[0], prompt_tokens=prompt,
                    completion_tokens=completion, used_tokens=prompt + completion,
                    cost=price * (prompt + completion), outcome="failed" if failed else "complete",
                    error_code="provider_failed" if failed else "",
                    first_token_ms=None if failed else int(rng.lognormvariate(6, 0.5)),
                    created_at=now - timedelta(days=day, minutes=rng.randint(0, 600)),
                )
        CacheStat.objects.create(
            namespace=f"org-{org.pk}", organisation=org, day=(now - timedelta(days=day)).date(),
            lookups=40 * scale, exact_hits=6 * scale, semantic_hits=3 * scale,
            saved_tokens=4000 * scale, saved_cost=Decimal("0.0150") * scale,
        )
    chat = Conversation.objects.create(owner=admin, organisation=org, title="Quarterly report")
    for code, text in (
        ("provider_failed", "The model provider failed (HTTP 502) after 3 attempts."),
        ("provider_unavailable", "No provider could answer: every circuit is open."),
    ):
        Message.objects.create(conversation=chat, role="assistant", status="failed",
                               model="gpt-4o-mini", provider="openai", error_code=code,
                               error_message=text)
    Message.objects.create(conversation=chat, role="assistant", status="streaming",
                           model="claude-haiku", provider="anthropic", seq=412)
totals = usage_totals(ledger_scoped(organisation_ids=None, since=(now - timedelta(days=13)).date()))
print(json.dumps({"tokens": totals.tokens, "replies": totals.replies, "cost": str(totals.cost)}))
"""


@pytest.fixture(scope="module")
def parley(tmp_path_factory) -> Iterator[tuple[RunningParley, dict]]:
    require_binary("chromium")
    workdir = tmp_path_factory.mktemp("parley-admin")
    with running_parley(workdir, SERVE_STATIC="true", DJANGO_DEBUG="false") as server:
        expected = json.loads(manage("shell", "-c", SEED, env=server.env).strip().splitlines()[-1])
        yield server, expected


def _real_reply(server: RunningParley) -> None:
    """One reply through the REST API, so the dashboard also counts a real one."""

    def call(method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{server.url}/api/v1/{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    conversation = call("POST", "conversations", {"title": "Real"})
    sent = call("POST", f"conversations/{conversation['id']}/messages", {"text": "Hello"})
    deadline = time.monotonic() + 30
    while call("GET", f"messages/{sent['reply']}")["status"] not in ("complete", "failed"):
        assert time.monotonic() < deadline, "the real reply did not finish"
        time.sleep(0.05)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require_binary("chromium"), args=CHROMIUM_ARGS
        )
        context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text)
                if m.type == "error"
                and ("Content Security Policy" in m.text or "Refused" in m.text)
                else None
            ),
        )
        try:
            yield page
            assert problems == [], problems
        finally:
            browser.close()


def _fits(page) -> None:
    """Nothing wider than the window: wide lists scroll inside their box, not off the page."""
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"the page is {width} px wide at {WIDTH} px"


def _accessible(page) -> None:
    """axe-core finds no serious or critical violation on the page."""
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    bad = [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:3]}"
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], bad


def _screenshot(page, name: str) -> None:
    if os.environ.get("PARLEY_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_the_admin_at_1366_px(parley, page):
    from playwright.sync_api import expect

    server, expected = parley
    _real_reply(server)
    page.goto(f"{server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", "operator passphrase")
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")
    expect(page.get_by_role("link", name="Provider health (/llm/health)")).to_be_visible()
    _fits(page)

    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(f"{server.url}/admin/dashboard/")
    expect(page.locator("svg.chart")).to_have_count(8)
    # The seeded fortnight plus the real reply (the program's personal organisation).
    tokens = int(page.locator("#kpi-tokens").inner_text())
    replies = int(page.locator("#kpi-replies").inner_text())
    assert replies == expected["replies"] + 1 and tokens > expected["tokens"]
    expect(page.locator("#kpi-live")).to_have_text("2")  # one seeded per organisation
    expect(page.locator("tr.failed-row")).to_have_count(4)
    expect(page.locator("#failed")).to_contain_text("provider_unavailable")
    first_bar = page.locator("svg.chart rect.bar").first
    assert first_bar.evaluate("e => getComputedStyle(e).fill") == "rgb(65, 118, 144)"  # the CSS
    _screenshot(page, "admin-dashboard-1366.png")
    _fits(page)
    _accessible(page)

    page.goto(f"{server.url}/admin/chat/message/?status__exact=failed")
    error = page.locator("#result_list td.field-error").filter(has_text="provider_failed")
    expect(error.first).to_contain_text("provider_failed: The model provider failed")
    expect(error.first).to_be_in_viewport()  # readable without scrolling sideways
    _screenshot(page, "admin-failed-replies-1366.png")
    _fits(page)
    _accessible(page)

    page.goto(f"{server.url}/admin/llm/provider/")
    expect(page.locator("tr.settings-provider")).to_have_count(2)  # local and simulated
    expect(page.locator("#settings-providers")).to_contain_text("closed")
    _screenshot(page, "admin-providers-1366.png")
    _fits(page)
    _accessible(page)
