"""Paths under ``/api/`` are answered as an API: a missing trailing slash still reaches the
endpoint, and an unknown path is a JSON 404. The HTML site keeps Django's behaviour.

``POST /api/ratings`` (no slash) was Django's APPEND_SLASH at work: with DEBUG off an HTML 301 to
``/api/ratings/`` (a client following it resends a GET: 405), with DEBUG on a 500 (its RuntimeError
for a POST it cannot redirect). An unknown ``/api/...`` path answered Django's HTML 404.
Real site (Django's test client); Redis behind the throttles and the lockout.
"""
from __future__ import annotations

import itertools

import pytest
from django.test.utils import override_settings

from tests.site_catalog import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

DEBUG = pytest.mark.parametrize("debug", [False, True], ids=["DEBUG off", "DEBUG on"])
_octet = itertools.count(1)


def _address() -> str:
    """A client address of this test's own (TEST-NET-3), so no lockout count meets another test's."""
    return f"203.0.113.{next(_octet)}"


@DEBUG
def test_a_post_without_its_trailing_slash_reaches_the_endpoint(debug, redis_url, site_cache, client, make_user):
    from knox.models import AuthToken

    user = make_user()
    auth = {"HTTP_AUTHORIZATION": f"Token {AuthToken.objects.create(user)[1]}"}
    with override_settings(DEBUG=debug):
        slashed = client.post("/api/ratings/", {"rating": 5}, content_type="application/json", **auth)
        bare = client.post("/api/ratings", {"rating": 5}, content_type="application/json", **auth)
        token = client.post("/api/token", {"username": user.username, "password": PASSWORD}, REMOTE_ADDR=_address())
    assert slashed.status_code == 400 and "product_id" in slashed.json()["fields"]  # the endpoint's own validation
    assert (bare.status_code, bare.json()) == (slashed.status_code, slashed.json()), bare.content
    assert token.status_code == 200 and token.json()["token"], token.content


@DEBUG
def test_an_unknown_api_path_is_a_json_404(debug, site_cache, client):
    with override_settings(DEBUG=debug):
        answers = [client.get("/api/nope/"), client.get("/api/nope"), client.post("/api/nope/", {}),
                   client.get("/api/products/")]
    for response in answers:
        assert response.status_code == 404, response.status_code
        assert response["Content-Type"] == "application/json"
        assert response.json() == {"detail": "Not found.", "code": "not_found"}


@DEBUG
def test_the_html_site_keeps_its_slash_redirect_and_404_page(debug, site_cache, client):
    with override_settings(DEBUG=debug):
        redirected = client.get("/welcome")
        missing = client.get("/no-such-page/")
    assert redirected.status_code == 301 and redirected["Location"] == "/welcome/"
    assert missing.status_code == 404 and missing["Content-Type"].startswith("text/html")
