"""A document's vectors go with it however it is deleted: through the services, or by a cascade
(its conversation or collection deleted, its organisation deleted). The vector store has no
foreign key to follow, so this receiver forgets them in the same transaction."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import pre_delete
from django.dispatch import receiver

from chat.documents.models import VECTOR_NAMESPACE, Document, DocumentChunk
from llm.vectors import vector_store


@receiver(pre_delete, sender=Document, dispatch_uid="document_vectors_forget")
def document_vectors_forget(sender: type[Document], instance: Document, **kwargs: Any) -> None:
    keys = list(DocumentChunk.objects.filter(document=instance).values_list("pk", flat=True))
    if keys:
        vector_store(VECTOR_NAMESPACE).delete(keys)
