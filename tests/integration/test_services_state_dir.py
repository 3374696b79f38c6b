"""bin/services with SERVICES_STATE_DIR: a private set of servers beside the shared ones.

The reliability tests stop and restart their own Kafka and FerretDB this way; what must hold is
that a state dir (its own supervisord, socket, logs and data) only ever sees and stops its own
processes, while the installed binaries are reused. Redis and FerretDB (quick to start) stand in for Kafka here; FerretDB is
the case that needed a fix: any FerretDB from the shared binary used to count as "ours", so a
private ``stop mongo`` on the default port would have stopped the shared database.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess

import psutil
import pytest

from realtime_support import SERVICES, free_port, wait_until

pytestmark = pytest.mark.integration


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "MONGO_URI"}  # an external MongoDB is not managed
    return subprocess.run([str(SERVICES), *args], env={**base, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("svc, port_var", [("redis", "REDIS_PORT"), ("mongo", "MONGO_PORT")])
def test_state_dirs_keep_their_own_pid_files_logs_and_processes(tmp_path, svc, port_var):
    port = free_port()
    mine = {"SERVICES_STATE_DIR": str(tmp_path / "a"), port_var: str(port)}
    other = {"SERVICES_STATE_DIR": str(tmp_path / "b"), port_var: str(port)}
    try:
        r = _run("start", svc, env=mine)
        assert r.returncode == 0, r.stderr
        pid = int(_run("status", svc, env=mine).stdout.split()[2])
        assert (tmp_path / "a" / "log" / f"{svc}.log").exists()
        assert (tmp_path / "a" / "services" / svc / "data").is_dir()
        assert (tmp_path / "a" / "run" / "supervisor.sock").is_socket()

        # Another state dir on the same port neither adopts nor stops the process...
        status = _run("status", svc, env=other)
        assert status.returncode == 3 and status.stdout.split()[:2] == [svc, "stopped"]
        stop = _run("stop", svc, env=other)
        assert stop.returncode == 0 and "not running" in stop.stdout
        os.kill(pid, 0)  # still alive
        # ...and cannot start a second server on the port.
        clash = _run("start", svc, env=other)
        assert clash.returncode == 1 and f"port {port} is already in use" in clash.stderr

        # Its own state dir sees it, and stops it.
        status = _run("status", svc, env=mine)
        assert status.returncode == 0 and status.stdout.split()[:3] == [svc, "running", str(pid)]
    finally:
        stop = _run("stop", svc, env=mine)
    assert stop.returncode == 0 and f"stopped (was pid {pid})" in stop.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _alive(pid: int) -> bool:
    """Running (not a zombie: nothing may reap an orphan here)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_orphans_of_a_killed_supervisord_are_reported_and_stopped(tmp_path):
    """supervisord killed (kill -9, OOM): its redis lives on, holding the port. status says so,
    start names it, stop stops it (and then start works); another state dir's bin/services on the
    same port leaves it alone (its command line says it is not that state dir's). With no names,
    status and stop cover an orphan outside the default set too (s3: its section is in run/programs).
    The dead supervisord's socket file does not outlive it."""
    port, s3_port = free_port(), free_port()
    # `stop` with no names covers mongo and kafka too: ports of their own, not the shared servers'
    ports = {"REDIS_PORT": str(port), "MONGO_PORT": str(free_port()), "KAFKA_PORT": str(free_port()),
             "KAFKA_CONTROLLER_PORT": str(free_port()), "S3_PORT": str(s3_port)}
    mine = {"SERVICES_STATE_DIR": str(tmp_path / "a"), **ports}
    other = {"SERVICES_STATE_DIR": str(tmp_path / "b"), **ports}
    pid = s3_pid = 0
    try:
        start = _run("start", "redis", "s3", env=mine)
        assert start.returncode == 0, start.stderr
        pid = int(_run("status", "redis", env=mine).stdout.split()[2])
        s3_pid = int(_run("status", "s3", env=mine).stdout.split()[2])
        supervisord = int((tmp_path / "a" / "run" / "supervisord.pid").read_text())
        assert str(tmp_path / "a") in " ".join(psutil.Process(supervisord).cmdline())
        os.kill(supervisord, signal.SIGKILL)
        wait_until(lambda: not _alive(supervisord), 30, "the killed supervisord to be gone")
        assert _alive(pid)

        status = _run("status", "redis", env=mine)
        assert status.returncode == 3 and status.stdout.split()[:3] == ["redis", "orphan", str(pid)]
        assert f"running outside supervisord (pid {pid}, port {port})" in status.stdout
        listed = [line.split()[:3] for line in _run("status", env=mine).stdout.splitlines()]
        assert listed == [["redis", "orphan", str(pid)], ["mongo", "stopped", "-"], ["kafka", "stopped", "-"],
                          ["s3", "orphan", str(s3_pid)]]
        start = _run("start", "redis", env=mine)
        assert start.returncode == 1 and f"running outside supervisord (pid {pid}, port {port}" in start.stderr

        assert _run("status", "redis", env=other).stdout.split()[:2] == ["redis", "stopped"]
        assert "redis: not running" in _run("stop", "redis", env=other).stdout
        assert _alive(pid)

        stop = _run("stop", env=mine)  # no names: the default set, redis among it
        assert stop.returncode == 0, stop.stderr
        assert f"redis: stopped pid {pid} (port {port}), running outside supervisord" in stop.stdout
        assert f"s3: stopped pid {s3_pid} (port {s3_port}), running outside supervisord" in stop.stdout
        assert not _alive(pid) and not _alive(s3_pid)
        # the dead supervisord's socket goes too: every later command asked it (a supervisorctl)
        assert not (tmp_path / "a" / "run" / "supervisor.sock").exists()
        assert _run("start", "redis", env=mine).returncode == 0
    finally:
        _run("stop", "redis", "s3", env=mine)
        if pid and _alive(pid) and "redis-server" in " ".join(psutil.Process(pid).cmdline()):
            os.kill(pid, signal.SIGKILL)  # the code before the fix left it running
        if s3_pid and _alive(s3_pid) and "gofakes3" in " ".join(psutil.Process(s3_pid).cmdline()):
            os.kill(s3_pid, signal.SIGKILL)


def test_a_recording_copied_from_another_state_dir_is_not_used(tmp_path):
    """status, stop and the orphan search read run/<svc>.env without asking whose it was: a's
    recording copied into b (a .local copied into another checkout) made b's `status` call a's
    redis an orphan of b, and b's `stop` killed it. b uses its own settings, and says why."""
    mine = {"SERVICES_STATE_DIR": str(tmp_path / "a"), "REDIS_PORT": str(free_port())}
    other = {"SERVICES_STATE_DIR": str(tmp_path / "b"), "REDIS_PORT": str(free_port())}
    pid = 0
    try:
        assert _run("start", "redis", env=mine).returncode == 0
        pid = int(_run("status", "redis", env=mine).stdout.split()[2])
        (tmp_path / "b" / "run").mkdir(parents=True)
        shutil.copy(tmp_path / "a" / "run" / "redis.env", tmp_path / "b" / "run" / "redis.env")

        status = _run("status", "redis", env=other)
        assert status.stdout.split()[:2] == ["redis", "stopped"], (status.stdout, status.stderr)
        assert f"SERVICES_STATE_DIR={tmp_path / 'a'}, not this shell's" in status.stderr
        stop = _run("stop", "redis", env=other)
        assert "redis: not running" in stop.stdout, (stop.stdout, stop.stderr)
        assert _alive(pid)
    finally:
        _run("stop", "redis", env=mine)
        if pid and _alive(pid) and "redis-server" in " ".join(psutil.Process(pid).cmdline()):
            os.kill(pid, signal.SIGKILL)  # the code before the fix left it running outside a's supervisord


def test_an_empty_or_cut_recording_is_not_used(tmp_path):
    """programs.py wrote run/<svc>.env by truncating it, then writing: status (as_started) took an
    empty or partial recording as is, and so ran programs.py without the settings it lacked: with
    none, <repo>/.local's supervisord and the default ports (it showed the shared redis as this
    state dir's); without REDIS_PORT, port 6379. Such a recording is not used (this shell's
    settings are, with a line saying so)."""
    port = free_port()
    mine = {"SERVICES_STATE_DIR": str(tmp_path / "a"), "REDIS_PORT": str(port)}
    recording = tmp_path / "a" / "run" / "redis.env"
    try:
        assert _run("start", "redis", env=mine).returncode == 0
        pid = int(_run("status", "redis", env=mine).stdout.split()[2])
        dirs = [e for e in recording.read_bytes().split(b"\0") if e.startswith((b"LOCAL_DIR=", b"SERVICES_STATE_DIR="))]
        for cut in (b"", b"\0".join(dirs) + b"\0REDIS_PO"):
            recording.write_bytes(cut)
            status = _run("status", "redis", env=mine)
            assert status.stdout.split()[1:] == ["running", str(pid), f"redis://127.0.0.1:{port}/0"], \
                (cut, status.stdout, status.stderr)
            assert "its recorded environment (" in status.stderr and "is empty or cut short" in status.stderr
    finally:
        _run("stop", "redis", env=mine)


def test_a_section_left_by_a_removed_checkout_does_not_stop_supervisord_starting(tmp_path):
    """Each start writes its program's section with its checkout's paths; a worktree sharing this
    state dir (a symlinked .local) and removed since left sections naming its folders, and a new
    supervisord read every section and refused to start ("directory ... does not exist"), so no
    service started. A new supervisord runs nothing yet: it reads only the section just written."""
    mine = {"SERVICES_STATE_DIR": str(tmp_path / "a"), "REDIS_PORT": str(free_port())}
    gone = tmp_path / "removed-worktree"
    (tmp_path / "a" / "run" / "programs").mkdir(parents=True)
    (tmp_path / "a" / "run" / "programs" / "web.conf").write_text(
        f"[program:web]\ncommand={gone}/services/run_with_env {gone}/web.env true\ndirectory={gone}\n"
        f"autostart=false\nstdout_logfile={gone}/.local/log/web.log\n")
    try:
        start = _run("start", "redis", env=mine)
        assert start.returncode == 0, (start.stdout, start.stderr)
        assert _run("status", "redis", env=mine).stdout.split()[1] == "running"
    finally:
        _run("stop", "redis", env=mine)
