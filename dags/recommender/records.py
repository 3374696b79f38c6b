"""Train's record as the DAG's ``evaluate`` task reads it, with the failures Airflow should not retry.

Every job writes its record under ``$DATA_DIR/runs/<run id>/<job>.json``
(spark_jobs/reconcile.write_record); where that is, how a run id names the folder (``fs_safe``) and
what makes a train record usable are core.runs, shared with the writer and bin/pipeline --resume.
Only the Airflow errors live here.
"""
from __future__ import annotations

import json
from typing import Any

from airflow.exceptions import AirflowFailException

from core.runs import fs_safe, model_version, read_record, record_path, succeeded


def read_train_record(run_id: str) -> dict[str, Any]:
    """The model version and metrics that train recorded for this run; fails when there are none."""
    path = record_path(run_id, "train")
    try:
        record = read_record(run_id, "train")
    except json.JSONDecodeError as exc:
        raise AirflowFailException(f"train record {path} is not JSON: {exc}") from exc
    if record is None:
        raise AirflowFailException(f"train left no record at {path}: did it run with --run-id {fs_safe(run_id)}?")
    if not succeeded(record):
        raise AirflowFailException(f"train recorded status {record.get('status')!r} in {path}")
    version = model_version(record)
    if not version:
        raise AirflowFailException(f"train record {path} names no model version ('version')")
    metrics = record.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise AirflowFailException(f"train record {path} has no evaluation metrics ('metrics')")
    return {"version": version, "metrics": metrics}
