"""Where a reply is generated in production: a Celery worker, or, for the OpenAI endpoint's
remote-model replies, the server process holding the request (API_GENERATION_IN_SERVER,
chat/replies/dispatch.py). The behaviour on the real topology is
tests/integration/test_openai_in_server.py."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from chat.api.catalog import alias_deployments, deployments_all_remote
from chat.replies import dispatch
from llm.router import provider_choose


@pytest.fixture
def production(settings, monkeypatch):
    """Celery generation with its queue recorded, and what this server would start itself."""
    settings.GENERATION_BACKEND = "celery"
    settings.API_GENERATION_IN_SERVER = True
    where: list[tuple[str, int]] = []
    monkeypatch.setattr(
        "chat.replies.dispatch.generate_reply.apply_async",
        lambda args, queue: where.append((queue, args[0])),
    )
    monkeypatch.setattr(
        dispatch, "_run_in_server", lambda message_id: where.append(("here", message_id))
    )
    return where


@pytest.mark.django_db(transaction=True)
async def test_an_api_reply_on_a_remote_model_is_generated_here(production, monkeypatch):
    monkeypatch.setattr(dispatch, "_server_loop", asyncio.get_running_loop())
    remote = await sync_to_async(provider_choose)(pinned="simulated")
    local = await sync_to_async(provider_choose)(pinned="local")
    with dispatch.generation_in_this_server():
        dispatch.dispatch_generation(1, remote)
        dispatch.dispatch_generation(2, local)  # CPU-bound inference: its own worker pool
    dispatch.dispatch_generation(3, remote)  # page, WebSocket, REST: Celery, they resume
    assert production == [("here", 1), ("llm-local", 2), ("llm-remote", 3)]


@pytest.mark.django_db(transaction=True)
async def test_the_setting_off_or_no_server_loop_sends_api_replies_to_celery(
    production, settings, monkeypatch
):
    remote = await sync_to_async(provider_choose)(pinned="simulated")
    monkeypatch.setattr(dispatch, "_server_loop", None)  # a management command, a script
    with dispatch.generation_in_this_server():
        dispatch.dispatch_generation(1, remote)
    monkeypatch.setattr(dispatch, "_server_loop", asyncio.get_running_loop())
    settings.API_GENERATION_IN_SERVER = False
    with dispatch.generation_in_this_server():
        dispatch.dispatch_generation(2, remote)
    assert production == [("llm-remote", 1), ("llm-remote", 2)]


@pytest.mark.django_db
def test_a_model_that_may_fail_over_to_the_local_model_is_not_all_remote(settings):
    assert deployments_all_remote(alias_deployments("simulated"))
    assert not deployments_all_remote(alias_deployments("local"))
    settings.LLM_FALLBACKS = {"simulated": ["local"]}
    assert not deployments_all_remote(alias_deployments("simulated"))
