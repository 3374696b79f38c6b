"""The OpenAPI schema describes what the API answers: every error status with its one body
(``ErrorOut``), 401 wherever a sign-in is needed, and the recommendation items as they are.

Every 400/409/429/503 was "No response body" though each answers JSON, no endpoint listed 401, and
the items of ``/api/recommendations/`` carried ``pid`` and ``stars`` (the HTML card's) that the
schema lacked. Real site (Django's test client), MongoDB and Redis (realtime_support's catalog).
"""
from __future__ import annotations

import pytest

from realtime_support import rt_catalog  # noqa: F401  (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.django_db]
ERROR_OUT = {"$ref": "#/components/schemas/ErrorOut"}


@pytest.fixture
def schema(site_cache, client) -> dict:
    answer = client.get("/api/schema/", {"format": "json"})
    assert answer.status_code == 200, answer.content[:300]
    return answer.json()


def _operations(schema: dict):
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_error_status_has_the_error_body(schema):
    errors = {(name, status): response for name, operation in _operations(schema)
              for status, response in operation["responses"].items() if status >= "400"}
    assert len(errors) >= 30, sorted(errors)
    wrong = {key: r for key, r in errors.items() if r.get("content", {}).get("application/json", {}).get("schema")
             != ERROR_OUT or not r.get("description")}
    assert not wrong, wrong
    assert set(schema["components"]["schemas"]["ErrorOut"]["properties"]) == {"detail", "code", "fields"}


def test_401_is_documented_where_a_sign_in_is_needed(schema):
    signed_in = {name for name, operation in _operations(schema) if operation.get("security")
                 and {} not in operation["security"]}  # {}: no credentials needed (AllowAny)
    assert "POST /api/ratings/" in signed_in and "GET /api/recommendations/" in signed_in, signed_in
    missing = {name for name, operation in _operations(schema) if name in signed_in
               and "401" not in operation["responses"]}
    assert not missing, missing


def test_recommendation_items_have_the_documented_fields(schema, rt_catalog, make_user, client):
    from core import stored_lists

    user = make_user()
    client.force_login(user)
    liked, recommended = rt_catalog.products[:2]
    stored_lists.write_recommendations(user.profile.recommender_id, [
        {"product_id": recommended, "score": 1.0, "because": liked}], "schema-test-v1", db=rt_catalog.db)
    answer = client.get("/api/recommendations/")
    assert answer.status_code == 200, answer.content[:300]
    items = answer.json()["items"]
    assert [i["product_id"] for i in items] == [recommended], items
    documented = schema["components"]["schemas"]["RecItem"]["properties"]
    assert set(items[0]) == set(documented), set(items[0]) ^ set(documented)
    page = client.get("/recommendations/").content.decode()  # the HTML card keeps its stars
    assert f'data-product="{recommended}"' in page and '<span class="stars"' in page


def test_every_operation_lists_what_any_endpoint_may_answer(schema):
    """429 (``API_USER_RATE``), 500 and 503 can come from every endpoint and 413 from any with a
    body; README said so but each operation's schema did not, so a generated client had no type
    for them."""
    missing = {name: sorted({"429", "500", "503", *(["413"] if "requestBody" in operation else [])}
                            - set(operation["responses"]))
               for name, operation in _operations(schema)}
    assert not {name: statuses for name, statuses in missing.items() if statuses}, missing
    assert "413" in dict(_operations(schema))["POST /api/ratings/"]["responses"]


def test_the_headers_a_client_acts_on_are_in_the_schema(schema):
    """``Retry-After`` on every 429 and 503 (when to retry) and ``Idempotent-Replayed`` on the 202
    of a rating or control (a key reused by mistake) were only in the descriptions' prose."""
    operations = dict(_operations(schema))
    waits = {(name, status): response.get("headers", {}) for name, operation in operations.items()
             for status, response in operation["responses"].items() if status in ("429", "503")}
    assert len(waits) >= 2 * len(operations), sorted(waits)
    assert not {key for key, headers in waits.items() if "Retry-After" not in headers}
    for name in ("POST /api/ratings/", "POST /api/not-interested/", "POST /api/interested-again/"):
        assert "Idempotent-Replayed" in operations[name]["responses"]["202"].get("headers", {}), name
        assert "Idempotency-Key" in {p["name"] for p in operations[name].get("parameters", []) if p["in"] == "header"}
