"""The unique index on lower(email) of auth_user that makes e-mail addresses one account's each
(migration accounts.0009), kept in one place: the migration creates it, ``post_migrate`` puts it
back (:func:`restore`), the address's confirmation and the admin know a lost race by its name.

Plain SQL and no models: the migration imports this module, so it must not depend on the app's
current models.
"""
from __future__ import annotations

from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.recorder import MigrationRecorder

# Both SQLite and PostgreSQL name the index in the IntegrityError they raise, which is how an insert
# that lost a race for an address is told from any other failed insert.
INDEX = "auth_user_email_ci_unique"
# An expression index with a WHERE clause (SQLite 3.9+, PostgreSQL): accounts without an address are
# outside it. IF NOT EXISTS: :func:`restore` runs it after every migrate.
CREATE = f"CREATE UNIQUE INDEX IF NOT EXISTS {INDEX} ON auth_user (lower(email)) WHERE email <> ''"
DROP = f"DROP INDEX IF EXISTS {INDEX}"
MIGRATION = ("accounts", "0009_email_unique_ci")

_SHARED = ("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM auth_user "
           "WHERE email <> '' GROUP BY lower(email) HAVING COUNT(*) > 1) AS shared")


def lost_email_race(error: IntegrityError) -> bool:
    """Whether ``error`` is the index refusing a write: another account took the address after the
    check (two confirmations, ``accounts.confirmation``, or admin saves at once)."""
    return INDEX in str(error)


def shared_addresses(connection: BaseDatabaseWrapper) -> tuple[int, int]:
    """How many addresses (in any case) more than one account has, and how many accounts those are."""
    with connection.cursor() as cursor:
        cursor.execute(_SHARED)
        addresses, accounts = cursor.fetchone()
    return int(addresses), int(accounts)


def refusal(addresses: int, accounts: int) -> CommandError:
    """What an operator reads when the index cannot be made: what is wrong and what to do."""
    return CommandError(
        f"{addresses} e-mail address(es) are shared by {accounts} accounts (compared in any case), so "
        f"accounts.0009 cannot make e-mail addresses unique. Nothing was changed. List them with "
        f"`python recsite/manage.py shared_emails`, give each of those accounts its own address (or "
        f"clear all but one) in the admin, then run migrate again.")


def create(connection: BaseDatabaseWrapper) -> None:
    """Create the index if missing; accounts sharing an address (an old process inserted one after
    the migration's check, or while the index was gone) make it :func:`refusal`'s message instead of
    the database's own, nothing changed."""
    try:
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute(CREATE)
    except IntegrityError as exc:
        raise refusal(*shared_addresses(connection)) from exc


def restore(using: str = "default", **kwargs) -> None:
    """``post_migrate`` receiver: put the index back if accounts.0009 is applied and it is missing.

    On SQLite, Django makes many schema changes (``alter_field`` on auth_user, as a future auth
    migration may do) by copying the table, and re-creates only the indexes its models declare: this
    raw one vanished silently, and with it the one rule that decides between two sign-ups at once."""
    from django.db import connections

    connection = connections[using]
    if MIGRATION in MigrationRecorder(connection).applied_migrations():
        create(connection)
