"""A pipeline run's job records: where they live, how a run id names their folder, how train's is read.
(Load's input rules, which the DAG's wait for the inputs shares, are core/inputs.py.)

Every job writes its record to ``$DATA_DIR/runs/<run id>/<job>.json`` (spark_jobs/reconcile.write_record);
bin/pipeline --resume reads them (spark_jobs/run_records.py) and so does the DAG's ``evaluate`` task
(dags/recommender/records.py). The writer and both readers take the layout and the reading rule from
here, so a change to either cannot leave one of them looking in the old place.

Standard library, core.settings and core.storage only: the Airflow venv imports this module and
has neither pyspark nor pymongo (requirements-airflow.txt).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from core import storage
from core.settings import get_settings
from core.storage import Location

RUNS = "runs"  # the folder under DATA_DIR that holds one folder per run

# The record of the options a run was started with, beside the jobs' (``runs/<run id>/pipeline.json``):
# train's --engine, publish's --force and the --force of the stages --rerun names, which no job
# records before it needs them. bin/pipeline writes it as a run starts or resumes
# (spark_jobs/run_records.start), the DAG as its load task starts (dags/recommender/params.py), and
# bin/pipeline --resume restores the run's options from it, whoever started the run.
OPTIONS = "pipeline"

# The batch jobs (spark_jobs/<job>.py) in the order a pipeline run runs them, each after the one
# before has finished. bin/pipeline submits them in this order and the DAG chains its tasks so
# (with its ``evaluate`` task between train and publish); both are checked against it
# (tests/unit/test_stage_order.py), and bench/big_run.py runs them from it.
STAGES = ("load", "clean", "mongo_load", "eda", "train", "publish")

# The stages that skip work their ledger says is done (load: a file of the same checksum and
# LOAD_VERSION; clean: a category of the same fingerprint; mongo_load: a category MongoDB holds) and
# redo it with --force: what bin/pipeline --rerun and the DAG's ``rerun`` param name.
RERUNNABLE = ("load", "clean", "mongo_load")

# train's --engine choices (spark_jobs/engines.py has the engines) and the default engine of a run:
# train's, bin/pipeline's (spark_jobs/run_records.start) and the DAG's ``engine`` param. Here, not
# in spark_jobs/engines.py, so that the DAG (the Airflow venv has neither pyspark nor numpy) and
# bin/pipeline's run_records helper import them without the engines' libraries.
ENGINES = ("auto", "ease", "implicit", "spark")
DEFAULT_ENGINE = "auto"

# The exit status of a job that failed for a reason a retry cannot fix (bad arguments, an input glob
# that matches no file, a version that is gone): the DAG's Spark tasks fail at once on it instead of
# being retried (dags/recommender/operators.py). Python (1, and argparse's 2, which the jobs turn
# into this), Spark's own codes (SparkExitCode: 1-3, 11, 50-52, 114, 127) and signals (128 + n)
# leave 64 free; sysexits.h calls it EX_USAGE.
EXIT_PERMANENT = 64


def fs_safe(run_id: str) -> str:
    """A run id as a file and document-id safe string (no ':' or '+', no '/').

    Airflow's run ids look like ``manual__2026-11-25T11:40:32.728943+00:00``; the jobs put the run
    id into paths ($DATA_DIR/runs/<id>/, EDA's and train's folders, load's staging) and MongoDB ids
    ("<id>:<job>"), so every character outside [A-Za-z0-9._-] becomes '-'. Applied once, where the
    id enters a job (spark_jobs.common.run_id_arg, argparse's ``type``). A safe id is returned
    unchanged, so applying it twice is harmless: the DAG hands the jobs ids it already made safe,
    and :func:`record_path` makes an id safe again for readers given the raw one (the DAG's
    ``evaluate`` task reads with Airflow's own, bin/pipeline with its --run-id).
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    if not safe:
        raise ValueError(f"run id {run_id!r} has no file-system safe characters")
    return safe


def run_folder(run_id: str, data_dir: Location | None = None) -> Location:
    """The folder of this run's records: ``<data_dir>/runs/<fs_safe(run id)>``.

    ``data_dir`` defaults to the settings' DATA_DIR; the benchmarks pass the DATA_DIR of the run
    they started.
    """
    base = data_dir if data_dir is not None else get_settings().data_dir
    return base / RUNS / fs_safe(run_id)


def record_path(run_id: str, job: str, data_dir: Location | None = None) -> Location:
    """Where ``job``'s record of this run is kept: ``<data_dir>/runs/<fs_safe(run id)>/<job>.json``."""
    return run_folder(run_id, data_dir) / f"{job}.json"


def read_record(run_id: str, job: str, data_dir: Location | None = None) -> dict[str, Any] | None:
    """``job``'s record of this run, None when it wrote none (json.JSONDecodeError when it is no JSON)."""
    path = record_path(run_id, job, data_dir)
    return json.loads(storage.read_text(path)) if storage.is_file(path) else None


def succeeded(record: Mapping[str, Any]) -> bool:
    """Whether a train record says train succeeded: status "ok", as train has written since its
    first version (spark_jobs/train.py); a record without a status is not a finished train's."""
    return record.get("status") == "ok"


def model_version(record: Mapping[str, Any]) -> str:
    """The model version a train record names (``version``, the only name train has written), "" when none."""
    return str(record.get("version") or "")


def stage_list(value: str) -> list[str]:
    """Stages as the command line names them, comma-separated (``--rerun load,clean``; empty parts,
    as in ``''``, name none): bin/pipeline's run record and its Airflow trigger parse them alike."""
    return [s for s in value.split(",") if s]


def forced_stages(named: list[str]) -> list[str]:
    """The stages a rerun of ``named`` forces: each named one and every stage of RERUNNABLE after it,
    in pipeline order. A forced stage writes the same ledger entries as before (the same files, the
    same fingerprints), so the stages after it would see nothing new and skip: a forced clean must
    be followed by a forced mongo_load, or MongoDB keeps the rows of before. ValueError for a name
    that is not in RERUNNABLE."""
    unknown = sorted(set(named) - set(RERUNNABLE))
    if unknown:
        raise ValueError(f"cannot rerun {', '.join(unknown)}: only {', '.join(RERUNNABLE)} skip work done already")
    first = min((RERUNNABLE.index(stage) for stage in named), default=len(RERUNNABLE))
    return list(RERUNNABLE[first:])


def record_options(run_id: str, engine: str, force_publish: bool, rerun: list[str],
                   data_dir: Location | None = None) -> None:
    """Record the options this run goes on with in its :data:`OPTIONS` record: ``rerun`` as the
    stages it forces (:func:`forced_stages` of the ones named, so a list of forced stages is recorded
    as it is), with the time. ValueError for a stage that is not in RERUNNABLE."""
    options = {"engine": engine, "force_publish": force_publish, "rerun": forced_stages(rerun)}
    storage.write_text(record_path(run_id, OPTIONS, data_dir),
                       json.dumps({**options, "recorded_at": time.time()}, indent=2, sort_keys=True))
