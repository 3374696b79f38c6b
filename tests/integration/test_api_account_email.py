"""``/api/account/email/``: the site's e-mail page for an app (an account had no way to see, give or
change its address over the API). Real site (Django's test client), Redis behind the limits.
"""
from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from django.test import Client

from accounts.models import PendingEmail
from tests.site_catalog import PASSWORD, own_address

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _api(user) -> tuple[Client, dict]:
    from knox.models import AuthToken

    return Client(), {"HTTP_AUTHORIZATION": f"Token {AuthToken.objects.create(user)[1]}", "REMOTE_ADDR": own_address()}


def _post(client: Client, auth: dict, body: dict):
    return client.post("/api/account/email/", body, content_type="application/json", **auth)


def test_an_app_gives_an_address_with_the_password_and_its_link_confirms_it(site_cache, mailoutbox, make_user):
    owner = make_user()
    old, new = owner.email, f"n{uuid.uuid4().hex[:10]}@example.com"
    client, auth = _api(owner)
    assert client.get("/api/account/email/", **auth).json() == {"email": old, "pending": None}

    no_password = _post(client, auth, {"email": new})
    assert no_password.status_code == 400 and "password" in no_password.json()["fields"], no_password.json()
    wrong = _post(client, auth, {"email": new, "password": "not-" + PASSWORD})
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    malformed = _post(client, auth, {"email": "not-an-address", "password": PASSWORD})
    assert malformed.status_code == 400 and "email" in malformed.json()["fields"]
    assert not PendingEmail.objects.filter(user=owner).exists() and mailoutbox == []

    given = _post(client, auth, {"email": new, "password": PASSWORD})
    assert given.status_code == 202 and given.json() == {"email": old, "pending": new, "sent": True}
    assert [m.to for m in mailoutbox] == [[new]]  # the refused posts above used up no resend
    assert client.get("/api/account/email/", **auth).json() == {"email": old, "pending": new}

    again = _post(client, auth, {})
    assert again.status_code == 202 and [m.to for m in mailoutbox] == [[new], [new]]
    latest = mailoutbox[-1].body  # the link sent again replaced the first one
    link = next(line for line in latest.splitlines() if "/accounts/email/confirm/" in line).strip()
    browser = Client()
    browser.force_login(owner)
    assert browser.post(link).status_code == 302  # opened signed in on the site
    assert client.get("/api/account/email/", **auth).json() == {"email": new, "pending": None}
    assert any(m.to == [old] and "was changed" in m.subject for m in mailoutbox)


def test_nothing_waiting_is_a_400_and_limits_answer_429(site_cache, mailoutbox, make_user):
    owner = make_user()
    client, auth = _api(owner)
    nothing = _post(client, auth, {})
    assert nothing.status_code == 400 and nothing.json()["code"] == "invalid"

    guesses = [_post(client, auth, {"email": "x@example.com", "password": f"guess{n}"}).status_code
               for n in range(settings.LOGIN_THROTTLE_ATTEMPTS)]
    assert guesses == [403] * settings.LOGIN_THROTTLE_ATTEMPTS
    locked = _post(client, auth, {"email": "x@example.com", "password": PASSWORD})
    assert locked.status_code == 429 and locked.json()["code"] == "throttled" and int(locked["Retry-After"]) > 0

    other, other_auth = _api(make_user())
    sent = [_post(other, other_auth, {"email": f"o{n}{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD})
            for n in range(settings.EMAIL_CONFIRM_RESENDS_PER_ACCOUNT + 1)]
    assert [r.status_code for r in sent] == [202] * settings.EMAIL_CONFIRM_RESENDS_PER_ACCOUNT + [429]
    assert sent[-1].json()["code"] == "throttled" and "Too many requests" in sent[-1].json()["detail"]
    assert client.get("/api/account/email/").status_code == 401
