"""The model store unreachable (``ARTIFACTS_DIR=s3a://...`` and its network down): the readers of
``CURRENT`` raised the store's OSError, so the worker blamed valid ratings (tried, then
dead-lettered them) and exited at its start (``ModelHolder.refresh(force=True)``). Now one
reader (``core.published``) keeps the last known version, and a store never read is an outage.

A unit test: a real artifacts folder whose reads fail while the test says the store is down.
"""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest

from core import artifacts, list_state, mongo, storage
from core.settings import get_settings
from kafka_workers import outage, retry
from kafka_workers.model_holder import ModelHolder
from kafka_workers.outcomes import Outcome


@pytest.fixture
def store(tmp_path, monkeypatch) -> dict:
    """A store publishing ``v1``; set ``down`` to make every read of it fail as S3's client does."""
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    get_settings.cache_clear()
    mongo.forget_pointers()  # (and the published version read with them)
    artifacts.models_dir().mkdir(parents=True)
    (artifacts.models_dir() / artifacts.CURRENT_FILE).write_text("v1\n")
    state = {"down": False}
    real = storage.read_text

    def read(path, *args, **kwargs):
        if state["down"]:
            raise OSError(f"When reading information for key '{path}': AWS Error NETWORK_CONNECTION")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(storage, "read_text", read)
    yield state
    get_settings.cache_clear()
    mongo.forget_pointers()


def test_a_worker_starting_while_the_store_is_down_starts_without_a_model(store):
    store["down"] = True
    holder = ModelHolder()
    assert holder.refresh(force=True) is False
    assert holder.model is None


def test_a_valid_rating_waits_out_a_store_never_read_instead_of_being_dead_lettered(store, monkeypatch):
    """Its handling reads the version (here the list keys' generation, as the worker's writes do)."""
    store["down"] = True
    sent, tries = [], []

    def handle(value, model):
        tries.append(value)
        list_state.generation()
        return Outcome(None, "processed")

    class StoreBackAfterFiveWaits(threading.Event):
        waits = 0

        def wait(self, timeout=None) -> bool:
            self.waits += 1
            store["down"] = self.waits < 5
            return False

    monkeypatch.setattr(retry, "handle", handle)
    monkeypatch.setattr(retry, "send_dead_letter", lambda record, outcome, attempts, lost_leases=0: sent.append(outcome))
    monkeypatch.setattr(retry, "retry_delay_s", lambda: 0.0)
    record = SimpleNamespace(topic="ratings", partition=0, offset=1, key=b"u1",
                             value=json.dumps({"event_id": "evt-0123456789"}).encode())
    outcome = retry.process_with_retry(record, SimpleNamespace(model=None), StoreBackAfterFiveWaits())
    assert outcome.status == "processed" and sent == []
    assert len(tries) > retry.max_attempts()  # every wait was an outage's, none used up a try


def test_once_read_the_last_known_version_is_kept_while_the_store_is_down(store, monkeypatch):
    from core import published

    holder = ModelHolder(check_every_s=0.0)
    monkeypatch.setattr(artifacts, "load_model", lambda version: SimpleNamespace(version=version, item_ids=[], rank=0))
    assert holder.refresh(force=True) and holder.version == "v1"
    assert list_state.generation() == "v1"
    store["down"] = True
    monkeypatch.setattr(published, "CHECK_S", 0.0)  # every call reads the store again
    assert list_state.generation() == "v1"
    assert holder.refresh(force=True) is False and holder.version == "v1"


def test_reloaded_collections_resolve_on_the_last_known_version_while_the_store_is_down(store, monkeypatch):
    """``core.mongo`` reads CURRENT with its pointers (about once a second): its OSError came out of
    every read of a reloaded collection, e.g. the products a rating's handling checks."""
    from core import published

    class Pointers:
        def find(self, query, projection):
            return [{"_id": mongo.PRODUCTS, "physical": "products__g1"}]

    monkeypatch.setattr(mongo, "raw_collection", lambda db, name: Pointers())
    db = SimpleNamespace(client=object(), name="store-outage")
    store["down"] = True
    with pytest.raises(outage.OUTAGE_ERRORS):  # never read: waited out, not the message's fault
        mongo.physical_name(db, mongo.PRODUCTS)
    store["down"] = False
    assert mongo.physical_name(db, mongo.PRODUCTS) == "products__g1"
    store["down"] = True
    monkeypatch.setattr(mongo, "POINTER_TTL_S", 0.0)
    monkeypatch.setattr(published, "CHECK_S", 0.0)  # every call reads the store again
    assert mongo.physical_name(db, mongo.PRODUCTS) == "products__g1"


def test_celery_s_model_check_keeps_the_last_known_version_while_the_store_is_down(store, monkeypatch):
    """``check_model`` read CURRENT itself: every check (each MODEL_CHECK_S) failed with the
    store's OSError. Read through ``core.published``, a store read once gives its last known version."""
    from kafka_workers import tasks

    class Rescored:  # v1 re-scored already: nothing to queue
        def mget(self, *keys):
            return [b"v1", None]

    monkeypatch.setattr(tasks.redis_client, "client", lambda: Rescored())
    assert tasks.check_model() is None
    store["down"] = True
    assert tasks.check_model() is None


def test_the_admin_s_current_column_keeps_the_last_known_version_while_the_store_is_down(store):
    """The model versions' list read CURRENT itself, once per row: a store down was a 500 for the
    whole page. Through ``core.published`` it is read once a second, and kept while the store fails."""
    from django.contrib import admin

    from shop.admin import ModelVersionAdmin
    from shop.models import ModelVersion

    column = ModelVersionAdmin(ModelVersion, admin.site).is_current
    assert column(SimpleNamespace(version="v1"))
    store["down"] = True
    assert column(SimpleNamespace(version="v1")) and not column(SimpleNamespace(version="v0"))
