"""README's first command, ``bin/demo``, run as a new user runs it, then used as an app would.

This is the one test that runs bin/pipeline's real ``spark-submit`` line (local Spark, every stage
on the bundled files); the others give bin/pipeline a stand-in spark-submit, and the chain's other
real run is the Airflow DAG's on the cluster. After the demo says "ready": the site answers, a
printed demo login gets an API token, its list is personal and from the pipeline's model, and a
rating comes back as a new list without the rated product.

It runs on servers of its own (``SERVICES_STATE_DIR`` and free ports: Redis, FerretDB, Kafka, the
worker, Celery and gunicorn) with its own data, artifacts and site database, so the session's
servers are never touched; it shares only what bin/setup installed under ``.local/``, which
bin/demo's own bin/setup then finds complete.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request

import psutil
import pytest

from core.runs import STAGES
from realtime_support import ROOT, SERVICES, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# What the project reads from the environment and the test session sets or a developer may have set:
# the demo gets its own values or the defaults, never the session's database, topics or folders.
PROJECT_VARS = re.compile(r"^(MONGO|KAFKA|REDIS|DJANGO|DATABASE_URL|DATA_DIR|ARTIFACTS_DIR|EDA_DIR|RECS_|WORKER|WEB_|"
                          r"CELERY|SPARK_MASTER|SPARK_DRIVER|AIRFLOW|PIPELINE_|DEMO_INPUT|SERVICES_STATE_DIR|"
                          r"POSTGRES|S3_|API_|PYTHONPATH)")
PORTS = ("REDIS_PORT", "MONGO_PORT", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "WEB_PORT", "WORKER_METRICS_PORT")


def _distinct_free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def _call(url: str, body: dict | None = None, token: str = "") -> tuple[int, dict]:
    """One request to the demo's site: its status and JSON body."""
    headers = {"Content-Type": "application/json", **({"Authorization": f"Token {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if "json" in r.headers.get("Content-Type", "") else {"html": text}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read().decode() or "{}")


@pytest.mark.timeout(1800)
def test_bin_demo_from_its_command_to_a_rating_served_as_a_new_list(tmp_path):
    ports = dict(zip(PORTS, _distinct_free_ports(len(PORTS))))
    env = {k: v for k, v in os.environ.items() if not PROJECT_VARS.match(k)}
    env.update({k: str(v) for k, v in ports.items()})
    env.update({"SERVICES_STATE_DIR": str(tmp_path / "state"), "DATA_DIR": str(tmp_path / "data"),
                "ARTIFACTS_DIR": str(tmp_path / "artifacts"), "DJANGO_STATIC_ROOT": str(tmp_path / "static"),
                "DATABASE_URL": f"sqlite:///{tmp_path / 'site.sqlite3'}"})
    site = f"http://127.0.0.1:{ports['WEB_PORT']}"
    supervisord = tmp_path / "state" / "run" / "supervisord.pid"
    tree: list[psutil.Process] = []
    try:
        demo = subprocess.run([str(ROOT / "bin" / "demo")], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=1500)
        out = demo.stdout
        assert demo.returncode == 0, f"bin/demo failed ({demo.returncode}):\n{out[-6000:]}\n{demo.stderr[-6000:]}"
        assert "demo: ready in" in out and f"site:        http://127.0.0.1:{ports['WEB_PORT']}/" in out
        for stage in STAGES:  # every stage ran through bin/pipeline's spark-submit, none skipped
            assert f"pipeline: {stage} done in" in out, stage
        version = re.search(r"pipeline: run \S+ finished; model version (\S+)", out).group(1)
        logins = re.findall(r"^    (\S+) / (\S+)  \(reviewer \S+, (\d+) ratings\)$", out, re.MULTILINE)
        assert len(logins) == 5, out[-3000:]
        process = psutil.Process(int(supervisord.read_text()))
        tree = [process, *process.children(recursive=True)]

        status, home = _call(f"{site}/")
        assert status == 200 and "<html" in home["html"].lower()

        username, password, n_rated = logins[0]
        status, signed_in = _call(f"{site}/api/token/", {"username": username, "password": password})
        assert status == 200 and signed_in["token"], signed_in
        token = signed_in["token"]
        status, before = _call(f"{site}/api/recommendations/", token=token)
        assert status == 200 and before["source"] == "personal", before
        assert before["model_version"] == version and before["n_rated"] == int(n_rated)
        product = before["items"][0]["product_id"]

        status, accepted = _call(f"{site}/api/ratings/", {"product_id": product, "rating": 5}, token=token)
        assert status == 202, accepted
        event_id = accepted["event_id"]
        wait_until(lambda: _call(f"{site}/api/ratings/{event_id}/", token=token)[1].get("state") == "processed",
                   60, "the demo's worker to process the rating")
        status, after = _call(f"{site}/api/recommendations/", token=token)
        assert status == 200 and after["source"] == "personal" and after["source_event_id"] == event_id, after
        assert after["n_rated"] == int(n_rated) + 1 and after["model_version"] == version
        assert product not in {item["product_id"] for item in after["items"]} and after["items"]
    finally:
        stop = subprocess.run([str(SERVICES), "stop"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
    assert stop.returncode == 0, f"{stop.stdout}\n{stop.stderr}"
    _, alive = psutil.wait_procs(tree, timeout=20)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"
