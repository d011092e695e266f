"""Tenant features in the organisation admin: the models an organisation may use.

accounts knows nothing of models, so the organisation's page (accounts/admin.py) gets its
model checkboxes here, from the catalog: the same OrganisationAdmin, re-registered with one
more field. Whoever may change the organisation (a superuser, or its admins) sets them; the
check itself is llm/catalog.py tenant_alias.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.forms import ModelForm

from accounts.admin import OrganisationAdmin
from accounts.models import Organisation
from llm.catalog import all_deployments


def alias_choices(current: list[str]) -> list[tuple[str, str]]:
    """Every alias the catalog knows (enabled or not), plus any the row already names."""
    known = {d.alias for d in all_deployments() if d.alias}
    return [(alias, alias) for alias in sorted(known | set(current))]


class OrganisationFeaturesForm(ModelForm):  # type: ignore[type-arg]
    allowed_models = forms.MultipleChoiceField(
        label="Allowed models",
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="The model aliases members may use. None ticked: every model.",
    )

    class Meta:
        model = Organisation
        fields = ("allowed_models",)  # the admin adds the rest (its fieldsets)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "allowed_models" in self.fields:
            current = list(self.instance.allowed_models or []) if self.instance.pk else []
            field = self.fields["allowed_models"]
            assert isinstance(field, forms.MultipleChoiceField)
            field.choices = alias_choices(current)

    def clean_allowed_models(self) -> list[str]:
        return sorted(set(self.cleaned_data.get("allowed_models") or []))


class OrganisationFeaturesAdmin(OrganisationAdmin):
    form = OrganisationFeaturesForm
    list_display = (*OrganisationAdmin.list_display, "models_allowed")  # type: ignore[assignment]
    audited_fields = (*OrganisationAdmin.audited_fields, "allowed_models")

    @admin.display(description="models")
    def models_allowed(self, organisation: Organisation) -> str:
        return ", ".join(organisation.allowed_models or []) or "all"


admin.site.unregister(Organisation)
admin.site.register(Organisation, OrganisationFeaturesAdmin)
