"""The chat page in a real browser: headless Chromium against a real Daphne in embedded mode.

The simulated provider streams a fixed Markdown reply ("You said: <prompt>", a list, a Python
code block) at a known rate, so the page's streaming, rendering, sanitizing, Stop and
reconnect-and-resume paths are all exercised end to end. Every wait is bounded.
"""

from __future__ import annotations

import re

import pytest

from tests.browser.support import (
    FINAL,
    RECORD_RENDERS,
    SCREENSHOT,
    WAIT_MS,
    SocketRelay,
    body_text,
    normalized,
    send,
    sign_in,
    wait_final,
    wait_until,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


RECORD_STATUS = """() => {
  window.__statuses = [];
  const status = document.getElementById("status");
  new MutationObserver(() => window.__statuses.push(status.textContent))
    .observe(status, {subtree: true, childList: true, characterData: true});
}"""


# --- tests ---------------------------------------------------------------------------------


def test_sign_in_send_stream_markdown_and_reload(page, server):
    from playwright.sync_api import expect

    sign_in(page, server)
    page.evaluate(RECORD_RENDERS)
    reply = send(page, "Show me a list and some code")
    assert wait_final(reply) == "complete"

    # It streamed: the body grew over at least two renders before the reply was complete.
    renders = page.evaluate("window.__renders")
    streaming = [length for status, length in renders if status not in FINAL and length > 0]
    # (Not monotonic: "**simulated" shrinks by its asterisks once the closing pair arrives.)
    assert len(set(streaming)) >= 2, renders
    assert streaming[0] < len(body_text(reply)), renders

    # Rendered Markdown while streaming and at the end: a list, highlighted Python.
    expect(reply.locator(".message__body li")).to_have_count(2)
    expect(reply.locator(".message__body strong")).to_have_text("simulated")
    code = reply.locator(".message__body pre code.hljs")
    expect(code).to_have_count(1)
    expect(code).to_have_class(re.compile(r"language-python"))
    assert code.locator("span[class^='hljs-']").count() > 0
    expect(reply.locator(".message__meta")).to_contain_text("simulated · simulated")
    expect(reply.locator(".message__meta")).to_contain_text("tokens")
    expect(reply.locator(".message__meta")).to_contain_text("first token")
    expect(reply.locator("[data-stop]")).to_be_hidden()
    expect(reply.locator(".message__status")).to_have_text("Complete")

    # The new conversation got a URL and a place in the sidebar.
    conversation = page.locator("#chat").get_attribute("data-conversation")
    assert conversation and conversation.isdigit()
    assert page.url == f"{server.url}/c/{conversation}/"
    link = page.locator(f"#conversations a[data-conversation-id='{conversation}']")
    expect(link).to_have_attribute("aria-current", "page")
    streamed_text = body_text(reply)

    # After a reload the history is server-rendered (and highlighted on load).
    page.reload()
    expect(page.locator("#status")).to_have_text("Connected")
    user = page.locator("#messages article.message--user")
    expect(user).to_have_count(1)
    expect(user.locator(".plain")).to_have_text("Show me a list and some code")
    reloaded = page.locator("#messages article.message--assistant")
    expect(reloaded).to_have_count(1)
    expect(reloaded).to_have_attribute("data-status", "complete")
    expect(reloaded.locator(".message__status")).to_have_text("Complete")
    expect(reloaded.locator(".message__body li")).to_have_count(2)
    expect(reloaded.locator(".message__body pre code.hljs")).to_have_count(1)
    assert normalized(body_text(reloaded)) == normalized(streamed_text)
    expect(page.locator("#conversations a[aria-current='page']")).to_have_count(1)

    page.screenshot(path=str(SCREENSHOT), full_page=False)


XSS_PROMPT = (
    '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>\n\n'
    "[x](javascript:window.__pwned=3)"
)


def _assert_inert(page) -> None:
    from playwright.sync_api import expect

    assert page.evaluate("typeof window.__pwned") == "undefined"
    dangerous = "#messages script, #messages img, #messages [onerror], #messages [style]"
    expect(page.locator(dangerous)).to_have_count(0)
    expect(page.locator("#messages a[href^='javascript' i]")).to_have_count(0)
    user = page.locator("#messages article.message--user .plain").last
    assert user.text_content() == XSS_PROMPT
    reply = page.locator("#messages article.message--assistant").last
    text = body_text(reply)
    assert '<img src=x onerror="window.__pwned=1">' in text
    assert "<script>window.__pwned=2</script>" in text
    assert "[x](javascript:window.__pwned=3)" in text


def test_model_output_never_becomes_html(page, server):
    sign_in(page, server)
    reply = send(page, XSS_PROMPT)
    assert wait_final(reply) == "complete"
    _assert_inert(page)

    response = page.reload()
    csp = response.headers.get("content-security-policy", "")
    assert "script-src 'self'" in csp, csp
    assert "unsafe-inline" not in csp, csp
    _assert_inert(page)


def test_stop_keeps_partial_text(page, slow_server):
    from playwright.sync_api import expect

    sign_in(page, slow_server)
    reply = send(page, "Please take your time answering this")
    expect(reply).to_have_attribute("data-status", "streaming", timeout=WAIT_MS)
    expect(reply.locator(".message__body")).to_contain_text("You said", timeout=WAIT_MS)
    reply.locator("[data-stop]").click()
    assert wait_final(reply, timeout=10) == "cancelled"
    expect(reply.locator("[data-stop]")).to_be_hidden()
    expect(reply.locator(".message__status")).to_have_text("Stopped")
    partial = body_text(reply)
    assert partial.startswith("You said")
    assert "second point" not in partial  # stopped long before the end

    page.reload()
    reloaded = page.locator("#messages article.message--assistant").last
    expect(reloaded).to_have_attribute("data-status", "cancelled")
    expect(reloaded.locator(".message__status")).to_have_text("Stopped")  # labelled as streamed
    assert normalized(body_text(reloaded)) == normalized(partial)


def test_lost_deltas_and_reconnect_resume_without_gaps_or_duplicates(page, slow_server):
    from playwright.sync_api import expect

    from llm.providers.simulated import simulated_reply

    relay = SocketRelay()
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, slow_server)
    page.evaluate(RECORD_STATUS)
    prompt = "one two three four five six seven eight nine ten eleven twelve thirteen"
    reply = send(page, prompt)
    expect(reply.locator(".message__body")).to_contain_text("You said", timeout=WAIT_MS)

    # The layer loses two deltas: the page sees a gap and resumes from what it holds.
    relay.drop_next_deltas = 2
    wait_until(page, lambda: len(relay.dropped) == 2, what="two deltas dropped")
    wait_until(page, lambda: relay.resumes(0), what="resume after a gap")
    gap_resume = relay.resumes(0)[0]
    assert gap_resume["after_seq"] == relay.dropped[0]["start"]

    # Then the connection goes: the page reconnects and resumes from where it is.
    expect(reply).to_have_attribute("data-status", "streaming")
    relay.cut()
    wait_until(page, lambda: len(relay.connections) == 2, what="reconnect")
    wait_until(page, lambda: relay.resumes(1), what="resume after reconnect")
    assert wait_final(reply, timeout=40) == "complete"
    expect(page.locator("#status")).to_have_text("Connected")
    statuses = page.evaluate("window.__statuses")
    assert any("reconnecting" in s.lower() for s in statuses), statuses

    message_id = int(reply.get_attribute("data-message-id"))
    expected = simulated_reply(prompt)
    assert slow_server.saved_content(message_id) == expected
    live = body_text(reply)
    assert live.count("You said:") == 1
    assert live.count("first point") == 1
    assert live.count("def greet(name):") == 1

    page.reload()
    reloaded = page.locator(f"#messages article[data-message-id='{message_id}']")
    expect(reloaded).to_have_attribute("data-status", "complete")
    assert body_text(reloaded) == live


def test_send_while_disconnected_is_queued_and_a_lost_ack_is_retried(page, server):
    from playwright.sync_api import expect

    relay = SocketRelay()
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, server)

    # The server becomes unreachable; the message waits in the page, the text in the composer.
    relay.refusing = True
    relay.cut()
    wait_until(page, lambda: relay.refused >= 1, what="a refused reconnect")
    page.fill("#composer-text", "sent while offline")
    page.press("#composer-text", "Enter")
    expect(page.locator("#status")).to_contain_text("will be sent")
    expect(page.locator("#composer-text")).to_have_value("sent while offline")
    expect(page.locator("#messages article.message--user .plain").last).to_have_text(
        "sent while offline"
    )
    assert relay.sends() == []

    # It is back, but the first ack is lost with the connection: the page sends again with the
    # same client_id, and the server answers with the first message instead of a second one.
    relay.lose_next_ack = True
    relay.refusing = False
    reply = page.locator("#messages article.message--assistant").last
    expect(reply).to_have_attribute("data-message-id", re.compile(r"^\d+$"), timeout=WAIT_MS)
    assert wait_final(reply) == "complete"
    expect(page.locator("#composer-text")).to_have_value("")
    sends = relay.sends()
    assert len(sends) >= 2, sends
    assert len({f["client_id"] for f in sends}) == 1, sends
    assert [f["type"] for f in relay.dropped] == ["ack"]
    assert "You said: sent while offline" in body_text(reply)

    page.reload()
    expect(page.locator("#messages article.message--user")).to_have_count(1)
    expect(page.locator("#messages article.message--assistant")).to_have_count(1)
    expect(page.locator("#messages article.message--assistant")).to_have_attribute(
        "data-status", "complete"
    )


CUT_PROMPT = "Cut me short"
# Where the stored text of a reply cut off upstream ends: after "answer", before the list.
CUT_AT = len(f"You said: {CUT_PROMPT}\n\nHere is a **simulated** answer")


def _cut_off_upstream(done: dict) -> dict:
    """The reply failed `interrupted` with less text stored than the page was shown."""
    return {
        "type": "error",
        "message": done["message"],
        "code": "interrupted",
        "detail": "The reply stopped before it was complete.",
        "retryable": True,
        "seq": CUT_AT,
    }


def _stopped_at_length_limit(done: dict) -> dict:
    return {**done, "status": "incomplete", "finish_reason": "length"}


def test_a_reply_cut_off_upstream_keeps_only_the_stored_text_and_says_so(page, server):
    from playwright.sync_api import expect

    relay = SocketRelay()
    relay.rewrite_done = _cut_off_upstream
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, server)
    reply = send(page, CUT_PROMPT)
    assert wait_final(reply) == "failed"
    expect(reply).to_have_attribute("data-seq", str(CUT_AT))
    assert normalized(body_text(reply)).endswith("Here is a simulated answer")
    expect(reply.locator(".message__body li")).to_have_count(0)
    expect(reply.locator(".message__status")).to_have_text("Cut off — regenerate to try again")
    expect(reply.locator(".message__error")).to_have_text(
        "The reply stopped before it was complete."
    )
    expect(reply.locator("[data-regenerate]")).to_be_visible()
    expect(reply.locator("[data-stop]")).to_be_hidden()


def test_a_reply_stopped_at_the_length_limit_is_not_labelled_complete(page, server):
    from playwright.sync_api import expect

    relay = SocketRelay()
    relay.rewrite_done = _stopped_at_length_limit
    page.route_web_socket(re.compile(r"/ws/chat/$"), relay)
    sign_in(page, server)
    reply = send(page, "Go on until the limit")
    expect(reply).to_have_attribute("data-status", "incomplete", timeout=WAIT_MS)
    expect(reply.locator(".message__status")).to_have_text("Stopped at the length limit")
    expect(reply.locator("[data-regenerate]")).to_be_visible()
    expect(reply.locator("[data-stop]")).to_be_hidden()
    assert "def greet(name):" in body_text(reply)  # the text it was shown stays


def test_reload_mid_stream_resumes_the_server_rendered_reply(page, slow_server):
    from playwright.sync_api import expect

    from llm.providers.simulated import simulated_reply

    sign_in(page, slow_server)
    reply = send(page, "reload me halfway please")
    expect(reply.locator(".message__body")).to_contain_text("You said", timeout=WAIT_MS)
    message_id = reply.get_attribute("data-message-id")
    page.wait_for_timeout(1500)  # past a checkpoint, so the page renders some saved text

    page.reload()
    reply = page.locator(f"#messages article[data-message-id='{message_id}']")
    assert reply.get_attribute("data-status") in ("pending", "streaming")
    assert reply.get_attribute("data-content") is not None
    assert wait_final(reply, timeout=40) == "complete"
    live = body_text(reply)
    assert live.count("You said:") == 1
    assert live.count("def greet(name):") == 1
    assert slow_server.saved_content(int(message_id)) == simulated_reply("reload me halfway please")

    page.reload()
    reloaded = page.locator(f"#messages article[data-message-id='{message_id}']")
    expect(reloaded).to_have_attribute("data-status", "complete")
    assert body_text(reloaded) == live


def test_regenerate_replaces_the_last_reply(page, server):
    from playwright.sync_api import expect

    sign_in(page, server)
    first = send(page, "Answer this twice")
    assert wait_final(first) == "complete"
    old_id = first.get_attribute("data-message-id")
    button = first.locator("[data-regenerate]")
    expect(button).to_be_visible(timeout=WAIT_MS)
    button.click()
    expect(page.locator(f'article[data-message-id="{old_id}"]')).to_have_count(0, timeout=WAIT_MS)
    replies = page.locator("#messages article.message--assistant")
    expect(replies).to_have_count(1, timeout=WAIT_MS)
    new = replies.last
    expect(new).to_have_attribute("data-message-id", re.compile(r"^\d+$"), timeout=WAIT_MS)
    assert wait_final(new) == "complete"
    assert new.get_attribute("data-message-id") != old_id
    assert "You said: Answer this twice" in body_text(new)
    page.reload()
    expect(page.locator("#messages article.message--assistant")).to_have_count(1)
