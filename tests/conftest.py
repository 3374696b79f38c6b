"""Fixtures shared by every test.

Integration tests use the real servers that ``bin/test`` starts through ``bin/services``; each
test session works in its own MongoDB database and its own Kafka topics so runs never see each
other's data. Unit tests use none of this.
"""
from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The real Amazon files the tests use live in the repository (see each folder's PROVENANCE.md):
# data/demo/ (what bin/demo loads) and data/samples/ (test-only). Nothing outside the repository.
DEMO_DIR = ROOT / "data" / "demo"
SAMPLES_DIR = ROOT / "data" / "samples"
DEMO_FILE = DEMO_DIR / "amazon2014_musical_instruments_5.jsonl.gz"
DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def real_files() -> list[Path]:
    """Every real review and metadata file shipped in the repository."""
    return sorted((p for d in (DEMO_DIR, SAMPLES_DIR) for p in d.iterdir() if p.name.endswith(DATA_SUFFIXES)),
                  key=lambda p: p.name)


def real_file(name: str) -> Path:
    """A shipped real file by name, from data/demo/ or data/samples/ (fails clearly when absent)."""
    for folder in (DEMO_DIR, SAMPLES_DIR):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{name} is in neither {DEMO_DIR} nor {SAMPLES_DIR}")
RUN_ID = uuid.uuid4().hex[:8]

# Isolate this test session before anything reads the settings.
os.environ.setdefault("MONGO_DB", f"test_{RUN_ID}")
os.environ.setdefault("KAFKA_RATINGS_TOPIC", f"test-{RUN_ID}.ratings")
os.environ.setdefault("KAFKA_DEAD_LETTER_TOPIC", f"test-{RUN_ID}.dead-letter")


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False


def _require(name: str, hostport: str) -> None:
    """Integration tests fail (not skip) when a server is down: bin/test is supposed to start it."""
    if not _reachable(hostport):
        pytest.fail(f"{name} is not reachable at {hostport}; start it with `bin/services start`", pytrace=False)


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    from core.settings import get_settings

    os.environ.setdefault("ARTIFACTS_DIR", str(tmp_path_factory.mktemp("artifacts")))
    os.environ.setdefault("DATA_DIR", str(tmp_path_factory.mktemp("data")))
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(autouse=True)
def fast_password_hasher(request):
    """Passwords hashed with MD5 in tests, as Django's own docs advise for test speed.

    Production's PBKDF2 takes about half a second a hash on a CI core, and the site tests make
    two accounts a test (hundreds of hashes a run). PBKDF2 stays second in the list so hashes
    it made still verify. Tests whose point needs the slow hash (attempts still being hashed
    while others arrive, Django's re-hash of an old PBKDF2 hash) are marked
    ``production_password_hasher`` and keep the settings' own list; so does every site served by
    a subprocess (gunicorn), which never sees this override.
    """
    if request.node.get_closest_marker("production_password_hasher"):
        yield
        return
    from django.conf import settings as dj
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher",
                                             *dj.PASSWORD_HASHERS]):
        yield


@pytest.fixture(scope="session")
def mongo_db(settings):
    """The session's own database on the real MongoDB-protocol server, dropped afterwards."""
    from core import mongo

    parsed = urlparse(settings.mongo_uri)
    _require("MongoDB (FerretDB)", f"{parsed.hostname}:{parsed.port or 27017}")
    db = mongo.get_db()
    mongo.ensure_indexes(db)
    yield db
    if os.environ.get("KEEP_TEST_DB") != "1":  # set it to inspect a failed run's data afterwards
        mongo.get_client().drop_database(settings.mongo_db)


@pytest.fixture(scope="session")
def kafka_topics(settings):
    """The session's own topics on the real Kafka broker."""
    from core import kafka_io

    _require("Kafka", settings.kafka_bootstrap_servers.split(",")[0])
    kafka_io.ensure_topics()
    return settings


@pytest.fixture(scope="session")
def redis_url(settings):
    parsed = urlparse(settings.redis_url)
    _require("Redis", f"{parsed.hostname}:{parsed.port or 6379}")
    return settings.redis_url


@pytest.fixture(scope="session")
def spark(settings, tmp_path_factory):
    """One local Spark session for the whole test run (starting one costs seconds)."""
    from spark_jobs.common import spark_session

    session = spark_session("tests", master=os.environ.get("SPARK_TEST_MASTER", "local[2]"),
                            checkpoint_dir=str(tmp_path_factory.mktemp("spark-checkpoints")))
    yield session
    # py4j logs from finalizers and its GC thread at interpreter exit, after pytest closed the
    # stream its handler writes to; each record printed a "--- Logging error ---" traceback.
    logging.getLogger("py4j").setLevel(logging.CRITICAL)
    session.stop()
    logging.disable(logging.INFO)  # py4j's gateway also logs through the root logger


@pytest.fixture(scope="session")
def site_catalog(spark, settings, mongo_db, kafka_topics, redis_url, tmp_path_factory):
    """Real review files through the real batch jobs into the session's database (site tests).

    Shared by tests/integration/test_site_*.py and tests/e2e: the jobs take a few minutes, so
    they run once per session. Returns the facts computed from the raw files (tests/site_catalog.py).
    """
    from tests.site_catalog import load_into_session

    return load_into_session(spark, settings, tmp_path_factory.mktemp("site-catalog"))


def pytest_sessionfinish(session, exitstatus):
    """Delete the Redis keys of the session's databases (``recsys:<name>...``, every test database
    is named from the session's), as ``mongo_db`` drops the databases: most keys expire, but a few
    (the popular lists' version counter) never do and piled up, one per test database and run."""
    from core.settings import get_settings

    settings = get_settings()
    parsed = urlparse(settings.redis_url)
    if os.environ.get("KEEP_TEST_DB") == "1" or not _reachable(f"{parsed.hostname}:{parsed.port or 6379}"):
        return
    import redis

    pattern = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in f"recsys:{settings.mongo_db}") + "*"
    r = redis.Redis.from_url(settings.redis_url, socket_timeout=10)
    names = list(r.scan_iter(match=pattern, count=1000))
    for start in range(0, len(names), 1000):
        r.unlink(*names[start:start + 1000])
