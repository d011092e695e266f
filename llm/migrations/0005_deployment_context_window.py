import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("llm", "0004_vectors"),
    ]

    operations = [
        migrations.AddField(
            model_name="deployment",
            name="context_window",
            field=models.PositiveIntegerField(
                blank=True,
                help_text=(
                    "The model's context length, prompt and reply together (e.g. 2048 for a "
                    "llama.cpp server started with -c 2048). Parley then leaves the oldest turns "
                    "out of a prompt that would not fit, and refuses a message too long on its "
                    "own. Empty: unknown, nothing is fitted (the bundled local model's is its "
                    "n_ctx)."
                ),
                null=True,
                validators=[django.core.validators.MinValueValidator(256)],
                verbose_name="context window (tokens)",
            ),
        ),
    ]
