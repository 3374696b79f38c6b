"""bin/services on supervisord, with real processes: a killed worker comes back, /metrics counts what
the workers and the site did, and ``bin/services stop`` leaves no process behind.

Everything runs under a private state dir (``SERVICES_STATE_DIR``: its own supervisord and socket):
two rating workers (``WORKERS=2``, supervisord's numprocs, /metrics on a base port + process
number) on the session's Kafka and FerretDB with this test's topics, database and model
(realtime_support's ``rt``), and the site (gunicorn, two worker processes) on a free port.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from realtime_support import SERVICES, free_port, make_events, process_env, publish_all, runs_below, wait_until
from realtime_support import rt, rt_catalog  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _free_port_pair() -> int:
    """A port p with p + 1 free too (the two workers' metrics ports)."""
    for _ in range(50):
        base = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", base + 1))
                return base
            except OSError:
                continue
    raise AssertionError("no two consecutive free ports")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def _pids(run, svc: str) -> list[int]:
    out = run("status", svc, check=False).stdout.split()
    return [int(p) for p in out[2].split(",")] if len(out) > 2 and out[1] == "running" else []


def test_supervised_workers_restart_count_and_stop_without_leftovers(rt, tmp_path):
    state = tmp_path / "state"
    base, web_port = _free_port_pair(), free_port()
    env = process_env(SERVICES_STATE_DIR=str(state), WORKERS="2", WORKER_METRICS_PORT=str(base),
                      WEB_PORT=str(web_port), WEB_WORKERS="2", WEB_THREADS="2", DJANGO_DEBUG="1",
                      DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}")

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=300)
        assert not check or r.returncode == 0, f"bin/services {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"
        return r

    metrics = [f"http://127.0.0.1:{base + n}/metrics" for n in range(2)]
    try:
        run("start", "worker", "web")
        workers = _pids(run, "worker")
        assert len(workers) == 2
        for n in range(2):
            status, body = _get(f"http://127.0.0.1:{base + n}/healthz")
            assert status == 200 and '"ok"' in body

        # /metrics counts a processed event (whichever of the two workers got its partition)
        publish_all(make_events(["sv-metrics-user"], rt.catalog.in_model, per_user=1, seed=5))
        processed = lambda: sum(_sample(_get(u)[1], "recommender_worker_events_total", outcome="processed")
                                for u in metrics)
        assert wait_until(processed, 120, "the event counted as processed on /metrics") == 1
        assert sum(_sample(_get(u)[1], "recommender_rating_to_list_seconds_count") for u in metrics) == 1

        # kill -9 a worker: supervisord starts a new one on the same metrics port
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: (p := _pids(run, "worker")) and len(p) == 2 and victim not in p, 60,
                   "supervisord to restart the killed worker")
        wait_until(lambda: all(_get(u.replace("/metrics", "/healthz"))[0] == 200 for u in metrics), 60,
                   "both workers healthy again")

        # the site's /metrics adds up its gunicorn processes (multiprocess mode)
        for _ in range(6):
            assert _get(f"http://127.0.0.1:{web_port}/healthz")[0] == 200
        status, body = _get(f"http://127.0.0.1:{web_port}/metrics")
        assert status == 200
        assert _sample(body, "recommender_http_requests_total", view="healthz", status="200") >= 6

        supervisord = psutil.Process(int((state / "run" / "supervisord.pid").read_text()))
        tree = [supervisord, *supervisord.children(recursive=True)]
        assert len(tree) >= 1 + 2 + 3, [p.cmdline() for p in tree]  # supervisord, 2 workers, gunicorn + 2
    finally:
        stop = run("stop", check=False)
    assert stop.returncode == 0, stop.stderr
    assert "worker: stopped" in stop.stdout and "web: stopped" in stop.stdout
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive, f"left behind: {[p.pid for p in alive]}"
    for n in range(2):  # SIGTERM, not SIGKILL: each worker finished, committed and said so
        assert " stopped: " in (state / "log" / f"worker_{n}.log").read_text()
    assert run("status", "worker", check=False).returncode == 3


def test_start_starts_the_stopped_processes_of_a_partial_program(rt, tmp_path):
    """status said "worker partial ... 1 of 2 processes running" (rc 3) while `start worker` said
    "already running" (rc 0) and left the stopped process down."""
    state = tmp_path / "state"
    env = process_env(SERVICES_STATE_DIR=str(state), WORKERS="2", WORKER_METRICS_PORT=str(_free_port_pair()))

    def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=300)

    try:
        assert run("start", "worker").returncode == 0
        first, second = _pids(run, "worker")
        assert run("ctl", "stop", "worker:worker_1").returncode == 0
        status = run("status", "worker")
        assert status.returncode == 3 and status.stdout.split()[1:3] == ["partial", str(first)], status.stdout
        start = run("start", "worker")
        assert start.returncode == 0 and "worker: started" in start.stdout, (start.stdout, start.stderr)
        after = _pids(run, "worker")
        assert len(after) == 2 and first in after and second not in after
    finally:
        run("stop", "worker")


def test_start_of_a_partial_program_waits_with_the_environment_it_was_started_with(rt, tmp_path):
    """start_stopped waited (and named the address) with this shell's WORKERS: after `WORKERS=2
    start worker`, a plain `start worker` waited for worker_0 only and said "started" while worker_1
    was not ready yet (in a private state dir, with this shell's WORKER_METRICS_PORT, it checked
    the shared worker's port)."""
    state = tmp_path / "state"
    base = _free_port_pair()
    env = process_env(SERVICES_STATE_DIR=str(state), WORKERS="2", WORKER_METRICS_PORT=str(base))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=300)

    try:
        assert run("start", "worker").returncode == 0
        assert run("ctl", "stop", "worker:worker_1").returncode == 0
        plain = {k: v for k, v in env.items() if k != "WORKERS"}
        start = subprocess.run([str(SERVICES), "start", "worker"], env=plain, capture_output=True, text=True,
                               timeout=300)
        assert start.returncode == 0 and "2 Kafka consumer process(es)" in start.stdout, (start.stdout, start.stderr)
        assert _get(f"http://127.0.0.1:{base + 1}/readyz")[0] == 200  # waited for worker_1 too
    finally:
        run("stop", "worker")


def test_start_starts_the_stopped_processes_beside_one_supervisord_is_retrying(rt, tmp_path):
    """worker_0 in BACKOFF (supervisord retrying it), worker_1 stopped: `start worker` chose to wait
    for supervisord's retries only, started nothing, and failed once worker_0 ran ("worker:worker_1
    STOPPED"). It starts worker_1 too, then waits for both."""
    state = tmp_path / "state"
    base = _free_port_pair()
    env = process_env(SERVICES_STATE_DIR=str(state), WORKERS="2", WORKER_METRICS_PORT=str(base))

    def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=300)

    start = None
    try:
        assert run("start", "worker").returncode == 0
        assert run("ctl", "stop", "worker:*").returncode == 0
        # retried for long enough, and an exit counts as during its start (BACKOFF) on a slow machine
        conf = state / "run" / "programs" / "worker.conf"
        conf.write_text(conf.read_text().replace("startretries=3", "startretries=100")
                        .replace("startsecs=1", "startsecs=15"))
        assert run("ctl", "update", "worker").returncode == 0
        with socket.socket() as taken:  # worker_0's /metrics port: it exits at once, at every try
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", base))
            taken.listen()
            run("ctl", "start", "worker:worker_0")
            states = dict(line.split()[:2] for line in run("ctl", "status", "worker:*").stdout.splitlines())
            assert states["worker:worker_0"] in ("BACKOFF", "STARTING"), states
            assert states["worker:worker_1"] == "STOPPED", states
            start = subprocess.Popen([str(SERVICES), "start", "worker"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            wait_until(lambda: start.poll() is not None or runs_below(start, "programs.py", "wait"), 180,
                       "bin/services start to wait for the workers (or end)")
        out, err = start.communicate(timeout=300)
        assert start.returncode == 0 and "worker: started" in out, (out, err)
        assert len(_pids(run, "worker")) == 2
    finally:
        if start and start.poll() is None:
            start.kill()
        run("stop", "worker")
