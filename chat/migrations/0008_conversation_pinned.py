from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0007_conversation_origin_system_prompt"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="pinned",
            field=models.BooleanField(default=False),
        ),
    ]
