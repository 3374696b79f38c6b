"""The Airflow DAG (dags/recommender_pipeline.py), checked with Airflow itself.

Airflow lives in its own virtualenv (its pins clash with the app's), so every check runs the
Airflow venv's Python in a subprocess with a throwaway AIRFLOW_HOME; the venv is installed with
``bin/services install airflow`` when it is missing, never skipped. The whole DAG runs with
``airflow dags test`` once, on the Spark cluster with its data in the object store
(tests/integration/test_cluster_storage.py), and a worker then serves the model it published.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from core.runs import DEFAULT_ENGINE, ENGINES, STAGES, fs_safe

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
DAG_ID = "amazon_recommender_pipeline"
# core.runs.STAGES, after the sensor that waits for load's inputs and with evaluate before publish
CHAIN = ["wait_for_inputs", *STAGES[:-1], "evaluate", STAGES[-1]]
SPARK_TASKS = [t for t in CHAIN if t not in ("wait_for_inputs", "evaluate")]

pytestmark = pytest.mark.integration


def _local_dir() -> Path:
    from core.settings import get_settings

    return get_settings().local_dir


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    """The Airflow venv bin/services makes (CI starts from nothing), with this checkout's package in it."""
    venv = _local_dir() / "airflow-venv"
    # Always: when the venv exists this only (re)installs this repository's package into it,
    # which the DAG imports (a venv made from another checkout would import that one's code).
    r = subprocess.run([str(ROOT / "bin" / "services"), "install", "airflow"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, f"bin/services install airflow failed:\n{r.stdout}\n{r.stderr}"
    assert (venv / "bin" / "airflow").exists(), f"no airflow in {venv} after bin/services install airflow"
    return venv


def _airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAGS), **extra)
    return env


def _probe(venv: Path, home: Path, code: str, *args: str, **env: str) -> dict:
    """Run ``code`` with the Airflow venv's Python (``args`` its ``sys.argv[1:]``); it prints one JSON
    line last, returned here."""
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                       env=_airflow_env(home, **env))
    assert r.returncode == 0, f"probe failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


DAGBAG_PROBE = f"""
import json
from airflow.models.dagbag import BundleDagBag
# as the DAG processor, the task runner and `airflow dags test` parse it: the DAG folder (the
# bundle) on the import path, so the DAG file imports its helper package dags/recommender/
bag = BundleDagBag(dag_folder={str(DAGS)!r}, bundle_path={str(DAGS)!r})
out = {{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "dag_ids": sorted(bag.dags)}}
dag = bag.dags.get({DAG_ID!r})
if dag is not None:
    out["schedule"] = str(dag.schedule)
    out["catchup"] = dag.catchup
    out["params"] = dag.params.dump()
    out["engines"] = dag.params.get_param("engine").schema.get("enum")
    out["tasks"] = {{t.task_id: {{
        "up": sorted(t.upstream_task_ids), "down": sorted(t.downstream_task_ids),
        "retries": t.retries, "retry_delay": t.retry_delay.total_seconds(),
        "backoff": bool(t.retry_exponential_backoff), "max_retry_delay": t.max_retry_delay.total_seconds(),
        "application": getattr(t, "application", None), "binary": getattr(t, "_spark_binary", None),
        "conn_id": getattr(t, "_conn_id", None), "env": getattr(t, "env_vars", None),
        "args": getattr(t, "application_args", None),
        "mode": getattr(t, "mode", None), "poke_interval": getattr(t, "poke_interval", None),
        "timeout": getattr(t, "timeout", None),
    }} for t in dag.tasks}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def dagbag(airflow_venv, tmp_path_factory) -> dict:
    return _probe(airflow_venv, tmp_path_factory.mktemp("airflow-home"), DAGBAG_PROBE,
                  DATA_DIR="/srv/recs/data", MONGO_DB="airflow_dag_probe", SPARK_SUBMIT_BINARY="",
                  APP_VENV="", APP_PYTHON="", PYSPARK_PYTHON="", LOCAL_DIR=str(_local_dir()))


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag["errors"] == {}
    assert dagbag["dag_ids"] == [DAG_ID]


def test_task_graph_is_the_pipeline_chain(dagbag):
    tasks = dagbag["tasks"]
    assert sorted(tasks) == sorted(CHAIN)
    for i, task_id in enumerate(CHAIN):
        assert tasks[task_id]["up"] == CHAIN[i - 1:i], task_id
        assert tasks[task_id]["down"] == CHAIN[i + 1:i + 2], task_id


def test_schedule_params_and_retries(dagbag):
    assert dagbag["schedule"] == "@daily"
    assert dagbag["catchup"] is False
    assert dagbag["params"] == {
        "inputs": [],  # load's default: the demo files (DEMO_INPUT), or none with remove
        "remove": [],
        "engine": DEFAULT_ENGINE,
        "force_publish": False,
        "done_marker": "",  # INPUT_DONE_MARKER unset: no done marker waited for
        "rerun": [],  # no stage forced to redo its work
    }
    assert dagbag["engines"] == list(ENGINES), "the DAG's engine choices are train's"
    for task_id, t in dagbag["tasks"].items():
        assert (t["retries"], t["retry_delay"], t["backoff"], t["max_retry_delay"]) == (2, 60, True, 600), task_id


def test_load_waits_for_its_inputs_in_reschedule_mode(dagbag):
    """A sensor before load (a missing input fails load for good): reschedule mode gives the worker
    slot back between looks; INPUT_WAIT_INTERVAL and INPUT_WAIT_TIMEOUT at their defaults."""
    t = dagbag["tasks"]["wait_for_inputs"]
    assert (t["mode"], t["poke_interval"], t["timeout"]) == ("reschedule", 300, 21600)


def test_spark_tasks_submit_the_repo_jobs_with_the_app_venv(dagbag):
    venv = _local_dir() / "venv"
    for task_id in SPARK_TASKS:
        t = dagbag["tasks"][task_id]
        assert t["application"] == str(ROOT / "spark_jobs" / f"{task_id}.py")
        assert t["binary"] == str(venv / "bin" / "spark-submit")
        assert t["conn_id"] == "spark_default"
        assert t["env"]["PYSPARK_PYTHON"] == str(venv / "bin" / "python")
        assert t["env"]["DATA_DIR"] == "/srv/recs/data"
        assert t["env"]["MONGO_DB"] == "airflow_dag_probe"
        assert "{{ run_id | fs_safe }}" in t["args"], task_id
    assert dagbag["tasks"]["train"]["args"][:2] == ["--engine", "{{ params.engine }}"]
    assert "--version" in dagbag["tasks"]["publish"]["args"]


# The DAG file as a module, loaded from its path with the DAG folder on the import path, as
# Airflow's own parser does (the file imports its helpers from dags/recommender/); these probes
# call the helpers directly.
LOAD_DAG_MODULE = f"""
import importlib.util, sys
sys.path.insert(0, {str(DAGS)!r})
from recommender import operators
spec = importlib.util.spec_from_file_location("recommender_pipeline", {str(DAGS / "recommender_pipeline.py")!r})
p = importlib.util.module_from_spec(spec)
spec.loader.exec_module(p)
"""

HELPERS_PROBE = f"""
import json, sys
{LOAD_DAG_MODULE}print(json.dumps({{
    "safe": [p.fs_safe(r) for r in ("manual__2026-11-25T11:40:32.728943+00:00", "scheduled__2025-01-01T00:00:00+00:00")],
    "inputs": p.load_args({{"inputs": ["data/x.jsonl.gz", "/abs/*.json.gz"], "remove": ["old.jsonl"]}}),
    "force": [p.force_args({{"force_publish": True}}), p.force_args({{"force_publish": False}})],
    "binary": operators.spark_submit_binary(),
    "python": operators.app_python(),
}}))
"""


def test_run_ids_inputs_and_force_flag(airflow_venv, tmp_path):
    out = _probe(airflow_venv, tmp_path, HELPERS_PROBE, APP_PYTHON="/opt/app-venv/bin/python",
                 SPARK_SUBMIT_BINARY="", APP_VENV="", PYSPARK_PYTHON="")
    assert out["safe"] == ["manual__2026-11-25T11-40-32.728943-00-00", "scheduled__2025-01-01T00-00-00-00-00"]
    assert out["inputs"] == ["--input", str(ROOT / "data" / "x.jsonl.gz"), "--input", "/abs/*.json.gz",
                             "--remove", "old.jsonl"]
    assert out["force"] == [["--force"], []]
    # docker-compose names the app venv through APP_PYTHON
    assert (out["binary"], out["python"]) == ("/opt/app-venv/bin/spark-submit", "/opt/app-venv/bin/python")


SENSOR_PROBE = f"""
import json, os, pathlib, sys
from airflow.exceptions import AirflowFailException
{LOAD_DAG_MODULE}sensor, folder = p.dag.get_task("wait_for_inputs"), pathlib.Path(sys.argv[1])
def poke(inputs, remove=()):
    sensor.op_kwargs = {{}}  # a poke keeps the context of the one before (its params): a new run's look
    return sensor.poke({{"params": {{"inputs": inputs, "remove": list(remove)}}}}).is_done
done = [poke([str(folder / "*.jsonl.gz")])]
(folder / "Books.jsonl.gz").write_bytes(b"")  # the input arrives, maybe still being written
done.append(poke([str(folder / "*.jsonl.gz")]))
os.utime(folder / "Books.jsonl.gz", (0, 0))  # left unmodified for longer than INPUT_SETTLE_S
done.append(poke([str(folder / "*.jsonl.gz")]))
done.append(poke([str(folder / "none-such.json")], remove=["old.json"]))  # given inputs are waited for
done.append(poke([], remove=["old.json"]))  # nothing to load
try:  # inputs load refuses whatever arrives (here a folder): failed at once, not retried
    poke([str(folder)])
    refused = ""
except AirflowFailException as exc:
    refused = str(exc)
print(json.dumps({{"done": done, "refused": refused, "poke_interval": sensor.poke_interval, "timeout": sensor.timeout}}))
"""


def test_the_sensor_waits_until_an_input_names_a_file_left_unmodified(airflow_venv, tmp_path):
    (tmp_path / "in").mkdir()
    out = _probe(airflow_venv, tmp_path / "home", SENSOR_PROBE.replace("sys.argv[1]", repr(str(tmp_path / "in"))),
                 INPUT_WAIT_INTERVAL="7", INPUT_WAIT_TIMEOUT="70", INPUT_SETTLE_S="3600")
    assert out == {"done": [False, False, True, False, True], "refused": f"load would refuse its inputs: {tmp_path / 'in'} is not a file",
                   "poke_interval": 7, "timeout": 70}


OPTIONS_PROBE = f"""
import json, sys
{LOAD_DAG_MODULE}from core import runs
sensor, run_id = p.dag.get_task("wait_for_inputs"), "manual__2026-12-06T02:00:00+00:00"
sensor.op_kwargs = {{}}
params = {{"inputs": [sys.argv[1]], "remove": [], "engine": "ease", "force_publish": True, "rerun": ["clean"]}}
done = sensor.poke({{"params": params, "run_id": run_id}}).is_done
print(json.dumps({{"done": done, "options": runs.read_record(run_id, runs.OPTIONS)}}))
"""


def test_a_run_that_stops_waiting_for_its_inputs_keeps_its_options(airflow_venv, tmp_path):
    """The run's options (engine, force_publish, rerun) were recorded by the load task alone: a DAG
    run that timed out waiting for its inputs left none, and ``bin/pipeline --resume`` of it ran
    with the defaults (no stage forced). The sensor records them on its first look."""
    out = _probe(airflow_venv, tmp_path / "home", OPTIONS_PROBE.replace("sys.argv[1]", repr(str(tmp_path / "none.json"))),
                 DATA_DIR=str(tmp_path / "data"))
    assert out["done"] is False
    options = {k: v for k, v in out["options"].items() if k != "recorded_at"}
    assert options == {"engine": "ease", "force_publish": True, "rerun": ["clean", "mongo_load"]}


EVALUATE_PROBE = f"""
import json, sys
{LOAD_DAG_MODULE}out = {{}}
for run_id in json.loads(sys.argv[1]):
    try:
        out[run_id] = {{"ok": p.read_train_record(run_id)}}
    except Exception as exc:
        out[run_id] = {{"error": type(exc).__name__, "message": str(exc)}}
print(json.dumps(out))
"""

# evaluate's reading of train's record, one run id per case: every case's record is written into
# one DATA_DIR and read by one probe (each probe starts Airflow: seconds of CI apiece)
UNUSABLE_RECORDS = [
    (None, "train left no record"),
    ({"status": "failed", "version": "v1", "metrics": {"ndcg@10": 0.1}}, "status 'failed'"),
    ({"status": "ok", "metrics": {"ndcg@10": 0.1}}, "names no model version"),
    ({"status": "ok", "version": "v1"}, "no evaluation metrics"),
]
# The writer (spark_jobs.reconcile, in the app venv) and evaluate's reader (in the Airflow venv)
# must meet in one folder: the DAG hands the jobs the safe run id while evaluate reads with
# Airflow's own; bin/pipeline hands its --run-id as given.
WRITTEN_AS = {"raw id": ("manual__2026-11-25T11:40:32.728943+00:00", "manual__2026-11-25T11:40:32.728943+00:00"),
              "safe id": ("manual__2026-11-26T11-40-32.728943-00-00", "manual__2026-11-26T11:40:32.728943+00:00")}


def _unusable_run_id(i: int) -> str:
    return f"manual__2026-01-0{i + 1}T00:00:00+00:00"


@pytest.fixture(scope="module")
def evaluate_reads(airflow_venv, tmp_path_factory) -> dict:
    """What evaluate's reader returned (or raised) for every case's run id, in one probe."""
    from core.settings import get_settings
    from spark_jobs.reconcile import write_record

    data = tmp_path_factory.mktemp("evaluate-data")
    for i, (record, _) in enumerate(UNUSABLE_RECORDS):
        if record is not None:
            run_dir = data / "runs" / fs_safe(_unusable_run_id(i))
            run_dir.mkdir(parents=True)
            (run_dir / "train.json").write_text(json.dumps(record))
    (data / "runs" / "r-1").mkdir(parents=True)
    (data / "runs" / "r-1" / "train.json").write_text(json.dumps(
        {"status": "ok", "version": "20260101-abc", "metrics": {"ndcg@10": 0.12, "rmse": 0.9}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DATA_DIR", str(data))
        mp.setattr("core.mongo.record_pipeline_run", lambda *args, **kwargs: None)  # MongoDB's copy left out
        get_settings.cache_clear()
        try:
            for written_as, _ in WRITTEN_AS.values():
                write_record(written_as, "train", {"status": "ok", "version": "v-1", "metrics": {"ndcg@10": 0.1}})
        finally:
            get_settings.cache_clear()
    run_ids = [_unusable_run_id(i) for i in range(len(UNUSABLE_RECORDS))] + ["r-1"] + \
        [read_as for _, read_as in WRITTEN_AS.values()]
    return _probe(airflow_venv, tmp_path_factory.mktemp("airflow-home"),
                  EVALUATE_PROBE, json.dumps(run_ids), DATA_DIR=str(data))


@pytest.mark.parametrize("case", range(len(UNUSABLE_RECORDS)), ids=[e for _, e in UNUSABLE_RECORDS])
def test_evaluate_fails_clearly_without_a_usable_train_record(evaluate_reads, case):
    out, expected = evaluate_reads[_unusable_run_id(case)], UNUSABLE_RECORDS[case][1]
    assert out.get("error") == "AirflowFailException", out
    assert expected in out["message"]


def test_evaluate_hands_version_and_metrics_on(evaluate_reads):
    assert evaluate_reads["r-1"] == {"ok": {"version": "20260101-abc", "metrics": {"ndcg@10": 0.12, "rmse": 0.9}}}


@pytest.mark.parametrize("written_as", list(WRITTEN_AS))
def test_evaluate_finds_the_record_the_jobs_writer_wrote(evaluate_reads, written_as):
    assert evaluate_reads[WRITTEN_AS[written_as][1]] == {"ok": {"version": "v-1", "metrics": {"ndcg@10": 0.1}}}


def test_spark_task_refuses_to_run_without_the_spark_connection(airflow_venv, tmp_path):
    """The provider would otherwise submit to --master yarn; the task must say what is missing."""
    code = f"""
import json, sys
{LOAD_DAG_MODULE}try:
    p.dag.get_task("clean").execute({{"params": {{}}}})
    print(json.dumps({{"error": None}}))
except Exception as exc:
    print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
"""
    out = _probe(airflow_venv, tmp_path, code)
    assert out["error"] == "AirflowFailException"
    assert "AIRFLOW_CONN_SPARK_DEFAULT" in out["message"]


# --- helpers the whole DAG's run uses (tests/integration/test_cluster_storage.py) ---------------

def _airflow(venv: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "airflow"), *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)


def _json_output(stdout: str) -> list[dict]:
    """The JSON list an ``airflow ... -o json`` command prints (its last line starting with '[')."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("[")][-1])
