"""Receivers that keep what the database holds about documents true however it changes:
through the services, the admin or a cascade.

- A document's vectors go with it however it is deleted (its conversation or collection
  deleted, its organisation deleted): the vector store has no foreign key to follow, so a
  receiver forgets them in the same transaction.
- A conversation is marked `retrieves` once a document is attached to it or a collection is
  picked for it (from either side of the many-to-many: the services, the collection admin), so
  replies in the others skip the look for documents (chat/documents/retrieval.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models.signals import m2m_changed, post_save, pre_delete
from django.dispatch import receiver

from chat.documents.models import VECTOR_NAMESPACE, Collection, Document, DocumentChunk
from chat.models import Conversation
from llm.vectors import vector_store


@receiver(pre_delete, sender=Document, dispatch_uid="document_vectors_forget")
def document_vectors_forget(sender: type[Document], instance: Document, **kwargs: Any) -> None:
    keys = list(DocumentChunk.objects.filter(document=instance).values_list("pk", flat=True))
    if keys:
        vector_store(VECTOR_NAMESPACE).delete(keys)


def _retrieving(conversation_ids: Iterable[int]) -> None:
    Conversation.objects.filter(pk__in=list(conversation_ids), retrieves=False).update(
        retrieves=True
    )


@receiver(post_save, sender=Document, dispatch_uid="document_conversation_retrieves")
def document_conversation_retrieves(
    sender: type[Document], instance: Document, created: bool, **kwargs: Any
) -> None:
    if created and instance.conversation_id is not None:
        _retrieving([instance.conversation_id])
        if Document.conversation.is_cached(instance):  # the caller's copy says so too
            instance.conversation.retrieves = True  # type: ignore[union-attr]


@receiver(m2m_changed, sender=Collection.conversations.through, dispatch_uid="collection_picked")
def collection_picked(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[int] | None, **kwargs: Any
) -> None:
    """`collection.conversations.add(…)` (reverse False: pk_set are conversations) or
    `conversation.collections.add(…)` (reverse True: the instance is the conversation)."""
    if action != "post_add" or not pk_set:
        return
    if reverse:
        _retrieving([instance.pk])
        instance.retrieves = True
    else:
        _retrieving(pk_set)
