"""bin/services with MONGO_BACKEND=postgresql: FerretDB storing in a PostgreSQL server of our own.

The big run's MongoDB stages fit this machine's disk only on that backend (docs/benchmarks.md), so
it is started by the same script as everything else: `start mongo` brings up `postgres` first
(initdb on first use), FerretDB's pg handler stores there, the data survives a restart of both,
and `stop mongo` stops both.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from pymongo import MongoClient

from realtime_support import SERVICES, free_port

pytestmark = pytest.mark.integration


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "MONGO_URI"}
    return subprocess.run([str(SERVICES), *args], env={**base, **env}, capture_output=True, text=True, timeout=180)


def _pids(env: dict[str, str]) -> dict[str, int]:
    lines = _run("status", "mongo", env=env).stdout.splitlines()
    return {f[0]: int(f[2]) for f in (line.split() for line in lines) if len(f) > 2 and f[1] == "running"}


def _plan(db, collection: str, filter: dict) -> tuple[str, str]:
    """PostgreSQL's plan of a find through FerretDB (its explain returns it): the node that reads
    the table or its index, and its index condition with the table's name taken out."""
    plan = db.command("explain", {"find": collection, "filter": filter})["queryPlanner"]["Plan"]
    while plan.get("Plans") and plan["Node Type"] in ("Gather", "Bitmap Heap Scan"):
        plan = plan["Plans"][0]
    return plan["Node Type"], re.sub(r"\w+\._jsonb", "_jsonb", plan.get("Index Cond", ""))


@pytest.fixture
def open_dir():
    """A state dir the ``postgres`` user can reach (pytest's own tmp_path is closed to other users)."""
    path = Path(tempfile.mkdtemp(prefix="pg-state-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_state_dir_closed_to_the_postgres_user_is_refused_clearly(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    env = {"SERVICES_STATE_DIR": str(tmp_path / "state"), "MONGO_BACKEND": "postgresql",
           "MONGO_PORT": str(free_port()), "POSTGRES_PORT": str(free_port())}
    r = _run("start", "mongo", env=env)
    assert r.returncode == 1 and "the postgres user cannot write" in r.stderr and "SERVICES_STATE_DIR" in r.stderr


def test_mongo_on_postgresql_starts_stores_survives_a_restart_and_stops(open_dir):
    tmp_path = open_dir
    env = {"SERVICES_STATE_DIR": str(tmp_path / "state"), "MONGO_BACKEND": "postgresql",
           "MONGO_PORT": str(free_port()), "POSTGRES_PORT": str(free_port())}
    uri = f"mongodb://127.0.0.1:{env['MONGO_PORT']}/?serverSelectionTimeoutMS=5000"
    try:
        r = _run("start", "mongo", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.index("postgres: started") < r.stdout.index("mongo: started")
        assert (tmp_path / "state" / "services" / "postgres" / "data" / "PG_VERSION").is_file()
        assert set(_pids(env)) == {"postgres", "mongo"}
        with MongoClient(uri) as client:
            client.t.pages.insert_many([{"_id": f"p:{i}", "items": [{"r": 5, "t": "x" * 100}]} for i in range(50)])

        r = _run("restart", "mongo", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "initdb" not in r.stdout  # the cluster is reused
        with MongoClient(uri) as client:
            assert client.t.pages.find_one({"_id": "p:49"})["items"][0]["r"] == 5
            assert client.t.pages.count_documents({}) == 50
        # FerretDB's pg handler is what stores them: its schema is in PostgreSQL's database
        programs = SERVICES.parent.parent / "services" / "programs.py"
        pg_bin = subprocess.run(["python3", str(programs), "postgres-bin"], capture_output=True, text=True).stdout.strip()
        psql = subprocess.run([f"{pg_bin}/psql", "-h", "127.0.0.1", "-p", env["POSTGRES_PORT"], "-U", "postgres",
                               "-d", "ferretdb", "-qtAc",
                               "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 't'"],
                              capture_output=True, text=True, timeout=30)
        assert psql.stdout.strip() == "1", psql.stderr
        pids = _pids(env)
        with MongoClient(uri) as client:  # reads by _id use the unique index (our FerretDB patches)
            client.t.lists.insert_many([{"_id": f"u:{i}", "items": []} for i in range(20_000)])
            assert _plan(client.t, "lists", {"_id": "u:7"}) == ("Index Scan", "((_jsonb -> '_id'::text) = '\"u:7\"'::jsonb)")
            assert client.t.lists.find_one({"_id": "u:7"}) == {"_id": "u:7", "items": []}
            assert client.t.lists.find_one({"_id": "u:20000"}) is None
            assert client.t.lists.find_one({"_id": 7}) is None  # a number is not the string "7"
            node, cond = _plan(client.t, "lists", {"_id": {"$in": ["u:7", "u:9"]}})
            assert node in ("Index Scan", "Bitmap Index Scan") and cond.startswith("((_jsonb -> '_id'::text) = ANY ("), cond
            found = client.t.lists.find({"_id": {"$in": ["u:7", "u:9", "u:20000", 7]}}, {"_id": 1})
            assert sorted(d["_id"] for d in found) == ["u:7", "u:9"]  # a number among them: not pushed down, same answer
    finally:
        stop = _run("stop", "mongo", env=env)
    assert stop.returncode == 0 and "postgres: stopped" in stop.stdout and "mongo: stopped" in stop.stdout
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
