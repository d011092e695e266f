"""Admin classes that show a non-superuser operator only their organisations' rows.

Who may do what in the admin (superusers: everything Django allows them):
- is_staff plus an operator or admin role in an organisation: read that organisation's rows;
- `change_roles` name the roles that may also add and change them (e.g. budgets: operators
  and admins; memberships and organisation settings: admins);
- nobody but a superuser deletes, unless `delete_roles` says so.
Rows come from get_queryset filtered on `organisation_field`, so lists, change pages, actions
and raw-id pop-ups all see the same scope; `OrganisationListFilter` lists the same
organisations in a list's filter (personal organisations carry their owners' names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import Field, ForeignKey, Model, QuerySet
from django.forms import ModelChoiceField
from django.http import HttpRequest

from accounts.models import Membership, Organisation, User

if TYPE_CHECKING:
    from django.utils.functional import _StrPromise

ROLES_CACHE_ATTRIBUTE = "_parley_admin_roles"
OPERATOR_ROLES = frozenset({Membership.Role.OPERATOR, Membership.Role.ADMIN})


def admin_roles(request: HttpRequest) -> dict[int, str]:
    """organisation id → role, for the organisations the request's user operates."""
    cached = getattr(request, ROLES_CACHE_ATTRIBUTE, None)
    if cached is None:
        cached = dict(
            Membership.objects.filter(
                user_id=request.user.pk or 0, role__in=OPERATOR_ROLES
            ).values_list("organisation_id", "role")
        )
        setattr(request, ROLES_CACHE_ATTRIBUTE, cached)
    return cached


def _is_superuser(request: HttpRequest) -> bool:
    return bool(request.user.is_active and request.user.is_superuser)


class OrganisationListFilter(admin.RelatedFieldListFilter):
    """A list filter on an organisation field that offers only the organisations the operator
    may see: all of them for a superuser, else the ones they operate."""

    def field_choices(
        self,
        field: Field[Any, Any],
        request: HttpRequest,
        model_admin: admin.ModelAdmin,  # type: ignore[type-arg]
    ) -> list[tuple[str, str | _StrPromise]]:
        organisations = Organisation.objects.order_by("name", "pk")
        if not _is_superuser(request):
            organisations = organisations.filter(pk__in=admin_roles(request))
        return [(str(organisation.pk), str(organisation)) for organisation in organisations]


class OrganisationScopedAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    organisation_field = "organisation"
    change_roles: frozenset[str] = frozenset()
    delete_roles: frozenset[str] = frozenset()

    # --- scope --------------------------------------------------------------------------

    def organisation_ids(
        self, request: HttpRequest, roles: frozenset[str] | None = None
    ) -> set[int]:
        allowed = roles if roles is not None else OPERATOR_ROLES
        return {org for org, role in admin_roles(request).items() if role in allowed}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if _is_superuser(request):
            return queryset
        return self.scope(queryset, self.organisation_ids(request))

    def scope(self, queryset: QuerySet[Any], organisation_ids: set[int]) -> QuerySet[Any]:
        return queryset.filter(**{f"{self.organisation_field}__in": organisation_ids}).distinct()

    def object_organisation_id(self, obj: Model) -> int | None:
        value: Any = obj
        for part in self.organisation_field.split("__"):
            value = getattr(value, part, None)
            if value is None:
                return None
        return value.pk if isinstance(value, Organisation) else value

    def _allowed(self, request: HttpRequest, roles: frozenset[str], obj: Model | None) -> bool:
        organisations = self.organisation_ids(request, roles)
        if obj is None:
            return bool(organisations)
        return self.object_organisation_id(obj) in organisations

    # --- permissions --------------------------------------------------------------------

    def has_module_permission(self, request: HttpRequest) -> bool:
        if _is_superuser(request):
            return super().has_module_permission(request)
        return bool(request.user.is_staff and admin_roles(request))

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if _is_superuser(request):
            return super().has_view_permission(request, obj)
        return bool(request.user.is_staff) and self._allowed(request, OPERATOR_ROLES, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if _is_superuser(request):
            return super().has_change_permission(request, obj)
        return bool(request.user.is_staff) and self._allowed(request, self.change_roles, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        if _is_superuser(request):
            return super().has_add_permission(request, *args)
        return bool(request.user.is_staff) and self._allowed(request, self.change_roles, None)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        if _is_superuser(request):
            return super().has_delete_permission(request, obj)
        return bool(request.user.is_staff) and self._allowed(request, self.delete_roles, obj)

    def log_deletions(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        """Django bulk-creates these LogEntry rows (no post_save): audit them here."""
        from accounts.signals import audit_admin_edit

        entries = super().log_deletions(request, queryset)
        if isinstance(entries, list) and len(entries) > 1:
            for entry in entries:
                audit_admin_edit(entry)
        return entries

    # --- forms: only your organisations and their members to pick from -------------------

    def formfield_for_foreignkey(
        self, db_field: ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField | None:  # type: ignore[type-arg]
        if not _is_superuser(request):
            organisations = self.organisation_ids(request, self.change_roles)
            if db_field.related_model is Organisation:
                kwargs["queryset"] = Organisation.objects.filter(pk__in=organisations)
            elif db_field.related_model is User:
                kwargs["queryset"] = User.objects.filter(
                    memberships__organisation_id__in=organisations
                ).distinct()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyScopedAdmin(OrganisationScopedAdmin):
    """Records: nobody adds, changes or deletes them here, superusers included."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
