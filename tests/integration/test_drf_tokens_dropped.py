"""Upgrading from DRF's tokens to knox's must not leave their table behind.

``rest_framework.authtoken`` left INSTALLED_APPS with its table still in the database: a table
Django no longer knows, holding a foreign key to ``auth_user``. Django deletes no rows of it with
a user, so deleting any account that ever had a DRF token was refused by the key (a 500 at
``/api/account/delete/``, after its MongoDB data were erased: the account half deleted). Real
database of the tests (SQLite, or PostgreSQL through ``DATABASE_URL``).
"""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration]

# DRF's authtoken.0001/0002 as both databases made it: the key, the user (unique, the foreign key), created.
OLD_TABLE = {
    "sqlite": 'CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY, "created" datetime NOT NULL, '
              '"user_id" integer NOT NULL UNIQUE REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED)',
    "postgresql": 'CREATE TABLE "authtoken_token" ("key" varchar(40) NOT NULL PRIMARY KEY, '
                  '"created" timestamp with time zone NOT NULL, "user_id" integer NOT NULL UNIQUE '
                  'REFERENCES "auth_user" ("id") DEFERRABLE INITIALLY DEFERRED)',
}


@pytest.mark.django_db(transaction=True)
def test_an_account_with_an_old_drf_token_can_be_deleted_after_the_upgrade(make_user):
    from django.core.management import call_command
    from django.db import connection

    user = make_user()
    try:
        call_command("migrate", "accounts", "0009", verbosity=0)  # the database as DRF's tokens left it
        with connection.cursor() as cursor:
            cursor.execute(OLD_TABLE[connection.vendor])
            cursor.execute("INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, %s, %s)",
                           ["0123456789abcdef0123456789abcdef01234567", "2026-01-01 00:00:00+00:00", user.pk])
    finally:
        call_command("migrate", "accounts", verbosity=0)
    user.delete()  # refused by the old table's foreign key while it was there
    assert "authtoken_token" not in connection.introspection.table_names()
