"""Server-rendered pages: the conversation list, one conversation, a new chat."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User
from accounts.selectors import ACTIVE_ORGANISATION_SESSION_KEY
from chat import selectors, services
from chat.errors import ChatError


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """The chat page with no conversation open: a new chat starts on the first send."""
    return render(request, "chat/page.html", _page_context(request, conversation=None))


@login_required
@require_GET
def conversation_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        conversation = selectors.conversation_access(
            user=_user(request), conversation_id=conversation_id
        )
    except ChatError:
        return render(request, "chat/not_found.html", status=404)
    # Opening a chat of another of your organisations works in that organisation from now on.
    request.session[ACTIVE_ORGANISATION_SESSION_KEY] = conversation.organisation_id
    request.organisation = conversation.organisation  # type: ignore[attr-defined]
    return render(request, "chat/page.html", _page_context(request, conversation=conversation))


@login_required
@require_POST
def conversation_new(request: HttpRequest) -> HttpResponse:
    conversation = services.conversation_create(
        owner=_user(request),
        organisation=request.organisation,  # type: ignore[attr-defined]
    )
    return redirect("chat:conversation", conversation_id=conversation.pk)


def _page_context(request: HttpRequest, *, conversation: object) -> dict[str, object]:
    user = _user(request)
    messages = (
        selectors.message_history(conversation=conversation)  # type: ignore[arg-type]
        if conversation is not None
        else []
    )
    # People's own chats by default; `?all=1` adds what programs started (REST, OpenAI endpoint).
    show_all = request.GET.get("all") == "1"
    return {
        "conversations": selectors.conversation_list(
            user=user,
            organisation=request.organisation,  # type: ignore[attr-defined]
            origins=None if show_all else selectors.PEOPLE_ORIGINS,
        )[:100],
        "show_all": show_all,
        "conversation": conversation,
        "messages": messages,
        "max_chars": settings.CHAT_MAX_MESSAGE_CHARS,
    }


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness and readiness for nginx and orchestrators: the database answers."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"status": "ok", "generation": settings.GENERATION_BACKEND})
