"""bin/services itself: lifecycle, one-line errors, external services.

Runs the script against a throwaway state dir (SERVICES_STATE_DIR: its own supervisord) and a free
port, with Redis (the quickest service to start), so it never touches the services that bin/test
started.
"""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from realtime_support import wait_until

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bin" / "services"

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def _redis_ping(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).decode().strip()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def env(tmp_path):
    port = _free_port()
    env = {"SERVICES_STATE_DIR": str(tmp_path / "state"), "REDIS_PORT": str(port)}
    yield env
    _run("stop", "redis", env=env)


def test_unknown_service_is_one_line_error(env):
    r = _run("start", "nosuch", env=env)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == ["services: unknown service 'nosuch' (known: redis mongo postgres kafka airflow web worker celery celery-rescore s3 spark-master spark-worker-1 spark-worker-2)"]


def test_external_mongo_is_left_alone(env):
    r = _run("start", "mongo", env={**env, "MONGO_URI": "mongodb://db.example.invalid:27017/"})
    assert r.returncode == 0, r.stderr
    assert "external (db.example.invalid), not managed" in r.stdout
    assert not (Path(env["SERVICES_STATE_DIR"]) / "run" / "programs" / "mongo.conf").exists()
    status = _run("status", "mongo", env={**env, "MONGO_URI": "mongodb://db.example.invalid:27017/"})
    assert status.returncode == 0 and "external" in status.stdout


def test_redis_start_status_stop(env):
    port = int(env["REDIS_PORT"])
    r = _run("start", "redis", env=env)
    assert r.returncode == 0, r.stderr
    assert _redis_ping(port) == "+PONG"
    pid = int(_run("status", "redis", env=env).stdout.split()[2])

    again = _run("start", "redis", env=env)
    assert again.returncode == 0 and "already running" in again.stdout

    status = _run("status", "redis", env=env)
    assert status.returncode == 0
    assert status.stdout.split()[:3] == ["redis", "running", str(pid)]

    supervisord = int((Path(env["SERVICES_STATE_DIR"]) / "run" / "supervisord.pid").read_text())
    stop = _run("stop", "redis", env=env)
    assert stop.returncode == 0, stop.stderr
    assert f"redis: stopped (was pid {pid})" in stop.stdout
    assert not _pid_alive(pid)
    assert not _pid_alive(supervisord), "supervisord stays only while one of its programs runs"
    assert _run("status", "redis", env=env).returncode == 3


def test_port_taken_by_another_process_is_one_line_error(env):
    port = int(env["REDIS_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        r = _run("start", "redis", env=env)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"services: redis: port {port} is already in use by another process")


def test_stopping_a_spark_worker_clears_its_applications_folders(env):
    """Each application leaves ~270 MB of jars in every worker's folder: gone once the worker stops."""
    work = Path(env["SERVICES_STATE_DIR"]) / "services" / "spark-worker-1" / "work"
    (work / "app-20261201040747-0000" / "0").mkdir(parents=True)
    (work / "app-20261201040747-0000" / "0" / "hadoop-aws.jar").write_bytes(b"x" * 1024)
    (work / "notes.txt").write_text("an operator's file")
    r = _run("stop", "spark-worker-1", env=env)
    assert r.returncode == 0, r.stderr
    assert "spark-worker-1: not running" in r.stdout
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


def test_a_failed_start_names_its_log_and_last_error(env):
    """Redis refuses a data folder whose append-only manifest is garbage: the start fails with one
    line that names the log and the error the log says."""
    data = Path(env["SERVICES_STATE_DIR"]) / "services" / "redis" / "data" / "appendonlydir"
    data.mkdir(parents=True)
    (data / "appendonly.aof.manifest").write_text("not a manifest\n")
    r = _run("start", "redis", env=env)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("services: redis: "), r.stderr
    log = Path(env["SERVICES_STATE_DIR"]) / "log" / "redis.log"
    assert f", see {log} (last error: " in lines[0] and "MANIFEST" in lines[0]
    assert _run("status", "redis", env=env).returncode == 3


def test_status_shows_a_crashing_program_as_supervisord_sees_it(env):
    """Redis killed with a garbage append-only manifest: supervisord restarts it, it exits, and after
    three tries supervisord gives up. status said "redis stopped -" all along (it counted RUNNING
    processes only); now the state, the log to read, and exit status 3."""
    state = Path(env["SERVICES_STATE_DIR"])
    assert _run("start", "redis", env=env).returncode == 0
    pid = int(_run("status", "redis", env=env).stdout.split()[2])
    (state / "services" / "redis" / "data" / "appendonlydir" / "appendonly.aof.manifest").write_text("garbage\n")
    os.kill(pid, 9)

    def word() -> str:
        return _run("status", "redis", env=env).stdout.split()[1]
    seen = {word()}
    wait_until(lambda: seen.add(word()) or "fatal" in seen, 90, "supervisord to give up on redis")
    assert "stopped" not in seen, seen
    status = _run("status", "redis", env=env)
    assert status.returncode == 3
    assert status.stdout.split()[:3] == ["redis", "fatal", "-"]
    assert f"see {state / 'log' / 'redis.log'}" in status.stdout
    supervisord = int((state / "run" / "supervisord.pid").read_text())
    assert "redis: not running" in _run("stop", "redis", env=env).stdout
    assert not _pid_alive(supervisord)


@pytest.mark.parametrize("name, programs", [("spark", ["spark-master", "spark-worker-1", "spark-worker-2"]),
                                            ("celery", ["celery", "celery-rescore"])])
def test_logs_expands_a_name_as_start_does(env, name, programs):
    """`start spark` started the master and its workers, `logs spark` said unknown service 'spark'."""
    log = Path(env["SERVICES_STATE_DIR"]) / "log"
    log.mkdir(parents=True)
    for p in programs:
        (log / f"{p}.log").write_text(f"a line of {p}\n")
    r = _run("logs", name, env=env)
    assert r.returncode == 0, r.stderr
    assert [f"a line of {p}" for p in programs] == [line for line in r.stdout.splitlines() if line.startswith("a line")]


def test_restart_with_no_names_restarts_what_runs(env):
    """stop with no names covered everything supervisord ran, restart only redis, mongo and kafka:
    web and worker went on running the old code. (MongoDB and Kafka here are external: not ours.)"""
    env = {**env, "S3_PORT": str(_free_port()), "MONGO_URI": "mongodb://db.example.invalid:27017/",
           "KAFKA_BOOTSTRAP_SERVERS": "kafka.example.invalid:9092"}
    try:
        assert _run("start", "redis", "s3", env=env).returncode == 0
        before = int(_run("status", "s3", env=env).stdout.split()[2])
        r = _run("restart", env=env)
        assert r.returncode == 0, r.stderr
        assert "restarting redis mongo kafka s3 " in r.stdout
        assert "s3: stopped" in r.stdout and "s3: started" in r.stdout
        status = _run("status", "s3", env=env).stdout.split()
        assert status[1] == "running" and int(status[2]) != before
        assert not _pid_alive(before)
    finally:
        _run("stop", "redis", "s3", env=env)


def test_status_columns_line_up_for_long_names(env):
    """Names were padded to 8 characters: celery-rescore's and spark-worker-1's lines were shifted."""
    r = _run("status", "redis", "celery-rescore", "spark-worker-1", env=env)
    assert r.returncode == 3
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["redis", "stopped"], ["celery-rescore", "stopped"],
                                                   ["spark-worker-1", "stopped"]]
    assert len({line.index(" stopped ") for line in lines}) == 1, r.stdout
    assert len({line.index(" - ") for line in lines}) == 1, r.stdout


def test_supervisorctl_calls_ask_programs_py_nothing(env, tmp_path):
    """Every supervisorctl start, stop or update first asked programs.py for the program's startsecs
    or stop wait (its time limit): one Python process each (~0.3-0.5 s on a slow machine), one more
    per service. Those figures now come with the program list, read once per command: a stop asks
    programs.py nothing, a start only what does work. Counted through the app venv's python, a
    wrapper that notes each run (LOCAL_DIR's venv; its bin/ is the real one: gofakes3)."""
    real = Path(sys.executable)  # the app venv's python: pytest runs in it
    local = tmp_path / "local"
    (local / "venv" / "bin").mkdir(parents=True)
    (local / "bin").symlink_to(real.parent.parent.parent / "bin")
    for tool in ("supervisord", "supervisorctl"):
        (local / "venv" / "bin" / tool).symlink_to(real.parent / tool)
    runs = tmp_path / "python-runs"
    wrapper = local / "venv" / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >>{shlex.quote(str(runs))}\nexec {shlex.quote(str(real))} "$@"\n')
    wrapper.chmod(0o755)
    env = {**env, "LOCAL_DIR": str(local), "S3_PORT": str(_free_port())}

    def asked(*args: str) -> list[str]:
        """What the command asked programs.py: its subcommands, in order."""
        runs.write_text("")
        r = _run(*args, env=env)
        assert r.returncode == 0, r.stderr
        words = [line.split() for line in runs.read_text().splitlines()]
        return [w[1] for w in words if len(w) > 1 and w[0].endswith("/programs.py")]
    try:
        # each a piece of work: no ask for a figure
        assert set(asked("start", "redis", "s3")) == {"ports", "redis-log", "conf", "write", "logs", "wait", "address"}
        assert asked("stop", "redis", "s3") == []
    finally:
        _run("stop", "redis", "s3", env=env)
