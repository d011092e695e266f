"""Failover while streaming, against the fault-injecting server over real loopback HTTP:
silent before the first token, an explicit retryable error after it, timeouts, and a fast
clear error when nothing can answer."""

from __future__ import annotations

import socket

import pytest
from asgiref.sync import sync_to_async

from llm.breaker import CircuitBreaker
from llm.models import Deployment, Provider
from tests.fault_server import Disconnect, Fail, Hang, Reply, Stall

pytestmark = pytest.mark.django_db(transaction=True)


async def test_fallback_before_the_first_token_is_silent(fault, deploy, generate):
    first = await sync_to_async(deploy)("primary", priority=0)
    await sync_to_async(deploy)("backup", priority=1)
    fault.default("primary", Fail(503))
    fault.default("backup", Reply("Answer wholly from the backup."))

    done = await generate()

    assert done.message.status == "complete"
    assert done.message.content == done.streamed_text == "Answer wholly from the backup."
    assert (done.message.provider, done.message.model) == ("backup", "backup-model")
    assert [(a["label"], a["outcome"]) for a in done.attempts] == [
        ("primary/primary-model", "failed"),
        ("backup/backup-model", "answered"),
    ]
    assert done.attempts[0]["status"] == 503 and "first_token_ms" not in done.attempts[0]
    assert done.message.routing["failover"] is True
    assert done.message.routing["answered_by"] != first.key
    assert not [e for e in done.events if e["type"] == "chat.error"]


async def test_a_fallback_alias_answers_when_every_deployment_of_the_model_fails(
    fault, deploy, generate
):
    from llm.models import FallbackChain

    await sync_to_async(deploy)("openai-a", alias="smart")
    await sync_to_async(deploy)("openai-b", alias="smart")
    await sync_to_async(deploy)("local-ish", alias="cheap")
    await FallbackChain.objects.acreate(alias="smart", fallbacks="cheap")
    fault.default("openai-a", Fail(500))
    fault.default("openai-b", Fail(502))
    fault.default("local-ish", Reply("From the fallback model."))

    done = await generate("smart")

    assert done.message.content == "From the fallback model."
    assert done.message.routing["chain"] == ["smart", "cheap"]
    assert [a["outcome"] for a in done.attempts] == ["failed", "failed", "answered"]
    assert done.attempts[-1]["alias"] == "cheap"


async def test_a_fallback_the_organisation_may_not_use_never_answers(
    fault, deploy, generate, owner
):
    from accounts.models import Organisation
    from llm.models import FallbackChain

    await sync_to_async(deploy)("openai-a", alias="smart")
    await sync_to_async(deploy)("local-ish", alias="cheap")
    await FallbackChain.objects.acreate(alias="smart", fallbacks="cheap")
    await Organisation.objects.filter(personal_owner=owner).aupdate(allowed_models=["smart"])
    fault.default("openai-a", Fail(500))
    fault.default("local-ish", Reply("From a model this organisation may not use."))

    done = await generate("smart")

    assert done.message.status == "failed"
    assert done.message.routing["chain"] == ["smart"]
    assert fault.count("local-ish") == 0
    assert "may not use" not in done.message.content


async def test_failure_after_the_first_token_ends_with_a_retryable_error_and_keeps_the_text(
    fault, deploy, generate
):
    await sync_to_async(deploy)("flaky", priority=0)
    await sync_to_async(deploy)("backup", priority=1)
    fault.default("flaky", Disconnect(text="The first half, then ", after_chunks=2, chunk_chars=8))

    done = await generate()

    partial = "The first half, then "[:16]
    assert done.message.status == "failed"
    assert (done.message.error_code, done.events[-1]["retryable"]) == ("interrupted", True)
    assert done.message.content == done.streamed_text == partial  # kept, nothing spliced on
    assert fault.count("backup") == 0
    assert done.message.provider == "flaky"
    assert done.attempts[0]["outcome"] == "failed" and "first_token_ms" in done.attempts[0]
    assert done.message.tokens_estimated and done.message.completion_tokens == 4  # 16 chars / 4


async def test_a_stream_that_stalls_mid_reply_ends_after_the_inter_token_timeout(
    fault, deploy, generate
):
    await sync_to_async(deploy)("stalls", inter_token_timeout=0.4)
    fault.default("stalls", Stall(text="Going, going, ", after_chunks=1, chunk_chars=7))

    done = await generate()

    assert done.message.status == "failed" and done.message.error_code == "interrupted"
    assert done.message.content == "Going, "
    assert done.attempts[0]["reason"] == "inter_token_timeout"
    assert 0.4 <= done.seconds < 60  # the stall itself lasts until the server stops


async def test_a_provider_that_sends_nothing_is_left_after_the_first_token_timeout(
    fault, deploy, generate
):
    await sync_to_async(deploy)("silent", first_token_timeout=0.4)
    await sync_to_async(deploy)("backup", priority=1)
    fault.default("silent", Hang())
    fault.default("backup", Reply("Backup here."))

    done = await generate()

    assert done.message.content == "Backup here."
    assert done.attempts[0]["reason"] == "first_token_timeout"
    assert 0.4 <= done.attempts[0]["ms"] / 1000 < 60  # the hang lasts until the server stops


async def test_a_slow_first_token_within_the_timeout_is_not_a_failure(fault, deploy, generate):
    await sync_to_async(deploy)("slow", first_token_timeout=20)
    fault.default("slow", Reply("Worth the wait.", first_delay=0.3))

    done = await generate()

    assert done.message.content == "Worth the wait."
    assert len(done.attempts) == 1 and done.attempts[0]["first_token_ms"] >= 300


async def test_when_every_deployment_is_open_the_reply_fails_at_once_with_a_clear_error(
    fault, deploy, generate
):
    deployments = [await sync_to_async(deploy)(name) for name in ("a", "b")]
    for deployment in deployments:
        breaker = CircuitBreaker(deployment.key)
        for _ in range(5):
            breaker.record_failure(breaker.allow())

    done = await generate()

    assert fault.count() == 0  # failed without asking any provider
    assert done.message.status == "failed"
    error = done.events[-1]
    assert (error["type"], error["code"], error["retryable"]) == (
        "chat.error",
        "provider_unavailable",
        True,
    )
    assert "try again in about" in error["detail"] and "'default'" in error["detail"]
    assert [s["reason"] for s in done.message.routing["skipped"]] == ["circuit_open"] * 2


async def test_disabled_deployments_take_no_traffic(fault, deploy, generate):
    off = await sync_to_async(deploy)("off", weight=100)
    await sync_to_async(deploy)("on")
    await Deployment.objects.filter(pk=off.pk).aupdate(enabled=False)

    for _ in range(3):
        assert (await generate()).message.provider == "on"
    assert fault.count("off") == 0


async def test_a_reply_whose_model_lost_every_deployment_fails_without_retrying(
    fault, deploy, owner, monkeypatch, settings
):
    from chat import services
    from chat.models import Message
    from chat.replies.stream import reply_stream

    monkeypatch.setattr("chat.replies.dispatch.dispatch_generation", lambda mid, provider: None)
    settings.LLM_DEFAULT_MODEL = "default"
    deployment = await sync_to_async(deploy)("soon-off")
    reply = (
        await sync_to_async(services.message_send)(
            author=owner, conversation=None, text="hi", client_id="x"
        )
    ).reply
    await Deployment.objects.filter(pk=deployment.pk).aupdate(enabled=False)  # while pending

    await reply_stream(message_id=reply.pk)

    saved = await Message.objects.aget(pk=reply.pk)
    assert (saved.status, saved.error_code) == ("failed", "provider_rejected")
    assert "No enabled deployment serves the model 'default'" in saved.error_message
    assert fault.count() == 0


def _unanswered_port() -> tuple[socket.socket, list[socket.socket], int]:
    """A listening socket whose accept queue is full: a new connection's SYN goes unanswered
    (Linux drops it), so connecting hangs exactly as to a black-holed host."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    return listener, fillers, port


async def test_the_connect_timeout_bounds_opening_the_connection(fault, deploy, generate):
    listener, fillers, port = _unanswered_port()
    try:
        hole = await sync_to_async(deploy)("hole", connect_timeout=0.3, first_token_timeout=120)
        await Provider.objects.filter(pk=hole.provider_id).aupdate(
            base_url=f"http://127.0.0.1:{port}/v1"
        )
        await sync_to_async(deploy)("backup", priority=1)

        done = await generate()
    finally:
        for sock in [listener, *fillers]:
            sock.close()

    assert done.message.content == "Hello from the fault server."
    assert done.attempts[0]["reason"] in ("timeout", "connection")
    assert done.attempts[0]["ms"] < 60_000  # the 0.3 s connect timeout, not the 120 s one
