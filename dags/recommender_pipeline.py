"""The daily batch pipeline: load -> clean -> mongo_load -> eda -> train -> evaluate -> publish.

Each Spark step is ``spark-submit --py-files <zip> spark_jobs/<job>.py ... --run-id <id>`` through
the Spark provider's SparkSubmitOperator, exactly what ``bin/pipeline`` does by hand, so a run
behaves the same from the shell and from Airflow (the zip of core/ and spark_jobs/ is built from the
installed package right before each submit, see spark_jobs/pyfiles.py). ``evaluate`` is not a Spark job: ``train`` evaluates the
model itself and writes its record (``$DATA_DIR/runs/<run id>/train.json``, see
spark_jobs/reconcile.write_record); ``evaluate`` reads that file and hands the model version and
its metrics to ``publish`` through XCom. The publish gate (is the new model good enough?) is
spark_jobs/publish.py's decision; the DAG only adds ``--force`` when the ``force_publish`` param
is set.

Why the jobs run with the *app's* spark-submit: Airflow has its own virtualenv (its pins clash with
the app's, see requirements-airflow.txt), which has neither pyspark nor the app's libraries. The
binary is ``<app venv>/bin/spark-submit`` and the driver/executor Python is the app venv's python
(``PYSPARK_PYTHON``).

Environment (read where the DAG file is parsed, i.e. also by the worker that runs a task):

- ``AIRFLOW_CONN_SPARK_DEFAULT`` -- the Spark master, as connection ``spark_default`` (another id:
  ``SPARK_CONN_ID``). The provider builds ``--master`` from it: a ``spark`` connection whose host
  has no port is used verbatim, so a local master is the URL-encoded host ``local[*]``; with a
  port it becomes ``spark://host:port``::

      AIRFLOW_CONN_SPARK_DEFAULT='spark://local%5B%2A%5D'                 # --master local[*]
      AIRFLOW_CONN_SPARK_DEFAULT='spark://local%5B2%5D'                   # --master local[2]
      AIRFLOW_CONN_SPARK_DEFAULT='spark://spark-master:7077?deploy-mode=client'
                                                              # --master spark://spark-master:7077
      AIRFLOW_CONN_SPARK_DEFAULT='{"conn_type": "spark", "host": "local[*]"}'   # JSON form

  Without the connection the provider silently falls back to ``--master yarn``; the tasks refuse
  to start instead. Do not put ``spark-binary`` in the connection's extra: the provider only
  accepts bare names there (spark-submit, spark2-submit, spark3-submit); the binary is set here.
  The connection decides: spark_jobs/common.spark_session keeps the ``--master`` that
  spark-submit was given and reads ``SPARK_MASTER`` (default ``local[*]``) only when a job runs
  without one (tests, benchmarks). docker-compose sets both to the same master.
- ``SPARK_SUBMIT_BINARY`` -- the spark-submit to run; default ``<app venv>/bin/spark-submit``.
- ``APP_VENV`` -- the app's virtualenv; default: the one holding ``APP_PYTHON`` when that is set,
  else ``$LOCAL_DIR/venv`` (``LOCAL_DIR`` default ``<repo>/.local``).
- ``APP_PYTHON`` / ``PYSPARK_PYTHON`` -- the Python of the Spark driver and executors; default
  ``<app venv>/bin/python``.
- ``APP_ROOT`` -- the repository (spark_jobs/, core/, data/); default: the parent of this folder.
- ``SPARK_DRIVER_MEMORY`` -- ``--driver-memory`` (default 4g, as bin/pipeline).
- ``DEMO_INPUT`` -- the default of the ``inputs`` param (core.settings: the bundled demo files).
- ``PIPELINE_SCHEDULE`` -- the DAG's schedule (default ``@daily``); ``none`` for triggered runs only
  (what ``bin/demo --with-airflow`` sets: its run is triggered by ``bin/pipeline --airflow``).
- The jobs' own settings (``DATA_DIR``, ``ARTIFACTS_DIR``, ``MONGO_URI``, ``MONGO_DB``,
  ``LOCAL_DIR``, ``KAFKA_*``, ``SPARK_MASTER``, ...) are handed to every spark-submit when set
  (``env_vars``: in client mode spark-submit would inherit them anyway; on YARN/Kubernetes the
  provider turns them into the driver's environment). ``LOCAL_DIR`` is handed on always, the
  DAG's own: the jobs import core from the ``--py-files`` zip, which knows no repository.

Params (trigger with config): ``inputs`` (list of files or globs; relative paths are taken from
the repository), ``engine`` (auto|spark|implicit, for train), ``force_publish`` (bool).

The pipeline's run id (``--run-id``, the key of every job's record) is Airflow's run id made
file-system safe: ``manual__2025-01-01T00:00:00+00:00`` becomes
``manual__2025-01-01T00-00-00-00-00``.
"""
from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.exceptions import AirflowFailException, AirflowNotFoundException
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, BaseHook, Param, task

# The app's package is installed in the Airflow venv without its dependencies (bin/services install
# airflow, docker/airflow.Dockerfile): core.settings and spark_jobs.pyfiles use only the standard
# library, and the DAG and the jobs then agree on every default (DATA_DIR, LOCAL_DIR, DEMO_INPUT).
from core import storage
from core.settings import get_settings
from spark_jobs import pyfiles

APP_ROOT = Path(os.environ.get("APP_ROOT") or Path(__file__).resolve().parent.parent)

log = logging.getLogger(__name__)

DAG_ID = "amazon_recommender_pipeline"
_SCHEDULE = os.environ.get("PIPELINE_SCHEDULE", "@daily").strip()
SCHEDULE = None if _SCHEDULE.lower() in ("", "none") else _SCHEDULE
SPARK_CONN_ID = os.environ.get("SPARK_CONN_ID") or "spark_default"

# The variables core.settings and spark_jobs.common read; forwarded to every job when set.
JOB_ENV_VARS = (
    "LOCAL_DIR", "DATA_DIR", "ARTIFACTS_DIR", "EDA_DIR", "DEMO_INPUT",
    "MONGO_URI", "MONGO_PORT", "MONGO_DB",
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_PORT", "KAFKA_RATINGS_TOPIC", "KAFKA_DEAD_LETTER_TOPIC",
    "KAFKA_MODEL_TOPIC", "KAFKA_RATINGS_PARTITIONS", "REDIS_URL", "REDIS_PORT", "RECS_TOP_N",
    "SPARK_MASTER", "SPARK_DRIVER_MEMORY", "SPARK_SHUFFLE_PARTITIONS", "SPARK_LOG_LEVEL",
    "SPARK_UI_ENABLED", "SPARK_MAX_PARTITION_BYTES", "PYSPARK_DRIVER_PYTHON", "SPARK_EXECUTOR_MEMORY",
    "SPARK_LOCAL_IP", "S3_ENDPOINT_URL", "S3_PORT", "S3_PATH_STYLE", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
)


def fs_safe(run_id: str) -> str:
    """Airflow's run id as a file and document-id safe string (no ':' or '+', no '/').

    The jobs put the run id into paths ($DATA_DIR/runs/<id>/) and MongoDB ids ("<id>:<job>"), so
    every character outside [A-Za-z0-9._-] becomes '-'.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    if not safe:
        raise ValueError(f"run id {run_id!r} has no file-system safe characters")
    return safe


RUN_ID = "{{ run_id | fs_safe }}"


def app_venv() -> Path:
    """The app's virtualenv: APP_VENV, else the venv of APP_PYTHON, else $LOCAL_DIR/venv."""
    if os.environ.get("APP_VENV"):
        return Path(os.environ["APP_VENV"])
    if os.environ.get("APP_PYTHON"):
        return Path(os.environ["APP_PYTHON"]).parent.parent
    return get_settings().local_dir / "venv"


def spark_submit_binary() -> str:
    return os.environ.get("SPARK_SUBMIT_BINARY") or str(app_venv() / "bin" / "spark-submit")


def app_python() -> str:
    return (os.environ.get("PYSPARK_PYTHON") or os.environ.get("APP_PYTHON")
            or str(app_venv() / "bin" / "python"))


def job_env() -> dict[str, str]:
    """What every spark-submit gets: the app's Python and the jobs' settings that are set here."""
    env = {name: os.environ[name] for name in JOB_ENV_VARS if os.environ.get(name)}
    env["PYSPARK_PYTHON"] = app_python()
    # The jobs import core from the --py-files zip, which knows no repository to default to.
    env.setdefault("LOCAL_DIR", str(get_settings().local_dir))
    if "@" in env.get("MONGO_URI", ""):  # credentials: keep them out of logs and rendered fields
        from airflow.sdk.log import mask_secret

        mask_secret(env["MONGO_URI"])
    if env.get("AWS_SECRET_ACCESS_KEY"):
        from airflow.sdk.log import mask_secret

        mask_secret(env["AWS_SECRET_ACCESS_KEY"])
    return env


def input_args(params: Mapping[str, Any]) -> list[str]:
    """``--input`` once per file or glob; a relative path is taken from the repository."""
    args: list[str] = []
    for item in params["inputs"]:
        path = item if "://" in item or Path(item).is_absolute() else str(APP_ROOT / item)
        args += ["--input", path]
    return args


def force_args(params: Mapping[str, Any]) -> list[str]:
    return ["--force"] if params["force_publish"] else []


class SparkJobOperator(SparkSubmitOperator):
    """``spark-submit --py-files <zip> spark_jobs/<job>.py`` with the app's binary, Python and settings.

    ``args_from_params`` adds arguments that Jinja cannot express in ``application_args`` (a list
    param spliced into repeated ``--input`` flags, a flag present only when a param is true).
    """

    def __init__(self, *, job: str, args_from_params: Callable[[Mapping[str, Any]], list[str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(
            task_id=job,
            application=str(APP_ROOT / "spark_jobs" / f"{job}.py"),
            name=f"amazon-recommender:{job}",
            conn_id=SPARK_CONN_ID,
            spark_binary=spark_submit_binary(),
            env_vars=job_env(),
            driver_memory=os.environ.get("SPARK_DRIVER_MEMORY") or "4g",
            **kwargs,
        )
        self.args_from_params = args_from_params

    def execute(self, context: Any) -> Any:
        try:
            BaseHook.get_connection(self._conn_id)
        except AirflowNotFoundException as exc:  # the provider would quietly use --master yarn
            raise AirflowFailException(
                f"Airflow connection {self._conn_id!r} is not defined; set e.g. "
                f"AIRFLOW_CONN_{self._conn_id.upper()}='spark://local%5B%2A%5D' (local[*]) or "
                f"'spark://<host>:7077' (see the docstring of dags/recommender_pipeline.py)"
            ) from exc
        if self.args_from_params is not None:
            self.application_args = [*self.args_from_params(context["params"]), *(self.application_args or [])]
        # core/ and spark_jobs/ for the executors (and a cluster's driver), as bin/pipeline ships them
        self.py_files = str(pyfiles.build())
        settings = get_settings()  # s3a:// DATA_DIR or ARTIFACTS_DIR: hadoop-aws, as bin/pipeline passes it
        if any(storage.is_remote(w) for w in (settings.data_dir, settings.artifacts_dir)):
            self.jars = ",".join(storage.s3a_jars())
        return super().execute(context)


def read_train_record(run_id: str) -> dict[str, Any]:
    """The model version and metrics that train recorded for this run; fails when there are none."""
    path = get_settings().data_dir / "runs" / fs_safe(run_id) / "train.json"
    if not storage.is_file(path):
        raise AirflowFailException(f"train left no record at {path}: did it run with --run-id {fs_safe(run_id)}?")
    try:
        record = json.loads(storage.read_text(path))
    except json.JSONDecodeError as exc:
        raise AirflowFailException(f"train record {path} is not JSON: {exc}") from exc
    if record.get("status", "ok") != "ok":
        raise AirflowFailException(f"train recorded status {record.get('status')!r} in {path}")
    version = record.get("version") or record.get("model_version")
    if not version:
        raise AirflowFailException(f"train record {path} names no model version ('version')")
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise AirflowFailException(f"train record {path} has no evaluation metrics ('metrics')")
    return {"version": str(version), "metrics": metrics}


with DAG(
    dag_id=DAG_ID,
    description="Amazon reviews -> clean -> MongoDB -> EDA -> ALS model -> evaluated, gated publish",
    doc_md=__doc__,
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # The jobs overwrite the same $DATA_DIR folders (raw/, clean/): two runs at once would mix.
    max_active_runs=1,
    default_args={
        "owner": "recommender",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "inputs": Param([get_settings().demo_input], type="array", items={"type": "string"}, minItems=1,
                        description="review/metadata files or globs for load (relative: from the repository)"),
        "engine": Param("auto", type="string", enum=["auto", "spark", "implicit"],
                        description="training engine for train --engine"),
        "force_publish": Param(False, type="boolean",
                               description="publish even if the gate in publish.py would refuse"),
    },
    user_defined_filters={"fs_safe": fs_safe},
    tags=["recommender", "spark"],
) as dag:
    load = SparkJobOperator(job="load", application_args=["--run-id", RUN_ID], args_from_params=input_args)
    clean = SparkJobOperator(job="clean", application_args=["--run-id", RUN_ID])
    mongo_load = SparkJobOperator(job="mongo_load", application_args=["--run-id", RUN_ID])
    eda = SparkJobOperator(job="eda", application_args=["--run-id", RUN_ID])
    train = SparkJobOperator(job="train", application_args=["--engine", "{{ params.engine }}", "--run-id", RUN_ID])

    @task(multiple_outputs=True)
    def evaluate(run_id: str | None = None) -> dict[str, Any]:
        """Hand train's model version and metrics to publish (train evaluates while it trains)."""
        result = read_train_record(run_id or "")
        log.info("model %s: metrics %s", result["version"], json.dumps(result["metrics"], sort_keys=True))
        return result

    publish = SparkJobOperator(
        job="publish",
        application_args=["--version", "{{ ti.xcom_pull(task_ids='evaluate', key='version') }}", "--run-id", RUN_ID],
        args_from_params=force_args,
    )

    load >> clean >> mongo_load >> eda >> train >> evaluate() >> publish
