"""One account per username in any case: the unique index on lower(username) (accounts.0011,
``accounts.username_index``). Django's sign-up form refuses "Bob" when "bob" exists, but the
column's UNIQUE constraint tells cases apart, so two sign-ups at once with case variants both made
an account. Real site (Django's test client, its database); run on PostgreSQL too
(test_site_on_postgresql).

The races are made real without threads: the other account is inserted just before this save's
own insert (a pre_save receiver, once), after the form's check.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import User

from tests.site_catalog import PASSWORD, admin_user_form

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
INDEX = "auth_user_username_ci_unique"
TAKEN = "A user with that username already exists."


def _name() -> str:
    return f"Shopper{uuid.uuid4().hex[:8]}"


def _index_exists() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        return INDEX in connection.introspection.get_constraints(cursor, "auth_user")


@contextmanager
def _taken_first(name: str, taker: str) -> Iterator[None]:
    """While inside: the first save of ``name`` is preceded by another account taking ``taker``."""
    from django.db.models.signals import pre_save

    def the_other_save_first(sender, instance, **kwargs):
        if instance.username == name:
            pre_save.disconnect(the_other_save_first, sender=User)  # once: the other's own save
            User.objects.create(username=taker, email=f"other.{uuid.uuid4().hex[:8]}@example.com")

    pre_save.connect(the_other_save_first, sender=User)
    try:
        yield
    finally:
        pre_save.disconnect(the_other_save_first, sender=User)


def test_the_database_refuses_a_username_taken_in_another_case(db):
    from django.db import IntegrityError, transaction

    name = _name()
    User.objects.create(username=name)
    with pytest.raises(IntegrityError, match=INDEX), transaction.atomic():
        User.objects.create(username=name.upper())
    assert User.objects.filter(username__iexact=name).count() == 1


def test_a_signup_that_loses_the_race_for_a_username_in_another_case_gets_the_form_error(site_cache, client):
    """"Bob" signs up while "bob" does: the one whose insert comes second gets Django's usual error,
    not an account of its own (before: both were made) nor a 500."""
    name = _name()
    with _taken_first(name, name.lower()):
        lost = client.post("/accounts/signup/", {"username": name, "email": f"{name}@example.com",
                                                 "password1": PASSWORD, "password2": PASSWORD},
                           REMOTE_ADDR=f"10.77.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}")
    assert lost.status_code == 400, lost.status_code
    assert TAKEN in lost.content.decode()
    # nothing of it is kept (the other's insert went with this sign-up's transaction, here in one thread)
    assert not User.objects.filter(username__iexact=name).exists()


@pytest.mark.parametrize("page", ["add", "change"])
def test_an_admin_save_that_loses_the_race_for_a_username_in_another_case_gets_the_form_error(
        mongo_db, site_cache, client, make_user, page):
    """The admin's "add user" and a rename, against a sign-up of the name in another case."""
    shopper = make_user()
    client.force_login(make_user(staff=True))
    name = f"Renamed{shopper.username}"
    url, data = admin_user_form(page, shopper, name)
    with _taken_first(name, name.lower()):
        lost = client.post(url, data)
    assert lost.status_code == 200 and TAKEN in lost.content.decode(), lost.status_code
    assert not User.objects.filter(username=name).exists()
    assert User.objects.get(pk=shopper.pk).username == shopper.username


@pytest.mark.django_db(transaction=True)
def test_the_migration_refuses_usernames_that_differ_only_in_case_and_changes_nothing(site_cache):
    """A deployment holding "Bob" and "bob": accounts.0011 stops before it changes anything, saying
    how many and how to list them (``shared_usernames``); once one is renamed, it runs."""
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    name = _name()
    try:
        call_command("migrate", "accounts", "0010", verbosity=0)
        assert not _index_exists()
        first = User.objects.create(username=name)
        second = User.objects.create(username=name.lower())
        User.objects.create(username=f"{name}x")
        with pytest.raises(CommandError) as refused:
            call_command("migrate", "accounts", verbosity=0)
        assert "1 username(s) are shared by 2 accounts" in str(refused.value)
        assert "accounts.0011" in str(refused.value) and "manage.py shared_usernames" in str(refused.value)
        assert not _index_exists()

        listed = StringIO()
        call_command("shared_usernames", stdout=listed)
        assert f"{name.lower()}:" in listed.getvalue()
        assert f"id {first.pk}  {first.username}  <>" in listed.getvalue()
        assert f"id {second.pk}  {second.username}  <>" in listed.getvalue()
        assert f"{name}x" not in listed.getvalue()

        User.objects.filter(pk=second.pk).update(username=f"{name.lower()}2")
        call_command("migrate", "accounts", verbosity=0)
        assert _index_exists()
        listed = StringIO()
        call_command("shared_usernames", stdout=listed)
        assert "No username is shared" in listed.getvalue()
    finally:  # the other tests' schema, whatever happened
        User.objects.filter(username__istartswith=name).delete()
        call_command("migrate", "accounts", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_migrate_puts_back_the_username_index_a_table_rebuild_dropped(site_cache):
    """On SQLite a rebuild of auth_user drops the raw index; every migrate puts it back."""
    from django.core.management import call_command
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP INDEX {INDEX}")  # as a rebuild on SQLite leaves it
        call_command("migrate", verbosity=0)  # nothing to migrate: post_migrate only
        assert _index_exists()
    finally:
        call_command("migrate", verbosity=0)
