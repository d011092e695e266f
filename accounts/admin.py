"""Operators' admin: users, organisations and roles, invitations, API keys, budgets, usage,
the audit log.

Non-superuser operators (is_staff plus an operator/admin role) see only their organisations'
rows (accounts/admin_scoping.py).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, Model, OuterRef, QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from accounts import invitations, services
from accounts.admin_scoping import (
    OPERATOR_ROLES,
    OrganisationListFilter,
    OrganisationScopedAdmin,
    ReadOnlyScopedAdmin,
    _is_superuser,
    admin_roles,
)
from accounts.models import (
    ApiKey,
    AuditLog,
    Budget,
    Invitation,
    Membership,
    Organisation,
    UsageCounter,
    UsageLedger,
    User,
)
from accounts.signals import client_ip
from accounts.usage import month_parse, usage_month_csv

admin.site.site_header = "Parley operations"
admin.site.site_title = "Parley admin"

ADMIN_ROLE = frozenset({Membership.Role.ADMIN})


@admin.register(User)
class UserAdmin(OrganisationScopedAdmin, DjangoUserAdmin):  # type: ignore[misc]
    """Superusers manage accounts; operators see their organisations' members, read-only
    (changing passwords or staff flags is not an organisation's business)."""

    organisation_field = "memberships__organisation"

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if _is_superuser(request) or obj is None:
            return super().has_view_permission(request, None)
        return self.get_queryset(request).filter(pk=obj.pk).exists()


class MembershipInline(admin.TabularInline):  # type: ignore[type-arg]
    """Organisation admins change their members' roles and remove members; they add nobody:
    joining takes the user's consent (an invitation they accept). Superusers add members."""

    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)

    def _org_admin(self, request: HttpRequest, obj: Organisation | None) -> bool:
        if _is_superuser(request):
            return True
        return obj is not None and admin_roles(request).get(obj.pk) == Membership.Role.ADMIN

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A membership's user is fixed: swapping in another user id would add them unasked.
        return self.readonly_fields if _is_superuser(request) else ("user", "created_at")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request) or bool(admin_roles(request))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._org_admin(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._org_admin(request, obj)


@admin.register(Organisation)
class OrganisationAdmin(OrganisationScopedAdmin):
    organisation_field = "pk"
    change_roles = ADMIN_ROLE
    list_display = ("name", "slug", "personal_owner", "require_2fa", "created_at")
    list_filter = (("personal_owner", admin.EmptyFieldListFilter), "require_2fa")
    raw_id_fields = ("personal_owner",)
    search_fields = ("name", "slug", "memberships__user__username")
    readonly_fields = ("created_at",)
    inlines = [MembershipInline]
    actions = ["export_usage_this_month"]

    def object_organisation_id(self, obj: Model) -> int | None:
        return obj.pk

    # --- the monthly usage export (CSV) ------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        export = path(
            "usage-export/",
            self.admin_site.admin_view(self.usage_export_view),
            name="accounts_organisation_usage_export",
        )
        return [export, *super().get_urls()]

    def _usage_csv(self, organisations: list[Organisation], month: date) -> HttpResponse:
        name = organisations[0].slug if len(organisations) == 1 else "organisations"
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="usage-{name}-{month:%Y-%m}.csv"'
        usage_month_csv(organisations=organisations, month=month, out=response)
        return response

    def usage_export_view(self, request: HttpRequest) -> HttpResponse:
        """GET ?organisation=<id>&month=YYYY-MM (default: this month): one organisation's
        usage per day, user and model, for those who may view it here."""
        try:
            month = month_parse(request.GET.get("month") or f"{timezone.now():%Y-%m}")
            organisation_id = int(request.GET.get("organisation", ""))
        except ValueError:
            return HttpResponse(
                "Give ?organisation=<id>&month=YYYY-MM.", status=400, content_type="text/plain"
            )
        organisation = self.get_queryset(request).filter(pk=organisation_id).first()
        if organisation is None or not self.has_view_permission(request, organisation):
            raise PermissionDenied("Not an organisation you operate.")
        return self._usage_csv([organisation], month)

    @admin.action(description="Export this month's usage (CSV)", permissions=["view"])
    def export_usage_this_month(
        self, request: HttpRequest, queryset: QuerySet[Organisation]
    ) -> HttpResponse:
        return self._usage_csv(list(queryset.order_by("name", "pk")), timezone.now().date())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Naming an organisation someone's personal one would start their chats in it.
        if _is_superuser(request):
            return self.readonly_fields
        return (*self.readonly_fields, "personal_owner")

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return _is_superuser(request) and super().has_add_permission(request, *args)

    # Settings whose changes are audited with who made them (tenant features add theirs).
    audited_fields: tuple[str, ...] = ("require_2fa",)

    def save_model(
        self, request: HttpRequest, obj: Organisation, form: ModelForm, change: bool
    ) -> None:  # type: ignore[type-arg]
        for name in self.audited_fields:
            if change and name in form.changed_data:
                services.audit_record(
                    action=AuditLog.Action.ADMIN_EDIT,
                    actor=request.user,  # type: ignore[arg-type]
                    organisation=obj,
                    target=str(obj),
                    ip=client_ip(request),
                    details={name: getattr(obj, name)},
                )
        super().save_model(request, obj, form, change)

    def save_formset(
        self,
        request: HttpRequest,
        form: ModelForm,
        formset: BaseInlineFormSet,
        change: bool,  # type: ignore[type-arg]
    ) -> None:
        """Role changes, additions and removals are audited with who did them."""
        if formset.model is not Membership:
            return super().save_formset(request, form, formset, change)
        before = {m.pk: m.role for m in Membership.objects.filter(organisation=form.instance)}
        super().save_formset(request, form, formset, change)
        after = {
            m.pk: m
            for m in Membership.objects.filter(organisation=form.instance).select_related("user")
        }
        for pk, membership in after.items():
            if before.get(pk) != membership.role:
                self._audit_role(
                    request,
                    form.instance,
                    membership.user.get_username(),
                    before.get(pk),
                    membership.role,
                )
        for obj in formset.deleted_objects:
            self._audit_role(
                request, form.instance, obj.user.get_username(), before.get(obj.pk), None
            )

    def _audit_role(
        self,
        request: HttpRequest,
        organisation: Organisation,
        username: str,
        old: str | None,
        new: str | None,
    ) -> None:
        services.audit_record(
            action=AuditLog.Action.ROLE_CHANGED,
            actor=request.user,  # type: ignore[arg-type]
            organisation=organisation,
            target=username,
            ip=client_ip(request),
            details={"from": old, "to": new},
        )


class InvitationForm(ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Invitation
        fields = ("organisation", "username", "email", "role")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        organisation = cleaned.get("organisation")
        if organisation is not None:
            invitations.invitation_validate(
                organisation=organisation,
                username=cleaned.get("username") or "",
                email=cleaned.get("email") or "",
            )
        return cleaned


@admin.register(Invitation)
class InvitationAdmin(OrganisationScopedAdmin):
    """Admins invite people into their organisations; the invitee accepts or declines on
    their invitations page (or through the link shown once here, for an email address)."""

    form = InvitationForm
    change_roles = ADMIN_ROLE
    delete_roles = ADMIN_ROLE
    list_display = ("invitee", "organisation", "role", "state", "invited_by", "expires_at")
    list_filter = ("role", ("organisation", OrganisationListFilter))
    search_fields = ("username", "email", "organisation__name")
    list_select_related = ("organisation", "invited_by")
    readonly_fields = (
        "invited_by",
        "created_at",
        "expires_at",
        "accepted_at",
        "accepted_by",
        "declined_at",
    )

    @admin.display(description="state")
    def state(self, obj: Invitation) -> str:
        return obj.state

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return self.readonly_fields
        return ("organisation", "username", "email", "role", *self.readonly_fields)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        if _is_superuser(request):
            return super().has_add_permission(request, *args)
        administered = self.organisation_ids(request, self.change_roles)
        return bool(request.user.is_staff) and (
            Organisation.objects.filter(pk__in=administered, personal_owner__isnull=True).exists()
        )

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False  # answered by the invitee, revoked by deleting it

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if field is not None and field.queryset is not None and db_field.name == "organisation":
            field.queryset = field.queryset.filter(personal_owner__isnull=True)
        return field

    def save_model(
        self, request: HttpRequest, obj: Invitation, form: ModelForm, change: bool
    ) -> None:  # type: ignore[type-arg]
        created = invitations.invitation_create(
            organisation=obj.organisation,
            by=request.user,  # type: ignore[arg-type]
            username=obj.username,
            email=obj.email,
            role=obj.role,
            ip=client_ip(request),
        )
        obj.pk = created.invitation.pk
        obj.refresh_from_db()
        link = request.build_absolute_uri(reverse("accounts:invitation_link", args=[created.token]))
        self.message_user(
            request,
            f"Invited {obj.invitee}. Their link, shown only now: {link}",
            messages.SUCCESS,
        )


@admin.register(ApiKey)
class ApiKeyAdmin(OrganisationScopedAdmin):
    """Keys are made by their users at /accounts/keys/; here operators revoke them. The
    secret is not stored, and the hash is not shown."""

    list_display = (
        "name",
        "prefix_shown",
        "organisation",
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = (("organisation", admin.RelatedOnlyFieldListFilter), "revoked_at")
    search_fields = ("name", "prefix", "user__username", "organisation__name")
    fields = (
        "name",
        "prefix_shown",
        "organisation",
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ["revoke"]

    @admin.display(description="key")
    def prefix_shown(self, obj: ApiKey) -> str:
        return f"pk_{obj.prefix}_…"

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return _is_superuser(request) or bool(
            request.user.is_staff and self.organisation_ids(request, OPERATOR_ROLES)
        )

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(
            services.api_key_revoke(key=key, by=request.user, ip=client_ip(request))  # type: ignore[arg-type]
            for key in queryset.select_related("organisation")
        )
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)


@admin.register(Budget)
class BudgetAdmin(OrganisationScopedAdmin):
    change_roles = OPERATOR_ROLES
    delete_roles = OPERATOR_ROLES
    list_display = ("organisation", "user", "period", "max_tokens", "max_cost", "updated_at")
    list_filter = ("period", ("organisation", admin.RelatedOnlyFieldListFilter))
    search_fields = ("organisation__name", "user__username")
    raw_id_fields = ("user",)

    def _audit(self, request: HttpRequest, obj: Budget, change: str) -> None:
        services.audit_record(
            action=AuditLog.Action.BUDGET_CHANGED,
            actor=request.user,  # type: ignore[arg-type]
            organisation=obj.organisation,
            target=str(obj),
            ip=client_ip(request),
            details={
                "change": change,
                "period": obj.period,
                "user": obj.user_id,
                "max_tokens": obj.max_tokens,
                "max_cost": str(obj.max_cost) if obj.max_cost is not None else None,
            },
        )

    def save_model(self, request: HttpRequest, obj: Budget, form: ModelForm, change: bool) -> None:  # type: ignore[type-arg]
        super().save_model(request, obj, form, change)
        self._audit(request, obj, "changed" if change else "added")

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        self._audit(request, obj, "deleted")
        super().delete_model(request, obj)


@admin.register(UsageCounter)
class UsageAdmin(ReadOnlyScopedAdmin):
    """Usage and cost per organisation (user empty) and per member, per day or month."""

    list_display = ("start", "period", "organisation", "who", "tokens", "cost", "requests")
    list_filter = ("period", ("organisation", admin.RelatedOnlyFieldListFilter), "start")
    search_fields = ("organisation__name", "user__username")
    date_hierarchy = "start"
    list_select_related = ("organisation", "user")

    @admin.display(description="user")
    def who(self, obj: UsageCounter) -> str:
        return obj.user.get_username() if obj.user else "(whole organisation)"


@admin.register(UsageLedger)
class UsageLedgerAdmin(ReadOnlyScopedAdmin):
    list_display = (
        "created_at",
        "organisation",
        "user",
        "message_id",
        "model",
        "outcome",
        "state",
        "reserved_tokens",
        "used_tokens",
        "cost",
    )
    list_filter = (
        "state",
        "outcome",
        ("organisation", admin.RelatedOnlyFieldListFilter),
        "model",
        "created_at",
    )
    search_fields = ("organisation__name", "user__username", "model")
    date_hierarchy = "created_at"
    list_select_related = ("organisation", "user")


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyScopedAdmin):
    """Operators read their organisations' entries and their members' sign-ins; nobody edits
    or deletes entries here."""

    list_display = ("created_at", "action", "actor", "organisation", "target", "ip")
    list_filter = ("action", "created_at")
    search_fields = ("target", "actor__username", "ip")
    date_hierarchy = "created_at"
    list_select_related = ("actor", "organisation")

    def scope(self, queryset: QuerySet[Any], organisation_ids: set[int]) -> QuerySet[Any]:
        # A member's own entries (sign-ins with their IPs) only from when they joined: joining
        # does not open their past to the organisation's operators, and leaving closes it.
        member_then = Membership.objects.filter(
            organisation_id__in=organisation_ids,
            user_id=OuterRef("actor_id"),
            created_at__lte=OuterRef("created_at"),
        )
        return queryset.filter(organisation_id__in=organisation_ids) | queryset.filter(
            Exists(member_then), organisation__isnull=True
        )

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if _is_superuser(request) or obj is None:
            return super().has_view_permission(request, None)
        return self.get_queryset(request).filter(pk=obj.pk).exists()
