"""Input serializers validate what comes in; output serializers shape what goes out."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from chat.models import Conversation, Message

# --- conversations ------------------------------------------------------------------------


class ConversationListInputSerializer(serializers.Serializer):
    search = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        help_text="Only conversations whose title or any message contains this (case-insensitive).",
    )
    origin = serializers.MultipleChoiceField(
        required=False,
        choices=Conversation.Origin.choices,
        help_text="Only conversations started here (repeat for several): page, websocket "
        "(a program's socket), rest, openai. Default: all.",
    )


class ConversationCreateInputSerializer(serializers.Serializer):
    title = serializers.CharField(required=False, max_length=200, default="New chat")


class ConversationRenameInputSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)


class ConversationOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "title", "organisation", "origin", "created_at", "updated_at"]
        read_only_fields = fields


# --- messages -----------------------------------------------------------------------------


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)
    estimated = serializers.BooleanField()


class MessageErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class CitationSerializer(serializers.Serializer):
    """A document passage the reply was given (docs/documents.md)."""

    n = serializers.IntegerField(help_text="The passage's number, as [n] in the reply.")
    document = serializers.IntegerField()
    name = serializers.CharField()
    page = serializers.IntegerField()
    chunk = serializers.IntegerField()
    url = serializers.CharField(help_text="The page showing the passage in its document.")


class MessageOutputSerializer(serializers.ModelSerializer):
    usage = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    citations = CitationSerializer(many=True, read_only=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation",
            "role",
            "content",
            "status",
            "seq",
            "reply_to",
            "client_id",
            "provider",
            "model",
            "usage",
            "cost",
            "error",
            "citations",
            "created_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(UsageSerializer(allow_null=True))
    def get_usage(self, message: Message) -> dict[str, Any] | None:
        if message.role != Message.Role.ASSISTANT:
            return None
        return {
            "prompt_tokens": message.prompt_tokens,
            "completion_tokens": message.completion_tokens,
            "estimated": message.tokens_estimated,
        }

    @extend_schema_field(MessageErrorSerializer(allow_null=True))
    def get_error(self, message: Message) -> dict[str, Any] | None:
        if not message.error_code:
            return None
        return {"code": message.error_code, "detail": message.error_message}


class MessageSendInputSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=settings.CHAT_MAX_MESSAGE_CHARS, trim_whitespace=False)
    client_id = serializers.CharField(
        required=False,
        min_length=1,
        max_length=64,
        help_text="Your id for this message: a repeat with the same client_id returns the first "
        "result and starts no second reply (like the socket's `send`).",
    )
    model = serializers.CharField(
        required=False,
        max_length=100,
        help_text="The model alias to answer with (GET models); default: the default model.",
    )
    max_tokens = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.LLM_MAX_TOKENS,
        help_text="At most this many tokens in the reply (it ends `incomplete` when cut).",
    )
    temperature = serializers.FloatField(
        required=False, min_value=0, max_value=2, help_text="Sampling temperature, 0 to 2."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Unknown fields are refused, not dropped: a misspelt choice must not go unnoticed."""
        unknown = sorted(set(self.initial_data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return attrs


class MessageSendOutputSerializer(serializers.Serializer):
    conversation = serializers.IntegerField()
    message = serializers.IntegerField(help_text="The user message's id.")
    reply = serializers.IntegerField(
        help_text="The assistant reply's id (pending until it streams)."
    )
    created = serializers.BooleanField(help_text="False when this repeats an earlier send.")
    stream_url = serializers.CharField(help_text="Server-sent events of the reply.")
    reply_url = serializers.CharField(help_text="The reply's state (poll it, or stream it).")


class ConversationExportSerializer(serializers.Serializer):
    conversation = ConversationOutputSerializer()
    messages = MessageOutputSerializer(many=True)
    exported_at = serializers.DateTimeField()


# --- models and usage ---------------------------------------------------------------------


class ModelOutputSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The model alias to ask for.")
    default = serializers.BooleanField(help_text="New messages use this alias.")
    fallbacks = serializers.ListField(
        child=serializers.CharField(),
        help_text="Aliases tried, in order, when this one cannot answer.",
    )


class UsageInputSerializer(serializers.Serializer):
    days = serializers.IntegerField(
        required=False, min_value=1, max_value=92, default=7, help_text="Daily rows to return."
    )


class UsageTotalsSerializer(serializers.Serializer):
    tokens = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=20, decimal_places=8)
    requests = serializers.IntegerField()


class UsageDaySerializer(UsageTotalsSerializer):
    day = serializers.DateField()


class BudgetSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["user", "organisation"])
    period = serializers.ChoiceField(choices=["day", "month"])
    max_tokens = serializers.IntegerField(allow_null=True)
    max_cost = serializers.DecimalField(max_digits=20, decimal_places=8, allow_null=True)


class MemberUsageSerializer(UsageTotalsSerializer):
    user = serializers.IntegerField()
    username = serializers.CharField()


class UsageOutputSerializer(serializers.Serializer):
    organisation = serializers.IntegerField()
    user = serializers.IntegerField(
        allow_null=True, help_text="Null for the organisation's totals."
    )
    today = UsageTotalsSerializer()
    month = UsageTotalsSerializer()
    days = UsageDaySerializer(many=True)
    budgets = BudgetSerializer(many=True)


class OrganisationUsageOutputSerializer(UsageOutputSerializer):
    members = MemberUsageSerializer(many=True, help_text="This month, per member.")
