"""docs/admin.md's promises where an operator's click in the admin reaches the people chatting,
in headless Chromium on the production topology (nginx → two Daphne → Redis ← Celery worker and
beat, PostgreSQL; tests/harness/topology.py).

Two browser contexts stand for two people: an operator (a superuser) working in /admin/ and a
member with the chat page open. The unit tests (chat/tests/test_tenant_models.py,
test_dashboard.py, llm/tests/test_admin_providers.py) pin each piece in one process; these pin
that the setting, made through the admin's own forms, holds on every process the user's
traffic crosses. Every wait is for a DOM state or a row, never for time.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from itertools import count

import pytest

from tests.browser.support import (
    PASSWORD,
    WAIT_MS,
    body_text,
    send,
    sign_in,
    wait_final,
    wait_until,
)
from tests.browser.test_page_promises import long_prompt
from tests.fault_server import Fail, Reply, fault_server
from tests.harness.processes import manage
from tests.harness.topology import Topology, production_topology

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(420)]

OPERATOR = "root"
OPERATOR_PASSWORD = "operator passphrase"
UNLIMITED = "1000000/m"
_names = count(1)


@pytest.fixture(scope="module")
def production(chromium_path) -> Iterator[Topology]:
    env = {
        "SIMULATED_TOKENS_PER_SECOND": "12",
        "SIMULATED_FIRST_TOKEN_DELAY": "0.3",
        "STREAM_HEARTBEAT_INTERVAL": "0.5",
        "WS_RATE_FRAMES_PER_USER": UNLIMITED,
        "WS_RATE_SENDS_PER_USER": UNLIMITED,
        "CACHE_ENABLED": "false",
    }
    with production_topology(
        replicas=2, provider="simulated", env=env, name="admin-promises"
    ) as topo:
        manage(
            "shell",
            "-c",
            "from accounts.models import User; "
            f"User.objects.create_superuser(username={OPERATOR!r}, password={OPERATOR_PASSWORD!r})",
            env=topo.env,
            timeout=180,
        )
        yield topo


@pytest.fixture
def topo(production: Topology) -> Iterator[Topology]:
    with production.logs_on_failure():
        yield production


@pytest.fixture
def two_people(browser, topo) -> Iterator[tuple]:
    """(operator's page signed in to /admin/, a fresh member's chat page, the member's name)."""
    contexts = []
    try:
        pages = []
        for _ in range(2):
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            context.set_default_timeout(WAIT_MS)
            contexts.append(context)
            pages.append(context.new_page())
        operator, member = pages
        operator.goto(f"{topo.base}/admin/login/?next=/admin/")
        operator.fill("#id_username", OPERATOR)
        operator.fill("#id_password", OPERATOR_PASSWORD)
        operator.click("input[type=submit]")
        operator.wait_for_url(f"{topo.base}/admin/")
        username = f"admin-promises-{next(_names)}"
        manage(
            "shell",
            "-c",
            "from accounts.models import User; "
            f"User.objects.create_user(username={username!r}, password={PASSWORD!r})",
            env=topo.env,
            timeout=180,
        )
        sign_in(member, topo, username)
        yield operator, member, username
    finally:
        for context in contexts:
            context.close()


def personal_organisation(topo: Topology, username: str) -> int:
    ((organisation,),) = topo.query(
        "SELECT o.id FROM accounts_organisation o JOIN accounts_user u "
        "ON o.personal_owner_id = u.id WHERE u.username = %s",
        username,
    )
    return int(organisation)


def picker_models(page) -> list[str]:
    return page.locator("#model-picker option").evaluate_all("os => os.map(o => o.value)")


def add_provider_in_admin(operator, topo: Topology, name: str, base_url: str, alias: str) -> None:
    """What an operator does on Providers → Add: an OpenAI-compatible server and one deployment."""
    from playwright.sync_api import expect

    operator.goto(f"{topo.base}/admin/llm/provider/add/")
    expect(operator.locator("#id_name_helptext")).to_contain_text("hyphens")  # a slug, said so
    operator.fill("#id_name", name)
    operator.select_option("#id_kind", "openai-compatible")
    operator.fill("#id_base_url", base_url)
    operator.click("#deployments-group .add-row a")
    operator.fill("#id_deployments-0-alias", alias)
    operator.fill("#id_deployments-0-model", "upstream-model")
    operator.click("input[name=_save]")
    expect(operator.locator(".messagelist .success")).to_contain_text("was added successfully")


def delete_provider(topo: Topology, name: str) -> None:
    manage(
        "shell",
        "-c",
        f"from llm.models import Provider; Provider.objects.filter(name={name!r}).delete()",
        env=topo.env,
        timeout=180,
    )


# --- tests ---------------------------------------------------------------------------------


def test_a_model_unticked_in_the_admin_leaves_the_picker_and_an_open_page_is_refused(
    two_people, topo
):
    """Allowed models: the organisation's admin ticks one model; a page opened before still
    offers the old ones, and its send of another is refused (`model_not_allowed`), nothing
    saved and the text kept for another try; after a reload the picker offers only the ticked
    model, and it answers."""
    from playwright.sync_api import expect

    operator, member, username = two_people
    offered = picker_models(member)
    assert "simulated" in offered and len(offered) >= 2, offered
    other = next(alias for alias in offered if alias != "simulated")
    member.locator("#model-picker").select_option(other)

    organisation = personal_organisation(topo, username)
    operator.goto(f"{topo.base}/admin/accounts/organisation/{organisation}/change/")
    allowed = operator.locator("input[name=allowed_models]")
    for alias in allowed.evaluate_all("inputs => inputs.map(i => i.value)"):
        operator.locator(f"input[name=allowed_models][value='{alias}']").set_checked(
            alias == "simulated"
        )
    operator.click("input[name=_save]")
    expect(operator.locator(".messagelist .success")).to_be_visible()
    assert topo.query(
        "SELECT allowed_models FROM accounts_organisation WHERE id = %s", organisation
    ) == [(["simulated"],)]

    member.fill("#composer-text", "Which model may I use?")
    member.press("#composer-text", "Enter")
    expect(member.locator("#status")).to_contain_text("Error", timeout=WAIT_MS)
    expect(member.locator("#composer-text")).to_have_value("Which model may I use?")
    expect(member.locator("#messages article.message--assistant")).to_have_count(0)
    saved = topo.query(
        "SELECT count(*) FROM chat_message m JOIN accounts_user u ON m.author_id = u.id "
        "WHERE u.username = %s",
        username,
    )
    assert saved == [(0,)]

    member.reload()
    expect(member.locator("#status")).to_have_text("Connected")
    assert picker_models(member) == ["simulated"]
    reply = send(member, "Which model may I use now?")
    assert wait_final(reply, timeout=60) == "complete"
    expect(reply.locator(".message__model")).to_contain_text("simulated")


def test_a_provider_an_operator_adds_in_the_admin_serves_the_members_next_reply(two_people, topo):
    """Providers: a server added with the admin's form (a real OpenAI-compatible upstream
    here) shows in the member's model picker after a reload, answers their message, and is
    listed with its breaker state."""
    from playwright.sync_api import expect

    operator, member, _ = two_people
    with fault_server() as upstream:
        upstream.default("house", Reply("Served by the operator's upstream."))
        add_provider_in_admin(
            operator, topo, "house-upstream", upstream.base_url("house"), "house-model"
        )
        try:
            member.reload()
            expect(member.locator("#status")).to_have_text("Connected")
            assert "house-model" in picker_models(member)
            member.locator("#model-picker").select_option("house-model")
            reply = send(member, "Who answers?")
            assert wait_final(reply, timeout=60) == "complete"
            expect(reply.locator(".message__body")).to_have_text(
                "Served by the operator's upstream."
            )
            assert any(seen.stream for seen in upstream.requests("house"))

            operator.goto(f"{topo.base}/admin/llm/provider/")
            row = operator.locator("#result_list tr").filter(has_text="house-upstream")
            expect(row).to_contain_text("closed")
        finally:
            delete_provider(topo, "house-upstream")


def test_a_failed_and_a_streaming_reply_show_on_the_dashboard_and_in_failed_replies(
    two_people, topo
):
    """The dashboard counts the member's reply streaming now and lists it under live streams;
    a reply whose upstream refuses is "Failed" with its error in the page, then on the
    dashboard's failed replies (linking to the message) and in Messages filtered by status
    and by its error code."""
    from playwright.sync_api import expect

    operator, member, _ = two_people
    with fault_server() as upstream:
        upstream.default("broken", Fail(400))
        add_provider_in_admin(
            operator, topo, "broken-upstream", upstream.base_url("broken"), "broken-model"
        )
        try:
            member.reload()
            expect(member.locator("#status")).to_have_text("Connected")
            member.locator("#model-picker").select_option("broken-model")
            failed = send(member, "This one fails")
            assert wait_final(failed, timeout=60) == "failed"
        finally:
            delete_provider(topo, "broken-upstream")
    failed_id = int(failed.get_attribute("data-message-id"))
    row = topo.row(failed_id)
    assert row["status"] == "failed" and row["error_code"], row
    expect(failed.locator(".message__status")).to_contain_text("Failed")
    (message,) = topo.query("SELECT error_message FROM chat_message WHERE id = %s", failed_id)
    assert message[0] and message[0] in (failed.text_content() or "")

    member.locator("#model-picker").select_option("simulated")
    streaming = send(member, long_prompt("watch-me-on-the-dashboard", words=200))
    wait_until(member, lambda: len(body_text(streaming)) > 20, what="the reply streaming")
    streaming_id = streaming.get_attribute("data-message-id")
    # Freeze the worker mid-reply, so the reply is surely streaming while the dashboard loads.
    os.killpg(topo.pid("worker"), signal.SIGSTOP)
    try:
        assert topo.row(int(streaming_id))["status"] == "streaming"
        operator.goto(f"{topo.base}/admin/dashboard/")
    finally:
        os.killpg(topo.pid("worker"), signal.SIGCONT)
    live = operator.locator("#live tr.live-row").filter(
        has=operator.get_by_role("link", name=f"#{streaming_id}", exact=True)
    )
    expect(live).to_have_count(1)
    assert int(operator.locator("#kpi-live").inner_text()) >= 1
    link = operator.get_by_role("link", name=f"#{failed_id}", exact=True)
    failed_row = operator.locator("#failed tr").filter(has=link)
    expect(failed_row).to_have_count(1)
    expect(failed_row).to_contain_text(row["error_code"])
    failed_row.locator("a").first.click()
    operator.wait_for_url(re.compile(rf"/admin/chat/message/{failed_id}/change/"))

    operator.goto(f"{topo.base}/admin/")
    operator.get_by_role("link", name=re.compile("failed replies", re.I)).first.click()
    operator.get_by_role("link", name=row["error_code"]).click()
    expect(operator.locator("#result_list td.field-error").first).to_contain_text(row["error_code"])
    assert f"error_code={row['error_code']}" in operator.url
    assert "status__exact=failed" in operator.url
    ids = operator.locator("#result_list td.field-id, #result_list th.field-id").all_inner_texts()
    assert str(failed_id) in [i.strip() for i in ids], ids
    member.locator("[data-stop]").last.click()  # the long reply need not finish
    assert wait_final(streaming, timeout=30) in ("cancelled", "complete")


def test_the_dashboard_for_one_organisation_and_its_csv_agree_with_the_ledger(two_people, topo):
    """A member's reply, generated by the worker, is charged once: the dashboard filtered on
    their organisation and the monthly CSV downloaded from it give the ledger's figures."""
    import csv
    from pathlib import Path

    from playwright.sync_api import expect

    operator, member, username = two_people
    reply = send(member, "Count me once")
    assert wait_final(reply, timeout=60) == "complete"
    ((replies, tokens),) = topo.query(
        "SELECT count(*), sum(l.used_tokens) FROM accounts_usageledger l "
        "JOIN accounts_user u ON l.user_id = u.id WHERE u.username = %s AND l.state = 'settled'",
        username,
    )
    assert replies == 1 and tokens > 0
    organisation = personal_organisation(topo, username)

    operator.goto(f"{topo.base}/admin/dashboard/")
    operator.locator("#id_organisation").select_option(str(organisation))
    operator.get_by_role("button", name="Show").click()
    expect(operator.locator("#kpi-replies")).to_have_text("1")
    expect(operator.locator("#kpi-tokens")).to_have_text(str(tokens))

    operator.locator("#export-organisation").select_option(str(organisation))
    with operator.expect_download() as download:
        operator.get_by_role("button", name="Download CSV").click()
    rows = list(csv.DictReader(Path(download.value.path()).read_text().splitlines()))
    assert [(r["user"], r["model"], r["messages"], r["tokens"]) for r in rows] == [
        (username, "simulated", "1", str(tokens))
    ]
