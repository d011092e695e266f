from __future__ import annotations

import pytest

from accounts.models import Budget
from accounts.quotas import QuotaExceeded, budgets_forget
from chat import services
from chat.errors import ChatError
from chat.models import Conversation, Message
from chat.replies import lifecycle


@pytest.mark.django_db(transaction=True)
def test_send_creates_conversation_user_message_and_pending_reply(owner, no_dispatch):
    result = services.message_send(
        author=owner, conversation=None, text="Plan a trip to Oslo", client_id="a"
    )
    assert result.created
    conversation = result.reply.conversation
    assert conversation.owner == owner and conversation.title == "Plan a trip to Oslo"
    assert result.user_message.status == Message.Status.COMPLETE
    assert result.reply.status == Message.Status.PENDING
    assert result.reply.reply_to == result.user_message
    assert result.reply.provider == "simulated"
    assert no_dispatch == [result.reply.pk]


@pytest.mark.django_db(transaction=True)
def test_repeated_client_id_returns_first_result_without_new_generation(owner, no_dispatch):
    first = services.message_send(author=owner, conversation=None, text="hi", client_id="dup")
    again = services.message_send(author=owner, conversation=None, text="hi", client_id="dup")
    assert not again.created
    assert (again.user_message.pk, again.reply.pk) == (first.user_message.pk, first.reply.pk)
    assert Conversation.objects.count() == 1 and Message.objects.count() == 2
    assert no_dispatch == [first.reply.pk]


@pytest.mark.django_db(transaction=True)
def test_a_repeat_refused_by_a_budget_the_first_used_up_answers_with_the_first(owner, no_dispatch):
    """A repeat is found when its transaction fails (no look-up before it): on the unique
    constraint, or, as here, on a check the first send passed. Nothing of it is kept."""
    first = services.message_send(author=owner, conversation=None, text="spend", client_id="b")
    organisation = first.reply.conversation.organisation
    Budget.objects.create(organisation=organisation, period="day", max_tokens=1)
    budgets_forget(organisation_id=organisation.pk)
    again = services.message_send(author=owner, conversation=None, text="spend", client_id="b")
    assert not again.created and again.reply.pk == first.reply.pk
    assert Conversation.objects.count() == 1 and Message.objects.count() == 2
    assert no_dispatch == [first.reply.pk]
    with pytest.raises(QuotaExceeded):  # a new send is refused as before
        services.message_send(author=owner, conversation=None, text="spend", client_id="c")


@pytest.mark.django_db
def test_same_client_id_from_two_users_is_two_messages(owner, member, no_dispatch):
    services.message_send(author=owner, conversation=None, text="x", client_id="shared")
    services.message_send(author=member, conversation=None, text="x", client_id="shared")
    assert Message.objects.filter(role="user").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("text", ["", "   \n", None, 42])
def test_empty_or_non_text_is_refused(owner, no_dispatch, text):
    with pytest.raises(ChatError) as error:
        services.message_send(author=owner, conversation=None, text=text, client_id="e")
    assert error.value.code == "bad_frame"
    assert Message.objects.count() == 0 and Conversation.objects.count() == 0


@pytest.mark.django_db
def test_too_long_text_is_refused(owner, no_dispatch, settings):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    with pytest.raises(ChatError, match="too long"):
        services.message_send(author=owner, conversation=None, text="x" * 11, client_id="l")


@pytest.mark.django_db
def test_outsider_cannot_send_into_a_conversation(owner, outsider, no_dispatch):
    conversation = services.conversation_create(owner=owner)
    with pytest.raises(ChatError) as error:
        services.message_send(author=outsider, conversation=conversation, text="hi", client_id="o")
    assert error.value.code == "not_found"


@pytest.mark.django_db
def test_cancel_of_a_pending_reply_finishes_it_at_once(owner, no_dispatch):
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="c")
    lifecycle.reply_cancel(message=result.reply, by=owner)
    result.reply.refresh_from_db()
    assert result.reply.status == Message.Status.CANCELLED and result.reply.finished_at
    assert lifecycle.reply_start(message_id=result.reply.pk) is None  # never starts later


@pytest.mark.django_db
def test_cancel_of_a_streaming_reply_raises_the_shared_flag(owner, no_dispatch):
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="c")
    assert lifecycle.reply_start(message_id=result.reply.pk) is not None
    assert result.reply.pk not in lifecycle.replies_cancel_requested(message_ids=[result.reply.pk])
    lifecycle.reply_cancel(message=result.reply, by=owner)
    assert result.reply.pk in lifecycle.replies_cancel_requested(message_ids=[result.reply.pk])


@pytest.mark.django_db
def test_a_user_message_cannot_be_cancelled(owner, no_dispatch):
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="c")
    with pytest.raises(ChatError):
        lifecycle.reply_cancel(message=result.user_message, by=owner)


@pytest.mark.django_db
def test_reply_is_claimed_once(owner, no_dispatch):
    result = services.message_send(author=owner, conversation=None, text="hi", client_id="c")
    assert lifecycle.reply_start(message_id=result.reply.pk) is not None
    assert lifecycle.reply_start(message_id=result.reply.pk) is None


@pytest.mark.django_db
def test_checkpoint_and_finish_save_text_seq_and_usage(owner, no_dispatch):
    reply = services.message_send(author=owner, conversation=None, text="hi", client_id="c").reply
    lifecycle.reply_start(message_id=reply.pk)
    lifecycle.replies_checkpoint(
        checkpoints=[lifecycle.ReplyCheckpoint(message_id=reply.pk, content="Hel", seq=3)]
    )
    reply.refresh_from_db()
    assert (reply.content, reply.seq, reply.status) == ("Hel", 3, "streaming")
    lifecycle.reply_finish(
        message_id=reply.pk,
        content="Hello ✓",
        status="complete",
        prompt_tokens=5,
        completion_tokens=2,
    )
    reply.refresh_from_db()
    assert reply.seq == 7  # code points, not bytes
    assert (reply.completion_tokens, reply.status) == (2, "complete")
    assert reply.total_ms is not None


@pytest.mark.django_db
def test_finishing_a_reply_pins_a_query_budget(owner, no_dispatch, django_assert_max_num_queries):
    reply = services.message_send(author=owner, conversation=None, text="hi", client_id="w").reply
    lifecycle.reply_start(message_id=reply.pk)
    # Every reply pays this in the worker: lock and save the reply in a savepoint (4), then
    # settle its reservation: lock the ledger row (read once) and the counters, update both.
    with django_assert_max_num_queries(8):
        finished = lifecycle.reply_finish(
            message_id=reply.pk, content="Hello", status="complete", completion_tokens=2
        )
    assert finished is not None
    saved = Message.objects.get(pk=reply.pk)
    assert (saved.status, saved.content, saved.seq, saved.completion_tokens) == (
        "complete",
        "Hello",
        5,
        2,
    )


@pytest.mark.django_db
def test_send_pins_a_query_budget(owner, no_dispatch, django_assert_max_num_queries):
    conversation = services.conversation_create(owner=owner)
    # The first send of the day also creates the usage counters and caches the budget rules.
    services.message_send(author=owner, conversation=conversation, text="hi", client_id="w")
    # 8 for the messages, 5 for the budget reservation (prompt estimate, counter lock and
    # update, ledger insert, attaching the reply).
    with django_assert_max_num_queries(13):
        services.message_send(author=owner, conversation=conversation, text="hi", client_id="q")


@pytest.mark.django_db
def test_a_client_id_reused_in_another_organisation_is_a_new_message(
    owner, organisation, no_dispatch
):
    """Idempotency is per (author, organisation, client_id): "c-1" in Acme is not "c-1" in the
    owner's personal organisation, and never answers with Acme's conversation."""
    team = services.message_send(
        author=owner, conversation=None, text="team", client_id="c-1", organisation=organisation
    )
    personal = services.message_send(author=owner, conversation=None, text="mine", client_id="c-1")
    assert personal.created and team.created
    assert personal.reply.conversation_id != team.reply.conversation_id
    assert personal.reply.conversation.organisation_id == owner.personal_organisation.pk
    again = services.message_send(
        author=owner, conversation=None, text="team", client_id="c-1", organisation=organisation
    )
    assert not again.created and again.reply.pk == team.reply.pk


@pytest.mark.django_db(transaction=True)
def test_a_send_reads_its_budgets_and_models_from_the_database_when_the_cache_is_down(
    owner, member, no_dispatch, settings
):
    """The cache only spares a send two queries (its organisation's budget rules and allowed
    models): with Redis unreachable (down, or a timeout under load) the send is saved, and a
    budget still holds, instead of the socket answering `internal`."""
    from accounts.services import organisation_personal_ensure
    from tests.harness.processes import free_port

    limited = organisation_personal_ensure(user=owner)
    Budget.objects.create(organisation=limited, period="day", max_tokens=1)
    settings.CACHES = {
        "default": {
            "BACKEND": "project.cache.SharedClientRedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    result = services.message_send(author=member, conversation=None, text="hi", client_id="a")
    assert result.created and no_dispatch == [result.reply.pk]
    with pytest.raises(QuotaExceeded):
        services.message_send(author=owner, conversation=None, text="hi", client_id="b")
