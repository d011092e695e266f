"""Documents in the admin: upload, ingestion status and failures, delete with passages and
vectors, retry, and per organisation the switch and the purge (imported by chat/admin.py)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from accounts.admin_scoping import OPERATOR_ROLES, OrganisationScopedAdmin
from accounts.models import AuditLog, Membership
from accounts.services import audit_record
from accounts.signals import client_ip
from chat.documents import services
from chat.documents.extract import DocumentRefused
from chat.documents.models import Collection, Document, OrganisationDocuments
from chat.documents.tasks import ingestion_dispatch


class DocumentAddForm(forms.ModelForm):  # type: ignore[type-arg]
    """Uploading through the admin: the same service (and refusals) as the page and REST."""

    upload = forms.FileField(label="File", help_text="PDF, Markdown, plain text, HTML or DOCX.")
    request_user: Any = None  # set by DocumentAdmin.get_form
    uploaded: services.Upload

    class Meta:
        model = Document
        fields = ["collection", "conversation"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        upload = data.get("upload")
        if upload is None or self.errors:
            return data
        if (data.get("collection") is None) == (data.get("conversation") is None):
            raise forms.ValidationError("Choose a collection or a conversation (one of them).")
        try:
            services.document_size_check(name=upload.name, size=upload.size)
            self.uploaded = services.document_upload(
                by=self.request_user,
                name=upload.name,
                data=upload.read(),
                content_type=upload.content_type or "",
                collection=data.get("collection"),
                conversation=data.get("conversation"),
            )
        except DocumentRefused as refused:
            raise forms.ValidationError(refused.detail, code=refused.code) from None
        return data


@admin.register(Document)
class DocumentAdmin(OrganisationScopedAdmin):
    list_display = ("name", "organisation", "where", "kind", "pages", "status", "percent", "error")
    list_filter = ("status", "kind")
    list_select_related = ("organisation", "collection", "conversation")
    search_fields = ("name", "sha256")
    readonly_fields = (
        "organisation", "conversation", "collection", "uploaded_by", "name", "kind",
        "content_type", "size", "sha256", "pages", "status", "chunks_total", "chunks_done",
        "embedding_tokens", "error", "created_at", "ingested_at",
    )  # fmt: skip
    exclude = ("data",)
    change_roles = frozenset({Membership.Role.OPERATOR, Membership.Role.ADMIN})
    delete_roles = OPERATOR_ROLES
    actions = ["delete_documents", "retry_ingestion"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).defer("data")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        if obj is None:
            kwargs["form"] = DocumentAddForm
            form: Any = super().get_form(request, obj, change=change, **kwargs)
            form.request_user = request.user
            return form
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ()

    def get_exclude(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.exclude if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["upload", "collection", "conversation"]
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if change:
            return  # nothing on a document is edited here
        uploaded = form.uploaded.document
        obj.pk, obj.name = uploaded.pk, uploaded.name

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # ours also deletes the vectors
        return actions

    @admin.display(description="where")
    def where(self, document: Document) -> str:
        if document.collection_id is not None:
            return f"collection {document.collection}"
        return f"conversation #{document.conversation_id}"

    @admin.display(description="progress")
    def percent(self, document: Document) -> str:
        return f"{document.progress:.0%}"

    @admin.action(description="Delete the selected documents (with passages and vectors)")
    def delete_documents(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        if not self.has_delete_permission(request):
            return
        count = services.documents_delete(documents=list(queryset))
        self.message_user(request, f"Deleted {count} document(s).", messages.SUCCESS)

    @admin.action(description="Ingest failed or stuck documents again")
    def retry_ingestion(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        # A document stays `processing` if its worker died; retry it only once nobody works on
        # it (a second ingestion of a live one fails on the chunks' unique positions).
        stuck = (Document.Status.FAILED, Document.Status.PROCESSING)
        failed = list(queryset.filter(status__in=stuck).values_list("pk", flat=True))
        Document.objects.filter(pk__in=failed, status__in=stuck).update(
            status=Document.Status.PENDING, error="", chunks_done=0
        )
        for pk in failed:
            ingestion_dispatch(pk)
        self.message_user(request, f"Ingesting {len(failed)} document(s) again.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        services.document_delete(document=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        services.documents_delete(documents=list(queryset))


@admin.register(Collection)
class CollectionAdmin(OrganisationScopedAdmin):
    list_display = ("name", "organisation", "created_at")
    search_fields = ("name",)
    raw_id_fields = ("conversations",)
    change_roles = frozenset({Membership.Role.OPERATOR, Membership.Role.ADMIN})


@admin.register(OrganisationDocuments)
class OrganisationDocumentsAdmin(OrganisationScopedAdmin):
    """The documents switch and the purge, per organisation."""

    organisation_field = "pk"
    list_display = ("name", "documents_enabled", "documents", "ready", "failed")
    list_editable = ("documents_enabled",)
    fields = ("name", "documents_enabled")
    readonly_fields = ("name",)
    search_fields = ("name", "slug")
    change_roles = frozenset({Membership.Role.ADMIN})
    actions = ["purge_documents"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                document_count=Count("documents"),
                ready_count=Count("documents", filter=Q(documents__status="ready")),
                failed_count=Count("documents", filter=Q(documents__status="failed")),
            )
        )

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:  # type: ignore[type-arg]
        """The switch is a tenant feature: who turned it on or off is audited, as the
        organisation's other settings are (accounts/admin.py)."""
        if change and "documents_enabled" in form.changed_data:
            audit_record(
                action=AuditLog.Action.ADMIN_EDIT,
                actor=request.user,  # type: ignore[arg-type]
                organisation=obj,
                target=str(obj),
                ip=client_ip(request),
                details={"documents_enabled": obj.documents_enabled},
            )
        super().save_model(request, obj, form, change)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # organisations are not deleted from here
        return actions

    @admin.display(description="documents", ordering="document_count")
    def documents(self, organisation: Any) -> int:
        return int(organisation.document_count)

    @admin.display(description="ready")
    def ready(self, organisation: Any) -> int:
        return int(organisation.ready_count)

    @admin.display(description="failed")
    def failed(self, organisation: Any) -> int:
        return int(organisation.failed_count)

    @admin.action(description="Purge all documents of the selected organisations")
    def purge_documents(
        self, request: HttpRequest, queryset: QuerySet[OrganisationDocuments]
    ) -> None:
        # Operators of the organisation (or superusers): the queryset is already scoped.
        allowed = set(self.organisation_ids(request, OPERATOR_ROLES) or [])
        total = 0
        for organisation in queryset:
            if request.user.is_superuser or organisation.pk in allowed:
                total += services.organisation_documents_purge(organisation=organisation)
        self.message_user(request, f"Purged {total} document(s).", messages.SUCCESS)
