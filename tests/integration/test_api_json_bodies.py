"""A JSON body nested too deeply is refused with 400 by every JSON endpoint, like any malformed JSON.

DRF's JSONParser turns only ValueError into a 400; the json module raises RecursionError on about
a thousand nested ``[`` (a 2 KB body), so each endpoint answered 500, the anonymous
``/api/token/`` too. Real site (Django's test client); Redis behind the throttles.
"""
from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

DEEP = {"1,000 nested arrays (2 KB)": "[" * 1000 + "]" * 1000,
        "30,000 nested objects": '{"a":' * 30_000 + "1" + "}" * 30_000}
SIGNED_IN = ["/api/ratings/", "/api/ratings/remove/", "/api/not-interested/", "/api/interested-again/",
             "/api/account/delete/", "/api/account/email/"]


@pytest.mark.parametrize("body", DEEP.values(), ids=DEEP.keys())
def test_deeply_nested_json_is_a_400_everywhere(body, redis_url, site_cache, client, make_user):
    from knox.models import AuthToken

    anonymous = client.post("/api/token/", body, content_type="application/json")
    assert anonymous.status_code == 400, anonymous.status_code
    token = AuthToken.objects.create(make_user())[1]
    for url in SIGNED_IN:
        response = client.post(url, body, content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")
        assert response.status_code == 400, (url, response.status_code)
        assert "JSON parse error" in json.loads(response.content)["detail"], url


def test_a_duplicate_key_is_a_400_that_names_it(redis_url, site_cache, client, make_user):
    """``{"rating": 1, "rating": 5}`` was read as 5 (the json module keeps the last) and accepted:
    what a client meant is unknown, so every JSON endpoint refuses it, naming the key."""
    import uuid

    from knox.models import AuthToken

    anonymous = client.post("/api/token/", json.dumps({"username": f"u{uuid.uuid4().hex[:10]}", "password": "a"})
                            [:-1] + ', "password": "b"}', content_type="application/json")
    assert anonymous.status_code == 400 and "duplicate key 'password'" in anonymous.json()["detail"], anonymous.content
    token = AuthToken.objects.create(make_user())[1]
    for url in SIGNED_IN:
        response = client.post(url, '{"product_id": "P001", "rating": 1, "rating": 5, "password": "x"}',
                               content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")
        assert response.status_code == 400, (url, response.status_code)
        assert "duplicate key 'rating'" in json.loads(response.content)["detail"], url
    nested = client.post("/api/ratings/", '{"product_id": "P001", "rating": 5, "text": {"a": 1, "a": 2}}',
                         content_type="application/json", HTTP_AUTHORIZATION=f"Token {token}")
    assert nested.status_code == 400 and "duplicate key 'a'" in nested.json()["detail"], nested.content
