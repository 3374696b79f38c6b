"""API tokens for apps on several devices (``accounts.tokens``, ``accounts.api``): one token per
sign-in, each revocable on its own or all together, stored hashed, renewable at any time, and
bounded in number per account. Real site (Django's test client, its database), Redis behind the
sign-in lockout.

DRF's tokens were one per account: a second device got the same key, no device could sign out,
a token about to expire came back unchanged, and the key sat in the database in plain text.
"""
from __future__ import annotations

import itertools
from datetime import datetime

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import override_settings

from tests.site_catalog import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

_octet = itertools.count(1)


def _address() -> str:
    """A client address of this file's own (TEST-NET-1), so no lockout count meets another test's."""
    n = next(_octet)
    return f"192.0.2.{n % 250 + 1}"


def _sign_in(client, user, **extra):
    return client.post("/api/token/", {"username": user.username, "password": PASSWORD}, REMOTE_ADDR=_address(),
                       **extra)


def _key(client, user) -> str:
    answer = _sign_in(client, user)
    assert answer.status_code == 200, answer.content
    return answer.json()["token"]


def _works(client, key: str) -> bool:
    """Does ``key`` sign requests in? (Any answer but 401 from an endpoint that needs a user.)"""
    return client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {key}").status_code != 401


def _post(client, path: str, key: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Token {key}"} if key else {}
    return client.post(path, REMOTE_ADDR=_address(), **headers)


def test_each_sign_in_gets_its_own_token(site_cache, client, make_user):
    """A second device signing in got the first device's key."""
    user = make_user()
    phone, laptop = _key(client, user), _key(client, user)
    assert phone != laptop
    assert _works(client, phone) and _works(client, laptop)


def test_revoke_signs_out_only_the_device_that_asks(site_cache, client, make_user):
    user = make_user()
    phone, laptop = _key(client, user), _key(client, user)
    answer = _post(client, "/api/token/revoke/", phone)
    assert answer.status_code == 204, answer.content
    assert not _works(client, phone) and _works(client, laptop)
    again = _post(client, "/api/token/revoke/", phone)  # a revoked token is no credential any more
    assert again.status_code == 401 and set(again.json()) == {"detail", "code"}, again.content


def test_revoke_all_signs_out_every_device(site_cache, client, make_user):
    user, other = make_user(), make_user()
    phone, laptop, theirs = _key(client, user), _key(client, user), _key(client, other)
    answer = _post(client, "/api/token/revoke-all/", laptop)
    assert answer.status_code == 204, answer.content
    assert not _works(client, phone) and not _works(client, laptop)
    assert _works(client, theirs)  # another account's devices are not touched
    anonymous = _post(client, "/api/token/revoke-all/")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated", anonymous.content


def test_a_password_change_signs_out_every_device(site_cache, client, make_user):
    user = make_user()
    phone, laptop = _key(client, user), _key(client, user)
    assert phone != laptop
    user.set_password("Another-Long-Passphrase-42")
    user.save()
    assert not _works(client, phone) and not _works(client, laptop)


@pytest.mark.production_password_hasher  # Django's re-hash of an older PBKDF2 hash
def test_a_sign_in_that_upgrades_the_password_hash_signs_no_device_out(site_cache, client, make_user):
    """Django re-hashes a password at a right sign-in when its hasher asks for more work (each
    feature release raises PBKDF2's iterations); that save changes the stored hash and was taken
    for a password change: every other device was signed out."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = make_user()
    phone = _key(client, user)
    old_hash = PBKDF2PasswordHasher().encode(PASSWORD, "oldsalt1234567890", iterations=100_000)
    type(user).objects.filter(pk=user.pk).update(password=old_hash)  # as stored by an older release
    tablet = _key(client, user)  # this sign-in re-hashes
    user.refresh_from_db()
    assert "$100000$" not in user.password  # it was re-hashed
    assert _works(client, phone) and _works(client, tablet)
    type(user).objects.filter(pk=user.pk).update(password=old_hash)
    assert client.login(username=user.username, password=PASSWORD)  # a page sign-in re-hashes too
    assert _works(Client(), phone) and _works(Client(), tablet)  # not signed in by the session


def test_the_key_is_stored_nowhere_in_the_database(site_cache, client, make_user):
    """A copy of the database (a backup, a leak) handed out every live token with DRF's tokens."""
    user = make_user()
    key = _key(client, user)
    assert _works(client, key)
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            holding = [row for row in cursor.fetchall() if any(key in str(value) for value in row)]
            assert not holding, (table, holding)


def test_a_token_is_renewed_before_and_after_it_expires(site_cache, client, make_user):
    """A client renewing a token about to expire got the same token back, expiring as soon; an
    expired one, sent along with the password, still gets a new one."""
    user = make_user()
    with override_settings(API_TOKEN_TTL=60):
        soon = _sign_in(client, user).json()
    renewed = _sign_in(client, user, HTTP_AUTHORIZATION=f"Token {soon['token']}").json()
    assert renewed["token"] != soon["token"]
    assert datetime.fromisoformat(renewed["expires"]) > datetime.fromisoformat(soon["expires"])
    assert _works(client, renewed["token"])

    with override_settings(API_TOKEN_TTL=0):
        dead = _key(client, user)
    refused = client.get("/api/recommendations/", HTTP_AUTHORIZATION=f"Token {dead}")
    assert refused.status_code == 401 and "expired" in refused.json()["detail"], refused.content
    fresh = _sign_in(client, user, HTTP_AUTHORIZATION=f"Token {dead}")
    assert fresh.status_code == 200 and fresh.json()["token"] != dead, fresh.content
    assert _works(client, fresh.json()["token"])


@override_settings(API_TOKEN_LIMIT=2)
def test_the_token_limit_is_refused_with_the_api_error_body(site_cache, client, make_user):
    """Past ``API_TOKEN_LIMIT`` live tokens a sign-in is refused (knox's refusal was ``{"error"}``,
    not the API's one body); signing a device out, or a token expiring, makes room again."""
    user = make_user()
    first, _second = _key(client, user), _key(client, user)
    refused = _sign_in(client, user)
    assert refused.status_code == 403, refused.content
    assert refused["Content-Type"] == "application/json"
    body = refused.json()
    assert set(body) == {"detail", "code"} and body["code"] == "token_limit" and body["detail"], body
    assert _post(client, "/api/token/revoke/", first).status_code == 204
    with override_settings(API_TOKEN_TTL=0):
        expired = _key(client, user)  # room for one: taken, and dead at once
    assert not _works(client, expired)
    assert _sign_in(client, user).status_code == 200  # an expired token does not count


def test_a_token_header_that_is_not_utf8_is_a_401(site_cache, client):
    """Knox's own check decodes the key as UTF-8 unguarded: such a header was a 500."""
    answer = client.get("/api/recommendations/", HTTP_AUTHORIZATION="Token \xff\xfe")
    assert answer.status_code == 401 and set(answer.json()) == {"detail", "code"}, answer.content


def test_the_schema_lists_the_sign_out_endpoints(site_cache, client):
    """Generated clients learn the sign-out calls, signed with the token (``tokenAuth``) alone."""
    import json

    from drf_spectacular.validation import validate_schema

    schema = json.loads(client.get("/api/schema/?format=json").content)
    validate_schema(schema)
    for path in ("/api/token/revoke/", "/api/token/revoke-all/"):
        operation = schema["paths"][path]["post"]
        assert operation["security"] == [{"tokenAuth": []}], operation
        assert {"204", "401"} <= set(operation["responses"]), operation["responses"]
    assert "403" in schema["paths"]["/api/token/"]["post"]["responses"]  # token_limit
