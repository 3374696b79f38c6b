"""The local process set, run by supervisord: ONE list of programs (``programs()`` below).

``bin/services`` installs the binaries (its bash functions) and asks this module, run with the
app's virtualenv (which has the ``supervisor`` package):

    programs.py figures                  how long supervisord gets to answer (SUPERVISOR_ANSWER_S),
                                         then "NAME STARTSECS STOP_WAIT_S" of each program in order,
                                         one a line (bin/services reads them once per command)
    programs.py conf                     supervisord.conf of the state dir
    programs.py write NAME               NAME's [program] section (run/programs/NAME.conf) and the
                                         environment it runs with (run/NAME.env, see below)
    programs.py ports NAME               the TCP ports NAME listens on (checked free before a start)
    programs.py address NAME             one line saying where NAME answers
    programs.py runs NAME PID            exit 0 when process PID runs NAME's command (an orphan of a
                                         killed supervisord, not some other process on its port)
    programs.py logs NAME                NAME's log files, one a line (one per process: worker_<n>.log)
    programs.py redis-log DATA_DIR       give a Redis data folder holding only a snapshot its
                                         append-only log (before the start; see redis_log)
    programs.py postgres-bin             the PostgreSQL server binaries' folder (initdb, psql)
    programs.py as-postgres CMD ARG...   CMD as the postgres user when run as root (initdb), else as is
    programs.py last-error               the line of the logs that best says why a start failed, from
                                         "SIZE FILE" lines on stdin (each log's size before it)
    programs.py state NAME               "STATE PIDS DETAIL" of NAME as supervisord runs it (see state_line)
    programs.py wait NAME SECONDS [LOG_OFFSETS]
                                         wait until every process of NAME passes its health check;
                                         fails at once when supervisord reports it exited (offsets:
                                         its log files' sizes before the start, comma-separated)

supervisord does the rest: process groups (``stopasgroup``/``killasgroup``), restarts
(``autorestart``), log files and their rotation (``stdout_logfile_maxbytes``), N copies of a
program (``numprocs``). Each state dir (``SERVICES_STATE_DIR``) gets its own supervisord with its
own socket, so private test servers never meet the shared ones.

A program runs with the environment of the ``bin/services start`` that started it (a snapshot in
``run/NAME.env``, applied by ``services/run_with_env``), like ``docker compose up`` reading the
environment: ports, topics, databases and secrets come from the caller, as they did before
supervisord, and a later ``start`` from another shell cannot change what a running program sees.

Adding a program is one entry in ``programs()``, as the S3 server's:

    Program("s3", [str(local / "bin" / "gofakes3"), "-host", f"127.0.0.1:{s3_port}", ...],
            ports=[s3_port], health=http_ok(f"http://127.0.0.1:{s3_port}/{bucket}?list-type=2&max-keys=1"),
            address=f"http://127.0.0.1:{s3_port}/ (bucket {bucket})"),

and ``bin/services start s3`` works (its known services are this list's names). If it needs
installing, add ``install_s3`` to ``bin/services`` (``bin/services install s3`` and every start
run it); ``prepare_s3`` runs before each start and ``after_start_s3`` after the health check. Everything
is read from the environment that ``bin/services`` exports (ports, ``LOCAL_DIR``,
``SERVICES_STATE_DIR``, ...). This module needs only the standard library, except ``wait``
(supervisor's XML-RPC transport and kafka-python, from the app's virtualenv).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROCESS_NUM = "%(process_num)d"  # in a command or env value: supervisord's number of the process (0..numprocs-1)

Health = Callable[[int, int], bool]  # (process_num, log offset at start) -> answering?


@dataclass
class Program:
    name: str
    command: list[str]
    ports: list[int] = field(default_factory=list)  # every TCP port it listens on (all processes)
    health: Health | None = None  # None: staying up for start_secs is the check
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)  # set for the program, over the caller's
    env_defaults: dict[str, str] = field(default_factory=dict)  # only where the caller set nothing
    numprocs: int = 1
    start_secs: int = 1  # must stay up this long to count as started (supervisord's startsecs)
    start_timeout_s: int = 30  # then its health check must pass within this
    stop_wait_s: int = 15  # SIGTERM to the process group, SIGKILL after this
    directory: str = str(ROOT)
    fail_marker: str = ""  # log text that means "failed" even while the process lives on
    why_not: Callable[[int], str] | None = None  # what process n says, when its health check timed out


# --- health checks (small pings, standard library) -----------------------------------------------

def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def redis_ping(port: int) -> Health:
    def check(_num: int, _offset: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False
    return check


def mongo_ping(port: int) -> Health:
    spec = importlib.util.spec_from_file_location("mongo_ping", HERE / "mongo" / "ping.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def check(_num: int, _offset: int) -> bool:
        try:
            return port_open(port) and module.ping(port)
        except (OSError, ValueError):
            return False
    return check


def pg_ready(port: int) -> Health:
    """PostgreSQL accepts sessions (``pg_isready``): its port opens before that, while it replays
    its write-ahead log after an unclean stop."""
    def check(_num: int, _offset: int) -> bool:
        ready = [str(_postgres_bin() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        try:
            return port_open(port) and subprocess.run(ready, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False
    return check


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is the server's answer (the site with DEBUG off sends HTTP to HTTPS)


_opener = urllib.request.build_opener(_NoRedirect)


def http_ok(*urls: str) -> Health:
    """Any of the URLs answers 2xx, redirects not followed.

    A redirect is not health: the site with DEBUG off sent /healthz to HTTPS without checking
    anything (recsite/recsite/health.py now answers the poll itself), and counting the 301 reported
    a site as started while MongoDB was down."""
    def check(_num: int, _offset: int) -> bool:
        for url in urls:
            try:
                with _opener.open(url, timeout=3) as r:
                    if 200 <= r.status < 300:
                        return True
            except urllib.error.HTTPError:  # a redirect (not followed), 4xx, 5xx
                pass
            except OSError:
                pass
        return False
    return check


def log_says(log: Path, text: str, port: int | None = None) -> Health:
    """The port (if any) accepts connections and the log written since the start contains ``text``."""
    def check(_num: int, offset: int) -> bool:
        return (port is None or port_open(port)) and text in _log_since(log, offset)
    return check


def _log_since(log: Path, offset: int) -> str:
    """What the program wrote to ``log`` since it was ``offset`` bytes long. A file shorter than that
    was rotated meanwhile (supervisord, at 50 MB): the rest of the old one (``log.1``), then all of
    the new one; reading from the offset alone found nothing and a healthy server was stopped."""
    try:
        size = log.stat().st_size
    except OSError:
        return ""
    parts = [(log.with_name(log.name + ".1"), offset), (log, 0)] if size < offset else [(log, offset)]
    text = ""
    for path, start in parts:
        try:
            with open(path, "rb") as f:
                f.seek(start)
                text += f.read().decode("utf-8", "replace")
        except OSError:
            pass
    return text


_LEVEL = re.compile(r"\b(ERROR|CRITICAL|FATAL)\b")
_ERRORISH = re.compile(r"ERROR|FATAL|Error|error|Exception")


def error_line(text: str) -> tuple[int, str]:
    """(rank, line) of the line of a log that best says why a start failed: the last at level
    ERROR, CRITICAL or FATAL or ending a Python traceback (rank 2); else the last that names an
    error at all (rank 1: servers with other level words, as Redis's "#"); else (0, "").

    Any line with "Error" counted, a WARNING's too: a worker whose start failed on Kafka was
    reported with a MongoDB ServerSelectionTimeoutError it had only warned about."""
    best, fallback, in_traceback = "", "", False
    for line in text.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif in_traceback and line.strip() and not line[0].isspace():
            best, in_traceback = line, False  # "SomeError: message", the traceback's last line
        elif not in_traceback and _LEVEL.search(line):
            best = line
        if _ERRORISH.search(line):
            fallback = line
    return (2, best) if best else (1, fallback) if fallback else (0, "")


def last_error(sizes: list[tuple[int, Path]]) -> str:
    """The best error line (``error_line``) its logs got since they were ``sizes`` long, the last
    log's among equals, named by its file when the program has several logs; "" when none."""
    found = [(error_line(_log_since(path, size)), path) for size, path in sizes]
    (rank, line), path = max(reversed(found), key=lambda f: f[0][0], default=((0, ""), None))
    if not rank:
        return ""
    return (f"{path.name}: " if len(sizes) > 1 else "") + line[:200]


def kafka_ready(port: int) -> Health:
    """The broker on ``port`` answers a metadata request listing a broker: it lists only brokers
    the controller has let in (unfenced), i.e. ready for clients. (Its log's "Kafka Server started"
    was read from the offset noted before the start, and missed when the log rotated meanwhile.)
    kafka-python is the app virtualenv's, which runs ``wait``."""
    def check(_num: int, _offset: int) -> bool:
        if not port_open(port):
            return False
        import logging

        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # a refused connection is an answer here
        try:
            admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", client_id="services-health",
                                     request_timeout_ms=5000, api_version_auto_timeout_ms=2000)
        except (KafkaError, OSError):
            return False
        try:
            return bool(admin.describe_cluster().get("brokers"))
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()
    return check


# --- the list --------------------------------------------------------------------------------------

def _whole_number(var: str, default: int, minimum: int | None = None) -> int:
    """The whole number in ``var`` (ports, counts, timeouts in seconds), else ``default``; a value
    that is not one, or is below ``minimum``, stops every command with one line naming it (not a
    traceback), as core.env does for the programs (not imported: this module is standard library only)."""
    value = os.environ.get(var, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SystemExit(f"services: {var}={value!r} is not a whole number") from None
    if minimum is not None and number < minimum:
        raise SystemExit(f"services: {var}={value!r} is below {minimum}")
    return number


def programs() -> list[Program]:
    env = os.environ
    local = Path(env.get("LOCAL_DIR") or ROOT / ".local")
    state = Path(env.get("SERVICES_STATE_DIR") or local)
    svc, logs = state / "services", state / "log"
    venv = local / "venv" / "bin"
    redis_port, mongo_port = _whole_number("REDIS_PORT", 6379), _whole_number("MONGO_PORT", 27017)
    pg_port = _whole_number("POSTGRES_PORT", 5433)
    kafka_port, controller_port = _whole_number("KAFKA_PORT", 9092), _whole_number("KAFKA_CONTROLLER_PORT", 9093)
    airflow_port, web_port = _whole_number("AIRFLOW_PORT", 8080), _whole_number("WEB_PORT", 8000)
    workers, metrics_base = _whole_number("WORKERS", 1, minimum=1), _whole_number("WORKER_METRICS_PORT", 9410)
    kafka_home = local / "opt" / f"kafka-{env.get('KAFKA_VERSION', '3.9.1')}"
    app_env = {"PYTHONPATH": str(ROOT)}
    redis_url = env.get("REDIS_URL") or f"redis://127.0.0.1:{redis_port}/0"
    s3_port, bucket = _whole_number("S3_PORT", 9000), env.get("S3_BUCKET") or "recommender"
    spark_port, spark_ui = _whole_number("SPARK_MASTER_PORT", 7077), _whole_number("SPARK_MASTER_WEBUI_PORT", 8090)
    spark_class = str(_pyspark_home(local) / "bin" / "spark-class")
    # loopback only; executors run the app's Python (the jobs ship core/ and spark_jobs/ with --py-files)
    spark_env = {"SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON") or str(venv / "python")}
    return [
        Program("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--dir",
                          str(svc / "redis" / "data"), "--save", "3600 1 300 100 60 10000", "--daemonize", "no",
                          "--appendonly", "yes"],  # redis_log gives a folder from before the log its log
                ports=[redis_port], health=redis_ping(redis_port), address=f"redis://127.0.0.1:{redis_port}/0",
                start_timeout_s=20),
        # FerretDB's storage: SQLite files (default) or, with MONGO_BACKEND=postgresql, the "postgres"
        # program below (bin/services starts it first). SQLite's synchronous(normal) with WAL: durable
        # across process crashes (kill -9), not OS crashes; without it every single-document write
        # waits for an fsync (~50 ms measured here) and bulk upserts stall.
        Program("mongo", [str(local / "bin" / "ferretdb"), *_ferretdb_backend(env, svc, pg_port),
                          f"--listen-addr=127.0.0.1:{mongo_port}", f"--state-dir={svc / 'mongo' / 'state'}",
                          "--debug-addr=-", "--telemetry=disable", "--log-level=warn"],
                ports=[mongo_port], health=mongo_ping(mongo_port), address=f"mongodb://127.0.0.1:{mongo_port}/",
                # Go's collector at its default (GOGC=100) took ~20% of FerretDB's CPU on the worker's
                # writes; at 400 it runs a quarter as often for ~15 MB more (docs/benchmarks.md)
                env={"GOGC": env.get("FERRETDB_GOGC", "400")}),
        # PostgreSQL for FerretDB (MONGO_BACKEND=postgresql): Debian's server binaries, a cluster of our
        # own in services/postgres/data (bin/services runs initdb; trust auth, loopback only), run as
        # the `postgres` user when we are root (the server refuses root). It stores the review pages
        # in about a third of SQLite's bytes (docs/benchmarks.md), which is what lets the big run fit.
        Program("postgres", [*_as_postgres_user(), str(_postgres_bin() / "postgres"), "-D", str(svc / "postgres" / "data"),
                             "-h", "127.0.0.1", "-p", str(pg_port), "-k", str(svc / "postgres" / "run"),
                             "-c", f"shared_buffers={env.get('POSTGRES_SHARED_BUFFERS', '256MB')}",
                             "-c", f"synchronous_commit={env.get('POSTGRES_SYNCHRONOUS_COMMIT', 'on')}",
                             "-c", "max_wal_size=4GB"],
                ports=[pg_port], health=pg_ready(pg_port),
                address=f"postgres://postgres@127.0.0.1:{pg_port}/ferretdb (FerretDB's storage)",
                start_timeout_s=210, stop_wait_s=60),  # after an unclean stop it replays its WAL first
        Program("kafka", [env.get("JAVA") or "java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                          "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                          f"-Dlog4j.configuration=file:{HERE / 'kafka' / 'log4j.properties'}",
                          "-cp", f"{kafka_home / 'libs'}/*", "kafka.Kafka", str(svc / "kafka" / "server.properties")],
                ports=[kafka_port, controller_port], health=kafka_ready(kafka_port),
                address=f"127.0.0.1:{kafka_port} (controller 127.0.0.1:{controller_port})",
                start_timeout_s=_whole_number("KAFKA_START_TIMEOUT", 120), stop_wait_s=60),
        # bin/services exports Airflow's settings (airflow_env) before it writes this program.
        Program("airflow", [str(local / "airflow-venv" / "bin" / "airflow"), "standalone"],
                ports=[airflow_port], address=f"http://127.0.0.1:{airflow_port}/",
                health=http_ok(f"http://127.0.0.1:{airflow_port}/api/v2/monitor/health",
                               f"http://127.0.0.1:{airflow_port}/health"),
                start_timeout_s=_whole_number("AIRFLOW_START_TIMEOUT", 300), stop_wait_s=30,
                fail_marker="\nException in thread"),  # standalone lives on when a component dies
        # Loopback only, plain HTTP: DEBUG unless the caller decides (DJANGO_DEBUG=0 for production
        # settings). Everything else (workers, threads, limits, no trusted X-Forwarded-Proto) is
        # recsite/gunicorn.conf.py's, as in the compose file and the image.
        # PROMETHEUS_MULTIPROC_DIR: /metrics adds up the gunicorn workers (recsite/recsite/metrics.py).
        Program("web", [str(venv / "gunicorn"), "-c", str(ROOT / "recsite" / "gunicorn.conf.py"),
                        "--bind", f"127.0.0.1:{web_port}"],
                ports=[web_port], health=http_ok(f"http://127.0.0.1:{web_port}/healthz"),
                address=f"http://127.0.0.1:{web_port}/",
                env={**app_env, "PROMETHEUS_MULTIPROC_DIR": str(state / "run" / "web-metrics")},
                env_defaults={"DJANGO_DEBUG": "1"}),
        # WORKERS processes, one consumer-group member each; process n serves /healthz, /readyz and
        # /metrics on WORKER_METRICS_PORT + n (kafka_workers/metrics.py). Started = ready: its loop
        # turns and Kafka answered its consumer. With no broker at all it exits at once
        # (NoBrokersAvailable, its log's last error); one that never answers its group fails the
        # start after start_timeout_s with what /readyz says.
        Program("worker", [f"WORKER_PROCESS_NUM={PROCESS_NUM}", str(venv / "python"), "-m", "kafka_workers.worker"],
                numprocs=workers, ports=[metrics_base + n for n in range(workers)],
                health=_worker_ready(metrics_base),
                why_not=_worker_readyz_says(metrics_base, env.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{kafka_port}"),
                address=(f"{workers} Kafka consumer process(es), /metrics /healthz /readyz on 127.0.0.1:{metrics_base}"
                         + (f"-{metrics_base + workers - 1}" if workers > 1 else "")),
                env={**app_env, "WORKER_METRICS_PORT": str(metrics_base)}, stop_wait_s=30, start_timeout_s=60),
        # Two Celery workers (kafka_workers/celery_app.py): "celery" runs beat and the periodic
        # refreshes (queue "celery"), "celery-rescore" only the re-scoring after a new model (queue
        # "rescore"), which can run for hours: in one worker trending and popular waited behind it.
        # `bin/services start celery` starts both. Beat's schedule is the state dir's, so a private
        # state dir's beat does not share the file with the shared one's.
        # Started = its log says "<node> ready.", written once it is connected to the broker (%h is
        # the host name). It keeps retrying a broker that is down: its "Cannot connect to" line fails
        # the start at once. The token sweep (kafka_workers.tasks.delete_expired_tokens) loads the
        # site's settings, so DEBUG as for web unless the caller decides.
        Program("celery", [str(venv / "celery"), "-A", "kafka_workers.celery_app", "worker", "-B",
                           "-s", str(state / "run" / "celerybeat-schedule"), "-Q", "celery", "-n", "default@%h",
                           "--concurrency", env.get("CELERY_CONCURRENCY", "1"), "-l", "info"],
                address=f"Celery worker (queue celery) + beat on {redis_url}", env=app_env, start_secs=3,
                health=log_says(logs / "celery.log", f"default@{socket.gethostname()} ready."),
                fail_marker="consumer: Cannot connect to", start_timeout_s=60, stop_wait_s=30,
                env_defaults={"DJANGO_DEBUG": "1"}),
        Program("celery-rescore", [str(venv / "celery"), "-A", "kafka_workers.celery_app", "worker",
                                   "-Q", "rescore", "-n", "rescore@%h", "--concurrency", "1", "-l", "info"],
                address=f"Celery worker (queue rescore) on {redis_url}", env=app_env, start_secs=3,
                health=log_says(logs / "celery-rescore.log", f"rescore@{socket.gethostname()} ready."),
                fail_marker="consumer: Cannot connect to", start_timeout_s=60, stop_wait_s=30),
        # An S3-compatible object store (gofakes3, MIT, built from its Go module by bin/services) with
        # one bucket: DATA_DIR / ARTIFACTS_DIR = s3a://<bucket>/... for a cluster's shared storage.
        Program("s3", [str(local / "bin" / "gofakes3"), "-host", f"127.0.0.1:{s3_port}", "-backend", "bolt",
                       "-bolt.db", str(svc / "s3" / "objects.bolt"), "-initialbucket", bucket, "-quiet"],
                ports=[s3_port], health=http_ok(f"http://127.0.0.1:{s3_port}/{bucket}?list-type=2&max-keys=1"),
                address=f"http://127.0.0.1:{s3_port}/ (bucket {bucket})", start_timeout_s=20),
        # A Spark standalone cluster from the venv's pyspark: `bin/services start spark` = these three.
        Program("spark-master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                                 "--port", str(spark_port), "--webui-port", str(spark_ui)],
                ports=[spark_port, spark_ui], health=_json_says(f"http://127.0.0.1:{spark_ui}/json/", '"ALIVE"'),
                address=f"spark://127.0.0.1:{spark_port} (UI http://127.0.0.1:{spark_ui}/)", env=spark_env,
                start_timeout_s=60, stop_wait_s=30),
        *[Program(f"spark-worker-{n}", [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                                        "--cores", env.get("SPARK_WORKER_CORES") or "1",
                                        "--memory", env.get("SPARK_WORKER_MEMORY") or "3g",
                                        "--webui-port", str(spark_ui + n), "--work-dir", str(svc / f"spark-worker-{n}" / "work"),
                                        f"spark://127.0.0.1:{spark_port}"],
                  ports=[spark_ui + n], env=spark_env, start_timeout_s=60, stop_wait_s=30,
                  # each application leaves its files (~270 MB: the shipped code, logs) in the work
                  # dir; without cleanup a day of test runs filled 5 GB
                  env_defaults={"SPARK_WORKER_OPTS": "-Dspark.worker.cleanup.enabled=true "
                                "-Dspark.worker.cleanup.interval=600 -Dspark.worker.cleanup.appDataTtl=3600"},
                  health=log_says(logs / f"spark-worker-{n}.log", "Successfully registered with master", spark_ui + n),
                  address=f"{env.get('SPARK_WORKER_CORES') or 1} core(s), {env.get('SPARK_WORKER_MEMORY') or '3g'} "
                          f"(UI http://127.0.0.1:{spark_ui + n}/)")
          for n in (1, 2)],
    ]


def _ferretdb_backend(env: Mapping[str, str], svc: Path, pg_port: int) -> list[str]:
    if env.get("MONGO_BACKEND", "sqlite") == "postgresql":
        return ["--handler=pg", f"--postgresql-url=postgres://postgres@127.0.0.1:{pg_port}/ferretdb"]
    # Small WAL checkpoints: SQLite copies the WAL into the database inside the write that crosses
    # the threshold, ~15 ms at its default 1,000 pages, which was the worker's p99; at 250 pages the
    # pauses are a quarter as long and bulk writes as fast (docs/benchmarks.md).
    return ["--handler=sqlite", f"--sqlite-url=file:{svc / 'mongo' / 'data'}/?_pragma=synchronous("
                                f"{env.get('FERRETDB_SQLITE_SYNCHRONOUS', 'normal')})&_pragma=wal_autocheckpoint("
                                f"{_whole_number('FERRETDB_SQLITE_WAL_AUTOCHECKPOINT', 250)})"]


def redis_log(data: Path, timeout_s: float = 600) -> None:
    """Give a data folder holding only a snapshot (``dump.rdb``, from before the append-only log)
    its log, before the server starts: Redis started with ``--appendonly yes`` reads the log alone
    and would start empty. A temporary server on a unix socket (no TCP port, no snapshots) loads
    the snapshot, writes the log whole (``CONFIG SET appendonly yes``) and shuts down; after that
    every start is ``--appendonly yes``. Turning the log on in the running server instead left
    supervisord's command line without it, so a crash's autorestart read the old snapshot."""
    if not (data / "dump.rdb").exists() or (data / "appendonlydir" / "appendonly.aof.manifest").exists():
        return
    with tempfile.TemporaryDirectory(prefix="redis-log-") as tmp, tempfile.TemporaryFile() as out:
        sock = Path(tmp) / "redis.sock"  # short: a unix socket's path has at most 107 bytes
        server = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock), "--dir", str(data),
                                   "--appendonly", "no", "--save", "", "--daemonize", "no"],
                                  stdout=out, stderr=subprocess.STDOUT)
        try:
            _redis_convert(server, sock, data, time.monotonic() + timeout_s)
        except (OSError, RuntimeError) as exc:
            out.seek(0)
            lines = out.read().decode("utf-8", "replace").strip().splitlines()
            said = ([line for line in lines if " # " in line] or lines)[-3:]  # " # ": Redis's warnings
            raise SystemExit(f"services: redis: could not add the append-only log to the snapshot in {data}: "
                             f"{exc}" + "".join(f"\n  {line[:200]}" for line in said))
        finally:
            if server.poll() is None:
                server.kill()
            server.wait()


def _redis_convert(server: subprocess.Popen, sock: Path, data: Path, deadline: float) -> None:
    """redis_log's steps, with the temporary ``server`` on ``sock`` (redis-py, from the app's
    virtualenv, as ``wait`` uses supervisor's); a command that fails is a RuntimeError."""
    import redis

    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=30)

    def call(*words: str):
        try:
            return client.execute_command(*words)
        except redis.RedisError as exc:
            raise RuntimeError(str(exc) or exc.__class__.__name__) from None

    def wait_for(what: str, ready: Callable[[], bool]) -> None:
        while not ready():
            if server.poll() is not None:
                raise RuntimeError(f"the temporary server exited (code {server.returncode}) before {what}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def answers() -> bool:  # LOADING while it reads the snapshot, no socket before it listens
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def log_written() -> bool:
        info = call("INFO", "persistence")
        if info.get("aof_last_bgrewrite_status") == "err":
            raise RuntimeError("Redis could not write the log (aof_last_bgrewrite_status:err)")
        return (info.get("aof_enabled") == 1 and info.get("aof_rewrite_in_progress") == 0
                and info.get("aof_rewrite_scheduled") == 0
                and (data / "appendonlydir" / "appendonly.aof.manifest").exists())

    wait_for("it loaded the snapshot", answers)
    call("CONFIG", "SET", "appendonly", "yes")
    wait_for("the log was written", log_written)
    try:
        client.execute_command("SHUTDOWN")
    except redis.ConnectionError:
        pass  # it closes the connection as it exits
    try:
        code = server.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise RuntimeError("the temporary server did not shut down") from None
    if code != 0:
        raise RuntimeError(f"the temporary server exited with code {code} at shutdown")


def _postgres_bin() -> Path:
    """POSTGRES_BIN, else the newest Debian server install (/usr/lib/postgresql/<major>/bin)."""
    if os.environ.get("POSTGRES_BIN"):
        return Path(os.environ["POSTGRES_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


def _pyspark_home(local: Path) -> Path:
    """pyspark's folder in the app's venv (its bin/spark-class starts a master or a worker)."""
    found = sorted((local / "venv" / "lib").glob("python3*/site-packages/pyspark"))
    return found[-1] if found else local / "venv" / "pyspark-not-installed"


def _json_says(url: str, text: str) -> Health:
    """The URL answers and its body contains ``text`` (the Spark master's status says ALIVE)."""
    def check(_num: int, _offset: int) -> bool:
        try:
            with _opener.open(url, timeout=3) as r:
                return text in r.read().decode("utf-8", "replace")
        except OSError:
            return False
    return check


def _worker_ready(base: int) -> Health:
    """Process n answers /readyz on ``base + n``: its loop turns and Kafka answered its consumer.
    /healthz was the check, and it is 200 while the loop turns with no broker answering (poll()
    returns nothing): a worker that consumed nothing counted as started."""
    def check(num: int, offset: int) -> bool:
        return http_ok(f"http://127.0.0.1:{base + num}/readyz")(num, offset)
    return check


def _worker_readyz_says(base: int, kafka: str) -> Callable[[int], str]:
    """Why process n is not ready, from its /readyz (kafka_workers/metrics.py), for the failed start's line."""
    def why(num: int) -> str:
        url = f"http://127.0.0.1:{base + num}/readyz"
        try:
            with _opener.open(url, timeout=3) as r:
                body = r.read()
        except urllib.error.HTTPError as exc:  # 503: not ready, the body says why
            body = exc.read()
        except OSError as exc:
            return f"worker_{num}: no answer on {url} ({exc.__class__.__name__})"
        try:
            status = str(json.loads(body).get("status"))
        except (ValueError, AttributeError):
            status = repr(body[:80])
        if status == "no-broker":
            return f"worker_{num}'s /readyz says no-broker: Kafka at {kafka} has not answered its consumer"
        return f"worker_{num}'s /readyz says {status}"
    return why


def program(name: str) -> Program:
    for p in programs():
        if p.name == name:
            return p
    raise SystemExit(f"services: unknown program {name!r}")


# --- supervisord configuration ---------------------------------------------------------------------

def _dirs() -> tuple[Path, Path]:
    local = Path(os.environ.get("LOCAL_DIR") or ROOT / ".local")
    state = Path(os.environ.get("SERVICES_STATE_DIR") or local)
    return state / "run", state / "log"


def socket_path() -> Path:
    return _dirs()[0] / "supervisor.sock"


def conf() -> str:
    run, log = _dirs()
    return f"""; written by services/programs.py for this state dir; programs are in programs/*.conf
[unix_http_server]
file={socket_path()}
chmod=0700

[supervisord]
logfile={log / 'supervisord.log'}
logfile_maxbytes=10MB
logfile_backups=1
pidfile={run / 'supervisord.pid'}
childlogdir={log}
identifier={run.parent}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{socket_path()}

[include]
files = {run / 'programs'}/*.conf
"""


def _quote(arg: str) -> str:
    """One command word for supervisord: shell-quoted, ``%`` escaped except our process number."""
    return shlex.quote(arg).replace("%", "%%").replace(PROCESS_NUM.replace("%", "%%"), PROCESS_NUM)


def _one_log_each(p: Program) -> bool:
    return p.numprocs > 1 or any(PROCESS_NUM in c for c in p.command)


def log_files(p: Program) -> list[Path]:
    """The program's log files: ``log/NAME.log``, or one per process (``log/NAME_<n>.log``)."""
    log = _dirs()[1]
    if _one_log_each(p):
        return [log / f"{p.name}_{n}.log" for n in range(p.numprocs)]
    return [log / f"{p.name}.log"]


def section(p: Program, env_file: Path) -> str:
    run, log = _dirs()
    many = _one_log_each(p)
    log_file = log / (f"{p.name}_%(process_num)d.log" if many else f"{p.name}.log")
    command = " ".join(_quote(c) for c in [str(HERE / "run_with_env"), str(env_file), *p.command])
    return f"""[program:{p.name}]
command={command}
process_name=%(program_name)s{'_%(process_num)d' if many else ''}
numprocs={p.numprocs}
directory={p.directory}
autostart=false
autorestart=true
startsecs={p.start_secs}
startretries=3
stopsignal=TERM
stopwaitsecs={p.stop_wait_s}
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={log_file}
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=1
"""


def write(name: str) -> None:
    """The program's section and its environment: the caller's, then the program's own settings.

    The environment goes to a temporary file renamed over the recording, so that a reader (the
    program's restart by supervisord, bin/services' as_started) sees the old one or the new one,
    whole: truncated in place, an empty or partial one unset every setting, and bin/services then
    asked about <repo>/.local's servers on the default ports."""
    p = program(name)
    run, _ = _dirs()
    (run / "programs").mkdir(parents=True, exist_ok=True)
    env = {**p.env_defaults, **os.environ, **p.env}
    env_file = run / f"{name}.env"
    env_tmp = run / f"{name}.env.tmp"
    fd = os.open(env_tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # may hold secrets
    with os.fdopen(fd, "wb") as f:
        f.write(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items() if "\0" not in v))
    env_tmp.replace(env_file)
    tmp = run / "programs" / f"{name}.conf.tmp"
    tmp.write_text(section(p, env_file))
    tmp.replace(run / "programs" / f"{name}.conf")


# --- processes left behind by a supervisord that died -------------------------------------------

def _exec_words(p: Program) -> list[str]:
    """The words the program's process runs: its command without the leading NAME=value settings
    (run_with_env's) and without setpriv's switch to the postgres user."""
    words = p.command
    while words and "=" in words[0] and not words[0].startswith(("/", "-")):
        words = words[1:]
    wrapper = _as_postgres_user()
    if wrapper and words[:len(wrapper)] == wrapper:
        words = words[len(wrapper):]
    return words


def runs(name: str, pid: int) -> bool:
    """Whether process ``pid`` is this state dir's ``name``, so that bin/services stops an orphan of
    a killed supervisord but never some other process that holds the port (another state dir's,
    or not ours at all). Its command line (/proc) ends with the program's command (an interpreter
    may come first: a script's shebang), and its environment, when readable, names this state dir
    (run_with_env passes SERVICES_STATE_DIR on). redis-server overwrites both with its title
    ("redis-server 127.0.0.1:PORT"): there the same executable in the data folder of its --dir
    (it works there) counts."""
    p = program(name)
    proc = Path(f"/proc/{pid}")
    try:
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").removesuffix("\0").split("\0")
        environ = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
        cwd = (proc / "cwd").resolve()
    except OSError:
        return False
    want = _exec_words(p)
    if not want:
        return False
    state = f"SERVICES_STATE_DIR={os.environ.get('SERVICES_STATE_DIR', '')}"
    if any(e.startswith("SERVICES_STATE_DIR=") for e in environ) and state not in environ:
        return False
    if len(argv) >= len(want) and all(PROCESS_NUM in w or a == w for a, w in zip(argv[-len(want):], want)):
        return True
    title = argv[0].split()
    return (not any(argv[1:]) and bool(title) and Path(title[0]).name == Path(want[0]).name
            and "--dir" in want and cwd == Path(want[want.index("--dir") + 1]).resolve())


# --- waiting for health ----------------------------------------------------------------------------

SUPERVISOR_ANSWER_S = 10  # also bin/services' limit for its supervisorctl calls (its CTL_ANSWER_S, from `figures`)


def supervisor() -> xmlrpc.client.ServerProxy:
    from supervisor.xmlrpc import SupervisorTransport

    # its connection's socket takes the default timeout: an ask of a frozen supervisord ends (process_infos)
    socket.setdefaulttimeout(SUPERVISOR_ANSWER_S)
    return xmlrpc.client.ServerProxy("http://127.0.0.1",
                                     transport=SupervisorTransport(None, None, f"unix://{socket_path()}"))


def process_infos(rpc: xmlrpc.client.ServerProxy, name: str) -> list[dict]:
    """supervisord's process infos of program ``name``. One that took the connection but does not
    answer (SIGSTOPped, hung) kept status and start waiting for good: after SUPERVISOR_ANSWER_S
    this exits 124, as timeout(1) does, which bin/services names."""
    try:
        infos = rpc.supervisor.getAllProcessInfo()
    except TimeoutError:
        print(f"supervisord did not answer within {SUPERVISOR_ANSWER_S}s", file=sys.stderr)
        raise SystemExit(124) from None
    return [i for i in infos if i["group"] == name]


# supervisord's process states, most telling first, and the word bin/services status shows for each
_STATE_WORDS = {"FATAL": "fatal", "BACKOFF": "backoff", "STARTING": "starting", "STOPPING": "stopping",
                "UNKNOWN": "unknown"}


def state_line(p: Program, infos: list[dict]) -> str:
    """One status line's "STATE PIDS DETAIL" for program ``p`` from supervisord's process infos
    (getAllProcessInfo, this program's entries). "running" only when every process runs; while
    supervisord restarts a crashing program (STARTING, BACKOFF) or has given up on it (FATAL),
    that state, where status once said "stopped" (it counted RUNNING processes only)."""
    states = [i["statename"] for i in infos]
    pids = ",".join(str(i["pid"]) for i in infos if i.get("pid")) or "-"
    logs = " ".join(_shown(f) for f in log_files(p))
    word = next((w for s, w in _STATE_WORDS.items() if s in states), "")
    running = states.count("RUNNING")
    if states and running == len(states):
        return f"running {pids} {p.address}"
    if word == "fatal":
        return f"fatal {pids} exited too quickly, supervisord gave up restarting it: see {logs}"
    if word == "backoff":
        return f"backoff {pids} exited during its start, supervisord tries again: see {logs}"
    if word:
        return f"{word} {pids} {p.address}"
    if running:
        return f"partial {pids} {running} of {len(states)} processes running: see {logs}"
    return f"stopped - {p.address}"


def _shown(path: Path) -> str:
    """A path as bin/services shows it: relative to the repository when inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def wait(name: str, timeout_s: float, log_offsets: list[int], retrying: bool = False) -> int:
    """0 once every process of ``name`` passes its health check; 1 with one line on stderr if one
    exits (supervisord says so) or it does not answer within ``timeout_s``. ``log_offsets``: each
    of its log files' size before the start (``log_files`` order; missing ones 0), so that a
    program with one log per process is read where it writes (it was read from NAME.log).
    ``retrying``: supervisord is (re)starting it (bin/services found it STARTING or in BACKOFF), so
    a BACKOFF is not the end: the wait lasts while supervisord tries again (its startretries bound
    that), until every process runs (then the health check, within ``timeout_s``) or supervisord
    gives up (FATAL)."""
    p = program(name)
    logs = log_files(p)
    offsets = [*log_offsets, *[0] * len(logs)][:len(logs)]
    deadline = time.monotonic() + timeout_s
    rpc = supervisor()
    ended = ("EXITED", "FATAL", "STOPPED") if retrying else ("EXITED", "FATAL", "BACKOFF", "STOPPED")
    while True:
        states = process_infos(rpc, name)
        if retrying and any(i["statename"] in ("STARTING", "BACKOFF") for i in states):
            deadline = time.monotonic() + timeout_s  # the health check's time starts once all run
            time.sleep(0.3)
            continue
        gone = [i for i in states if i["statename"] in ended]
        if gone or not states:
            what = "supervisord's tries to start it ended" if retrying else "exited during startup"
            print(f"{what} ({', '.join(i['name'] + ' ' + i['statename'] for i in gone)})", file=sys.stderr)
            return 1
        if p.fail_marker and any(p.fail_marker in _log_since(log, offset) for log, offset in zip(logs, offsets)):
            print(f"its log says {p.fail_marker.strip()!r}", file=sys.stderr)
            return 1
        passed = [p.health is None or p.health(n, offsets[n if len(logs) > 1 else 0]) for n in range(p.numprocs)]
        if all(passed):
            return 0
        if time.monotonic() > deadline:
            why = [p.why_not(n) for n, ok in enumerate(passed) if not ok] if p.why_not else []
            said = f"not ready within {timeout_s:.0f}s: {'; '.join(why)}" if why else ""
            print(said or f"did not answer within {timeout_s:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.3)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "conf":
        sys.stdout.write(conf())
    elif cmd == "write":
        write(args[0])
    elif cmd == "ports":
        print(" ".join(map(str, program(args[0]).ports)))
    elif cmd == "logs":
        print("\n".join(map(str, log_files(program(args[0])))))
    elif cmd == "runs":  # runs NAME PID: exit 0 when PID runs NAME's command
        return 0 if runs(args[0], int(args[1])) else 1
    elif cmd == "address":
        print(program(args[0]).address)
    elif cmd == "last-error":
        sizes = [line.split(" ", 1) for line in sys.stdin.read().splitlines() if " " in line]
        print(last_error([(int(size), Path(path)) for size, path in sizes]))
    elif cmd == "state":  # only asked while supervisord answers
        print(state_line(program(args[0]), process_infos(supervisor(), args[0])))
    elif cmd == "figures":
        print(SUPERVISOR_ANSWER_S)
        for p in programs():
            print(p.name, p.start_secs, p.stop_wait_s)
    elif cmd == "redis-log":
        redis_log(Path(args[0]))
    elif cmd == "postgres-bin":
        print(_postgres_bin())
    elif cmd == "as-postgres":  # bin/services' initdb and checks, as the server itself runs
        command = [*_as_postgres_user(), *args]
        os.execvp(command[0], command)
    elif cmd == "wait":
        p = program(args[0])
        timeout = float(args[1]) if len(args) > 1 and args[1] else p.start_timeout_s
        offsets = [int(o) for o in args[2].split(",") if o] if len(args) > 2 else []
        return wait(args[0], timeout, offsets, retrying=args[3:4] == ["retrying"])
    else:
        print(f"programs.py: unknown command {cmd!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
