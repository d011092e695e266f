"""Pages: a document with the cited passage marked (where a citation's link leads), its file,
and the documents panel of the chat page (templates/chat/documents/panel.html)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import User
from chat.documents import selectors
from chat.documents.api import document_file_response
from chat.errors import ChatError


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


@login_required
def document_detail(request: HttpRequest, document_id: int) -> HttpResponse:
    """The document's text page by page, passage by passage; `?chunk=` marks the cited one.
    Only for those who may read it (404 otherwise, as for a conversation)."""
    try:
        document = selectors.document_access(user=_user(request), document_id=document_id)
    except ChatError:
        return render(request, "chat/not_found.html", status=404)
    marked = request.GET.get("chunk", "")
    chunks = list(document.chunks.order_by("position"))
    return render(
        request,
        "chat/documents/document.html",
        {
            "document": document,
            "chunks": chunks,
            "marked": int(marked) if marked.isdigit() else None,
        },
    )


@login_required
def document_file(request: HttpRequest, document_id: int) -> HttpResponse:
    try:
        document = selectors.document_access(user=_user(request), document_id=document_id)
    except ChatError:
        return render(request, "chat/not_found.html", status=404)
    return document_file_response(document)
