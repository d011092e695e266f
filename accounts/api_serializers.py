"""Input and output shapes of the REST API's account operations, and the strict input base the
whole API uses (chat's input serializers too: accounts sits below chat)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.models import ApiKey


class StrictInputSerializer(serializers.Serializer):
    """A request body's serializer that refuses unknown fields (400 naming each) instead of
    dropping them: a misspelt choice must not go unnoticed. Its CharFields take strings only
    (DRF's would turn 0 or true into "0" / "True")."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
            wrong = {
                name: ["Not a string."]
                for name, field in self.fields.items()
                if isinstance(field, serializers.CharField)
                and name in data
                and data[name] is not None
                and not isinstance(data[name], str)
            }
            if wrong:
                raise serializers.ValidationError(wrong)
        return super().to_internal_value(data)


class ApiKeyCreateInputSerializer(StrictInputSerializer):
    name = serializers.CharField(max_length=100, help_text="What the key is for.")
    expires_in_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=3650,
        help_text="Left out or null: the key does not expire (revoke it when done).",
    )


class ApiKeyOutputSerializer(serializers.ModelSerializer):
    active = serializers.BooleanField(source="is_active")

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "organisation",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "active",
        ]
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(help_text="The whole key, shown this once: store it now.")

    class Meta(ApiKeyOutputSerializer.Meta):
        fields = [*ApiKeyOutputSerializer.Meta.fields, "key"]
        read_only_fields = fields
