"""The outage middleware's answer to a store that cannot be reached (no servers: a unit test)."""
from __future__ import annotations

from django.test import RequestFactory

from core import mongo
from core.published import ModelStoreUnreachable
from shop.middleware import outage_middleware


def _answer(path: str, exception: Exception):
    middleware = outage_middleware(lambda request: None)
    return middleware.process_exception(RequestFactory().get(path), exception)


def test_an_unreachable_model_store_is_a_503_with_retry_after_not_a_500():
    """A site process that never read CURRENT while the model store (s3a://...) is down cannot
    resolve a reloaded collection: that is an outage like MongoDB's, answered 503, and it does not
    count against MongoDB's breaker (MongoDB is fine)."""
    mongo.BREAKER.success()
    page = _answer("/recommendations/", ModelStoreUnreachable("models/CURRENT"))
    api = _answer("/api/recommendations/", ModelStoreUnreachable("models/CURRENT"))
    assert page is not None and page.status_code == 503 and page["Retry-After"]
    assert api is not None and api.status_code == 503 and api["Content-Type"].startswith("application/json")
    assert not mongo.BREAKER._failing


def test_a_bug_stays_a_500():
    assert _answer("/recommendations/", ValueError("a bug")) is None
