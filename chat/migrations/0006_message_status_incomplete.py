"""A reply cut short by the token cap ends `incomplete`; choices only, no schema change."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("chat", "0005_message_organisation")]

    operations = [
        migrations.AlterField(
            model_name="message",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("streaming", "Streaming"),
                    ("complete", "Complete"),
                    ("incomplete", "Incomplete"),
                    ("failed", "Failed"),
                    ("cancelled", "Cancelled"),
                ],
                db_index=True,
                max_length=16,
            ),
        ),
    ]
