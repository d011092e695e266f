"""docs/page.md's reply states when a real HTTP upstream fails, in headless Chromium on the
production topology: nginx → two Daphne replicas → Redis ← a Celery worker, PostgreSQL, with
an OpenAI-compatible upstream (tests/fault_server.py) serving the aliases the model picker
offers. test_page_promises.py breaks processes (a replica, the worker) under the simulated
model; here the model provider itself fails: "Failed" with the error's text, and "Cut off —
regenerate to try again" whose regenerated answer keeps the cut one browsable (‹ 1/2 ›), also
after a reload. Every wait is for a DOM state or a row.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.support import PASSWORD, WAIT_MS, body_text, send, sign_in, wait_final
from tests.fault_server import Disconnect, Fail, FaultServer, Reply, fault_server
from tests.harness.processes import manage
from tests.harness.topology import START_TIMEOUT, Topology, production_topology

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(420)]

USERNAME = "acceptance-amal"
UNLIMITED = "1000000/m"
ALIASES = ("page-broken", "page-cut")
CUT_TEXT = "The first answer breaks off here and "
WHOLE = "The second answer is whole."


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


@pytest.fixture(scope="module")
def production(chromium_path, upstream: FaultServer) -> Iterator[Topology]:
    env = {
        "OPENAI_COMPATIBLE_BASE_URL": upstream.base_url("up"),
        "OPENAI_COMPATIBLE_MODEL": "fault-model",
        "LLM_RETRY_MAX_ATTEMPTS": "2",
        "LLM_RETRY_BASE_DELAY": "0.01",
        "LLM_BREAKER_FAILURES": "100000",
        "LLM_BREAKER_MIN_REQUESTS": "100000",
        "CACHE_ENABLED": "false",
        "WS_RATE_FRAMES_PER_USER": UNLIMITED,
        "WS_RATE_FRAMES_PER_ORG": UNLIMITED,
        "WS_RATE_SENDS_PER_USER": UNLIMITED,
        "WS_RATE_SENDS_PER_ORG": UNLIMITED,
    }
    with production_topology(
        replicas=2,
        provider="simulated",
        env=env,
        user=(USERNAME, PASSWORD),
        name="page-acceptance",
    ) as topo:
        rows = "; ".join(
            f"p = Provider.objects.create(name={alias!r}, kind='openai-compatible', "
            f"base_url={upstream.base_url(alias)!r}, first_token_timeout=60, "
            "inter_token_timeout=60); "
            f"Deployment.objects.create(provider=p, alias={alias!r}, model='fault-model')"
            for alias in ALIASES
        )
        code = f"from llm.models import Deployment, Provider; {rows}"
        manage("shell", "-c", code, env=topo.env, timeout=START_TIMEOUT)
        yield topo


@pytest.fixture
def topo(production: Topology) -> Iterator[Topology]:
    with production.logs_on_failure():
        yield production


def reply_id(reply) -> int:
    return int(reply.get_attribute("data-message-id"))


def test_an_upstream_failure_shows_failed_with_its_text_also_after_a_reload(page, topo, upstream):
    """page.md: "Failed" with the error's text: the upstream answers 500 to every attempt."""
    from playwright.sync_api import expect

    upstream.default("page-broken", Fail(500))
    sign_in(page, topo, USERNAME)
    page.locator("#model-picker").select_option("page-broken")
    reply = send(page, "Will this fail?")
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
    sign_in(page, topo, USERNAME)
    page.locator("#model-picker").select_option("page-cut")
    reply = send(page, "Tell me something, twice if need be.")
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
