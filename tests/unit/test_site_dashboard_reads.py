"""What the public dashboard reads from the artifact store per hit: nothing while the published
model stays the same (it read ``CURRENT`` and the version's ``metrics.json`` on every hit, two GETs
when ``ARTIFACTS_DIR`` is an object store), and the new model's metrics at once after a publish
(or as soon as they are readable, for a version still being copied).

A unit test: a real artifacts folder with the store's reads counted, a local-memory cache, and
the workers' latency figure (scraped over HTTP) a stand-in.
"""
from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import override_settings

from core import artifacts, published, storage
from core.settings import get_settings
from shop import dashboard

LOCAL_CACHE = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "dashboard-reads"}}


@pytest.fixture
def store(tmp_path, monkeypatch) -> list[str]:
    """This test's artifacts folder; returns the names of the files read from it, as read."""
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("EDA_DIR", str(tmp_path / "eda"))
    get_settings.cache_clear()
    published.forget()
    # the generation is read again only when the test says so (a publish), never by the clock
    monkeypatch.setattr(published, "CHECK_S", 3600.0)
    monkeypatch.setattr(dashboard, "_freshness", lambda: {"n": 0, "p50_ms": None, "p99_ms": None, "since": None,
                                                          "workers": 0, "unreachable": []})
    read: list[str] = []
    real = storage.read_text

    def counted(path, *args, **kwargs):
        read.append(str(path).rsplit("/", 1)[-1])
        return real(path, *args, **kwargs)

    monkeypatch.setattr(storage, "read_text", counted)
    yield read
    get_settings.cache_clear()
    published.forget()


def _publish(version: str, ndcg: float) -> None:
    folder = artifacts.models_dir() / version
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"engine": "ials", "test": {"ndcg@10": ndcg}}))
    (artifacts.models_dir() / artifacts.CURRENT_FILE).write_text(version + "\n")
    published.forget()  # as the second after which the site reads CURRENT again


def _dashboard(rf) -> str:
    request = rf.get("/dashboard/")
    request.user = AnonymousUser()
    response = dashboard.dashboard(request)
    assert response.status_code == 200
    return response.content.decode()


@override_settings(CACHES=LOCAL_CACHE)
def test_a_warm_hit_reads_nothing_from_the_artifact_store_and_a_new_model_shows_at_once(rf, store):
    _publish("20260101T000000", 0.1234)
    page = _dashboard(rf)
    assert "20260101T000000" in page and "0.1234" in page
    assert "metrics.json" in store  # the first hit reads the version's metrics

    store.clear()
    for _ in range(3):
        page = _dashboard(rf)
        assert "20260101T000000" in page and "0.1234" in page
    assert store == []

    _publish("20260102T000000", 0.5678)
    page = _dashboard(rf)
    assert "20260102T000000" in page and "0.5678" in page and "0.1234" not in page

    # a version still being copied (no metrics.json yet) is not kept as having no metrics
    _publish("20260103T000000", 0.25)
    (artifacts.models_dir() / "20260103T000000" / "metrics.json").unlink()
    assert "0.2500" not in _dashboard(rf)
    (artifacts.models_dir() / "20260103T000000" / "metrics.json").write_text(json.dumps({"test": {"ndcg@10": 0.25}}))
    assert "0.2500" in _dashboard(rf)
