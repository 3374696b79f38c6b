from django.db import migrations, models


def complete_ones_ended_at_once(apps, schema_editor):
    """A record without "unfinished" in its counts was erased in the request that deleted the
    account; an unfinished one made before this migration has no reference to follow and stays
    empty (its erasure may well have ended: the sweep ran it again)."""
    AccountDeletion = apps.get_model("accounts", "AccountDeletion")
    for record in AccountDeletion.objects.filter(erased_at__isnull=True):
        if "unfinished" not in (record.counts or {}):
            record.erased_at = record.deleted_at
            record.save(update_fields=["erased_at"])


class Migration(migrations.Migration):
    """The staff record of a deletion says when its erasure ended, also when a run again (the
    worker's, Celery's sweep) ended it after the site's run stopped part-way."""

    dependencies = [
        ("accounts", "0006_remove_profile_onboarded"),
    ]

    operations = [
        migrations.AddField(
            model_name="accountdeletion",
            name="erased_at",
            field=models.DateTimeField(blank=True, null=True, help_text=(
                "When the erasure ran to its end: at once, or later by a run again (the worker's or "
                "Celery's sweep); empty while unfinished.")),
        ),
        migrations.AddField(
            model_name="accountdeletion",
            name="erasure_ref",
            field=models.CharField(blank=True, default="", editable=False, max_length=32),
        ),
        migrations.RunPython(complete_ones_ended_at_once, migrations.RunPython.noop),
    ]
