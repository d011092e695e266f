"""Idempotent sends are unique per (author, organisation, client_id), not per (author,
client_id): a client_id reused in another organisation must not find that organisation's
message. The organisation is copied from each message's conversation."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def copy_organisation(apps, schema_editor):
    Conversation = apps.get_model("chat", "Conversation")
    Message = apps.get_model("chat", "Message")
    Message.objects.filter(client_id__isnull=False).update(
        organisation_id=Subquery(
            Conversation.objects.filter(pk=OuterRef("conversation_id")).values("organisation_id")[
                :1
            ]
        )
    )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_personal_organisations"),
        ("chat", "0004_usagereport"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="organisation",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="+",
                to="accounts.organisation",
            ),
        ),
        migrations.RunPython(copy_organisation, migrations.RunPython.noop),
        migrations.RemoveConstraint(model_name="message", name="unique_client_id_per_author"),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(client_id__isnull=False),
                fields=("author", "organisation", "client_id"),
                name="unique_client_id_per_author_organisation",
            ),
        ),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.CheckConstraint(
                condition=models.Q(client_id__isnull=True) | models.Q(organisation__isnull=False),
                name="client_id_has_organisation",
            ),
        ),
    ]
