"""services/programs.py: the supervisord sections it writes from the program list."""
from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest
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


def test_redis_keeps_an_append_only_log_once_it_has_one(programs, tmp_path):
    """Snapshots alone lost up to an hour of Celery's queue, the limits' counts and trending's marks
    on a crash. A data folder holding only a snapshot (kept before the log was on) must still start
    from it: Redis with the log on reads the log alone, and would start empty. There bin/services
    turns the log on once the server runs (after_start_redis: CONFIG SET appendonly yes)."""
    data = tmp_path / "services" / "redis" / "data"

    def appendonly() -> bool:
        words = programs.program("redis").command
        return "--appendonly" in words and words[words.index("--appendonly") + 1] == "yes"

    assert appendonly()  # a new data folder: the log from the start
    data.mkdir(parents=True)
    (data / "dump.rdb").write_bytes(b"REDIS")
    assert not appendonly()  # a snapshot only: read it
    (data / "appendonlydir").mkdir()
    assert not appendonly()  # a log begun, not finished: the snapshot is still the whole data
    (data / "appendonlydir" / "appendonly.aof.manifest").write_text("file appendonly.aof.1.base.rdb seq 1 type b\n")
    assert appendonly()
