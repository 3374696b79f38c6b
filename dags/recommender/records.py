"""Run ids and job records: how the DAG's tasks name a run and hand train's result to publish.

Every job writes its record under ``$DATA_DIR/runs/<run id>/<job>.json``
(spark_jobs/reconcile.write_record); the ``evaluate`` task reads train's.
"""
from __future__ import annotations

import json
import re
from typing import Any

from airflow.exceptions import AirflowFailException

from core import storage
from core.settings import get_settings


def fs_safe(run_id: str) -> str:
    """Airflow's run id as a file and document-id safe string (no ':' or '+', no '/').

    The jobs put the run id into paths ($DATA_DIR/runs/<id>/) and MongoDB ids ("<id>:<job>"), so
    every character outside [A-Za-z0-9._-] becomes '-'.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.")
    if not safe:
        raise ValueError(f"run id {run_id!r} has no file-system safe characters")
    return safe


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
