"""REST operations on documents and collections (docs/api.md, "Documents"): one view per
operation, the services and selectors of chat/documents/ doing the work."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api_serializers import StrictInputSerializer
from chat.api.views.base import ApiView, Pagination, errors, paginated
from chat.documents import selectors, services
from chat.documents.models import Collection, Document
from chat.errors import ChatError


class DocumentOutputSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(help_text="0..1: how much of the ingestion is done.")
    url = serializers.SerializerMethodField(help_text="The page that shows the document.")
    file_url = serializers.SerializerMethodField(help_text="The original file.")

    class Meta:
        model = Document
        fields = [
            "id",
            "name",
            "kind",
            "content_type",
            "size",
            "sha256",
            "pages",
            "status",
            "progress",
            "chunks_total",
            "chunks_done",
            "error",
            "conversation",
            "collection",
            "created_at",
            "ingested_at",
            "url",
            "file_url",
        ]
        read_only_fields = fields

    def get_url(self, document: Document) -> str:
        return reverse("documents:document", args=[document.pk])

    def get_file_url(self, document: Document) -> str:
        return reverse("documents_api:document-file", args=[document.pk])


class DocumentUploadInputSerializer(StrictInputSerializer):
    file = serializers.FileField(help_text="PDF, Markdown, plain text, HTML or DOCX.")
    conversation = serializers.IntegerField(
        required=False, help_text="Attach it to this conversation of yours…"
    )
    collection = serializers.IntegerField(
        required=False, help_text="…or add it to this collection of your organisation."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("conversation" in attrs) == ("collection" in attrs):
            raise serializers.ValidationError("Give exactly one of conversation and collection.")
        return attrs


class DocumentListInputSerializer(serializers.Serializer):
    conversation = serializers.IntegerField(required=False)
    collection = serializers.IntegerField(required=False)


class CollectionOutputSerializer(serializers.ModelSerializer):
    documents = serializers.IntegerField(source="documents.count", read_only=True)

    class Meta:
        model = Collection
        fields = ["id", "name", "organisation", "documents", "created_at"]
        read_only_fields = fields


class CollectionCreateInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=200)


class ConversationCollectionsInputSerializer(StrictInputSerializer):
    collections = serializers.ListField(child=serializers.IntegerField(), max_length=50)


class DocumentUploadApi(ApiView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="document_upload",
        tags=["documents"],
        request={"multipart/form-data": DocumentUploadInputSerializer},
        responses={
            (201, "application/json"): DocumentOutputSerializer,
            (200, "application/json"): OpenApiResponse(
                DocumentOutputSerializer, description="The same file was already there."
            ),
            **errors(400, 404, 413, 415, 422),
        },
    )
    def post(self, request: Request) -> Response:
        """Upload a document; it is ingested in the background (follow `status`/`progress`).

        Refused at once, with nothing stored, when it is too large (413), of a kind not
        accepted (415), unreadable or over the page limit (422), or when documents are
        switched off for the organisation (403)."""
        data = DocumentUploadInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller()
        upload = data.validated_data["file"]
        conversation = collection = None
        if "conversation" in data.validated_data:
            conversation = self.conversation(data.validated_data["conversation"])
        else:
            collection = selectors.collection_access(
                user=caller.user,
                collection_id=data.validated_data["collection"],
                organisation=caller.only_organisation,
            )
        services.document_size_check(name=upload.name, size=upload.size)  # before reading it
        result = services.document_upload(
            by=caller.user,
            name=upload.name or "document",
            data=upload.read(),
            content_type=upload.content_type or "",
            conversation=conversation,
            collection=collection,
        )
        return Response(
            DocumentOutputSerializer(result.document).data, status=201 if result.created else 200
        )


class DocumentListApi(ApiView):
    pagination_class = Pagination

    @extend_schema(
        operation_id="document_list",
        tags=["documents"],
        parameters=[DocumentListInputSerializer],
        responses={
            (200, "application/json"): DocumentOutputSerializer(many=True),
            **errors(400, 404),
        },
    )
    def get(self, request: Request) -> Response:
        """Documents you can read: of your conversations and your organisations' collections
        (one conversation's or collection's with the parameters), newest first."""
        query = DocumentListInputSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        caller = self.caller()
        documents = selectors.document_list(user=caller.user, organisation=caller.only_organisation)
        if (conversation := query.validated_data.get("conversation")) is not None:
            documents = documents.filter(conversation_id=conversation)
        if (collection := query.validated_data.get("collection")) is not None:
            documents = documents.filter(collection_id=collection)
        return paginated(self, documents.order_by("-created_at", "-id"), DocumentOutputSerializer)


class DocumentApiMixin(ApiView):
    def document(self, document_id: int) -> Document:
        caller = self.caller()
        return selectors.document_access(
            user=caller.user, document_id=document_id, organisation=caller.only_organisation
        )


class DocumentDetailApi(DocumentApiMixin):
    @extend_schema(
        operation_id="document_detail",
        tags=["documents"],
        responses={(200, "application/json"): DocumentOutputSerializer, **errors(404)},
    )
    def get(self, request: Request, document_id: int) -> Response:
        """One document: its ingestion `status`, `progress` and `error`."""
        return Response(DocumentOutputSerializer(self.document(document_id)).data)


class DocumentDeleteApi(DocumentApiMixin):
    @extend_schema(
        operation_id="document_delete",
        tags=["documents"],
        responses={(204, "application/json"): None, **errors(404)},
    )
    def delete(self, request: Request, document_id: int) -> Response:
        """Delete the document with its passages and vectors (its uploader, the conversation's
        owner, or an operator of the organisation)."""
        document = self.document(document_id)
        if not selectors.document_may_delete(user=self.caller().user, document=document):
            raise ChatError("forbidden", "Only its uploader or an operator may delete it.")
        services.document_delete(document=document)
        return Response(status=204)


class DocumentFileApi(DocumentApiMixin):
    @extend_schema(
        operation_id="document_file",
        tags=["documents"],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The file as uploaded."
            ),
            **errors(404),
        },
    )
    def get(self, request: Request, document_id: int) -> HttpResponse:
        """The original file, as a download."""
        document = self.document(document_id)
        return document_file_response(document)


def document_file_response(document: Document) -> HttpResponse:
    """The stored bytes as an attachment (never rendered inline: an uploaded HTML file must
    not run in Parley's origin)."""
    data = Document.objects.filter(pk=document.pk).values_list("data", flat=True).get()
    response = HttpResponse(bytes(data), content_type="application/octet-stream")
    safe = "".join(c for c in document.name if c.isalnum() or c in " ._-")[:100] or "document"
    response["Content-Disposition"] = f'attachment; filename="{safe}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


class CollectionListApi(ApiView):
    pagination_class = Pagination

    @extend_schema(
        operation_id="collection_list",
        tags=["documents"],
        responses={
            (200, "application/json"): CollectionOutputSerializer(many=True),
            **errors(400, 404),
        },
    )
    def get(self, request: Request) -> Response:
        """Your organisations' shared collections."""
        caller = self.caller()
        collections = selectors.collection_list(
            user=caller.user, organisation=caller.only_organisation
        ).prefetch_related("documents")
        return paginated(self, collections, CollectionOutputSerializer)


class CollectionCreateApi(ApiView):
    @extend_schema(
        operation_id="collection_create",
        tags=["documents"],
        request=CollectionCreateInputSerializer,
        responses={(201, "application/json"): CollectionOutputSerializer, **errors(400, 409)},
    )
    def post(self, request: Request) -> Response:
        """A new shared collection in your (or your key's) organisation."""
        data = CollectionCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller()
        collection = services.collection_create(
            organisation=caller.organisation, name=data.validated_data["name"], by=caller.user
        )
        return Response(CollectionOutputSerializer(collection).data, status=201)


class ConversationCollectionsApi(ApiView):
    @extend_schema(
        operation_id="conversation_collections",
        tags=["documents"],
        responses={
            (200, "application/json"): CollectionOutputSerializer(many=True),
            **errors(404),
        },
    )
    def get(self, request: Request, conversation_id: int) -> Response:
        """The shared collections this conversation's replies retrieve from."""
        conversation = self.conversation(conversation_id)
        picked = selectors.collection_list(
            user=self.caller().user, organisation=conversation.organisation
        ).filter(conversations=conversation)
        return Response(CollectionOutputSerializer(picked, many=True).data)

    @extend_schema(
        operation_id="conversation_collections_set",
        tags=["documents"],
        request=ConversationCollectionsInputSerializer,
        responses={
            (200, "application/json"): CollectionOutputSerializer(many=True),
            **errors(400, 404),
        },
    )
    def put(self, request: Request, conversation_id: int) -> Response:
        """Pick the shared collections this conversation's replies retrieve from (replaces the
        previous choice; [] for none). Its own attached documents are always used."""
        conversation = self.conversation(conversation_id)
        data = ConversationCollectionsInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        caller = self.caller()
        collections = [
            selectors.collection_access(
                user=caller.user, collection_id=pk, organisation=conversation.organisation
            )
            for pk in dict.fromkeys(data.validated_data["collections"])
        ]
        picked = services.conversation_collections_set(
            conversation=conversation, collections=collections
        )
        return Response(CollectionOutputSerializer(picked, many=True).data)
