"""What people expect of a chat product, in headless Chromium against a real Daphne: the
conversation list (search, rename, pin, delete), the model picker, a chat's system prompt, edit
and resend, earlier answers kept on regenerate, copy, export, keyboard shortcuts, the connection
banner and the "waiting for the model" state. Every wait is bounded."""

from __future__ import annotations

import json
import re
from itertools import count

import pytest

from tests.browser.support import (
    WAIT_MS,
    SocketRelay,
    send,
    sign_in,
    wait_final,
    wait_until,
)
from tests.harness.processes import manage

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

_names = count(1)


def fresh_user(server) -> str:
    return server.add_user(f"feature{next(_names)}")


def new_chat(page, server, text: str):
    """Open a new chat and send `text`; returns the reply once final."""
    page.goto(f"{server.url}/")
    reply = send(page, text)
    assert wait_final(reply) == "complete"
    return reply


def conversation_item(page, title: str):
    return page.locator("#conversations li.conversation").filter(has_text=title)


def test_search_rename_pin_and_delete_conversations(page, server):
    from playwright.sync_api import expect

    sign_in(page, server, fresh_user(server))
    new_chat(page, server, "Soup recipe with leeks")
    new_chat(page, server, "Python list comprehension")
    new_chat(page, server, "Crème brûlée at home")
    items = page.locator("#conversations li.conversation")
    expect(items).to_have_count(3)

    # Ctrl+K from the composer finds the search box; the list filters as one types.
    page.focus("#composer-text")
    page.keyboard.press("Control+k")
    expect(page.locator("#conversation-search")).to_be_focused()
    page.keyboard.type("creme")
    expect(items.locator("visible=true")).to_have_count(1)
    expect(conversation_item(page, "Crème brûlée")).to_be_visible()
    page.fill("#conversation-search", "zebra")
    expect(page.locator("#search-empty")).to_be_visible()
    page.fill("#conversation-search", "")
    expect(items.locator("visible=true")).to_have_count(3)

    # The chat just started (its list entry made by the page, not the server) has a menu too.
    current = page.locator("#conversations li.conversation:has(a[aria-current='page'])")
    expect(current).to_contain_text("Crème brûlée")
    current.locator("summary").click()
    current.locator("input[name=title]").fill("Dessert")
    current.get_by_role("button", name="Rename").click()
    expect(current.locator(".conversation__title")).to_have_text("Dessert")
    expect(page).to_have_title("Dessert · Parley")

    # Rename from the chat's menu, by keyboard.
    soup_id = conversation_item(page, "Soup recipe").get_attribute("data-conversation-id")
    soup = page.locator(f"#conversations li[data-conversation-id='{soup_id}']")
    soup.locator("summary").focus()
    page.keyboard.press("Enter")
    rename = soup.locator("input[name=title]")
    rename.fill("Leek soup")
    rename.press("Enter")
    expect(soup.locator(".conversation__title")).to_have_text("Leek soup")

    # Pin the oldest chat: it goes to the top, and stays there after a reload.
    leek = conversation_item(page, "Leek soup")
    leek.locator("summary").click()
    leek.get_by_role("button", name="Pin").click()
    expect(items.first).to_contain_text("Leek soup")
    expect(items.first).to_have_attribute("data-pinned", "true")
    page.reload()
    expect(items.first).to_contain_text("Leek soup")
    expect(items.first).to_have_attribute("data-pinned", "true")
    expect(page.locator("#status")).to_have_text("Connected")

    # Delete asks first: dismissing keeps the chat, accepting removes it for good.
    python_id = conversation_item(page, "Python list").get_attribute("data-conversation-id")
    python = page.locator(f"#conversations li[data-conversation-id='{python_id}']")
    python.locator("summary").click()
    page.once("dialog", lambda dialog: dialog.dismiss())
    python.get_by_role("button", name="Delete").click()
    expect(items).to_have_count(3)
    page.once("dialog", lambda dialog: dialog.accept())
    python.get_by_role("button", name="Delete").click()
    expect(items).to_have_count(2)
    expect(page.locator("#toast")).to_have_text("Chat deleted.")
    page.reload()
    expect(items).to_have_count(2)
    expect(conversation_item(page, "Python list")).to_have_count(0)
    titles = [t for (t,) in server.query("SELECT title FROM chat_conversation")]
    assert "Leek soup" in titles and not any(t.startswith("Python list") for t in titles)


def test_model_picker_offers_the_organisations_models_and_sends_the_choice(page, server):
    from playwright.sync_api import expect

    allowed = manage(
        "shell",
        "-c",
        "import json; from accounts.models import Organisation; "
        "from chat.selectors import model_choices; "
        "print(json.dumps(model_choices(organisation=Organisation.objects.first())))",
        env=server.env,
    )
    expected = json.loads(allowed.strip().splitlines()[-1])
    relay = SocketRelay()
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, server, fresh_user(server))
    picker = page.locator("#model-picker")
    assert picker.locator("option").evaluate_all("os => os.map(o => o.value)") == expected
    expect(picker.locator("option").first).to_contain_text("(default)")
    # Another model is chosen and remembered; the simulated one answers (the bundled local
    # model would cost the shared machine a real generation).
    picker.select_option(expected[-1])
    page.reload()
    expect(page.locator("#model-picker")).to_have_value(expected[-1])
    page.locator("#model-picker").select_option("simulated")
    reply = send(page, "Which model are you?")
    assert wait_final(reply) == "complete"
    assert relay.sends()[-1]["model"] == "simulated"
    expect(reply.locator(".message__model")).to_have_text("simulated · simulated")


def test_a_chats_system_prompt_is_saved_and_shown_again(page, server):
    from playwright.sync_api import expect

    sign_in(page, server, fresh_user(server))
    new_chat(page, server, "Hello there")
    conversation = page.locator("#chat").get_attribute("data-conversation")
    page.click("#chat-settings summary")
    page.fill("#system-prompt", "Answer like a pirate.")
    page.click("#instructions-form button[type=submit]")
    expect(page.locator("#instructions-saved")).to_contain_text("Saved")
    stored = server.query(
        "SELECT system_prompt FROM chat_conversation WHERE id = ?", int(conversation)
    )
    assert stored == [("Answer like a pirate.",)]
    page.reload()
    expect(page.locator("#system-prompt")).to_have_value("Answer like a pirate.")


def test_edit_and_resend_replaces_the_message_and_its_answer(page, server):
    from playwright.sync_api import expect

    sign_in(page, server, fresh_user(server))
    new_chat(page, server, "What is the capital of Frnace?")
    user = page.locator("#messages article.message--user")
    user.locator("[data-edit]").click()
    box = user.locator(".edit-form textarea")
    expect(box).to_be_focused()
    expect(box).to_have_value("What is the capital of Frnace?")
    box.fill("What is the capital of France?")
    box.press("Enter")
    expect(page.locator("#messages article.message--user")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#messages article.message--user .plain")).to_have_text(
        "What is the capital of France?"
    )
    reply = page.locator("#messages article.message--assistant")
    expect(reply).to_have_count(1)
    assert wait_final(reply) == "complete"
    expect(reply.locator(".message__body")).to_contain_text(
        "You said: What is the capital of France?"
    )
    page.reload()
    expect(page.locator("#messages article.message--user .plain")).to_have_text(
        "What is the capital of France?"
    )
    expect(page.locator("#messages article.message--assistant")).to_have_count(1)


def test_regenerate_keeps_the_earlier_answer_browsable(page, server):
    from playwright.sync_api import expect

    sign_in(page, server, fresh_user(server))
    first = new_chat(page, server, "Tell me twice")
    old_id = first.get_attribute("data-message-id")
    first.locator("[data-regenerate]").click()
    reply = page.locator("#messages article.message--assistant")
    expect(reply).to_have_count(1)
    expect(reply).not_to_have_attribute("data-message-id", old_id, timeout=WAIT_MS)
    assert wait_final(reply) == "complete"

    def check_versions() -> None:
        label = reply.locator(".versions__label")
        expect(label).to_have_text("2/2")
        expect(reply.locator(".message__body")).to_be_visible()
        reply.get_by_role("button", name="Previous answer").click()
        expect(label).to_have_text("1/2")
        old = reply.locator(f".message__version[data-version-id='{old_id}']")
        expect(old).to_be_visible()
        expect(old).to_contain_text("You said: Tell me twice")
        expect(reply.locator(".message__body")).to_be_hidden()
        expect(reply.get_by_role("button", name="Previous answer")).to_be_disabled()
        reply.get_by_role("button", name="Next answer").click()
        expect(label).to_have_text("2/2")
        expect(old).to_be_hidden()

    check_versions()
    page.reload()
    check_versions()  # the server keeps the earlier answer and renders it as a version


def test_copy_buttons_copy_the_reply_and_a_code_block(open_page, server):
    from playwright.sync_api import expect

    page = open_page(permissions=["clipboard-read", "clipboard-write"])
    sign_in(page, server, fresh_user(server))
    reply = new_chat(page, server, "Some code please")
    message_id = int(reply.get_attribute("data-message-id"))
    reply.locator(".message__actions [data-copy]").click()
    expect(reply.locator(".message__actions [data-copy]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == server.saved_content(message_id)
    reply.locator("[data-copy-code]").click()
    code = page.evaluate("navigator.clipboard.readText()")
    assert code.startswith("def greet(name):") and "return" in code
    assert "Copy code" not in code
    page.reload()  # server-rendered replies have the same buttons
    reply = page.locator("#messages article.message--assistant")
    reply.locator(".message__actions [data-copy]").click()
    expect(reply.locator(".message__actions [data-copy]")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == server.saved_content(message_id)


def test_export_downloads_markdown_and_json(page, server):
    sign_in(page, server, fresh_user(server))
    new_chat(page, server, "Export me")
    page.click("#export-menu summary")
    with page.expect_download() as markdown:
        page.click("#export-markdown")
    text = open(markdown.value.path(), encoding="utf-8").read()
    assert text.startswith("# Export me") and "You said: Export me" in text
    page.click("#export-menu summary")
    with page.expect_download() as json_file:
        page.click("#export-json")
    exported = json.loads(open(json_file.value.path(), encoding="utf-8").read())
    assert [m["role"] for m in exported["messages"]] == ["user", "assistant"]


def test_keyboard_shortcuts_help_focus_newline_and_stop(page, slow_server):
    from playwright.sync_api import expect

    sign_in(page, slow_server)
    page.locator("body").focus()
    page.keyboard.press("?")
    expect(page.locator("#shortcuts")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#shortcuts")).to_be_hidden()
    page.keyboard.press("/")
    expect(page.locator("#composer-text")).to_be_focused()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    expect(page.locator("#composer-text")).to_have_value("first line\nsecond line")
    page.keyboard.press("Enter")
    reply = page.locator("#messages article.message--assistant").last
    expect(reply).to_have_attribute("data-status", "streaming", timeout=WAIT_MS)
    page.keyboard.press("Escape")
    assert wait_final(reply, timeout=15) == "cancelled"
    expect(reply.locator(".message__status")).to_have_text("Stopped")
    # Ctrl+Shift+O starts a new chat (the page's New chat form).
    current = page.locator("#chat").get_attribute("data-conversation")
    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(re.compile(r"/c/\d+/$"))
    expect(page.locator("#chat")).not_to_have_attribute("data-conversation", current)
    expect(page.locator("#empty-chat")).to_be_visible()


def test_connection_loss_shows_a_banner_and_says_when_it_is_back(page, server):
    from playwright.sync_api import expect

    relay = SocketRelay()
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, server)
    banner = page.locator("#connection")
    expect(banner).to_have_attribute("data-kind", "ok")
    relay.refusing = True
    relay.cut()
    expect(banner).to_have_attribute("data-kind", "warn")
    expect(banner).to_contain_text(re.compile("reconnecting", re.I))
    box = banner.bounding_box()
    assert box and box["height"] >= 30  # a banner, not a small line
    relay.refusing = False
    expect(banner).to_have_attribute("data-back", "true", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_text("Connected")


def test_a_reply_waiting_for_the_model_says_so(page, server):
    from playwright.sync_api import expect

    relay = SocketRelay()
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, server, fresh_user(server))
    relay.holding = True  # the model has not produced anything yet
    reply = send(page, "Are you busy?")
    expect(reply).to_have_attribute("data-status", "pending")
    expect(reply.locator(".message__status")).to_have_text("Waiting for the model…")
    wait_until(page, lambda: relay.held, what="the reply's first delta")
    relay.release()
    assert wait_final(reply) == "complete"
    # Screen readers hear the finished reply once, not every token as it streams.
    expect(page.locator("#announcer")).to_contain_text("You said: Are you busy?")
    expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")
    assert page.locator("#messages").get_attribute("aria-live") is None
