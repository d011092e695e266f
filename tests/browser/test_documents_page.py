"""Documents on the chat page in a real browser (headless Chromium, real Daphne, embedded
mode): drag and drop with progress, ingestion until ready, a refusal with its reason, and a
reply whose citation opens the document page at the cited passage."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.test_chat_page import (  # noqa: F401 - fixtures: browser, page, chromium_path
    Server,
    _start_server,
    browser,
    chromium_path,
    page,
    send,
    sign_in,
    wait_final,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

HANDBOOK = (
    "# Office handbook\n\nThe office wifi password is written on the whiteboard in room 4.\n\n"
    "Lunch is served in the canteen on the ground floor from noon until two."
)

DROP = """([selector, name, text]) => {
  const transfer = new DataTransfer();
  transfer.items.add(new File([text], name, {type: "text/markdown"}));
  const zone = document.querySelector(selector);
  for (const type of ["dragenter", "dragover", "drop"]) {
    const init = {dataTransfer: transfer, bubbles: true, cancelable: true};
    zone.dispatchEvent(new DragEvent(type, init));
  }
}"""


@pytest.fixture(scope="module")
def server(chromium_path, tmp_path_factory) -> Iterator[Server]:  # noqa: F811 - the imported fixture
    yield from _start_server(tmp_path_factory.mktemp("parley-docs"), tokens_per_second=60)


def test_drop_a_document_see_it_ingested_and_open_a_citation(page, server, tmp_path: Path):  # noqa: F811
    from playwright.sync_api import expect

    sign_in(page, server)
    wait_final(send(page, "hello"))
    expect(page).to_have_url(re.compile(r"/c/\d+/$"))
    page.reload()  # the documents panel belongs to a conversation's page
    panel = page.locator("#documents")
    panel.locator("summary").click()

    page.evaluate(DROP, ["[data-documents-drop]", "handbook.md", HANDBOOK])
    item = panel.locator("[data-documents-list] li", has_text="handbook.md")
    expect(item).to_have_attribute("data-status", "ready", timeout=60_000)
    expect(item).to_contain_text("ready · 1 page")

    bad = tmp_path / "tool.exe"
    bad.write_bytes(b"MZ\x90\x00")
    panel.locator("[data-documents-input]").set_input_files(str(bad))
    expect(panel.locator(".documents__error")).to_contain_text("not accepted")

    reply = send(page, "Where is the wifi password written?")
    assert wait_final(reply) == "complete"
    citation = reply.locator(".citations a").first
    expect(citation).to_have_text("[1] handbook.md, p. 1")
    href = citation.get_attribute("href")
    assert href and href.startswith("/documents/")
    page.goto(server.url + href)
    cited = page.locator(".document-reader__passage--cited")
    expect(cited).to_contain_text("wifi password is written on the whiteboard")
