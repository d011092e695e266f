"""Separate from 0002: PostgreSQL refuses ALTER TABLE in the transaction that just updated the
rows ("pending trigger events")."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chat", "0002_conversation_organisation")]

    operations = [
        migrations.AlterField(
            model_name="conversation",
            name="organisation",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="conversations",
                to="accounts.organisation",
            ),
        ),
        migrations.AddIndex(
            model_name="conversation",
            index=models.Index(
                fields=["organisation", "owner", "-updated_at"],
                name="chat_conver_organis_a71cd4_idx",
            ),
        ),
    ]
