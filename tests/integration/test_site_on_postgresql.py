"""The site's own database in production is PostgreSQL (``DATABASE_URL``), but every other test
runs Django on SQLite. What depends on the database itself is run here again on a PostgreSQL
server started by the project's own script (``bin/services start postgres``): the indexes on
``lower(email)`` and ``lower(username)`` and the races for a username (at sign-up) or an address (at
its confirmation; their errors are told apart by the constraint each database names), knox's token
table and its limit under sign-ins at once (the user row's lock), migration shop.0005 over old rows
and accounts.0010 over DRF's old token table.

One pytest run of those files in a subprocess, with ``DATABASE_URL`` pointing at the server
(Django's settings are read once per process), and its own MongoDB database and Kafka topics: with
this session's (which tests/conftest.py puts in the environment) it dropped them when it ended,
and the browser tests after it found an empty shop.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from realtime_support import ROOT, SERVICES, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SESSION_NAMES = ("MONGO_DB", "KAFKA_RATINGS_TOPIC", "KAFKA_DEAD_LETTER_TOPIC")  # tests/conftest.py's
ON_POSTGRESQL = ["tests/integration/test_site_accounts.py", "tests/integration/test_api_tokens.py",
                 "tests/integration/test_drf_tokens_dropped.py",
                 "tests/integration/test_idempotency_keys_per_user.py", "tests/integration/test_usernames_any_case.py",
                 "tests/integration/test_token_limit_at_once.py", "tests/integration/test_site_email_confirmation.py"]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own (state dir, port) with an empty database; stopped after."""
    state = Path(tempfile.mkdtemp(prefix="pg-site-"))
    state.chmod(0o755)  # the postgres user must reach it when we are root
    env = {**os.environ, "SERVICES_STATE_DIR": str(state), "POSTGRES_PORT": str(free_port())}
    try:
        started = subprocess.run([str(SERVICES), "start", "postgres"], env=env, capture_output=True, text=True,
                                 timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        server = f"postgresql://postgres@127.0.0.1:{env['POSTGRES_PORT']}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE recsite")
        yield f"{server}/recsite"
    finally:
        subprocess.run([str(SERVICES), "stop", "postgres"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.timeout(2400)  # a whole pytest run inside (about 4.5 min on a slow 2-core machine)
def test_the_database_dependent_tests_pass_on_postgresql(postgres_url, mongo_db):
    mongo_db.pg_run_marker.insert_one({"_id": "this session's data"})
    env = {k: v for k, v in os.environ.items() if k not in SESSION_NAMES}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *ON_POSTGRESQL],
                         cwd=ROOT, env={**env, "DATABASE_URL": postgres_url}, capture_output=True, text=True,
                         timeout=1800)
    assert mongo_db.pg_run_marker.find_one({"_id": "this session's data"}), "the inner run dropped this session's data"
    mongo_db.pg_run_marker.drop()
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in summary and "skipped" not in summary, summary
