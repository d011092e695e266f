"""docs/page.md's promises that the other browser tests leave out, played in headless Chromium
against a real Daphne (tests/browser/support.py) as a person with only the document would:
search by every word in any order, the drawer's 720 px edge, Esc closing what is open before it
stops a reply, the edit box's Shift+Enter and Esc, and ⌘+K beside Ctrl+K. Every wait is
bounded."""

from __future__ import annotations

import re
from itertools import count

import pytest

from tests.browser.support import WAIT_MS, SocketRelay, send, sign_in, wait_final

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

_names = count(1)


def fresh_user(server) -> str:
    return server.add_user(f"acceptance2-{next(_names)}")


def new_chat(page, server, text: str):
    page.goto(f"{server.url}/")
    reply = send(page, text)
    assert wait_final(reply) == "complete"
    return reply


def test_search_takes_every_word_in_any_order_ignoring_case_and_accents(page, server):
    """page.md: "search as you type (every word, case and accents ignored)"."""
    from playwright.sync_api import expect

    sign_in(page, server, fresh_user(server))
    new_chat(page, server, "Crème brûlée at home")
    new_chat(page, server, "Leek soup at the office")
    items = page.locator("#conversations li.conversation")
    expect(items).to_have_count(2)
    search = page.locator("#conversation-search")
    for query, found in (
        ("HOME creme", ["Crème brûlée"]),
        ("brulee CRÈME", ["Crème brûlée"]),
        ("at", ["Crème brûlée", "Leek soup"]),
        ("soup home", []),  # each word on some chat, but not every word on one
    ):
        search.fill(query)
        visible = items.locator("visible=true")
        expect(visible).to_have_count(len(found))
        for title in found:
            expect(visible.filter(has_text=title)).to_have_count(1)


@pytest.mark.parametrize(("width", "drawer"), [(720, True), (721, False)])
def test_the_list_is_a_drawer_on_screens_up_to_720_px(open_page, server, width, drawer):
    """page.md: "On screens up to 720 px the list is a drawer behind the ☰ button"."""
    from playwright.sync_api import expect

    page = open_page(width=width, height=800)
    sign_in(page, server)
    if drawer:
        expect(page.locator("#sidebar")).to_be_hidden()
        expect(page.locator("#drawer-toggle")).to_be_visible()
    else:
        expect(page.locator("#sidebar")).to_be_visible()
        expect(page.locator("#drawer-toggle")).to_be_hidden()


def test_esc_closes_an_open_menu_first_and_only_then_stops_the_reply(page, slow_server):
    """page.md, Keyboard: Esc "close a menu, dialog or the drawer; else stop the running
    reply"."""
    from playwright.sync_api import expect

    sign_in(page, slow_server, fresh_user(slow_server))
    new_chat(page, slow_server, "A chat with a menu")
    reply = send(page, "Take your time, please.")
    expect(reply).to_have_attribute("data-status", "streaming", timeout=WAIT_MS)
    menu = page.locator("#export-menu")
    page.click("#export-menu summary")
    expect(menu).to_have_attribute("open", "")
    page.keyboard.press("Escape")
    expect(menu).not_to_have_attribute("open", "")
    assert reply.get_attribute("data-status") in ("pending", "streaming")
    page.keyboard.press("Escape")
    assert wait_final(reply, timeout=30) == "cancelled"
    expect(reply.locator(".message__status")).to_have_text("Stopped")


def test_the_edit_box_takes_shift_enter_as_a_new_line_and_esc_cancels(page, server):
    """page.md: Edit "(Enter saves and sends, Esc cancels)"; Keyboard: Shift+Enter is a new
    line "in the composer and the edit box"."""
    from playwright.sync_api import expect

    relay = SocketRelay()
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, server, fresh_user(server))
    new_chat(page, server, "Keep me as I am")
    user = page.locator("#messages article.message--user")
    user.locator("[data-edit]").click()
    box = user.locator(".edit-form textarea")
    expect(box).to_be_focused()
    box.press("End")
    box.press("Shift+Enter")
    box.type("second line")
    expect(box).to_have_value("Keep me as I am\nsecond line")
    box.press("Escape")
    expect(user.locator(".edit-form")).to_be_hidden()
    expect(user.locator(".plain")).to_have_text("Keep me as I am")
    expect(page.locator("#messages article.message--assistant")).to_have_count(1)
    assert wait_final(page.locator("#messages article.message--assistant")) == "complete"
    assert [f for _, f in relay.from_page if f["type"] == "edit"] == []  # none went out
    page.reload()
    expect(page.locator("#messages article.message--user .plain")).to_have_text("Keep me as I am")


@pytest.mark.parametrize("keys", ["Control+k", "Meta+k"])
def test_ctrl_or_cmd_k_searches_chats(page, server, keys):
    """page.md, Keyboard: "Ctrl/⌘+K | search chats"."""
    from playwright.sync_api import expect

    sign_in(page, server)
    page.focus("#composer-text")
    page.keyboard.press(keys)
    expect(page.locator("#conversation-search")).to_be_focused()


def test_going_offline_says_offline_and_coming_back_says_back_online(open_page, server):
    """page.md, Connection banner: "Offline — reconnecting in N s…" as a banner, then
    "Connected — back online" for a few seconds."""
    from playwright.sync_api import expect

    page = open_page()
    sign_in(page, server)
    banner = page.locator("#connection")
    expect(banner).to_have_attribute("data-kind", "ok")
    page.context.set_offline(True)
    # The page checks its socket at once (a ping; no pong within 10 s drops it).
    expect(banner).to_contain_text(re.compile(r"Offline — reconnecting in \d+ s…"), timeout=40_000)
    expect(banner).to_have_attribute("data-kind", "warn")
    page.context.set_offline(False)
    expect(banner).to_have_attribute("data-back", "true", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text("Connected")
    after = page.locator("#connection .status").evaluate(
        "el => getComputedStyle(el, '::after').content"
    )
    assert after == '" — back online"', after
