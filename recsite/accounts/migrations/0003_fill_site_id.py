"""Existing profiles keep ``site-<user pk>``: their ratings are already stored under that id."""
from django.db import migrations


def keep_existing_ids(apps, schema_editor):
    Profile = apps.get_model("accounts", "Profile")
    for profile in Profile.objects.filter(site_id__isnull=True):
        profile.site_id = f"site-{profile.user_id}"
        profile.save(update_fields=["site_id"])


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_profile_site_id"),
    ]

    operations = [
        migrations.RunPython(keep_existing_ids, migrations.RunPython.noop),
    ]
