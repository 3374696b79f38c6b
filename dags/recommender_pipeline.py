"""The daily batch pipeline: wait_for_inputs -> load -> clean -> mongo_load -> eda -> train -> evaluate -> publish.

Each Spark step is ``spark-submit --py-files <zip> spark_jobs/<job>.py ... --run-id <id>`` through
the Spark provider's SparkSubmitOperator, exactly what ``bin/pipeline`` does by hand, so a run
behaves the same from the shell and from Airflow (the zip of core/ and spark_jobs/ is built from the
installed package right before each submit, see spark_jobs/pyfiles.py). ``evaluate`` evaluates
nothing and is not a Spark job: ``train`` evaluates the model while it trains (spark_jobs/train.py,
with engines.py and evaluation.py) and writes its record (``$DATA_DIR/runs/<run id>/train.json``,
see core/runs.py); ``evaluate`` checks that record names a version and metrics, logs them, and
hands ``publish`` the version through XCom (``--version``). ``publish`` reads the metrics itself, from the version's own
``metrics.json``. The publish gate (is the new model good enough?) is spark_jobs/publish.py's
``gate``, on the numbers train computed: change the gate there, and what is measured in train;
the DAG only adds ``--force`` when the ``force_publish`` param is set.

This file holds the tasks and their order; the operator and the helpers live in the package beside
it, ``dags/recommender/`` (``operators.py``: ``SparkJobOperator``; ``records.py``: train's record
as ``evaluate`` reads it), which Airflow imports from the DAG folder and ``.airflowignore`` keeps
out of the DAG scan. Run ids become folder names by core.runs.fs_safe, as the jobs' records do.

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
- ``DEMO_INPUT`` -- load's default input, without the ``inputs`` param (core.settings: the bundled
  demo files); handed to the jobs made absolute from the repository.
- ``PIPELINE_SCHEDULE`` -- the DAG's schedule (default ``@daily``); ``none`` for triggered runs only
  (what ``bin/demo --with-airflow`` sets: its run is triggered by ``bin/pipeline --airflow``).
- ``INPUT_WAIT_INTERVAL``, ``INPUT_WAIT_TIMEOUT`` -- seconds between two looks of ``wait_for_inputs``
  for load's inputs (default 300), and how long it waits for them before it fails (default 21600,
  six hours; 0: one look).
- ``INPUT_SETTLE_S`` -- seconds a local input file must be left unmodified before ``wait_for_inputs``
  counts it as there (default 60; 0: as soon as it exists; an object in a bucket appears whole).
- ``INPUT_DONE_MARKER`` -- the default of the ``done_marker`` param (default: none), read where
  Airflow runs the DAG.
- The jobs' own settings (``DATA_DIR``, ``ARTIFACTS_DIR``, ``MONGO_URI``, ``MONGO_DB``,
  ``LOCAL_DIR``, ``KAFKA_*``, ``SPARK_MASTER``, ``EASE_LAMBDAS``, ...: every variable core/ and
  spark_jobs/ read, ``recommender.operators.JOB_ENV_VARS``, held to the code by
  tests/unit/test_job_env.py) are handed to every spark-submit when set (``env_vars``: in client
  mode spark-submit would inherit them anyway; on YARN/Kubernetes the provider turns them into the
  driver's environment). ``LOCAL_DIR`` is handed on always, the
  DAG's own: the jobs import core from the ``--py-files`` zip, which knows no repository.

Params (trigger with config): ``inputs`` (list of files or globs; relative paths are taken from
the repository; empty: load's default, the demo files, or none when ``remove`` names files),
``remove`` (list of loaded file names for load --remove: their rows go, their categories are cleaned
again and MongoDB reloaded), ``engine`` (auto|ease|implicit|spark, for train), ``force_publish``
(bool), ``done_marker`` (a file name, e.g. ``_SUCCESS``: ``wait_for_inputs`` also waits until the
folder of every file the inputs match holds it, which an exporter of several files writes last;
without it a glob over such an export is satisfied by its first settled file; no input may match
the marker), ``rerun`` (list of load, clean, mongo_load: those stages, and the ones of them after each,
get ``--force`` and redo what their ledgers say is done, as ``bin/pipeline --rerun``). Their
arguments are built in recommender/params.py. The ``load`` task records ``engine``,
``force_publish`` and ``rerun`` where bin/pipeline records its flags (``$DATA_DIR/runs/<run
id>/pipeline.json``, core.runs.record_options) before it submits load, as ``wait_for_inputs`` does
on its first look (a run that never got to load keeps them too), so ``bin/pipeline --resume
<run id>`` of a DAG run restores them (on its first try only: a retry keeps what a resume by hand
recorded since).

``wait_for_inputs``, a sensor before load, waits until every input load is to read (the ``inputs``
param, or its default) names a file, as load matches them (core.inputs.input_files), and every file
matched is left unmodified for ``INPUT_SETTLE_S`` seconds (so an export caught mid-copy is not
loaded truncated; deliver inputs by an atomic rename, written to a temporary name and then renamed,
and none is ever seen half-written; an object in a bucket appears whole when its upload ends, and
is not made to wait), looking every ``INPUT_WAIT_INTERVAL`` seconds in reschedule
mode (no worker slot held in between) for at most ``INPUT_WAIT_TIMEOUT``: an input that arrives
after the run began (a nightly export) is loaded rather than failing load for good. Inputs load
refuses whatever arrives (an ``s3a://`` URI with a local DATA_DIR, a folder, two files of one name)
fail it at once, without retries. ``bin/pipeline`` without Airflow has no such wait: a missing
input fails its load at once; ``bin/pipeline --airflow`` refuses to trigger a run whose inputs
name no file (spark_jobs/airflow_run.py).

A Spark task whose job exits with core.runs.EXIT_PERMANENT (bad arguments, an input that matches no
file, a model version that is gone: retrying cannot fix it) fails at once, without its retries
(recommender/operators.py); any other failure is retried.

The pipeline's run id (``--run-id``, the key of every job's record) is Airflow's run id made
file-system safe: ``manual__2025-01-01T00:00:00+00:00`` becomes
``manual__2025-01-01T00-00-00-00-00``.
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pendulum
from airflow.exceptions import AirflowFailException
from airflow.sdk import DAG, Param, task

from core.env import env_int, env_str
from core.inputs import input_done_marker, input_settle_s
from core.runs import DEFAULT_ENGINE, ENGINES, RERUNNABLE, fs_safe
from recommender.operators import SparkJobOperator
from recommender.params import force_args, inputs_awaited, load_args, record_options, rerun_args
from recommender.records import read_train_record

log = logging.getLogger(__name__)

DAG_ID = "amazon_recommender_pipeline"
_SCHEDULE = env_str("PIPELINE_SCHEDULE", "@daily")
SCHEDULE = None if _SCHEDULE.lower() == "none" else _SCHEDULE  # blank is unset, as for every knob: @daily
RUN_ID = "{{ run_id | fs_safe }}"
# how often (seconds) wait_for_inputs looks for load's inputs, and how long it waits before it fails
INPUT_WAIT_INTERVAL = env_int("INPUT_WAIT_INTERVAL", 300, minimum=1)
INPUT_WAIT_TIMEOUT = env_int("INPUT_WAIT_TIMEOUT", 21600, minimum=0)
# how long (seconds) an input file must be left unmodified before wait_for_inputs counts it as there
INPUT_SETTLE_S = input_settle_s()


with DAG(
    dag_id=DAG_ID,
    description="Amazon reviews -> clean -> MongoDB -> EDA -> ranking model -> evaluated, gated publish",
    doc_md=__doc__,
    schedule=SCHEDULE,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # The jobs overwrite the same $DATA_DIR folders (raw/, clean/): two runs at once would mix. Each
    # job also holds the batch lock (spark_jobs/common.batch_lock) against a bin/pipeline or a retry.
    max_active_runs=1,
    default_args={
        "owner": "recommender",
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    },
    params={
        "inputs": Param([], type="array", items={"type": "string"},
                        description="review/metadata files or globs for load (relative: from the repository); "
                                    "empty: the demo files (DEMO_INPUT), or none when remove names files"),
        "remove": Param([], type="array", items={"type": "string"},
                        description="loaded files (by file name) to take out: load --remove; their categories "
                                    "are cleaned again without them and MongoDB reloaded"),
        "engine": Param(DEFAULT_ENGINE, type="string", enum=list(ENGINES),
                        description="training engine for train --engine"),
        "force_publish": Param(False, type="boolean",
                               description="publish even if the gate in publish.py would refuse"),
        "done_marker": Param(input_done_marker(), type="string",
                             description="a file name (e.g. _SUCCESS) wait_for_inputs also waits for in the "
                                         "folder of every input, which the exporter writes last; empty: none"),
        "rerun": Param([], type="array", items={"type": "string", "enum": list(RERUNNABLE)},
                       description="stages to redo what their ledgers say is done (--force), each with the "
                                   "ones of them after it: after a bad ledger or a fix that did not bump "
                                   "LOAD_VERSION/CLEAN_VERSION"),
    },
    user_defined_filters={"fs_safe": fs_safe},
    tags=["recommender", "spark"],
) as dag:
    # load's inputs may arrive after the run begins (a nightly export): wait for them here, the
    # worker slot given back between looks, rather than let load fail for good on a missing one
    @task.sensor(mode="reschedule", poke_interval=INPUT_WAIT_INTERVAL, timeout=INPUT_WAIT_TIMEOUT)
    def wait_for_inputs(params: dict[str, Any] | None = None, run_id: str | None = None) -> bool:
        """Done once every input load is to read names a file left unmodified for INPUT_SETTLE_S
        and, with the done_marker param, every input's folder holds the marker
        (recommender.params.inputs_awaited); failed at once, without retries, on inputs load refuses
        anyway (a URI, a folder, two files of one name): no wait changes those. Records the run's
        options first, as load does (once per run): a run that stops here (timed out, refused) is
        resumed by hand with its engine, force_publish and rerun."""
        if run_id is not None:
            record_options(run_id, params or {})
        awaited, refusal = inputs_awaited(params or {}, INPUT_SETTLE_S)
        if refusal:
            raise AirflowFailException(f"load would refuse its inputs: {refusal}")
        if awaited:
            log.info("waiting for load's inputs, no file yet or still being written: %s", ", ".join(awaited))
        return not awaited

    load = SparkJobOperator(job="load", application_args=["--run-id", RUN_ID], args_from_params=load_args,
                            on_start=record_options)  # for bin/pipeline --resume of this run
    clean = SparkJobOperator(job="clean", application_args=["--run-id", RUN_ID], args_from_params=rerun_args("clean"))
    mongo_load = SparkJobOperator(job="mongo_load", application_args=["--run-id", RUN_ID],
                                  args_from_params=rerun_args("mongo_load"))
    eda = SparkJobOperator(job="eda", application_args=["--run-id", RUN_ID])
    train = SparkJobOperator(job="train", application_args=["--engine", "{{ params.engine }}", "--run-id", RUN_ID])

    @task(multiple_outputs=True)
    def evaluate(run_id: str | None = None) -> dict[str, Any]:
        """Check train's record and hand its model version to publish (XCom ``version``).

        No evaluation happens here, whatever the task id says: train measures the model while it
        trains, and publish's gate (spark_jobs/publish.py) reads the version's metrics itself. This
        task fails the run early, with a clear message, when train left no usable record, and logs
        the metrics (also returned, as XCom ``metrics``, read by no task).
        """
        result = read_train_record(run_id or "")
        log.info("model %s: metrics %s", result["version"], json.dumps(result["metrics"], sort_keys=True))
        return result

    publish = SparkJobOperator(
        job="publish",
        application_args=["--version", "{{ ti.xcom_pull(task_ids='evaluate', key='version') }}", "--run-id", RUN_ID],
        args_from_params=force_args,
    )

    # core.runs.STAGES, after the wait for load's inputs and with evaluate before publish
    # (tests/unit/test_stage_order.py holds them to it)
    wait_for_inputs() >> load >> clean >> mongo_load >> eda >> train >> evaluate() >> publish
