"""One account per username, in any case: a unique index on lower(username) of auth_user. Django's
sign-up form already refuses "Bob" when "bob" exists, but the column's UNIQUE constraint tells cases
apart, so two sign-ups at once ("Bob" and "bob", each checked before the other's insert) both made
an account. The same rule and shape as accounts.0009's for e-mail addresses
(``accounts.unique_lower``).

A deployment may already hold usernames that differ only in case. This migration then refuses
before it changes anything, saying how many and how to list them (``manage.py shared_usernames``):
an operator renames all but one of each in the admin and migrates again (a username is how its
owner signs in, so only they or staff who asked them may choose the new one; nothing is renamed
here).
"""
from django.db import migrations

from accounts.username_index import USERNAME_INDEX

# The index's SQL and the refusal's message live in accounts.username_index: the same index is put
# back after every migrate (post_migrate), should a table rebuild on SQLite have dropped it.


def refuse_shared_usernames(apps, schema_editor):
    """Stop with a clear message, nothing changed, if two accounts' usernames differ only in case."""
    USERNAME_INDEX.refuse_shared(schema_editor.connection)


def create_index(apps, schema_editor):
    """The index; case variants an old process still running inserted after the check above get the
    same message, not the database's own."""
    USERNAME_INDEX.create(schema_editor.connection)


def drop_index(apps, schema_editor):
    schema_editor.execute(USERNAME_INDEX.drop_sql)


class Migration(migrations.Migration):

    dependencies = [("accounts", "0010_drop_drf_tokens")]

    operations = [
        migrations.RunPython(refuse_shared_usernames, migrations.RunPython.noop),
        migrations.RunPython(create_index, drop_index),
    ]
