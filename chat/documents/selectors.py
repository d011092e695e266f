"""Reads of documents and collections, each checked against who is asking.

A collection is readable by the members of its organisation; a document attached to a
conversation by whoever may read that conversation (its owner, while a member); a document in a
collection by the collection's readers. A key limited to one organisation passes
`organisation` and reaches nothing outside it. Nobody outside an organisation reads, lists or
retrieves its documents: retrieval only searches the scopes `retrieval_scopes` returns.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from accounts.models import Membership, Organisation, User
from accounts.selectors import OPERATOR_ROLES
from chat.documents.models import Collection, Document
from chat.errors import ChatError
from chat.models import Conversation


def _member_organisations(user: User, organisation: Organisation | None) -> QuerySet[Organisation]:
    organisations = Organisation.objects.filter(memberships__user=user)
    if organisation is not None:
        organisations = organisations.filter(pk=organisation.pk)
    return organisations


def collection_list(
    *, user: User, organisation: Organisation | None = None
) -> QuerySet[Collection]:
    return Collection.objects.filter(
        organisation__in=_member_organisations(user, organisation)
    ).order_by("name", "id")


def collection_access(
    *, user: User, collection_id: int, organisation: Organisation | None = None
) -> Collection:
    try:
        return collection_list(user=user, organisation=organisation).get(pk=collection_id)
    except Collection.DoesNotExist:
        raise ChatError("not_found", "No such collection.") from None


def document_list(*, user: User, organisation: Organisation | None = None) -> QuerySet[Document]:
    """Documents the user may read: of their own conversations, and of their organisations'
    collections."""
    organisations = _member_organisations(user, organisation)
    own = Q(
        conversation__owner=user,
        conversation__organisation__in=organisations,
    )
    shared = Q(collection__organisation__in=organisations)
    return Document.objects.filter(own | shared).defer("data")


def document_access(
    *, user: User, document_id: int, organisation: Organisation | None = None
) -> Document:
    """The document if this user may read it; otherwise not_found (no existence leak)."""
    try:
        return document_list(user=user, organisation=organisation).get(pk=document_id)
    except Document.DoesNotExist:
        raise ChatError("not_found", "No such document.") from None


def document_may_delete(*, user: User, document: Document) -> bool:
    """Its uploader, the owner of its conversation, or an operator or admin of its
    organisation (who may also purge them all in the admin)."""
    if document.uploaded_by_id == user.pk:
        return True
    conversation = document.conversation
    if conversation is not None and conversation.owner_id == user.pk:
        return True
    return Membership.objects.filter(
        user=user, organisation_id=document.organisation_id, role__in=OPERATOR_ROLES
    ).exists()


def retrieval_scopes(*, conversation: Conversation) -> list[str]:
    """Where a reply in this conversation may retrieve from: its own documents and the
    collections its owner picked, of its own organisation only, while the organisation has
    documents switched on; only scopes holding a ready document, so a reply without documents
    costs this one query (no embedding, no vector store)."""
    picked = Q(
        collection__conversations=conversation,
        collection__organisation_id=conversation.organisation_id,
    )
    held = (
        Document.objects.filter(
            Q(conversation_id=conversation.pk) | picked,
            organisation_id=conversation.organisation_id,
            organisation__documents_enabled=True,
            status=Document.Status.READY,
        )
        .order_by()
        .values_list("conversation_id", "collection_id")
        .distinct()
    )
    scopes = {
        f"conversation:{conv}" if conv is not None else f"collection:{coll}" for conv, coll in held
    }
    return sorted(scopes)
