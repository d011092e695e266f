"""Every existing user gets a personal organisation (admin role), as sign-up now gives one."""

from django.db import migrations
from django.utils.text import slugify


def personal_organisations(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    Organisation = apps.get_model("accounts", "Organisation")
    Membership = apps.get_model("accounts", "Membership")
    for user in User.objects.filter(personal_organisation__isnull=True).iterator():
        base = slugify(user.username)[:60] or "user"
        slug = base if not Organisation.objects.filter(slug=base).exists() else f"{base}-{user.pk}"
        organisation = Organisation.objects.create(
            name=user.username, slug=slug, personal_owner=user
        )
        Membership.objects.create(user=user, organisation=organisation, role="admin")


class Migration(migrations.Migration):
    dependencies = [("accounts", "0002_organisations_keys_budgets_audit")]

    operations = [migrations.RunPython(personal_organisations, migrations.RunPython.noop)]
