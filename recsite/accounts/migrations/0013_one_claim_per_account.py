"""One pending address per account (accounts.PendingEmail), as a constraint: it was only the rule of
``confirmation.new_claim`` (delete the claim, then insert), and two posts at once could both insert.

A race may already have left an account two claims: all but its newest (the one whose link works)
are deleted first, or the constraint could not be made. The index on lower(email) goes: it served
dropping every account's claims on an address at its confirmation, which no longer happens (the
other claims stay, unconfirmable, until they expire).
"""
from django.conf import settings
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def keep_newest_claims(apps, schema_editor):
    """Delete every claim but each account's newest (by creation, then key: the model's order)."""
    PendingEmail = apps.get_model("accounts", "PendingEmail")
    claims = PendingEmail.objects.using(schema_editor.connection.alias)
    newest = claims.filter(user=OuterRef("user")).order_by("-created", "-pk").values("pk")[:1]
    claims.exclude(pk=Subquery(newest)).delete()


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0012_pendingemail'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(keep_newest_claims, migrations.RunPython.noop),
        migrations.RemoveIndex(
            model_name='pendingemail',
            name='accounts_pendingemail_lower',
        ),
        migrations.AddConstraint(
            model_name='pendingemail',
            constraint=models.UniqueConstraint(fields=('user',), name='accounts_pendingemail_one_per_account'),
        ),
    ]
