"""Fixtures for the website tests (test_site_*.py): the loaded catalog, an isolated Django cache,
users, and a probe that reads what the site published on the session's Kafka topic."""
from __future__ import annotations

import time
import uuid

import pytest
from pymongo import monitoring

from tests.site_catalog import PASSWORD


@pytest.fixture(scope="session")
def site_cache():
    """The Django cache under this session's own key prefix.

    pytest-django imports recsite.settings before tests/conftest.py isolates the session, so the
    cache prefix there is the shared default; login throttling, DRF throttling and cached pages
    would otherwise share keys with a site running on this machine. Never cache.clear() here:
    django-redis clears the whole Redis database, which Celery and other sessions use.
    """
    from django.conf import settings as dj
    from django.test.utils import override_settings

    caches = {name: {**conf, "KEY_PREFIX": f"{conf.get('KEY_PREFIX', '')}-test-{uuid.uuid4().hex[:8]}"}
              for name, conf in dj.CACHES.items()}
    override = override_settings(CACHES=caches)
    override.enable()
    yield caches["default"]["KEY_PREFIX"]
    override.disable()


@pytest.fixture(autouse=True)
def one_login_window(monkeypatch):
    """The login lockout's count window, held at the one the test started in.

    Counts live in fixed windows (``LOGIN_THROTTLE_WINDOW``, 300 s): a test that counts a few
    failures and then expects a refusal failed when a window began between the two (CI: the test
    of an attempt in flight, which runs about 6 s). A test that moves windows sets its own."""
    from accounts import throttle

    started = time.time()
    monkeypatch.setattr(throttle, "_window_id", lambda window: int(started // window))


@pytest.fixture(scope="session")
def site(site_catalog, site_cache):
    """The catalog loaded by the real pipeline, with the site's cache isolated."""
    return site_catalog


@pytest.fixture
def make_user(db):
    """Create a site account the way sign-up does (user + profile); returns the User."""
    from django.contrib.auth.models import User

    from accounts.models import Profile

    def make(username: str | None = None, password: str = PASSWORD, staff: bool = False, reviewer_id=None):
        user = User.objects.create_user(username or f"u{uuid.uuid4().hex[:10]}", f"{uuid.uuid4().hex[:8]}@example.com",
                                        password, is_staff=staff, is_superuser=staff)
        Profile.objects.create(user=user, reviewer_id=reviewer_id)
        return user

    return make


@pytest.fixture
def user_client(site, make_user, client):
    """A logged-in browser-like client and its user."""
    user = make_user()
    client.force_login(user)
    return client, user


class TopicProbe:
    """Reads the session's ratings topic: end offsets before an action, the records after it.

    The site's producer waits for the broker's acknowledgement before it answers, so once a
    request has returned, the end offsets already count what it published.
    """

    def __init__(self, topic: str, bootstrap: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      client_id=f"site-test-probe-{uuid.uuid4().hex[:6]}")
        self.consumer.topics()  # fetch metadata so the topic's partitions are known
        partitions = self.consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} has no partitions"
        self.tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.tps)

    def mark(self) -> dict:
        return dict(self.consumer.end_offsets(self.tps))

    def count_since(self, mark: dict) -> int:
        end = self.consumer.end_offsets(self.tps)
        return sum(end[tp] - mark[tp] for tp in self.tps)

    def read_since(self, mark: dict, give_up_after_s: float = 30.0) -> list:
        """Every record published after ``mark`` (up to the current end offsets)."""
        end = self.consumer.end_offsets(self.tps)
        for tp in self.tps:
            self.consumer.seek(tp, mark[tp])
        records = []
        deadline = time.monotonic() + give_up_after_s  # a guard against a hang, not a speed check
        while any(self.consumer.position(tp) < end[tp] for tp in self.tps):
            assert time.monotonic() < deadline, "could not read back the published records"
            for tp, batch in self.consumer.poll(timeout_ms=500).items():
                records.extend(r for r in batch if r.offset < end[tp])
        return records

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture(scope="session")
def ratings_probe(kafka_topics):
    probe = TopicProbe(kafka_topics.ratings_topic, kafka_topics.kafka_bootstrap_servers)
    yield probe
    probe.close()


@pytest.fixture(scope="session")
def served_model(site):
    """The model the session's pipeline published, as the workers load it."""
    from core import artifacts

    model = artifacts.load_model()
    assert model is not None and model.version == site.model_version
    return model


@pytest.fixture
def process_published(ratings_probe, served_model):
    """Run the real worker step (kafka_workers.process.handle) on what was published since a mark.

    Integration tests run no worker process, so they decide when a rating is processed; the
    browser test runs the real worker.
    """
    from kafka_workers.process import handle

    def run(mark: dict) -> list:
        outcomes = [handle(r.value, served_model) for r in ratings_probe.read_since(mark)]
        assert all(o.status == "processed" for o in outcomes), outcomes
        return outcomes

    return run


class MongoCommands(monitoring.CommandListener):
    """The MongoDB commands the site sends to its database (``MONGO_DB``) while :meth:`watch` runs:
    (command, collection).

    A real pymongo command listener on the site's own client (``core.mongo.get_client``), so a page
    is checked for what it really reads, not for which functions it called."""

    def __init__(self) -> None:
        self.db_name, self.seen, self.on = "", [], False

    def started(self, event) -> None:
        if self.on and event.database_name == self.db_name:
            self.seen.append((event.command_name, event.command.get(event.command_name)))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass

    def watch(self, do) -> list[tuple[str, object]]:
        """The commands sent while ``do()`` ran."""
        from core.settings import get_settings

        self.db_name, self.seen, self.on = get_settings().mongo_db, [], True
        try:
            do()
        finally:
            self.on = False
        return self.seen


@pytest.fixture
def mongo_commands():
    """A :class:`MongoCommands` on the site's client.

    pymongo hands a registered listener to the clients made after it, and never forgets it: the
    site's client is made anew here (and again after), and the listener records nothing once the
    test is over."""
    from core import mongo

    listener = MongoCommands()
    monitoring.register(listener)
    mongo.get_client.cache_clear()  # the site's next client carries the listener
    yield listener
    listener.on = False
    mongo.get_client.cache_clear()
