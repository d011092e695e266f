"""Every page at phone and desktop width, light and dark, in headless Chromium: no sideways
scrolling at 360/390 px (the conversation list becomes a drawer), the theme from the system or
the toggle (remembered), the organisation menu, the new API key card, and axe-core reporting
no serious or critical accessibility violation on any page.

With PARLEY_SCREENSHOTS=1 the tests also save each page to docs/screenshots/ (README links
them); CI leaves that unset, so it never rewrites them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.browser.support import (
    WAIT_MS,
    send,
    sign_in,
    wait_final,
)
from tests.harness.processes import manage

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
# (name, path, signed in): every page a person sees.
PAGES = [
    ("login", "/accounts/login/", False),
    ("signup", "/accounts/signup/", False),
    ("chat", None, True),  # the conversation the fixture below starts
    ("new-chat", "/", True),
    ("api-keys", "/accounts/keys/", True),
    ("api-help", "/help/api/", True),
    ("two-factor", "/accounts/2fa/", True),
    ("organisations", "/accounts/organisations/", True),
]


WIDEST = """() => Array.from(document.querySelectorAll("body *"))
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
  .slice(0, 5).map(e => e.tagName + "." + e.className + "#" + e.id)"""


def no_horizontal_overflow(page) -> None:
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], (
        f"{page.url} is {widths[0]} px wide in a {widths[1]} px window: {page.evaluate(WIDEST)}"
    )


def serious_violations(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.fixture(scope="module")
def conversation_url(server, browser) -> str:
    """One chat with a finished reply (Markdown, a list, code) to look at."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    try:
        sign_in(page, server)
        reply = send(page, "Show me a list and some code")
        assert wait_final(reply) == "complete"
        return page.url
    finally:
        context.close()


def visit(page, server, path: str | None, conversation_url: str) -> None:
    from playwright.sync_api import expect

    page.goto(conversation_url if path is None else f"{server.url}{path}")
    if page.locator("#chat").count():
        expect(page.locator("#status")).to_have_text("Connected")
        if path is None:
            expect(page.locator("article.message--assistant pre code.hljs")).to_have_count(1)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_page_passes_axe_without_serious_violations(
    open_page, server, conversation_url, scheme, width
):
    w, h = WIDTHS[width]
    page = open_page(width=w, height=h, color_scheme=scheme)
    problems = {}
    signed_in = False
    for name, path, needs_sign_in in PAGES:
        if needs_sign_in and not signed_in:
            sign_in(page, server)
            signed_in = True
        if not needs_sign_in and signed_in:
            continue
        visit(page, server, path, conversation_url)
        assert page.evaluate("document.documentElement.dataset.theme") == scheme
        if width == "phone":
            no_horizontal_overflow(page)
        if found := serious_violations(page):
            problems[name] = found
        if os.environ.get("PARLEY_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}-{scheme}.png"))
    assert problems == {}, problems


@pytest.mark.parametrize("width", [360, 390])
def test_phone_width_has_no_sideways_scroll_and_the_list_is_a_drawer(
    open_page, server, conversation_url, width
):
    from playwright.sync_api import expect

    page = open_page(width=width, height=780, reduced_motion="reduce")
    sign_in(page, server)
    page.goto(conversation_url)
    expect(page.locator("#status")).to_have_text("Connected")
    no_horizontal_overflow(page)
    # The top bar is one row, everything in it reachable.
    topbar = page.locator(".topbar").bounding_box()
    assert topbar and topbar["height"] <= 60, topbar
    for selector in ("#drawer-toggle", "#theme-toggle", "#account-menu summary"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)
    sidebar = page.locator("#sidebar")
    expect(sidebar).to_be_hidden()
    toggle = page.locator("#drawer-toggle")
    toggle.click()
    expect(sidebar).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(page.locator("#sidebar .new-chat")).to_be_focused()
    expect(page.locator("#conversations li.conversation").first).to_be_visible()
    no_horizontal_overflow(page)
    if os.environ.get("PARLEY_SCREENSHOTS") == "1" and width == 390:
        page.screenshot(path=str(SCREENSHOTS / "chat-drawer-phone-light.png"))
    page.keyboard.press("Escape")
    expect(sidebar).to_be_hidden()
    expect(toggle).to_be_focused()
    # Ctrl+K opens the drawer at the search box.
    page.locator("#composer-text").focus()
    page.keyboard.press("Control+k")
    expect(page.locator("#conversation-search")).to_be_focused()
    # The account menu opens inside the window, Sign out included.
    page.keyboard.press("Escape")
    page.click("#account-menu summary")
    sign_out = page.get_by_role("button", name="Sign out")
    expect(sign_out).to_be_visible()
    box = sign_out.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, box


def test_a_wide_window_keeps_the_list_beside_a_readable_column(open_page, server, conversation_url):
    from playwright.sync_api import expect

    page = open_page(width=1920, height=1080)
    sign_in(page, server)
    page.goto(conversation_url)
    no_horizontal_overflow(page)
    expect(page.locator("#sidebar")).to_be_visible()
    expect(page.locator("#drawer-toggle")).to_be_hidden()
    reply = page.locator("article.message--assistant").bounding_box()
    assert reply and reply["width"] <= 900, reply  # lines stay short enough to read


def test_dark_mode_follows_the_system_and_the_toggle_is_remembered(open_page, server):
    from playwright.sync_api import expect

    page = open_page(color_scheme="dark")
    sign_in(page, server)
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background != "rgb(246, 247, 249)", background  # not the light page's
    toggle = page.locator("#theme-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    toggle.click()
    expect(html).to_have_attribute("data-theme", "light")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    page.reload()
    expect(html).to_have_attribute("data-theme", "light")  # the choice outlives the page
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(246, 247, 249)"
    toggle.click()
    expect(html).to_have_attribute("data-theme", "dark")


def test_the_organisation_switch_is_a_menu_that_works_from_the_keyboard(page, server):
    from playwright.sync_api import expect

    username = server.add_user("switcher")
    manage(
        "shell",
        "-c",
        "from accounts.models import User; from accounts.services import organisation_create; "
        f"organisation_create(name='Acme Research', admin=User.objects.get(username={username!r}))",
        env=server.env,
    )
    sign_in(page, server, username)
    menu = page.locator("#org-menu")
    expect(menu.locator("summary")).to_have_text(re.compile(username))
    menu.locator("summary").focus()
    page.keyboard.press("Enter")
    items = menu.locator("button.menu__item")
    expect(items).to_have_count(2)
    expect(menu.locator("[aria-current='true']")).to_have_text(username)
    page.keyboard.press("Escape")
    expect(items.first).to_be_hidden()
    expect(menu.locator("summary")).to_be_focused()
    # Open it again and choose the other organisation, all from the keyboard.
    page.keyboard.press("Enter")
    menu.get_by_role("button", name="Acme Research").focus()
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    expect(page.locator("#org-menu summary")).to_have_text(re.compile("Acme Research"))
    expect(page.locator("#org-menu [aria-current='true']")).to_have_text("Acme Research")


def test_a_new_api_key_fits_its_card_and_has_a_copy_button(open_page, server):
    from playwright.sync_api import expect

    page = open_page(width=390, height=844, permissions=["clipboard-read", "clipboard-write"])
    sign_in(page, server)
    page.goto(f"{server.url}/accounts/keys/")
    page.fill("input[name=name]", "laptop")
    page.click("main form button[type=submit]")
    key = page.locator("#new-key code")
    expect(key).to_have_text(re.compile(r"^pk_"))
    no_horizontal_overflow(page)
    card = page.locator("#new-key").evaluate("e => [e.scrollWidth, e.clientWidth]")
    assert card[0] <= card[1], card
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == key.text_content().strip()
    # Help is a served page, not a file in the repository.
    page.get_by_role("link", name="How to use the API").click()
    page.wait_for_url(f"{server.url}/help/api/")
    expect(page.locator("h1")).to_have_text("Using Parley from a program")


def test_everything_on_the_chat_page_is_reachable_by_tab(page, server, conversation_url):
    """Tab walks through the controls a mouse would use, in order, and never gets stuck."""
    sign_in(page, server)
    page.goto(conversation_url)
    wanted = {
        "skip-link",
        "theme-toggle",
        "new-chat",
        "conversation-search",
        "composer-text",
        "model-picker",
        "send-button",
        "Copy",
        "Regenerate",
        "Copy code",
        "shortcuts-button",
    }
    seen: set[str] = set()
    for _ in range(80):
        page.keyboard.press("Tab")
        seen.add(
            page.evaluate(
                """() => { const e = document.activeElement;
                   return e.id || e.className.split(' ').find(c => c === 'skip-link' ||
                   c === 'new-chat') || e.textContent.trim(); }"""
            )
        )
    missing = {w for w in wanted if not any(w == s or s.startswith(w) for s in seen)}
    assert not missing, (missing, seen)
