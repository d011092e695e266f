"""docs/page.md's reply states when a real HTTP upstream fails, in headless Chromium on the
production topology: nginx → two Daphne replicas → Redis ← a Celery worker, PostgreSQL, with
an OpenAI-compatible upstream (tests/fault_server.py) serving the aliases the model picker
offers. test_page_promises.py breaks processes (a replica, the worker) under the simulated
model; here the model provider itself fails: "Failed" with the error's text, and "Cut off —
regenerate to try again" whose regenerated answer keeps the cut one browsable (‹ 1/2 ›), also
after a reload. Every wait is for a DOM state or a row.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.support import (
    PASSWORD,
    RECORD_RENDERS,
    WAIT_MS,
    body_text,
    normalized,
    send,
    sign_in,
    wait_final,
    wait_until,
)
from tests.fault_server import Disconnect, Endless, Fail, FaultServer, Reply
from tests.harness.processes import manage
from tests.harness.sockets import sign_in_cookie
from tests.harness.topology import START_TIMEOUT, Topology
from tests.integration.test_protocol_promises import Site, topology_with_upstream
from tests.llama_server import start_llama_server

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(420)]

USERNAME = "acceptance-amal"
ALIASES = ("page-broken", "page-cut", "page-endless", "page-held", "page-edit")
CUT_TEXT = "The first answer breaks off here and "
WHOLE = "The second answer is whole."


@pytest.fixture(scope="module")
def site(chromium_path) -> Iterator[Site]:
    with topology_with_upstream("page-acceptance", user=(USERNAME, PASSWORD)) as running:
        rows = "; ".join(
            f"p = Provider.objects.create(name={alias!r}, kind='openai-compatible', "
            f"base_url={running.upstream.base_url(alias)!r}, first_token_timeout=60, "
            "inter_token_timeout=60); "
            f"Deployment.objects.create(provider=p, alias={alias!r}, model='fault-model')"
            for alias in ALIASES
        )
        code = f"from llm.models import Deployment, Provider; {rows}"
        manage("shell", "-c", code, env=running.topo.env, timeout=START_TIMEOUT)
        yield running


@pytest.fixture
def topo(site: Site) -> Iterator[Topology]:
    with site.topo.logs_on_failure():
        yield site.topo


@pytest.fixture
def upstream(site: Site) -> FaultServer:
    return site.upstream


def ask_in_page(page, topo: Topology, alias: str, text: str):
    """Sign in, pick `alias` in the model picker and send `text`: the reply's article."""
    sign_in(page, topo, USERNAME)
    page.locator("#model-picker").select_option(alias)
    return send(page, text)


def reply_id(reply) -> int:
    return int(reply.get_attribute("data-message-id"))


def test_a_reply_from_llama_cpp_streams_in_the_page_and_reloads_as_saved(page, topo):
    """page.md, "Streaming" then "Complete", with the model of a real llama.cpp server behind
    the worker: the text grows in the page, the finished reply names its provider and model,
    and a reload renders what PostgreSQL holds."""
    from playwright.sync_api import expect

    with tempfile.TemporaryDirectory() as logs:
        server = start_llama_server(Path(logs))
        try:
            with topo.alias_served_by("page-llama", server.base_url):
                sign_in(page, topo, USERNAME)
                page.locator("#model-picker").select_option("page-llama")
                page.evaluate(RECORD_RENDERS)
                reply = send(page, "Write three sentences about the sea.")
                # `incomplete` too: the small model may run on to LLM_MAX_TOKENS.
                ended = ("complete", "incomplete")
                wait_until(
                    page,
                    lambda: reply.get_attribute("data-status") in ended,
                    timeout=180,
                    what="the reply's end",
                )
        finally:
            server.stop()
    renders = page.evaluate("window.__renders")
    growing = {length for status, length in renders if status == "streaming" and length > 0}
    assert len(growing) >= 3, renders  # it streamed, not one block at the end
    expect(reply.locator(".message__model")).to_have_text("harness-upstream · upstream-model")
    row = topo.row(reply_id(reply))
    status = reply.get_attribute("data-status")
    assert row["status"] == status and row["content"].strip(), row
    live = body_text(reply)
    page.reload()
    again = page.locator(f"#messages article[data-message-id='{reply_id(reply)}']")
    expect(again).to_have_attribute("data-status", status)
    assert normalized(body_text(again)) == normalized(live)


def test_an_upstream_failure_shows_failed_with_its_text_also_after_a_reload(page, topo, upstream):
    """page.md: "Failed" with the error's text: the upstream answers 500 to every attempt."""
    from playwright.sync_api import expect

    upstream.default("page-broken", Fail(500))
    reply = ask_in_page(page, topo, "page-broken", "Will this fail?")
    assert wait_final(reply, timeout=60) == "failed"
    row = topo.row(reply_id(reply))
    assert (row["status"], row["error_code"]) == ("failed", "provider_failed"), row
    expect(reply.locator(".message__status")).to_have_text("Failed")
    error = reply.locator(".message__error")
    expect(error).not_to_be_empty()
    shown = error.text_content()
    assert upstream.count("page-broken") >= 1

    page.reload()
    again = page.locator(f"#messages article[data-message-id='{reply_id(reply)}']")
    expect(again.locator(".message__status")).to_have_text("Failed")
    expect(again.locator(".message__error")).to_have_text(shown or "")
    expect(again.locator("[data-regenerate]")).to_be_visible()


def test_an_upstream_cut_mid_reply_says_cut_off_and_regenerating_keeps_it_browsable(
    page, topo, upstream
):
    """page.md: "Cut off — regenerate to try again" (`interrupted`) with the text shown kept;
    Regenerate: "the earlier answers stay, browsable with ‹ 1/2 › under it, also after a
    reload"."""
    from playwright.sync_api import expect

    upstream.script("page-cut", Disconnect(text=CUT_TEXT, after_chunks=3, chunk_chars=6))
    upstream.default("page-cut", Reply(text=WHOLE))
    reply = ask_in_page(page, topo, "page-cut", "Tell me something, twice if need be.")
    assert wait_final(reply, timeout=60) == "failed"
    first = reply_id(reply)
    row = topo.row(first)
    assert (row["error_code"], row["content"]) == ("interrupted", CUT_TEXT[:18]), row
    expect(reply.locator(".message__status")).to_have_text("Cut off — regenerate to try again")
    assert body_text(reply).strip() == row["content"].strip()

    reply.locator("[data-regenerate]").click()
    new = page.locator("#messages article.message--assistant").last
    expect(new).not_to_have_attribute("data-message-id", str(first), timeout=WAIT_MS)
    assert wait_final(new, timeout=60) == "complete"
    expect(new.locator(".message__body")).to_have_text(WHOLE)
    expect(new.locator(".versions__label")).to_have_text("2/2")
    assert page.locator("#messages article.message--assistant").count() == 1

    page.reload()
    reloaded = page.locator("#messages article.message--assistant").last
    expect(reloaded.locator(".versions__label")).to_have_text("2/2")
    reloaded.locator(".versions__step").first.click()  # ‹
    expect(reloaded.locator(".versions__label")).to_have_text("1/2")
    earlier = reloaded.locator(".message__version").first
    expect(earlier).to_be_visible()
    expect(earlier).to_contain_text(CUT_TEXT[:18].strip())
    expect(reloaded.locator(".message__body")).to_be_hidden()


def test_stop_ends_a_real_upstreams_reply_keeping_its_text_and_lets_go_of_the_call(
    page, topo, upstream
):
    """page.md: Esc "else stop the running reply"; protocol.md `cancel`: "the partial text is
    kept". The upstream streams until its client goes away: Stop must close that call."""
    from playwright.sync_api import expect

    upstream.default("page-endless", Endless(text="on and ", chunk_delay=0.05))
    reply = ask_in_page(page, topo, "page-endless", "Go on for ever.")
    wait_until(page, lambda: len(body_text(reply)) >= 30, what="the reply's text in the page")
    page.locator("#messages").click()  # away from the composer: Esc then stops the reply
    page.keyboard.press("Escape")
    assert wait_final(reply, timeout=60) == "cancelled"
    expect(reply.locator(".message__status")).to_have_text("Stopped")
    wait_until(page, lambda: upstream.closed("page-endless"), what="the upstream call closed")
    row = topo.row(reply_id(reply))
    assert row["status"] == "cancelled" and row["content"].startswith("on and on and"), row
    page.reload()
    again = page.locator(f"#messages article[data-message-id='{reply_id(reply)}']")
    expect(again.locator(".message__status")).to_have_text("Stopped")
    assert body_text(again).strip() == row["content"].strip()


def test_a_reply_whose_upstream_has_not_answered_yet_says_waiting_for_the_model(
    page, topo, upstream
):
    """page.md: "Waiting for the model…" until the first text — also once the worker has
    claimed the reply and the upstream call is open, not only while it is queued."""
    from playwright.sync_api import expect

    first_token = threading.Event()
    upstream.script("page-held", Reply(text=WHOLE, held_until=first_token))
    try:
        reply = ask_in_page(page, topo, "page-held", "Take your time.")
        wait_until(page, lambda: upstream.count("page-held") == 1, what="the upstream call")
        expect(reply.locator(".message__status")).to_have_text("Waiting for the model…")
        assert body_text(reply).strip() == ""
    finally:
        first_token.set()
    assert wait_final(reply, timeout=60) == "complete"
    expect(reply.locator(".message__body")).to_have_text(WHOLE)


def test_an_edit_in_the_page_is_answered_by_the_model_the_answer_had(page, topo, upstream):
    """page.md: Edit (Enter saves and sends) replaces the message and everything after it;
    protocol.md: an `edit` is answered "with the model and options of the answer it had" —
    the upstream alias picked for the first answer, not the default model."""
    from playwright.sync_api import expect

    upstream.default("page-edit", Reply(text=WHOLE))
    reply = ask_in_page(page, topo, "page-edit", "What is the capital of Frnace?")
    assert wait_final(reply, timeout=60) == "complete"
    first = reply_id(reply)
    page.locator("#model-picker").select_option("simulated")  # the picker moved on since
    user = page.locator("#messages article.message--user").last
    user.locator("[data-edit]").click()
    box = user.locator(".edit-form textarea")
    expect(box).to_have_value("What is the capital of Frnace?")
    box.fill("What is the capital of France?")
    box.press("Enter")
    edited = page.locator("#messages article.message--assistant").last
    expect(edited).to_have_attribute("data-message-id", re.compile(r"^\d+$"))
    expect(edited).not_to_have_attribute("data-message-id", str(first))
    assert wait_final(edited, timeout=60) == "complete"
    expect(edited.locator(".message__body")).to_have_text(WHOLE)
    assert upstream.count("page-edit") == 2
    expect(page.locator("#messages article.message--user .plain")).to_have_text(
        ["What is the capital of France?"]
    )
    prompt = topo.prompt_of(reply_id(edited))
    assert prompt == "What is the capital of France?"


# --- the page's form endpoints (page.md), through nginx --------------------------------------


def form_session(topo: Topology, username: str) -> httpx.Client:
    cookie = sign_in_cookie(topo.base, username, PASSWORD)
    token = dict(part.split("=", 1) for part in cookie.split("; "))["csrftoken"]
    return httpx.Client(
        base_url=topo.base,
        headers={"Cookie": cookie, "X-CSRFToken": token, "Accept": "application/json"},
        timeout=30,
    )


def test_the_form_endpoints_answer_json_and_refuse_bad_input_with_code_and_detail(topo):
    """page.md: "with `Accept: application/json` they answer `{id, title, pinned,
    system_prompt}` (or `{deleted: true}`), and `{code, detail}` with 400 (`bad_frame`) or 404
    (`not_found`: not yours)"; without it they redirect back to the page."""
    manage(
        "shell",
        "-c",
        "from accounts.models import User; "
        f"User.objects.create_user(username='acceptance-omar', password={PASSWORD!r})",
        env=topo.env,
        timeout=START_TIMEOUT,
    )
    with form_session(topo, USERNAME) as owner, form_session(topo, "acceptance-omar") as other:
        made = owner.post("/api/v1/conversations", json={"title": "Forms"})
        assert made.status_code == 201, made.text
        chat = made.json()["id"]
        renamed = owner.post(f"/c/{chat}/rename", data={"title": "  Renamed  "})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json() == {
            "id": chat,
            "title": "Renamed",
            "pinned": False,
            "system_prompt": "",
        }
        assert owner.post(f"/c/{chat}/pin", data={"pinned": "true"}).json()["pinned"] is True
        told = owner.post(f"/c/{chat}/instructions", data={"system_prompt": "Be brief."})
        assert told.json()["system_prompt"] == "Be brief."

        refusals = {
            "blank title": owner.post(f"/c/{chat}/rename", data={"title": "   "}),
            "long title": owner.post(f"/c/{chat}/rename", data={"title": "x" * 201}),
            "pinned neither true nor false": owner.post(f"/c/{chat}/pin", data={"pinned": "no"}),
            "long prompt": owner.post(
                f"/c/{chat}/instructions", data={"system_prompt": "x" * 16001}
            ),
        }
        for what, answer in refusals.items():
            assert answer.status_code == 400, (what, answer.text)
            body = answer.json()
            assert body["code"] == "bad_frame" and body["detail"], (what, body)
        for path in ("rename", "pin", "instructions", "delete"):
            answer = other.post(f"/c/{chat}/{path}", data={"title": "Mine now", "pinned": "true"})
            assert answer.status_code == 404, (path, answer.text)
            assert answer.json()["code"] == "not_found" and answer.json()["detail"]
        kept = topo.query("SELECT title, pinned FROM chat_conversation WHERE id = %s", chat)
        assert kept == [("Renamed", True)], kept

        plain = owner.post(
            f"/c/{chat}/rename", data={"title": "Plain form"}, headers={"Accept": "text/html"}
        )
        assert plain.status_code == 302, plain.text
        deleted = owner.post(f"/c/{chat}/delete")
        assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
        assert owner.get(f"/api/v1/conversations/{chat}").status_code == 404
