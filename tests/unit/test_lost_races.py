"""Which race an IntegrityError says a sign-up or admin save lost (``accounts.forms.lost_race``):
the username's UNIQUE constraint or the e-mail index, as SQLite and PostgreSQL word it; anything
else is no race and must stay an error. The tests run on SQLite: PostgreSQL's wording is checked here."""
from __future__ import annotations

import pytest
from django.db import IntegrityError

from accounts.forms import lost_race

PG = 'duplicate key value violates unique constraint "{}"\nDETAIL:  Key ({})=({}) already exists.\n'


@pytest.mark.parametrize("message,race", [
    ("UNIQUE constraint failed: auth_user.username", "username"),
    (PG.format("auth_user_username_key", "username", "bob"), "username"),
    # a name that spells the e-mail index: PostgreSQL's DETAIL quotes it, the first line decides
    (PG.format("auth_user_username_key", "username", "auth_user_email_ci_unique"), "username"),
    # the index on lower(username) (accounts.0011): "Bob" against "bob"
    ("UNIQUE constraint failed: index 'auth_user_username_ci_unique'", "username"),
    (PG.format("auth_user_username_ci_unique", "lower(username::text)", "bob"), "username"),
    (PG.format("auth_user_username_ci_unique", "lower(username::text)", "auth_user_email_ci_unique"), "username"),
    ("UNIQUE constraint failed: index 'auth_user_email_ci_unique'", "email"),
    # an address that spells the username's index: the first line decides
    (PG.format("auth_user_email_ci_unique", "lower(email::text)", "auth_user_username_ci_unique@example.com"),
     "email"),
    (PG.format("auth_user_email_ci_unique", "lower(email::text)", "bob@example.com"), "email"),
    # no race: a profile's id, a missing username, another table's username
    ("UNIQUE constraint failed: accounts_profile.site_id", None),
    (PG.format("accounts_profile_site_id_key", "site_id", "site-1"), None),
    ("NOT NULL constraint failed: auth_user.username", None),
    ('null value in column "username" of relation "auth_user" violates not-null constraint', None),
    ("UNIQUE constraint failed: auth_user_groups.user_id, auth_user_groups.group_id", None),
])
def test_a_lost_race_is_told_by_the_constraint_named(message, race):
    assert lost_race(IntegrityError(message)) == race
