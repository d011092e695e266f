"""Conversations belong to an organisation: existing ones to their owner's personal one."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def assign_personal_organisations(apps, schema_editor):
    Conversation = apps.get_model("chat", "Conversation")
    Organisation = apps.get_model("accounts", "Organisation")
    owners = Conversation.objects.filter(organisation__isnull=True).values_list(
        "owner_id", flat=True
    )
    for owner_id in set(owners):
        organisation = Organisation.objects.get(personal_owner_id=owner_id)
        Conversation.objects.filter(owner_id=owner_id, organisation__isnull=True).update(
            organisation=organisation
        )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_personal_organisations"),
        ("chat", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="organisation",
            field=models.ForeignKey(
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="conversations",
                to="accounts.organisation",
            ),
        ),
        migrations.RunPython(assign_personal_organisations, migrations.RunPython.noop),
    ]
