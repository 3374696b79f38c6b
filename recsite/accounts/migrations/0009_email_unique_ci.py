"""One account per e-mail address, in any case: a unique index on lower(email) of auth_user for the
accounts that have an address. The sign-up form checks first and says what to do; only the index
stops two sign-ups at once from both taking one address (each checked before the other's insert).
An expression index with a WHERE clause: SQLite (3.9+) and PostgreSQL both have them.

A deployment may already hold accounts sharing an address. This migration then refuses before it
changes anything, saying how many addresses are shared and how to list them (``manage.py
shared_emails``): an operator gives those accounts their own addresses, or clears all but one, in
the admin, and migrates again. Preferred over an index that skips the rows that existed before:
that leaves the shared mailboxes getting one reset link per account, and old accounts outside
the rule for good (an old one changed to a new one's address later is not refused), with
nothing to say the rule has holes; and over rewriting or clearing addresses here, which decides
silently whose address it is, where only the people owning the accounts can say.
"""
from django.core.management.base import CommandError
from django.db import migrations
from django.db.models import Count
from django.db.models.functions import Lower

INDEX = "auth_user_email_ci_unique"  # accounts.forms.EMAIL_INDEX: the sign-up knows a lost race by it


def refuse_shared_addresses(apps, schema_editor):
    """Stop with a clear message, nothing changed, if two accounts share an address in any case."""
    User = apps.get_model("auth", "User")
    shared = (User.objects.using(schema_editor.connection.alias).exclude(email="")
              .values(address=Lower("email")).annotate(accounts=Count("id")).filter(accounts__gt=1))
    if not shared:
        return
    raise CommandError(
        f"{len(shared)} e-mail address(es) are shared by {sum(s['accounts'] for s in shared)} accounts "
        f"(compared in any case), so accounts.0009 cannot make e-mail addresses unique. Nothing was "
        f"changed. List them with `python recsite/manage.py shared_emails`, give each of those accounts "
        f"its own address (or clear all but one) in the admin, then run migrate again.")


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0008_reviewer_id_length"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(refuse_shared_addresses, migrations.RunPython.noop),
        migrations.RunSQL(
            f"CREATE UNIQUE INDEX {INDEX} ON auth_user (lower(email)) WHERE email <> ''",
            f"DROP INDEX IF EXISTS {INDEX}",
        ),
    ]
