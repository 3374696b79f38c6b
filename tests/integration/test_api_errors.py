"""Every error of the API has one JSON body: ``{"detail": "<sentence>", "code": "<code>"}``, plus
``"fields"`` when fields of the request are invalid (``recsite.api_errors``).

An app met three shapes (``{"detail"}``, DRF's per-field lists at the top level,
``{"non_field_errors"}``), a different one for the same mistake in the header and in the body, a
text/plain 413, Python's advice to call ``sys.set_int_max_str_digits()`` for a long integer, a 409
calling a "not interested" a rating, and no code to branch on anywhere. Real site (Django's test
client), real Kafka, MongoDB and Redis (the synthetic catalog of realtime_support).
"""
from __future__ import annotations

import itertools
import json
import uuid

import pytest
from django.test.utils import override_settings

from realtime_support import free_port, reset_core_caches
from realtime_support import rt_catalog  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
_octet = itertools.count(1)


def _post(api, url: str, body, **extra):
    return api.client.post(url, body if isinstance(body, str) else json.dumps(body),
                           content_type="application/json", **api.auth, **extra)


def _conflict(api):
    key = f"errors-{uuid.uuid4().hex[:12]}"
    assert _post(api, "/api/ratings/", {"product_id": api.products[0], "rating": 4}, HTTP_IDEMPOTENCY_KEY=key) \
        .status_code == 202
    return _post(api, "/api/not-interested/", {"product_id": api.products[1]}, HTTP_IDEMPOTENCY_KEY=key)


def _throttled(api):
    with override_settings(RATING_RATE="1/min"):
        assert _post(api, "/api/ratings/", {"product_id": api.products[2], "rating": 3}).status_code == 202
        return _post(api, "/api/ratings/", {"product_id": api.products[3], "rating": 3})


def _locked_out(api):
    """Wrong passwords past ``LOGIN_THROTTLE_ATTEMPTS``: the lockout's refusal (accounts.middleware)."""
    address, name = f"203.0.113.{next(_octet)}", f"u{uuid.uuid4().hex[:10]}"
    for _ in range(20):
        answer = api.client.post("/api/token/", {"username": name, "password": uuid.uuid4().hex}, REMOTE_ADDR=address)
        if answer.status_code != 400:
            return answer
    return answer


def _kafka_unreachable(api):
    with pytest.MonkeyPatch.context() as mp:  # no broker listens there: the site's producer cannot start
        mp.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
        reset_core_caches()
        try:
            return _post(api, "/api/ratings/", {"product_id": api.products[4], "rating": 4})
        finally:
            mp.undo()
            reset_core_caches()


def _too_large(api):
    with override_settings(REQUEST_MAX_BODY_BYTES=100):
        return _post(api, "/api/ratings/", {"product_id": api.products[0], "rating": 4, "text": "x" * 200})


# name: (request, status, code, the invalid fields or None)
CASES = {
    "bad JSON": (lambda api: _post(api, "/api/ratings/", '{"product_id": '), 400, "parse_error", None),
    "duplicate key": (lambda api: _post(api, "/api/ratings/", '{"product_id": "P1", "rating": 1, "rating": 5}'),
                      400, "parse_error", None),
    "not an object": (lambda api: _post(api, "/api/ratings/", [1]), 400, "invalid", None),
    "unknown field": (lambda api: _post(api, "/api/ratings/", {"product_id": api.products[0], "rating": 4,
                                                               "stars": 5}), 400, "invalid", None),
    "bad product id": (lambda api: _post(api, "/api/ratings/", {"product_id": "no such id!", "rating": 4}),
                       400, "invalid", ["product_id"]),
    "missing fields": (lambda api: _post(api, "/api/ratings/", {}), 400, "invalid", ["product_id", "rating"]),
    "unknown product (rating)": (lambda api: _post(api, "/api/ratings/", {"product_id": "no-such-product-1",
                                                                          "rating": 4}),
                                 400, "unknown_product", None),
    "unknown product (similar)": (lambda api: api.client.get("/api/products/no-such-product-1/similar/"),
                                  404, "unknown_product", None),
    "bad rating": (lambda api: _post(api, "/api/ratings/", {"product_id": api.products[0], "rating": 9}),
                   400, "invalid", ["rating"]),
    "huge integer": (lambda api: _post(api, "/api/ratings/", f'{{"product_id": "{api.products[0]}", '
                                                             f'"rating": {"9" * 5000}}}'),
                     400, "parse_error", None),
    "bad header key": (lambda api: _post(api, "/api/ratings/", {"product_id": api.products[0], "rating": 4},
                                         HTTP_IDEMPOTENCY_KEY="bad"), 400, "invalid", None),
    "bad body key": (lambda api: _post(api, "/api/ratings/", {"product_id": api.products[0], "rating": 4,
                                                              "idempotency_key": "bad"}),
                     400, "invalid", ["idempotency_key"]),
    "bad search page": (lambda api: api.client.get("/api/search/", {"q": "x", "page": "0"}), 400, "invalid",
                        ["page"]),
    "key used before": (_conflict, 409, "idempotency_conflict", None),
    "too large": (_too_large, 413, "too_large", None),
    "unknown path": (lambda api: api.client.get("/api/nope/"), 404, "not_found", None),
    "unknown rating": (lambda api: api.client.get("/api/ratings/no-such-event-1/", **api.auth), 404, "not_found",
                       None),
    "wrong method": (lambda api: api.client.get("/api/ratings/", **api.auth), 405, "method_not_allowed", None),
    "If-Match mismatch": (lambda api: api.client.get("/api/recommendations/", HTTP_IF_MATCH='"no-such-tag"',
                                                      **api.auth), 412, "precondition_failed", None),
    "form body": (lambda api: api.client.post("/api/ratings/", {"product_id": "P1", "rating": "4"}, **api.auth),
                  415, "unsupported_media_type", None),
    "no credentials": (lambda api: api.client.get("/api/recommendations/"), 401, "not_authenticated", None),
    "bad token": (lambda api: api.client.get("/api/recommendations/", HTTP_AUTHORIZATION="Token nope"),
                  401, "authentication_failed", None),
    "wrong password": (lambda api: _post(api, "/api/account/delete/", {"password": uuid.uuid4().hex},
                                         REMOTE_ADDR=f"203.0.113.{next(_octet)}"), 403, "wrong_password", None),
    "rating limit": (_throttled, 429, "throttled", None),
    "login lockout": (_locked_out, 429, "throttled", None),
    "Kafka unreachable": (_kafka_unreachable, 503, "unavailable", None),
}


@pytest.fixture
def api(rt_catalog, site_cache, make_user, client):
    """A token client of a new user (a token: 401 is the answer without one), and products to rate."""
    from types import SimpleNamespace

    from knox.models import AuthToken

    token = AuthToken.objects.create(make_user())[1]
    return SimpleNamespace(client=client, auth={"HTTP_AUTHORIZATION": f"Token {token}"},
                           products=rt_catalog.products)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_every_api_error_has_the_one_body(case, api):
    request, status, code, fields = case
    response = request(api)
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = json.loads(response.content)
    assert set(body) == {"detail", "code"} | ({"fields"} if fields else set()), body
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"], body
    if fields:
        assert sorted(body["fields"]) == fields, body
        assert all(m and all(isinstance(s, str) for s in m) for m in body["fields"].values()), body
    assert "sys." not in body["detail"] and "non_field_errors" not in response.content.decode()


def test_the_messages_say_what_went_wrong(api):
    """The detail of each is a sentence a developer can act on; what stayed is unchanged."""
    unknown = _post(api, "/api/ratings/", {"product_id": api.products[0], "rating": 4, "stars": 5}).json()
    assert unknown["detail"] == "unknown fields: stars"
    bad = _post(api, "/api/ratings/", {"product_id": "no such id!", "rating": 9}).json()
    assert bad["fields"] == {"product_id": ["not a product id"],
                             "rating": ["Ensure this value is less than or equal to 5."]}
    assert "product_id: not a product id" in bad["detail"]
    huge = _post(api, "/api/ratings/", f'{{"product_id": "{api.products[0]}", "rating": {"9" * 5000}}}').json()
    assert huge["detail"] == "JSON parse error - an integer has too many digits"
    conflict = _conflict(api).json()  # a rating's key reused for a "not interested": named as what it was
    assert conflict["detail"] == f"this idempotency key was already used for another request " \
                                 f"(a rating of {api.products[0]})"
    assert api.client.get("/api/nope/").json()["detail"] == "Not found."


def test_pages_keep_their_text_answers(api):
    with override_settings(REQUEST_MAX_BODY_BYTES=100):
        page = api.client.post("/accounts/login/", {"username": "x" * 200, "password": "y"})
    assert page.status_code == 413 and page["Content-Type"].startswith("text/plain")
