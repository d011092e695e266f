"""Server-rendered pages: the conversation list, one conversation, a new chat, and the
sidebar's writes (rename, pin, delete, instructions) as plain form posts. The page's scripts
post the same forms with `Accept: application/json` and get JSON back instead of a redirect."""

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
from chat.models import Conversation, Message


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


def _owned(request: HttpRequest, conversation_id: int) -> Conversation:
    return selectors.conversation_access(user=_user(request), conversation_id=conversation_id)


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _answer(
    request: HttpRequest, conversation: Conversation | None, *, to: str | None = None
) -> HttpResponse:
    """JSON for the page's scripts; otherwise back to the page (a form without scripts)."""
    if _wants_json(request):
        if conversation is None:
            return JsonResponse({"deleted": True})
        return JsonResponse(
            {
                "id": conversation.pk,
                "title": conversation.title,
                "pinned": conversation.pinned,
                "system_prompt": conversation.system_prompt,
            }
        )
    if to is not None:
        return redirect(to)
    assert conversation is not None
    return redirect("chat:conversation", conversation_id=conversation.pk)


def _refused(request: HttpRequest, error: ChatError) -> HttpResponse:
    status = 404 if error.code == "not_found" else 400
    if _wants_json(request):
        return JsonResponse({"code": error.code, "detail": error.detail}, status=status)
    return render(request, "chat/not_found.html", status=status)


@login_required
@require_POST
def conversation_rename(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        conversation = services.conversation_rename(
            conversation=_owned(request, conversation_id), title=request.POST.get("title", "")
        )
    except ChatError as error:
        return _refused(request, error)
    return _answer(request, conversation)


@login_required
@require_POST
def conversation_pin(request: HttpRequest, conversation_id: int) -> HttpResponse:
    pinned = request.POST.get("pinned")
    try:
        conversation = _owned(request, conversation_id)
        if pinned not in ("true", "false"):  # page.md: `true` or `false`; not a guess
            raise ChatError("bad_frame", "pinned must be true or false.")
        conversation = services.conversation_pin(conversation=conversation, pinned=pinned == "true")
    except ChatError as error:
        return _refused(request, error)
    return _answer(request, conversation)


@login_required
@require_POST
def conversation_instructions(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        conversation = services.conversation_instructions_set(
            conversation=_owned(request, conversation_id),
            system_prompt=request.POST.get("system_prompt", ""),
        )
    except ChatError as error:
        return _refused(request, error)
    return _answer(request, conversation)


@login_required
@require_POST
def conversation_delete(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        services.conversation_delete(
            conversation=_owned(request, conversation_id), by=_user(request)
        )
    except ChatError as error:
        return _refused(request, error)
    return _answer(request, None, to="chat:home")


@login_required
@require_GET
def api_help(request: HttpRequest) -> HttpResponse:
    """How programs use Parley (keys, REST, sockets): served, so the keys page can link it."""
    return render(request, "chat/api_help.html", {"base_url": request.build_absolute_uri("/")})


def _page_context(request: HttpRequest, *, conversation: Conversation | None) -> dict[str, object]:
    user = _user(request)
    messages: list[Message] = []
    if conversation is not None:
        versions = selectors.reply_versions(conversation=conversation)
        messages = list(selectors.message_history(conversation=conversation))
        for message in messages:
            # Earlier answers to the same user message (regenerated), then this one.
            earlier = versions.get(message.reply_to_id or 0, [])
            message.earlier_versions = earlier if message.role == "assistant" else []  # type: ignore[attr-defined]
    # People's own chats by default; `?all=1` adds what programs started (REST, OpenAI endpoint).
    show_all = request.GET.get("all") == "1"
    return {
        "conversations": selectors.conversation_list(
            user=user,
            organisation=request.organisation,  # type: ignore[attr-defined]
            origins=None if show_all else selectors.PEOPLE_ORIGINS,
        ).order_by("-pinned", "-updated_at")[:100],
        "models": selectors.model_choices(organisation=request.organisation),  # type: ignore[attr-defined]
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
