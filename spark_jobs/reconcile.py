"""Reconciliation records: every job proves that no row went missing between its input and outputs."""
from __future__ import annotations

import json
import time
from typing import Any

from core import storage
from core.runs import fs_safe, read_record, record_path
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


# What a job's exit status says when the job could not record it: Spark's driver exits 52 on an
# OutOfMemoryError (SparkExitCode.OOM), and a shell gives 128 + N for a process killed by signal N.
EXIT_MEANINGS = {
    52: "Spark's driver ran out of memory (SPARK_DRIVER_MEMORY)",
    137: "killed (SIGKILL: the kernel's out-of-memory killer, or kill -9)",
    143: "stopped (SIGTERM)",
}


def record_exit(run_id: str, job: str, status: int, since: float) -> dict[str, Any] | None:
    """After ``job``'s process, started at ``since`` (epoch seconds), exited with ``status`` (not
    0): a record it left "started" becomes "failed" with the status and what it means (returned).
    None when the job recorded its end itself, or recorded nothing since (spark-submit failed
    before the job began: an earlier attempt's record is not this one's, and no record is made, so
    a new run may still take the id).

    Why the caller: the job records the failures it declares, but a JVM that exits on
    OutOfMemoryError takes the Python driver with it, and a crash propagates, so both left
    "started" with no error, which the admin shows as a job still running. Called by bin/pipeline
    (``python -m spark_jobs.run_records exited``), the DAG's task and bench/big_run. A resume runs
    the job again either way: neither "started" nor "failed" is finished.
    """
    record = read_record(run_id, job)
    if status == 0 or record is None or record.get("status") != "started" or record.get("started_at", 0) < since:
        return None
    meaning = EXIT_MEANINGS.get(status) or (f"killed by signal {-status}" if status < 0 else "")
    failed = {**record, "status": "failed", "exit_status": status, "finished_at": time.time(),
              "error": f"{job}'s process exited with status {status}{f': {meaning}' if meaning else ''}, "
                       f"before the job recorded its end (its log says more)"}
    write_record(run_id, job, failed)
    return failed


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
