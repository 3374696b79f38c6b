"""services/programs.py: the supervisord sections it writes from the program list."""
from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def programs(monkeypatch, tmp_path):
    monkeypatch.setenv("SERVICES_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("WORKER_METRICS_PORT", "19000")
    spec = importlib.util.spec_from_file_location("programs", ROOT / "services" / "programs.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "programs", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _words(section: str) -> list[str]:
    command = next(line for line in section.splitlines() if line.startswith("command="))
    return shlex.split(command.removeprefix("command=").replace("%%", "%"))


def test_workers_are_numprocs_with_one_metrics_port_and_log_each(programs, tmp_path):
    worker = programs.program("worker")
    assert worker.ports == [19000, 19001, 19002]
    section = programs.section(worker, tmp_path / "run" / "worker.env")
    assert "numprocs=3" in section
    assert "process_name=%(program_name)s_%(process_num)d" in section
    assert f"stdout_logfile={tmp_path / 'log'}/worker_%(process_num)d.log" in section
    words = _words(section)
    assert words[:3] == [str(ROOT / "services" / "run_with_env"), str(tmp_path / "run" / "worker.env"),
                         "WORKER_PROCESS_NUM=%(process_num)d"]
    assert words[-2:] == ["-m", "kafka_workers.worker"]


def test_every_program_stops_as_a_group_and_restarts(programs, tmp_path):
    names = [p.name for p in programs.programs()]
    assert names == ["redis", "mongo", "postgres", "kafka", "airflow", "web", "worker", "celery", "celery-rescore", "s3",
                     "spark-master", "spark-worker-1", "spark-worker-2"]
    for p in programs.programs():
        section = programs.section(p, tmp_path / f"{p.name}.env")
        for line in ("stopasgroup=true", "killasgroup=true", "autorestart=true", "autostart=false"):
            assert line in section, (p.name, line)


def test_a_percent_sign_reaches_the_program_unchanged(programs, tmp_path):
    p = programs.Program("x", ["echo", "100%", "a b"])
    section = programs.section(p, tmp_path / "x.env")
    assert "100%%" in section  # supervisord expands %(...)s: a literal % is written doubled
    assert _words(section)[-2:] == ["100%", "a b"]


def test_the_environment_is_the_callers_plus_the_programs_own(programs, tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_RATINGS_TOPIC", "mine.ratings")
    monkeypatch.setenv("DJANGO_DEBUG", "0")
    programs.write("web")
    saved = _saved_env(tmp_path, "web")
    assert saved["KAFKA_RATINGS_TOPIC"] == "mine.ratings"
    assert saved["DJANGO_DEBUG"] == "0"  # a default only where the caller set nothing
    assert saved["PYTHONPATH"] == str(ROOT)
    assert saved["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "run" / "web-metrics")
    assert (tmp_path / "run" / "web.env").stat().st_mode & 0o077 == 0  # may hold secrets


def _saved_env(tmp_path, name: str) -> dict[str, str]:
    return dict(e.split("=", 1) for e in (tmp_path / "run" / f"{name}.env").read_bytes().decode().split("\0") if e)


def test_spark_workers_clean_up_finished_applications_unless_told_otherwise(programs, tmp_path, monkeypatch):
    monkeypatch.delenv("SPARK_WORKER_OPTS", raising=False)
    programs.write("spark-worker-1")
    assert "-Dspark.worker.cleanup.enabled=true" in _saved_env(tmp_path, "spark-worker-1")["SPARK_WORKER_OPTS"]
    monkeypatch.setenv("SPARK_WORKER_OPTS", "-Dspark.worker.cleanup.enabled=false")
    programs.write("spark-worker-1")
    assert _saved_env(tmp_path, "spark-worker-1")["SPARK_WORKER_OPTS"] == "-Dspark.worker.cleanup.enabled=false"


def test_ferretdb_sqlite_gets_durable_commits_and_small_wal_checkpoints(programs, monkeypatch):
    url = next(a for a in programs.program("mongo").command if a.startswith("--sqlite-url="))
    assert "_pragma=synchronous(normal)" in url and "_pragma=wal_autocheckpoint(250)" in url
    monkeypatch.setenv("FERRETDB_SQLITE_WAL_AUTOCHECKPOINT", "1000")
    url = next(a for a in programs.program("mongo").command if a.startswith("--sqlite-url="))
    assert url.endswith("&_pragma=wal_autocheckpoint(1000)")


def test_ferretdb_collects_garbage_less_often_unless_told_otherwise(programs, tmp_path, monkeypatch):
    monkeypatch.delenv("FERRETDB_GOGC", raising=False)
    programs.write("mongo")
    assert _saved_env(tmp_path, "mongo")["GOGC"] == "400"
    monkeypatch.setenv("FERRETDB_GOGC", "100")
    programs.write("mongo")
    assert _saved_env(tmp_path, "mongo")["GOGC"] == "100"


def _celery_worker(words: list[str]) -> dict[str, object]:
    """What a ``celery ... worker`` command line runs: beat or not, its queues, its node name."""
    assert words[words.index("-A") + 1] == "kafka_workers.celery_app" and "worker" in words, words
    return {"beat": "-B" in words, "queues": words[words.index("-Q") + 1] if "-Q" in words else None,
            "node": words[words.index("-n") + 1] if "-n" in words else None}


def test_the_re_scoring_has_a_worker_of_its_own_and_beat_runs_once(programs, tmp_path):
    """A re-scoring runs for hours: in the one worker, trending and popular waited behind it. The
    supervisord set runs two workers, beat in one; each logs to its own file."""
    celery, rescore = programs.program("celery"), programs.program("celery-rescore")
    workers = [_celery_worker(_words(programs.section(p, tmp_path / f"{p.name}.env"))) for p in (celery, rescore)]
    assert workers == [{"beat": True, "queues": "celery", "node": "default@%h"},
                       {"beat": False, "queues": "rescore", "node": "rescore@%h"}]
    assert f"stdout_logfile={tmp_path / 'log'}/celery-rescore.log" in programs.section(rescore, tmp_path / "r.env")
    # beat's schedule file is the state dir's: a private state dir's beat never shares it
    words = celery.command
    assert words[words.index("-s") + 1] == str(tmp_path / "run" / "celerybeat-schedule")


def test_compose_runs_the_same_two_celery_workers():
    services = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())["services"]
    celery = {name: _celery_worker(s["command"]) for name, s in services.items()
              if "celery" in s.get("command", []) and "worker" in s.get("command", [])}
    assert celery == {"celery": {"beat": True, "queues": "celery", "node": "default@%h"},
                      "celery-rescore": {"beat": False, "queues": "rescore", "node": "rescore@%h"}}
    assert services["celery-rescore"]["image"] == services["celery"]["image"]


def test_redis_always_starts_with_its_append_only_log(programs, tmp_path):
    """Snapshots alone lost up to an hour of Celery's queue, the limits' counts and trending's marks
    on a crash. The log is on in supervisord's command line whatever the data folder holds: turned
    on only in the running server (CONFIG SET), an autorestart after a crash read the old snapshot.
    A folder holding only a snapshot gets its log before the start (redis_log, below)."""
    data = tmp_path / "services" / "redis" / "data"

    def appendonly() -> bool:
        words = _words(programs.section(programs.program("redis"), tmp_path / "redis.env"))
        return "--appendonly" in words and words[words.index("--appendonly") + 1] == "yes"

    assert appendonly()  # a new data folder
    data.mkdir(parents=True)
    (data / "dump.rdb").write_bytes(b"REDIS")
    assert appendonly()  # a snapshot only (from before the log)


@pytest.fixture
def short_dir():
    """A folder for a unix socket (at most 107 bytes of path: tmp_path's can be longer)."""
    with tempfile.TemporaryDirectory(prefix="t-redis-") as d:
        yield Path(d)


def _redis_server(data: Path, sock: Path, *args: str) -> subprocess.Popen:
    server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--dir", str(data),
                               "--daemonize", "no", *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(unix_socket_path=str(sock))
    while True:
        try:
            client.ping()
            return server
        except (redis.ConnectionError, redis.BusyLoadingError):
            assert server.poll() is None, "redis-server exited"
            time.sleep(0.1)


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_a_snapshot_only_data_folder_keeps_its_data_under_the_log(programs, tmp_path, short_dir):
    """Redis started with the log on reads the log alone: a folder from before the log (dump.rdb
    only) gets its log from the snapshot first, and the next start has the data."""
    data, sock = tmp_path / "data", short_dir / "s.sock"
    data.mkdir()
    server = _redis_server(data, sock, "--appendonly", "no", "--save", "")
    client = redis.Redis(unix_socket_path=str(sock))
    client.set("written-before", "1")
    client.shutdown(save=True)
    server.wait()
    assert (data / "dump.rdb").exists() and not (data / "appendonlydir").exists()

    programs.redis_log(data)
    assert (data / "appendonlydir" / "appendonly.aof.manifest").exists()
    programs.redis_log(data)  # nothing left to do: a no-op

    server = _redis_server(data, sock, "--appendonly", "yes", "--save", "")
    try:
        assert redis.Redis(unix_socket_path=str(sock)).get("written-before") == b"1"
    finally:
        server.kill()
        server.wait()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_a_snapshot_redis_cannot_read_stops_the_start_with_its_reason(programs, tmp_path):
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0009garbage")
    with pytest.raises(SystemExit, match=r"(?s)could not add the append-only log.*exited.*RDB"):
        programs.redis_log(tmp_path)
    assert not (tmp_path / "appendonlydir" / "appendonly.aof.manifest").exists()


@pytest.mark.parametrize("var, value", [("REDIS_PORT", "abc"), ("WORKERS", "two"), ("KAFKA_START_TIMEOUT", "2m")])
def test_a_setting_that_is_not_a_number_is_named_in_one_line(programs, monkeypatch, var, value):
    monkeypatch.setenv(var, value)
    with pytest.raises(SystemExit, match=f"^services: {var}='{value}' is not a whole number$"):
        programs.main(["figures"])


def test_zero_workers_is_refused_not_run_as_one(programs, monkeypatch):
    monkeypatch.setenv("WORKERS", "0")  # the dashboard, reading the same variable, refuses it too
    with pytest.raises(SystemExit, match="^services: WORKERS='0' is below 1$"):
        programs.main(["figures"])


def test_bin_services_stops_at_a_setting_it_cannot_read(tmp_path):
    """Every command, stop too, read the program list: a traceback, then "unknown service 'redis'
    (known: )". Now the one line naming the setting, and nothing else (no server is touched)."""
    env = {"PATH": "/usr/bin:/bin", "LOCAL_DIR": str(tmp_path), "SERVICES_STATE_DIR": str(tmp_path / "state"),
           "WORKERS": "two"}
    done = subprocess.run([str(ROOT / "bin" / "services"), "stop", "redis"], env=env, capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "services: WORKERS='two' is not a whole number\n")


@pytest.fixture
def listening_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_log_rotated_during_the_start_still_shows_the_line(programs, tmp_path, listening_port):
    """supervisord rotates a log at 50 MB: the offset noted before the start was then past the new
    file's end, nothing was read, and a healthy server was stopped after its timeout."""
    log = tmp_path / "spark-worker-1.log"
    log.write_text("x" * 5000)
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write("\nstarting\n")
    log.rename(tmp_path / "spark-worker-1.log.1")  # as supervisord rotates
    log.write_text("Successfully registered with master\n")
    check = programs.log_says(log, "Successfully registered with master", listening_port)
    assert check(0, offset)
    assert programs._log_since(log, offset) == "\nstarting\nSuccessfully registered with master\n"


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _shared_kafka_port() -> int:
    return int(os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092").split(",")[0].rsplit(":", 1)[1])


@pytest.mark.skipif(not _port_open(_shared_kafka_port()), reason="needs a running Kafka broker")
def test_kafka_counts_as_started_when_the_broker_answers_whatever_its_log_says(programs, monkeypatch):
    monkeypatch.setenv("KAFKA_PORT", str(_shared_kafka_port()))  # a metadata request only
    assert programs.program("kafka").health(0, 10**9)  # no log in this state dir at all


def test_kafka_is_not_started_while_something_else_holds_its_port(programs, monkeypatch, listening_port):
    monkeypatch.setenv("KAFKA_PORT", str(listening_port))
    assert not programs.program("kafka").health(0, 0)


def test_a_failed_start_points_to_the_logs_the_processes_write(programs, tmp_path, capsys, monkeypatch):
    """bin/services names these in "see ..." and reads its last error from them: for the worker it
    named worker.log, which no process writes."""
    programs.main(["logs", "worker"])
    assert capsys.readouterr().out.split() == [str(tmp_path / "log" / f"worker_{n}.log") for n in range(3)]
    monkeypatch.setenv("WORKERS", "1")
    programs.main(["logs", "worker"])
    assert capsys.readouterr().out.split() == [str(tmp_path / "log" / "worker_0.log")]
    programs.main(["logs", "redis"])
    assert capsys.readouterr().out.split() == [str(tmp_path / "log" / "redis.log")]
    for p in programs.programs():  # the files supervisord writes
        section = programs.section(p, tmp_path / f"{p.name}.env")
        logfile = next(line for line in section.splitlines() if line.startswith("stdout_logfile="))
        assert [logfile.removeprefix("stdout_logfile=").replace("%(process_num)d", str(n))
                for n in range(p.numprocs)] == [str(f) for f in programs.log_files(p)]


@pytest.mark.parametrize("name, node", [("celery", "default"), ("celery-rescore", "rescore")])
def test_celery_counts_as_started_once_it_says_ready_which_needs_its_broker(programs, tmp_path, name, node):
    """It reported "started" with its broker down (3 s alive was the check): the worker retries a
    broker that is down and says "<node> ready." only once connected."""
    p, log = programs.program(name), tmp_path / "log" / f"{name}.log"
    log.parent.mkdir()
    log.write_text(f"[..: INFO/MainProcess] {node}@{socket.gethostname()} ready.\n")  # an earlier start's
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write("[..: ERROR/MainProcess] consumer: Cannot connect to redis://127.0.0.1:1/0: Error 111 ...\n")
    assert p.health is not None and not p.health(0, offset)
    assert p.fail_marker and p.fail_marker in log.read_text()[offset:]
    with open(log, "a") as f:
        f.write(f"[..: INFO/MainProcess] {node}@{socket.gethostname()} ready.\n")
    assert p.health(0, offset)


def _bin_services_airflow_home(tmp_path, **env: str) -> str:
    """AIRFLOW_HOME_DIR as bin/services computes it: its settings up to that line, run by bash."""
    script = (ROOT / "bin" / "services").read_text()
    head = script[:script.index("\n", script.index("\nAIRFLOW_HOME_DIR=") + 1)]
    done = subprocess.run(["bash", "-c", head + '\necho "$AIRFLOW_HOME_DIR"', str(ROOT / "bin" / "services")],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_private_state_dir_gets_an_airflow_home_of_its_own(tmp_path):
    """A private state dir's Airflow shared the main one's home: its airflow.cfg and database."""
    local = str(tmp_path / "local")
    assert _bin_services_airflow_home(tmp_path, LOCAL_DIR=local) == f"{local}/airflow"
    assert (_bin_services_airflow_home(tmp_path, LOCAL_DIR=local, SERVICES_STATE_DIR=str(tmp_path / "x"))
            == str(tmp_path / "x" / "airflow"))
    assert (_bin_services_airflow_home(tmp_path, LOCAL_DIR=local, SERVICES_STATE_DIR=str(tmp_path / "x"),
                                       AIRFLOW_HOME="/elsewhere") == "/elsewhere")


def test_bin_services_bounds_its_supervisorctl_calls_by_programs_py_figures(programs, tmp_path):
    """The answer limit was written twice (bin/services' CTL_ANSWER_S=10 beside programs.py's
    SUPERVISOR_ANSWER_S), and each bounded supervisorctl asked programs.py for its program's
    startsecs or stop wait. bin/services now reads all of them from programs.py once: here a copy of
    the script's settings and functions (up to its main) beside a services/ whose programs.py says 7 s."""
    shutil.copytree(ROOT / "services", tmp_path / "services")
    (tmp_path / "bin").mkdir()  # the script's $0 is bin/services there: its ROOT is tmp_path
    script = (ROOT / "bin" / "services").read_text()
    source = (ROOT / "services" / "programs.py").read_text()
    assert "\nSUPERVISOR_ANSWER_S = 10 " in source
    (tmp_path / "services" / "programs.py").write_text(source.replace("\nSUPERVISOR_ANSWER_S = 10 ",
                                                                       "\nSUPERVISOR_ANSWER_S = 7 "))
    head = script[:script.rindex("\nexec 7>&2;")]
    shown = '\necho "$CTL_ANSWER_S ${START_SECS[celery]} ${STOP_WAIT_S[kafka]} ${ALL_SERVICES[*]}"'
    done = subprocess.run(["bash", "-c", head + shown, str(tmp_path / "bin" / "services")],
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LOCAL_DIR": str(tmp_path / "local")},
                          capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
    answer, start_secs, stop_wait, *names = done.stdout.split()
    assert (answer, start_secs, stop_wait) == ("7", str(programs.program("celery").start_secs),
                                               str(programs.program("kafka").stop_wait_s))
    assert names == [p.name for p in programs.programs()]


def test_an_http_health_check_does_not_count_a_redirect(programs):
    """The site with DEBUG off answered bin/services' plain-HTTP /healthz with a 301 to HTTPS, and
    the start was reported as healthy with MongoDB down: only a 2xx answer is health."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):
            status = int(self.path.strip("/"))
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "https://127.0.0.1/healthz")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        healthy = {status: programs.http_ok(f"{url}/{status}")(0, 0) for status in (200, 204, 301, 302, 404, 503)}
        assert healthy == {200: True, 204: True, 301: False, 302: False, 404: False, 503: False}
        assert programs.http_ok(f"{url}/301", f"{url}/200")(0, 0)  # any of the URLs
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def worker_endpoint(monkeypatch):
    """A worker's real /healthz and /readyz (kafka_workers/metrics.py) on a free port, its loop
    turning and its topic there; ``watch_broker`` sets when Kafka last answered its consumer."""
    from kafka_workers import metrics

    server = metrics.serve(0)
    monkeypatch.setenv("WORKER_METRICS_PORT", str(server.server_address[1]))
    monkeypatch.setenv("WORKERS", "1")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    metrics.loop_turned()
    metrics.topic_checked("ratings", True)
    yield metrics.watch_broker
    metrics.watch_broker(lambda: None)
    metrics.topic_checked("ratings", None)
    server.shutdown()
    server.server_close()


def test_a_worker_counts_as_started_once_kafka_answers_it(programs, worker_endpoint):
    """The start waited for /healthz, which is 200 while the loop turns with no broker answering:
    a worker that consumed nothing was reported as started. Now /readyz, and a start that times out
    says why."""
    worker = programs.program("worker")
    worker_endpoint(lambda: None)  # Kafka never answered (a broker that is down or out of reach)
    assert not worker.health(0, 0)
    assert worker.why_not(0) == ("worker_0's /readyz says no-broker: Kafka at 127.0.0.1:1 has not answered "
                                 "its consumer")
    worker_endpoint(time.time)  # it answers
    assert worker.health(0, 0)


def test_status_shows_the_state_supervisord_has_a_program_in(programs, tmp_path):
    """status counted RUNNING processes only: a program supervisord was restarting (STARTING,
    BACKOFF) or had given up on (FATAL) showed as "stopped"."""
    redis, worker = programs.program("redis"), programs.program("worker")
    log = tmp_path / "log"

    def line(p, *states: tuple[str, int]) -> str:
        return programs.state_line(p, [{"statename": s, "pid": pid} for s, pid in states])

    assert line(redis) == f"stopped - {redis.address}"
    assert line(redis, ("STOPPED", 0)) == f"stopped - {redis.address}"
    assert line(redis, ("RUNNING", 41)) == f"running 41 {redis.address}"
    assert line(redis, ("STARTING", 42)) == f"starting 42 {redis.address}"
    assert line(redis, ("BACKOFF", 0)).startswith("backoff - ")
    assert line(redis, ("BACKOFF", 0)).endswith(f"see {log / 'redis.log'}")
    assert line(redis, ("FATAL", 0)).startswith("fatal - ")
    assert line(worker, ("RUNNING", 7), ("RUNNING", 8), ("RUNNING", 9)) == f"running 7,8,9 {worker.address}"
    assert line(worker, ("RUNNING", 7), ("BACKOFF", 0), ("RUNNING", 9)).startswith("backoff 7,9 ")
    assert line(worker, ("RUNNING", 7), ("STOPPED", 0), ("RUNNING", 9)) == (
        f"partial 7,9 2 of 3 processes running: see {' '.join(str(log / f'worker_{n}.log') for n in range(3))}")


def test_the_last_error_of_a_failed_start_prefers_errors_to_warnings(programs, tmp_path):
    """Any line with "Error" was the last error: a worker whose start failed on Kafka was reported
    with a MongoDB ServerSelectionTimeoutError it had only warned about."""
    worker = tmp_path / "worker_0.log"
    worker.write_text("an earlier start's ERROR line\n")
    size = worker.stat().st_size
    with open(worker, "a") as f:
        f.write("2026-12-05 11:00:01 ERROR kafka_workers.worker: Kafka at 127.0.0.1:9092 did not answer\n"
                "2026-12-05 11:00:02 WARNING core.mongo: retrying: ServerSelectionTimeoutError: 127.0.0.1:27017\n")
    assert programs.last_error([(size, worker)]) == (
        "2026-12-05 11:00:01 ERROR kafka_workers.worker: Kafka at 127.0.0.1:9092 did not answer")

    other = tmp_path / "worker_1.log"  # the program's other log: a traceback's last line beats a warning
    other.write_text("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
                     "    connect()\nKafkaTimeoutError: no broker\nWARNING: an Error while closing\n")
    assert programs.last_error([(size, worker), (0, other)]) == "worker_1.log: KafkaTimeoutError: no broker"

    redis = tmp_path / "redis.log"  # no level words: the last line naming an error, as before
    redis.write_text("1:M * Server started\n1:M # Bad file format reading the append only file: error in MANIFEST\n")
    assert programs.last_error([(0, redis)]) == "1:M # Bad file format reading the append only file: error in MANIFEST"
    assert programs.last_error([(redis.stat().st_size, redis)]) == ""


def test_a_start_reads_each_processs_own_log_from_its_own_offset(programs, tmp_path, monkeypatch, capsys):
    """The start noted the size of log/NAME.log and `wait` read its fail marker there, while a
    program with one log per process writes log/NAME_<n>.log."""
    p = programs.Program("many", ["true"], numprocs=2, fail_marker="boom")
    logs = programs.log_files(p)
    logs[0].parent.mkdir()
    logs[0].write_text("starting\n")
    logs[1].write_text("an earlier start went boom\n")
    offsets = [f.stat().st_size for f in logs]
    seen: list[tuple[int, int]] = []
    p.health = lambda n, offset: seen.append((n, offset)) or True

    class Supervisor:  # supervisord's XML-RPC answer: both processes running
        @staticmethod
        def getAllProcessInfo() -> list[dict]:
            return [{"group": "many", "name": f"many_{n}", "statename": "RUNNING"} for n in range(2)]

    monkeypatch.setattr(programs, "program", lambda name: p)
    monkeypatch.setattr(programs, "supervisor", lambda: type("Rpc", (), {"supervisor": Supervisor})())
    assert programs.main(["wait", "many", "5", ",".join(map(str, offsets))]) == 0
    assert seen == [(0, offsets[0]), (1, offsets[1])]  # each process's health check gets its log's offset

    with open(logs[1], "a") as f:
        f.write("it went boom again\n")
    assert programs.main(["wait", "many", "5", ",".join(map(str, offsets))]) == 1
    assert capsys.readouterr().err == "its log says 'boom'\n"


def test_an_ask_of_a_supervisord_that_never_answers_ends(programs, monkeypatch, short_dir):
    """programs.py's own asks of supervisord (status' state, start's wait) waited for good on one
    that took the connection but never replied (SIGSTOPped, hung): they end with 124, which
    bin/services names (its supervisorctl calls are bounded the same way)."""
    monkeypatch.setenv("SERVICES_STATE_DIR", str(short_dir))
    monkeypatch.setattr(programs, "SUPERVISOR_ANSWER_S", 0.5, raising=False)
    programs.socket_path().parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as frozen:
        frozen.bind(str(programs.socket_path()))
        frozen.listen()  # connections wait in its backlog, never answered
        try:
            for ask in (["state", "redis"], ["wait", "redis", "5"]):
                with pytest.raises(SystemExit) as ended:
                    programs.main(ask)
                assert ended.value.code == 124, ask
        finally:
            socket.setdefaulttimeout(None)


def test_the_recorded_environment_is_replaced_whole(programs, tmp_path, monkeypatch):
    """write truncated run/NAME.env and then wrote it: a reader in between (supervisord restarting
    the program, bin/services' status) found it empty or cut short. A new recording is renamed over
    the old one, which a reader that has it open reads whole."""
    monkeypatch.setenv("REVIEW_MARK", "old")
    programs.write("s3")
    recording = tmp_path / "run" / "s3.env"
    with open(recording, "rb") as reader:
        monkeypatch.setenv("REVIEW_MARK", "new")
        programs.write("s3")
        assert b"REVIEW_MARK=old\0" in reader.read()
    assert b"REVIEW_MARK=new\0" in recording.read_bytes()
    assert not list((tmp_path / "run").glob("*.tmp"))
