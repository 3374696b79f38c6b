"""The DAG's Spark tasks: a job that failed for a reason a retry cannot fix is not retried, and one
killed before it recorded its end has its record say so.

A job exits core.runs.EXIT_PERMANENT for such a failure (spark_jobs/common.run_job); the task
(dags/recommender/operators.SparkJobOperator) turns that exit status of spark-submit into
AirflowFailException, which Airflow does not retry, and leaves every other failure to the retries.
Checked with Airflow itself, in its own venv (``bin/services install airflow``), with the
provider's real hook running a stand-in spark-submit that exits as told: no Airflow run, no Spark.
This checkout's code is put first on the import path, whichever checkout the venv has installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.runs import EXIT_PERMANENT

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

PROBE = f"""
import importlib.util, json, os, sys
sys.path[:0] = [{str(ROOT)!r}, {str(DAGS)!r}]
spec = importlib.util.spec_from_file_location("recommender_pipeline", {str(DAGS / "recommender_pipeline.py")!r})
p = importlib.util.module_from_spec(spec)
spec.loader.exec_module(p)
out = {{}}
for status in sys.argv[1:]:
    os.environ["STUB_EXIT"] = status
    try:
        p.dag.get_task("clean").execute({{"params": {{"rerun": []}}}})
        out[status] = {{"error": None}}
    except Exception as exc:
        out[status] = {{"error": type(exc).__name__, "message": str(exc)}}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    from core.settings import get_settings

    python = get_settings().local_dir / "airflow-venv" / "bin" / "python"
    assert python.exists(), f"no Airflow venv at {python.parent.parent}: run bin/services install airflow"
    return python


def test_a_permanent_failure_fails_the_task_without_retries_and_others_are_retried(airflow_python, tmp_path):
    stub = tmp_path / "spark-submit"
    stub.write_text('#!/bin/sh\necho "stand-in spark-submit $*"\nexit "$STUB_EXIT"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW_CONN_SPARK_DEFAULT="spark://local%5B1%5D", SPARK_SUBMIT_BINARY=str(stub),
               LOCAL_DIR=str(tmp_path / "local"), DATA_DIR=str(tmp_path / "data"))
    done = subprocess.run([str(airflow_python), "-c", PROBE, str(EXIT_PERMANENT), "1", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # AirflowFailException: the task fails at once; AirflowException: Airflow retries it
    assert out[str(EXIT_PERMANENT)]["error"] == "AirflowFailException", out
    assert "spark_jobs/clean.py failed for a reason a retry cannot fix" in out[str(EXIT_PERMANENT)]["message"]
    assert out["1"]["error"] == "AirflowException", out
    assert out["0"] == {"error": None}


KILLED_STUB = """#!{python}
# spark-submit whose job recorded "started" (as spark_jobs.common.job_records does), then died with STUB_EXIT
import json, os, sys, time
sys.path.insert(0, {root!r})
from core import storage
from core.runs import record_path
args = sys.argv[1:]
storage.write_text(record_path(args[args.index("--run-id") + 1], "clean"),
                   json.dumps({{"status": "started", "started_at": time.time()}}))
sys.exit(int(os.environ["STUB_EXIT"]))
"""


def test_a_job_killed_half_way_has_its_record_say_so_and_is_retried(airflow_python, tmp_path, mongo_db):
    """Spark's driver exits 52 on an OutOfMemoryError and takes the job's Python with it, which left
    the record "started" with no error; the task records the exit status, in the file (the record
    of truth) and in MongoDB's copy the admin shows (through the app's Python: the Airflow venv has
    no pymongo, and the copy stayed "started"), and leaves the retry to Airflow."""
    from core import mongo

    stub = tmp_path / "spark-submit"
    stub.write_text(KILLED_STUB.format(python=sys.executable, root=str(ROOT)))
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW_CONN_SPARK_DEFAULT="spark://local%5B1%5D", SPARK_SUBMIT_BINARY=str(stub),
               LOCAL_DIR=str(tmp_path / "local"), DATA_DIR=str(tmp_path / "data"), APP_PYTHON=sys.executable)
    done = subprocess.run([str(airflow_python), "-c", PROBE, "52"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["52"]["error"] == "AirflowException", out  # retried
    [path] = (tmp_path / "data" / "runs").glob("*/clean.json")
    record = json.loads(path.read_text())
    assert (record["status"], record["exit_status"]) == ("failed", 52), record
    assert "Spark's driver ran out of memory" in record["error"]
    copy = mongo_db[mongo.PIPELINE_RUNS].find_one({"_id": f"{path.parent.name}:clean"})
    assert copy is not None and (copy["status"], copy["exit_status"]) == ("failed", 52), copy
