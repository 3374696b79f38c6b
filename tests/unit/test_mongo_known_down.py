"""core.mongo.web_request: a web request's MongoDB use is refused at once while the server is
known to be down, in a way the code that carries on without MongoDB still catches."""
from __future__ import annotations

import pytest
from pymongo.errors import PyMongoError

from core import mongo
from core.breaker import Unavailable

DOWN = "mongodb://127.0.0.1:1/"  # nothing listens: the driver has never seen a server there


@pytest.fixture
def failed_now():
    mongo.BREAKER.failure()
    yield
    mongo.BREAKER.success()


def test_a_known_outage_is_refused_as_a_driver_failure_and_as_unavailable(failed_now):
    with mongo.web_request(), pytest.raises(mongo.KnownDown) as refused:
        mongo.get_db(DOWN)
    # the dashboard's numbers and an erasure's staff note catch PyMongoError; the views, Unavailable
    assert isinstance(refused.value, PyMongoError) and isinstance(refused.value, Unavailable)


def test_outside_a_web_request_nothing_is_refused(failed_now):
    assert mongo.get_db(DOWN) is not None  # workers and jobs wait for the driver's own timeouts


def test_a_failure_older_than_the_window_is_tried_again(failed_now, monkeypatch):
    monkeypatch.setattr(mongo, "KNOWN_DOWN_S", 0.0)
    with mongo.web_request():
        assert mongo.get_db(DOWN) is not None  # one request probes; its failure arms the window again


def test_a_server_the_driver_sees_is_tried_even_after_a_failure(failed_now, monkeypatch):
    class Seen:
        def has_readable_server(self) -> bool:
            return True

    monkeypatch.setattr(type(mongo.get_client(DOWN)), "topology_description", property(lambda self: Seen()))
    with mongo.web_request():
        assert mongo.get_db(DOWN) is not None  # a timeout (a slow server) is not an outage
