"""Reconciliation records: every job proves that no row went missing between its input and outputs."""
from __future__ import annotations

import json
import time
from typing import Any

from core import storage
from core.runs import fs_safe, record_path
from core.storage import Location


class Unbalanced(RuntimeError):
    """The counts do not add up: some rows were lost; the job must fail loudly."""


def write_record(run_id: str, job: str, record: dict[str, Any]) -> Location:
    """Store the record as JSON under the run's folder (core.runs.record_path, where bin/pipeline
    --resume and the DAG's ``evaluate`` task read it) and in MongoDB (best effort there), both
    under the file-safe id (the jobs' ids are safe already; the admin's "make current" may not be)."""
    run_id = fs_safe(run_id)
    out = record_path(run_id, job)
    storage.write_text(out, json.dumps(record, indent=2, sort_keys=True, default=str))
    try:
        from core import mongo

        mongo.record_pipeline_run(run_id, job, record)
    except Exception as exc:  # the file is the record of truth; MongoDB may be down in a dry run
        print(f"{job}: could not record the run in MongoDB ({exc.__class__.__name__}: {exc})")
    return out


def check_and_print(job: str, counts_in: dict[str, int], counts_out: dict[str, int]) -> dict[str, Any]:
    """Print a readable table and raise :class:`Unbalanced` unless sum(in) == sum(out)."""
    total_in, total_out = sum(counts_in.values()), sum(counts_out.values())
    width = max(len(k) for k in [*counts_in, *counts_out, "total"]) + 2
    print(f"\n{job}: reconciliation")
    for k, v in counts_in.items():
        print(f"  in   {k:<{width}}{v:>14,}")
    for k, v in counts_out.items():
        print(f"  out  {k:<{width}}{v:>14,}")
    balanced = total_in == total_out
    print(f"  {'balanced' if balanced else 'UNBALANCED'}: {total_in:,} in = {total_out:,} out\n")
    record = {"job": job, "counts_in": counts_in, "counts_out": counts_out, "balanced": balanced,
              "finished_at": time.time()}
    if not balanced:
        raise Unbalanced(f"{job}: {total_in:,} rows in but {total_out:,} accounted for")
    return record
