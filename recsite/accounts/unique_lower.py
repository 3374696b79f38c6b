"""A unique index on ``lower(<column>)`` of auth_user, kept in one place per column: the e-mail
address's (migration accounts.0009, ``accounts.email_index``) and the username's (accounts.0011,
``accounts.username_index``). Each is the one rule that decides between two writes at once whose
values differ only in case, both having passed the form's check: two sign-ups (or admin saves) for
the username; two confirmations (``accounts.confirmation``: a sign-up writes no address) or admin
saves for the e-mail address.

For each: its migration refuses to run while accounts share a value in any case (saying how many
and which command lists them), ``post_migrate`` puts the index back (:meth:`UniqueLower.restore`),
and whoever writes the value knows a lost race by the index's name: the sign-up (username), the
confirmation (address), the admin and ``createsuperuser`` (both). ``lower()`` is the database's: on
SQLite it folds ASCII letters only ("Émile" and "émile" are two values there), on PostgreSQL all.

Plain SQL and no models: the migrations import this module, so it must not depend on the app's
current models.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.core.management.base import CommandError
from django.db import IntegrityError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.migrations.recorder import MigrationRecorder


@dataclass(frozen=True)
class UniqueLower:
    """One column's index and what is said when it cannot be made."""

    column: str  # of auth_user
    name: str  # the index's: SQLite and PostgreSQL both name it in the IntegrityError they raise
    migration: tuple[str, str]  # the one that first creates it (app, name)
    values: str  # what the refusal counts, e.g. "e-mail address(es)"
    command: str  # the management command that lists the accounts sharing one
    fix: str  # what an operator does about those accounts, in the admin
    where: str = ""  # rows outside the rule, e.g. "email <> ''" (accounts without an address)

    @property
    def create_sql(self) -> str:
        """An expression index, with a WHERE clause if any (SQLite 3.9+, PostgreSQL). IF NOT EXISTS:
        :meth:`restore` runs it after every migrate."""
        where = f" WHERE {self.where}" if self.where else ""
        return f"CREATE UNIQUE INDEX IF NOT EXISTS {self.name} ON auth_user (lower({self.column})){where}"

    @property
    def drop_sql(self) -> str:
        return f"DROP INDEX IF EXISTS {self.name}"

    def lost_race(self, error: IntegrityError) -> bool:
        """Whether ``error`` is this index refusing a write: another account took the value (in
        another case) after the form's check. Told by the first line only: PostgreSQL's DETAIL line
        quotes the refused value, and a username or an address may spell any index's name."""
        return self.name in str(error).partition("\n")[0]

    def shared(self, connection: BaseDatabaseWrapper) -> tuple[int, int]:
        """How many values (in any case) more than one account has, and how many accounts those are."""
        where = f"WHERE {self.where} " if self.where else ""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM auth_user "
                           f"{where}GROUP BY lower({self.column}) HAVING COUNT(*) > 1) AS shared")
            values, accounts = cursor.fetchone()
        return int(values), int(accounts)

    def refusal(self, values: int, accounts: int) -> CommandError:
        """What an operator reads when the index cannot be made: what is wrong and what to do."""
        return CommandError(
            f"{values} {self.values} are shared by {accounts} accounts (compared in any case), so "
            f"{self.migration[0]}.{self.migration[1][:4]} cannot make them unique. Nothing was changed. "
            f"List them with `python recsite/manage.py {self.command}`, {self.fix} in the admin, then run "
            f"migrate again.")

    def refuse_shared(self, connection: BaseDatabaseWrapper) -> None:
        """The migration's first step: stop with :meth:`refusal`'s message, nothing changed, if any
        value is shared."""
        values, accounts = self.shared(connection)
        if values:
            raise self.refusal(values, accounts)

    def create(self, connection: BaseDatabaseWrapper) -> None:
        """Create the index if missing; accounts sharing a value (an old process inserted one after
        the migration's check, or while the index was gone) make it :meth:`refusal`'s message
        instead of the database's own, nothing changed."""
        try:
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(self.create_sql)
        except IntegrityError as exc:
            raise self.refusal(*self.shared(connection)) from exc

    def restore(self, using: str = "default", **kwargs) -> None:
        """``post_migrate`` receiver: put the index back if its migration is applied and it is missing.

        On SQLite, Django makes many schema changes (``alter_field`` on auth_user, as a future auth
        migration may do) by copying the table, and re-creates only the indexes its models declare:
        a raw one vanished silently, and with it the rule that decides between two sign-ups at once."""
        from django.db import connections

        connection = connections[using]
        if self.migration in MigrationRecorder(connection).applied_migrations():
            self.create(connection)
