from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0008_documents"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="pinned",
            field=models.BooleanField(default=False),
        ),
    ]
