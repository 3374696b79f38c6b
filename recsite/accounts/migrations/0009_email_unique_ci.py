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
from django.db import migrations

from accounts.email_index import EMAIL_INDEX

# The index's SQL and the refusal's message live in accounts.email_index: the same index is put back
# after every migrate (post_migrate), should a table rebuild on SQLite have dropped it.


def refuse_shared_addresses(apps, schema_editor):
    """Stop with a clear message, nothing changed, if two accounts share an address in any case."""
    EMAIL_INDEX.refuse_shared(schema_editor.connection)


def create_index(apps, schema_editor):
    """The index; shared addresses that an old process still running inserted after the check above
    get the same message, not the database's own."""
    EMAIL_INDEX.create(schema_editor.connection)


def drop_index(apps, schema_editor):
    schema_editor.execute(EMAIL_INDEX.drop_sql)


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0008_reviewer_id_length"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunPython(refuse_shared_addresses, migrations.RunPython.noop),
        migrations.RunPython(create_index, drop_index),
    ]
