"""bin/services between concurrent callers and after a killed supervisord, on a private state dir.

Commands of one state dir take its lock (run/.lock) for install, start, stop and restart. What a
command found before it had the lock (does supervisord answer, which orphans hold ports) may be
stale once it has it: another caller may have started or shut down supervisord meanwhile. These
tests hold the lock themselves while they line callers up behind it (each waits in ``flock``), so
the order is fixed without timing.
"""
from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from realtime_support import SERVICES, free_port, runs_below, wait_until

pytestmark = pytest.mark.integration

SUPERVISORCTL = Path(os.environ.get("LOCAL_DIR", SERVICES.parents[1] / ".local")) / "venv" / "bin" / "supervisorctl"
# MongoDB and Kafka external (not ours): a command with no names covers them without starting any
EXTERNAL = {"MONGO_URI": "mongodb://db.example.invalid:27017/", "KAFKA_BOOTSTRAP_SERVERS": "kafka.example.invalid:9092"}


def _env(state: Path, **more: str) -> dict[str, str]:
    return {**os.environ, "SERVICES_STATE_DIR": str(state), "REDIS_PORT": str(free_port()),
            "S3_PORT": str(free_port()), **EXTERNAL, **more}


def _run(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SERVICES), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([str(SERVICES), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@contextmanager
def _lock(state: Path):
    """Hold the state dir's lock, as a bin/services install/start/stop does."""
    (state / "run").mkdir(parents=True, exist_ok=True)
    with open(state / "run" / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
        fcntl.flock(f, fcntl.LOCK_UN)


def _waiting(p: subprocess.Popen[str]) -> None:
    """Until the bin/services ``p`` waits for the lock (its flock runs)."""
    def in_flock() -> bool:
        try:
            return any(c.name() == "flock" for c in psutil.Process(p.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return False
    wait_until(in_flock, 60, "bin/services to wait for the lock")


def _done(p: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=240)
    return p.returncode, out, err


def _pid(env: dict[str, str], svc: str) -> int:
    return int(_run("status", svc, env=env).stdout.split()[2])


def test_a_start_waiting_on_the_lock_asks_again_whether_supervisord_runs(tmp_path):
    """Two `start redis` at once: the second, which found no supervisord before it had the lock,
    said "running outside supervisord (its supervisord died?)", rc 1. A `start` that found
    supervisord up while a `stop` shut it down said "supervisord could not read its section"."""
    state = tmp_path / "s"
    env = _env(state)
    try:
        with _lock(state):
            first = _spawn("start", "redis", env=env)
            _waiting(first)
            second = _spawn("start", "redis", env=env)
            _waiting(second)
        results = [_done(first), _done(second)]
        assert [rc for rc, _, _ in results] == [0, 0], results
        said = "".join(out for _, out, _ in results)
        assert said.count("redis: started") == 1 and said.count("redis: already running") == 1, results

        with _lock(state):
            third = _spawn("start", "redis", env=env)
            _waiting(third)
            supervisord = psutil.Process(int((state / "run" / "supervisord.pid").read_text()))
            subprocess.run([str(SUPERVISORCTL), "-c", str(state / "run" / "supervisord.conf"), "shutdown"],
                           capture_output=True, check=True, timeout=60)
            supervisord.wait(60)
        rc, out, err = _done(third)
        assert rc == 0 and "redis: started" in out, (out, err)
        assert _run("status", "redis", env=env).returncode == 0
    finally:
        _run("stop", "redis", env=env)


def test_a_live_supervisord_keeps_its_socket_with_a_narrow_columns(tmp_path):
    """clear_stale_socket looked for "supervisord" in `ps -o args=`, which an exported COLUMNS cuts:
    the live supervisord's socket was deleted, and `start redis` said it ran outside supervisord."""
    state = tmp_path / "s"
    env = _env(state)
    try:
        assert _run("start", "redis", env=env).returncode == 0
        again = _run("start", "redis", env={**env, "COLUMNS": "20"})
        assert again.returncode == 0 and "redis: already running" in again.stdout, (again.stdout, again.stderr)
        assert (state / "run" / "supervisor.sock").is_socket()
    finally:
        _run("stop", "redis", env=env)


def test_restart_with_no_names_restarts_a_fatal_program(tmp_path):
    """README: fatal = "supervisord gave up: see its log, then restart it". A plain `restart` left
    out programs in FATAL, shut supervisord down once the others stopped, and the fatal one was
    then just "stopped"."""
    state = tmp_path / "s"
    env = _env(state)
    ctl = [str(SUPERVISORCTL), "-c", str(state / "run" / "supervisord.conf")]
    try:
        assert _run("start", "redis", "s3", env=env).returncode == 0
        subprocess.run([*ctl, "stop", "s3:*"], capture_output=True, check=True, timeout=60)
        with socket.socket() as taken:  # its port taken: gofakes3 exits at each try, supervisord gives up
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            taken.bind(("127.0.0.1", int(env["S3_PORT"])))
            taken.listen()
            subprocess.run([*ctl, "start", "s3:*"], capture_output=True, timeout=120)
            wait_until(lambda: _run("status", "s3", env=env).stdout.split()[1] == "fatal", 120,
                       "supervisord to give up on s3")
        r = _run("restart", env=env)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "restarting redis mongo kafka s3 " in r.stdout and "s3: started" in r.stdout
        assert _run("status", "s3", env=env).stdout.split()[1] == "running"
    finally:
        _run("stop", "redis", "s3", env=env)


def test_concurrent_stops_stop_an_orphan_once(tmp_path):
    """After a kill -9 of supervisord, two `stop`s at once both listed s3's orphan before the lock,
    and both stopped (signalled) its pid: the second a pid that may have been reused by then."""
    state = tmp_path / "s"
    env = _env(state)
    s3_pid = 0
    try:
        assert _run("start", "s3", env=env).returncode == 0
        s3_pid = _pid(env, "s3")
        _kill_supervisord(state)
        with _lock(state):
            stops = [_spawn("stop", env=env) for _ in range(2)]
            for p in stops:
                _waiting(p)
        results = [_done(p) for p in stops]
        assert [rc for rc, _, _ in results] == [0, 0], results
        said = "".join(out for _, out, _ in results)
        assert said.count(f"s3: stopped pid {s3_pid}") == 1, said
        assert not _runs(s3_pid, "gofakes3")
    finally:
        _run("stop", "s3", env=env)
        if s3_pid and _runs(s3_pid, "gofakes3"):
            os.kill(s3_pid, signal.SIGKILL)


def _runs(pid: int, program: str) -> bool:
    """Whether ``pid`` is a running ``program`` (not a zombie: nothing may reap an orphan here)."""
    try:
        return program in " ".join(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _kill_supervisord(state: Path) -> None:
    """kill -9 the state dir's supervisord (its programs live on, orphans)."""
    supervisord = psutil.Process(int((state / "run" / "supervisord.pid").read_text()))
    supervisord.kill()
    supervisord.wait(30)


def test_restart_with_no_names_keeps_the_environment_a_program_was_started_with(tmp_path):
    """A plain `restart` rewrote web's, worker's, s3's ... sections from the current shell: after
    `WORKERS=2 bin/services start worker`, it ran one worker. Here s3, started on one port and
    restarted from a shell that has another S3_PORT, stays on its own."""
    state = tmp_path / "s"
    env = _env(state)
    try:
        assert _run("start", "redis", "s3", env=env).returncode == 0
        r = _run("restart", env={**env, "S3_PORT": str(free_port())})
        assert r.returncode == 0 and "s3: started" in r.stdout, (r.stdout, r.stderr)
        with socket.create_connection(("127.0.0.1", int(env["S3_PORT"])), timeout=5):
            pass
        assert _run("status", "s3", env=env).stdout.split()[1] == "running"
    finally:
        _run("stop", "redis", "s3", env=env)


def test_restart_with_no_names_starts_a_program_with_its_recorded_environment_only(tmp_path):
    """The recorded environment was exported over this shell's, so a variable the recording lacks
    (a test shell's MONGO_DB) reached the restarted program and its new recording."""
    state = tmp_path / "s"
    env = _env(state)
    env.pop("REVIEW_MARK", None)
    try:
        assert _run("start", "redis", "s3", env=env).returncode == 0
        r = _run("restart", env={**env, "REVIEW_MARK": "x"})
        assert r.returncode == 0 and "s3: started" in r.stdout, (r.stdout, r.stderr)
        assert "REVIEW_MARK" not in psutil.Process(_pid(env, "s3")).environ()
        assert b"REVIEW_MARK=" not in (state / "run" / "s3.env").read_bytes()
        assert b"REVIEW_MARK=x" in (state / "run" / "redis.env").read_bytes()  # the default set: this shell's
    finally:
        _run("stop", "redis", "s3", env=env)


def test_restart_with_no_names_refuses_a_recording_of_another_local_dir(tmp_path):
    """The recorded LOCAL_DIR was applied while the virtualenv and the program list came from the
    invoking one. s3 started with another LOCAL_DIR (one whose bin/, opt/ and venv/ are the real
    ones) is left running, and the restart says why."""
    real = Path(os.environ.get("LOCAL_DIR", SERVICES.parents[1] / ".local")).resolve()
    other = tmp_path / "other-local"
    other.mkdir()
    for d in ("bin", "opt", "venv"):
        (other / d).symlink_to(real / d)
    state = tmp_path / "s"
    env = _env(state, LOCAL_DIR=str(real))
    try:
        assert _run("start", "s3", env={**env, "LOCAL_DIR": str(other)}).returncode == 0
        before = _pid(env, "s3")
        r = _run("restart", env=env)
        assert r.returncode == 1 and "s3: its recorded environment" in r.stderr, (r.stdout, r.stderr)
        assert f"LOCAL_DIR={other}" in r.stderr
        assert _pid(env, "s3") == before
    finally:
        _run("stop", "redis", "s3", env=env)  # redis: a restart that went ahead started it


def test_a_stopped_supervisord_is_named_not_waited_for(tmp_path):
    """`supervisorctl pid` had no timeout: with supervisord SIGSTOPped, every command (and, under
    the lock, every later one) waited for good."""
    state = tmp_path / "s"
    env = _env(state)
    supervisord = None
    try:
        assert _run("start", "redis", env=env).returncode == 0
        supervisord = psutil.Process(int((state / "run" / "supervisord.pid").read_text()))
        supervisord.suspend()
        for cmd in ("status", "start"):
            r = _run(cmd, "redis", env=env, timeout=120)
            assert r.returncode == 1 and f"supervisord (pid {supervisord.pid}) does not answer" in r.stderr, \
                (cmd, r.stdout, r.stderr)
    finally:
        if supervisord:
            supervisord.resume()
        _run("stop", "redis", env=env)


def test_start_waits_for_a_program_supervisord_is_retrying(tmp_path):
    """`start redis` while supervisord had redis in BACKOFF (it exited during its start, supervisord
    tries again) rewrote its section and started it anew, or got "already started" from
    supervisorctl start; either way it stopped redis, shut supervisord down and failed. It waits
    for supervisord's retries instead: here one succeeds once redis' log can be read again."""
    state = tmp_path / "s"
    env = _env(state)
    try:
        incr, good = _redis_in_backoff(state, env)
        start = _spawn("start", "redis", env=env)
        wait_until(lambda: start.poll() is not None or runs_below(start, "programs.py", "wait"), 120,
                   "bin/services start to wait for redis (or end)")
        incr.write_bytes(good)
        rc, out, err = _done(start)
        assert rc == 0 and "redis: started" in out, (out, err)
        assert _run("status", "redis", env=env).stdout.split()[1] == "running"
    finally:
        _run("stop", "redis", env=env)


def _redis_in_backoff(state: Path, env: dict[str, str]) -> tuple[Path, bytes]:
    """The state dir's redis started, then made to exit at once at every try (its append-only log
    garbled), supervisord retrying it (BACKOFF); returns the log file and its good bytes."""
    ctl = [str(SUPERVISORCTL), "-c", str(state / "run" / "supervisord.conf")]
    assert _run("start", "redis", env=env).returncode == 0
    subprocess.run([*ctl, "stop", "redis:*"], capture_output=True, check=True, timeout=60)
    incr = next((state / "services" / "redis" / "data" / "appendonlydir").glob("*.incr.aof"))
    good = incr.read_bytes()
    incr.write_bytes(b"garbage\r\n")  # redis refuses its log and exits at once, at every try
    conf = state / "run" / "programs" / "redis.conf"  # retries for longer than the test needs (ours: 3)
    conf.write_text(conf.read_text().replace("startretries=3", "startretries=100"))
    subprocess.run([*ctl, "update", "redis"], capture_output=True, check=True, timeout=60)
    subprocess.run([*ctl, "start", "redis:*"], capture_output=True, timeout=60)  # spawn error: BACKOFF
    assert _run("status", "redis", env=env).stdout.split()[1] in ("backoff", "starting")
    return incr, good


def test_a_supervisord_frozen_during_a_wait_under_the_recording_ends_the_command_once(tmp_path):
    """end_command, from programs.py's wait in a $(...) inside with_recorded_env's subshell (a
    start of a program supervisord is retrying), sent USR1 to its own shell first, died of it, and
    so never signalled that subshell, which carried on: a second message (start_failed's) after the
    first, and for a new start a `ctl stop` of the frozen supervisord. One line, and nothing else."""
    state = tmp_path / "s"
    env = _env(state)
    supervisord = start = None
    try:
        _redis_in_backoff(state, env)
        supervisord = psutil.Process(int((state / "run" / "supervisord.pid").read_text()))
        start = _spawn("start", "redis", env=env)
        wait_until(lambda: start.poll() is not None or runs_below(start, "programs.py", "wait"), 120,
                   "bin/services start to wait for redis (or end)")
        supervisord.suspend()
        rc, out, err = _done(start)
        pid = supervisord.pid
        assert rc == 1 and err.splitlines() == [
            f"services: supervisord (pid {pid}) does not answer (programs.py wait, waited 10 s): "
            f"stopped (kill -CONT {pid}) or hung (kill {pid})? the command ended there"], (out, err)
    finally:
        _thaw(supervisord, start, env)


def _thaw(supervisord: psutil.Process | None, command: subprocess.Popen[str] | None, env: dict[str, str]) -> None:
    """After a test that froze supervisord: the bin/services ``command`` gone, supervisord resumed,
    redis stopped."""
    if command and command.poll() is None:
        command.kill()
    if supervisord:
        supervisord.resume()
    _run("stop", "redis", env=env)


def test_a_supervisord_frozen_mid_command_is_named_not_waited_for(tmp_path):
    """Only the first ask, `supervisorctl pid`, had a timeout: a supervisord that froze after it had
    answered kept the command's next supervisorctl (here `update redis`, after the install lock)
    waiting for good, and every later command behind its lock. A LOCAL_DIR of this test's own
    (the real bin/, opt/ and venv/) gives it an install lock no one else takes."""
    real = Path(os.environ.get("LOCAL_DIR", SERVICES.parents[1] / ".local")).resolve()
    local = tmp_path / "local"
    (local / "run").mkdir(parents=True)
    for d in ("bin", "opt", "venv"):
        (local / d).symlink_to(real / d)
    state = tmp_path / "s"
    env = _env(state, LOCAL_DIR=str(local))
    ctl = [str(SUPERVISORCTL), "-c", str(state / "run" / "supervisord.conf")]
    supervisord = starting = None
    try:
        assert _run("start", "redis", env=env).returncode == 0
        subprocess.run([*ctl, "stop", "redis:*"], capture_output=True, check=True, timeout=60)  # supervisord stays
        supervisord = psutil.Process(int((state / "run" / "supervisord.pid").read_text()))
        with open(local / "run" / ".install.lock", "w") as install_lock:
            fcntl.flock(install_lock, fcntl.LOCK_EX)
            starting = _spawn("start", "redis", env=env)
            wait_until(lambda: _in_flock(starting, "8"), 60, "bin/services start to wait for the install lock")
            supervisord.suspend()  # after its asks under the state dir's lock, before its `update`
        rc, out, err = _done(starting)
        assert rc == 1 and f"supervisord (pid {supervisord.pid}) does not answer" in err, (out, err)
        assert "supervisorctl update redis" in err, err
    finally:
        _thaw(supervisord, starting, env)


def test_ctrl_c_interrupts_a_command_waiting_for_supervisord(tmp_path):
    """timeout(1) ran each supervisorctl in a process group of its own, which a terminal's Ctrl-C
    (SIGINT to the command's group) does not reach: the command waited out the call (up to 90 s
    for a Kafka stop), then carried on. Here `status` waits on a SIGSTOPped supervisord."""
    state = tmp_path / "s"
    env = _env(state)
    supervisord = status = None
    try:
        assert _run("start", "redis", env=env).returncode == 0
        supervisord = psutil.Process(int((state / "run" / "supervisord.pid").read_text()))
        supervisord.suspend()
        status = subprocess.Popen([str(SERVICES), "status", "redis"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)  # as a terminal's job
        wait_until(lambda: runs_below(status, "supervisorctl"), 60, "status to ask supervisord")
        os.killpg(status.pid, signal.SIGINT)  # what Ctrl-C does
        rc, out, err = _done(status)
        assert rc == -signal.SIGINT and "does not answer" not in err, (rc, out, err)
    finally:
        _thaw(supervisord, status, env)


def _in_flock(p: subprocess.Popen[str], fd: str) -> bool:
    """Whether the bin/services ``p`` waits in ``flock`` on file descriptor ``fd``."""
    try:
        return any(c.name() == "flock" and c.cmdline()[-1:] == [fd] for c in psutil.Process(p.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return False


def test_a_running_program_is_shown_at_the_address_it_was_started_with(tmp_path):
    """"already running" and `status` showed the address this shell's settings give (its
    REDIS_PORT), not the one the running redis was started with (run/redis.env)."""
    state = tmp_path / "s"
    env = _env(state)
    other = {**env, "REDIS_PORT": str(free_port())}
    started_at = f"redis://127.0.0.1:{env['REDIS_PORT']}/0"
    try:
        assert _run("start", "redis", env=env).returncode == 0
        again = _run("start", "redis", env=other)
        assert again.returncode == 0 and f"already running (pid {_pid(env, 'redis')}, {started_at})" in again.stdout, \
            (again.stdout, again.stderr)
        status = _run("status", "redis", env=other)
        assert status.returncode == 0 and status.stdout.split()[1:] == ["running", str(_pid(env, "redis")), started_at]
    finally:
        _run("stop", "redis", env=env)


def test_an_orphan_is_found_on_the_ports_it_was_started_with(tmp_path):
    """After a kill -9 of supervisord, the orphans were looked for on the ports of the caller's
    settings: redis started on one port and checked from a shell with another REDIS_PORT was
    "stopped", and `stop` left it running (as a worker started with WORKERS=3 and checked with
    WORKERS=1 lost two)."""
    state = tmp_path / "s"
    env = _env(state)
    other = {**env, "REDIS_PORT": str(free_port())}
    redis_pid = 0
    try:
        assert _run("start", "redis", env=env).returncode == 0
        redis_pid = _pid(env, "redis")
        _kill_supervisord(state)
        status = _run("status", "redis", env=other)
        assert status.stdout.split()[1:3] == ["orphan", str(redis_pid)], (status.stdout, status.stderr)
        stop = _run("stop", "redis", env=other)
        assert f"redis: stopped pid {redis_pid}" in stop.stdout, (stop.stdout, stop.stderr)
        assert not _runs(redis_pid, "redis-server")
    finally:
        _run("stop", "redis", env=env)
        if redis_pid and _runs(redis_pid, "redis-server"):
            os.kill(redis_pid, signal.SIGKILL)
