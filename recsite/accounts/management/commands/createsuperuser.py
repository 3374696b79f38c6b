"""Django's ``createsuperuser``, refusing an e-mail address another account has (in any case).

E-mail addresses are one account's each (the unique index of migration accounts.0009): Django's
command knew nothing of it and ended in the index's raw IntegrityError, a traceback. The address is
now checked as the admin and a confirmation check it (``accounts.forms.email_in_use``), in the
database the command writes to (``--database``), before anything is created: with ``--noinput``
(``--email`` or ``DJANGO_SUPERUSER_EMAIL``) a ``CommandError``; when prompting, the error and the
prompt again, as Django does for a username that is taken. A superuser without an address is made
as before: blank addresses are outside the rule.

An address or a username (in any case: accounts.0011) another account takes between that check
and the insert (a sign-up at the same moment) is refused by the database's index or constraint:
a ``CommandError`` saying which, not the IntegrityError's traceback; nothing is created.
"""
from __future__ import annotations

import os

from django.contrib.auth.management.commands import createsuperuser
from django.core.management.base import CommandError
from django.db import IntegrityError
from django.db.models import Field

from accounts.forms import email_in_use, lost_race, normalized_email, username_taken

EMAIL_TAKEN = ("Another account already uses this e-mail address (each address is one account's): "
               "give another one, or none.")


class Command(createsuperuser.Command):
    database: str | None = None  # the command's --database, set by handle

    def _taken(self, email: str | None) -> bool:
        """Whether another account in the command's database has ``email`` (blank or None: never)."""
        return bool(email) and email_in_use(normalized_email(email), using=self.database)

    def handle(self, *args, **options) -> None:
        """Refuse a taken address given up front (``--email``, or ``DJANGO_SUPERUSER_EMAIL`` with
        ``--noinput``) before Django's command asks or creates anything. Interactively, a taken
        ``--email`` is dropped with the error and asked for, like a taken ``--username``. A race
        lost at the insert is a ``CommandError`` too."""
        self.database = options["database"]
        if options["interactive"]:
            if self._taken(options.get("email")):
                self.stderr.write(f"Error: {EMAIL_TAKEN}")
                options["email"] = None
        elif self._taken(options.get("email") or os.environ.get("DJANGO_SUPERUSER_EMAIL")):
            raise CommandError(EMAIL_TAKEN)
        try:
            super().handle(*args, **options)
        except IntegrityError as exc:
            race = lost_race(exc)
            if race is None:
                raise
            raise CommandError(EMAIL_TAKEN if race == "email" else username_taken().messages[0]) from exc

    def get_input_data(self, field: Field, message: str, default: str | None = None):
        """Django's prompt (its checks of the value); a taken address is an error and is asked again
        (None makes Django's command ask again)."""
        value = super().get_input_data(field, message, default)
        if field.name == "email" and self._taken(value):
            self.stderr.write(f"Error: {EMAIL_TAKEN}")
            return None
        return value
