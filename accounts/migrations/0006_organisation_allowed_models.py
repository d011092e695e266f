"""Tenant features: the model aliases an organisation may use (empty: every model)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("accounts", "0005_usageledger_reply_outcome")]

    operations = [
        migrations.AddField(
            model_name="organisation",
            name="allowed_models",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="The model aliases this organisation may use; none ticked: every model.",
                verbose_name="allowed models",
            ),
        ),
    ]
