from django.db import migrations, models
from django.db.models import Q


def mark_conversations_with_documents(apps, schema_editor):
    """Conversations that already have a document or a picked collection retrieve as before."""
    Conversation = apps.get_model("chat", "Conversation")
    Conversation.objects.filter(
        Q(documents__isnull=False) | Q(collections__isnull=False)
    ).update(retrieves=True)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0009_conversation_pinned"),
    ]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="retrieves",
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(mark_conversations_with_documents, migrations.RunPython.noop),
    ]
