"""The ledger keeps what each reply was (tokens split, model, outcome, first token), so usage
figures survive the deletion of its conversation; existing rows are filled from their
messages where those still exist."""

from django.db import migrations, models


def backfill(apps, schema_editor):
    UsageLedger = apps.get_model("accounts", "UsageLedger")
    entries = UsageLedger.objects.filter(message__isnull=False).select_related("message")
    for entry in entries.iterator(chunk_size=500):
        message = entry.message
        fields = {
            "provider": message.provider,
            "model": message.model,
            "outcome": message.status,
            "error_code": message.error_code,
            "tokens_estimated": message.tokens_estimated,
        }
        if message.started_at and message.first_token_at:
            delta = message.first_token_at - message.started_at
            fields["first_token_ms"] = max(0, int(delta.total_seconds() * 1000))
        if entry.state == "settled":
            prompt = min(entry.reserved_prompt_tokens, entry.used_tokens)
            if message.prompt_tokens is not None:
                prompt = min(message.prompt_tokens, entry.used_tokens)
            fields["prompt_tokens"] = prompt
            fields["completion_tokens"] = entry.used_tokens - prompt
        UsageLedger.objects.filter(pk=entry.pk).update(**fields)
    # Rows whose conversation was deleted before: the split is the reserved prompt estimate.
    orphans = UsageLedger.objects.filter(message__isnull=True, state="settled")
    for entry in orphans.iterator(chunk_size=500):
        prompt = min(entry.reserved_prompt_tokens, entry.used_tokens)
        UsageLedger.objects.filter(pk=entry.pk).update(
            prompt_tokens=prompt, completion_tokens=entry.used_tokens - prompt
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_invitations"),
        ("chat", "0007_conversation_origin_system_prompt"),
    ]

    operations = [
        migrations.AddField(
            model_name="usageledger",
            name="prompt_tokens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="usageledger",
            name="completion_tokens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="usageledger",
            name="tokens_estimated",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="usageledger",
            name="provider",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="usageledger",
            name="model",
            field=models.CharField(blank=True, default="", max_length=128),
        ),
        migrations.AddField(
            model_name="usageledger",
            name="outcome",
            field=models.CharField(
                blank=True, default="", help_text="The reply's final status.", max_length=16
            ),
        ),
        migrations.AddField(
            model_name="usageledger",
            name="error_code",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="usageledger",
            name="first_token_ms",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
