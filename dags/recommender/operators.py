"""``SparkJobOperator``: ``spark-submit`` of one of spark_jobs/ with the app's binary, Python and
settings, as ``bin/pipeline`` does by hand (the environment it reads is listed in the docstring of
dags/recommender_pipeline.py); a job that exits core.runs.EXIT_PERMANENT fails its task without
the retries, and one killed before it recorded its end has its record say so
(``python -m spark_jobs.run_records exited`` with the app's Python, as bin/pipeline does).
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from airflow.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import BaseHook

# The app's package is installed in the Airflow venv without its dependencies (bin/services install
# airflow, docker/airflow.Dockerfile): core.settings, spark_jobs.pyfiles and spark_jobs.jvm_jar use only the standard
# library, and the DAG and the jobs then agree on every default (DATA_DIR, LOCAL_DIR, DEMO_INPUT).
from core.env import env_str
from core.runs import EXIT_PERMANENT
from core.settings import get_settings
from spark_jobs import jvm_jar, pyfiles
from spark_jobs.reconcile import record_exit

from recommender.params import APP_ROOT, demo_input

log = logging.getLogger(__name__)

SPARK_CONN_ID = env_str("SPARK_CONN_ID", "spark_default")

# Every variable the jobs' code (core/ and spark_jobs/) reads, forwarded to every job when set: in
# client mode spark-submit inherits this environment anyway, but in a cluster deploy mode the driver
# sees only these, and a knob left out silently fell back to its default there. Not a list to keep
# by hand: tests/unit/test_job_env.py finds every variable core/ and spark_jobs/ read and fails on
# one neither here nor in its list of those that must not be forwarded (job_env sets
# PYSPARK_PYTHON itself; JAVA_HOME is a path on this machine; the dashboard's and bin/pipeline's).
JOB_ENV_VARS = (
    # core.settings, core.storage
    "LOCAL_DIR", "DATA_DIR", "ARTIFACTS_DIR", "EDA_DIR", "DEMO_INPUT",
    "MONGO_URI", "MONGO_PORT", "MONGO_DB", "MONGO_REQUEST_TIMEOUT_MS",
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_PORT", "KAFKA_RATINGS_TOPIC", "KAFKA_DEAD_LETTER_TOPIC",
    "KAFKA_RATINGS_PARTITIONS", "KAFKA_DELIVERY_TIMEOUT_MS", "REDIS_URL", "REDIS_PORT", "RECS_TOP_N",
    "SPARK_MASTER", "SPARK_DRIVER_MEMORY", "S3_ENDPOINT_URL", "S3_PORT", "S3_PATH_STYLE",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_REQUEST_CHECKSUM_CALCULATION",
    # the rest of core the jobs run: the ANN indexes, the versions publish keeps, the lifetime of the
    # catalog revision mongo_load bumps (as long as the site's cache)
    "ANN_HNSW_M", "ANN_EF_CONSTRUCTION", "ANN_EF_SEARCH", "ANN_MIN_ITEMS", "MODEL_VERSIONS_KEPT",
    "CATALOG_CACHE_SECONDS",
    # spark_jobs: the session and the batch lock (common), train's engines, evaluation, serving lists, publish
    "SPARK_SHUFFLE_PARTITIONS", "SPARK_LOG_LEVEL", "SPARK_UI_ENABLED", "SPARK_MAX_PARTITION_BYTES",
    "SPARK_EXECUTOR_MEMORY", "BATCH_LOCK_WAIT_S",
    "SINGLE_NODE_MAX_INTERACTIONS", "SINGLE_NODE_MEMORY_GB", "EASE_MAX_ITEMS", "EASE_LAMBDAS",
    "SPARK_GRID_SIZE", "TUNE_MAX_INTERACTIONS", "EVAL_MAX_USERS", "EVAL_MIN_USERS", "EVAL_MAX_SCORES",
    "BASELINE_MAX_USERS", "SERVING_MAX_USERS", "SERVING_MAX_ITEMS", "SERVING_BLOCK_USERS", "SERVING_THREADS",
    "PUBLISH_INSERT_THREADS",
    # read by Spark itself, not by our code
    "SPARK_LOCAL_IP", "PYSPARK_DRIVER_PYTHON",
)


def app_venv() -> Path:
    """The app's virtualenv: APP_VENV, else the venv of APP_PYTHON, else $LOCAL_DIR/venv."""
    venv, python = env_str("APP_VENV", ""), env_str("APP_PYTHON", "")
    if venv:
        return Path(venv)
    return Path(python).parent.parent if python else get_settings().local_dir / "venv"


def spark_submit_binary() -> str:
    return env_str("SPARK_SUBMIT_BINARY", "") or str(app_venv() / "bin" / "spark-submit")


def _venv_python() -> str:
    return env_str("APP_PYTHON", "") or str(app_venv() / "bin" / "python")


def app_python() -> str:
    """The executors' Python (``PYSPARK_PYTHON``)."""
    return env_str("PYSPARK_PYTHON", "") or _venv_python()


def driver_python() -> str:
    """The app's Python on this host, which runs a client-mode driver (``PYSPARK_PYTHON`` may name
    the executors' own: docker-compose.yml's)."""
    return env_str("PYSPARK_DRIVER_PYTHON", "") or _venv_python()


def record_job_exit(run_id: str, job: str, status: int, since: float) -> None:
    """A job killed before it recorded its end gets "failed" with its exit status, in the file and
    MongoDB's copy (the admin's): through the app's Python, as bin/pipeline records it, since this
    venv has no pymongo. Without that Python (a broken install), the file alone, from here."""
    cmd = [driver_python(), "-m", "spark_jobs.run_records", "exited", run_id, job, str(status), "--since", str(since)]
    try:
        subprocess.run(cmd, env={**os.environ, **job_env()}, cwd=APP_ROOT, check=True, timeout=300,
                       capture_output=True, text=True)
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        log.warning("recording %s's exit status with %s failed (%s); the record file only", job, cmd[0], detail)
        record_exit(run_id, job, status, since)


def job_env() -> dict[str, str]:
    """What every spark-submit gets: the app's Python and the jobs' settings that are set here."""
    env = {name: os.environ[name] for name in JOB_ENV_VARS if os.environ.get(name)}
    env["PYSPARK_PYTHON"] = app_python()
    # The jobs import core from the --py-files zip, which knows no repository to default to.
    env.setdefault("LOCAL_DIR", str(get_settings().local_dir))
    env["DEMO_INPUT"] = demo_input()  # load's default: the DAG passes no --input without the inputs param
    if "@" in env.get("MONGO_URI", ""):  # credentials: keep them out of logs and rendered fields
        from airflow.sdk.log import mask_secret

        mask_secret(env["MONGO_URI"])
    if env.get("AWS_SECRET_ACCESS_KEY"):
        from airflow.sdk.log import mask_secret

        mask_secret(env["AWS_SECRET_ACCESS_KEY"])
    return env


def exit_status(hook: Any) -> int | None:
    """The exit status of the spark-submit the provider's hook ran and waited for (its Popen,
    ``_submit_sp``: the hook raises a plain AirflowException that gives the status in its text
    only); None when it ran none (a failure before the submit). In client mode spark-submit exits
    with the job's own status; in cluster mode it does not, and every failure is retried."""
    return getattr(getattr(hook, "_submit_sp", None), "returncode", None)


class SparkJobOperator(SparkSubmitOperator):
    """``spark-submit --py-files <zip> spark_jobs/<job>.py`` with the app's binary, Python and settings.

    ``args_from_params`` adds arguments that Jinja cannot express in ``application_args``
    (recommender/params.py); ``on_start`` is called with the Airflow run id and the params before
    the job is submitted (the first task records the run's options with it). A job that failed for a reason a retry cannot fix (it exits
    core.runs.EXIT_PERMANENT: bad arguments, an input that names no file, a version that is gone)
    fails the task with AirflowFailException, which Airflow does not retry; any other failure is
    retried as the DAG's default_args say.
    """

    def __init__(self, *, job: str, args_from_params: Callable[[Mapping[str, Any]], list[str]] | None = None,
                 on_start: Callable[[str, Mapping[str, Any]], None] | None = None, **kwargs: Any) -> None:
        super().__init__(
            task_id=job,
            application=str(APP_ROOT / "spark_jobs" / f"{job}.py"),
            name=f"amazon-recommender:{job}",
            conn_id=SPARK_CONN_ID,
            spark_binary=spark_submit_binary(),
            env_vars=job_env(),
            driver_memory=get_settings().spark_driver_memory,
            **kwargs,
        )
        self.args_from_params = args_from_params
        self.on_start = on_start

    def execute(self, context: Any) -> Any:
        try:
            BaseHook.get_connection(self._conn_id)
        except AirflowNotFoundException as exc:  # the provider would quietly use --master yarn
            raise AirflowFailException(
                f"Airflow connection {self._conn_id!r} is not defined; set e.g. "
                f"AIRFLOW_CONN_{self._conn_id.upper()}='spark://local%5B%2A%5D' (local[*]) or "
                f"'spark://<host>:7077' (see the docstring of dags/recommender_pipeline.py)"
            ) from exc
        if self.on_start is not None:
            self.on_start(context["run_id"], context["params"])
        if self.args_from_params is not None:
            self.application_args = [*self.args_from_params(context["params"]), *(self.application_args or [])]
        # core/ and spark_jobs/ for the executors (and a cluster's driver), as bin/pipeline ships them
        self.py_files = str(pyfiles.build())
        # the project's JVM functions, and hadoop-aws for an s3a:// DATA_DIR or ARTIFACTS_DIR, as bin/pipeline passes them
        jars = jvm_jar.submit_jars()
        if jars:
            self.jars = ",".join(jars)
        since = time.time()
        try:
            return super().execute(context)
        except AirflowFailException:
            raise
        except AirflowException as exc:
            status, args = exit_status(self._hook), list(self.application_args or [])
            if status and "--run-id" in args:  # a job killed half-way (52: its JVM out of memory) says so
                try:
                    record_job_exit(args[args.index("--run-id") + 1], self.task_id, status, since)
                except Exception as unrecorded:  # noqa: BLE001  the failure to raise is the job's
                    self.log.warning("could not record %s's exit status %s: %s", self.task_id, status, unrecorded)
            if status != EXIT_PERMANENT:
                raise
            raise AirflowFailException(
                f"spark_jobs/{self.task_id}.py failed for a reason a retry cannot fix (exit status {EXIT_PERMANENT}; "
                f"its log above says why): not retried. Fix it, then clear the task or resume the run"
            ) from exc
