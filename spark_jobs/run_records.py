"""What bin/pipeline reads from a run's records, ``$DATA_DIR/runs/<run id>/<job>.json``, and
the one it writes for a job that could not (``exited``).

Those files are the record of truth (spark_jobs/reconcile.write_record; MongoDB holds a best-effort
copy); where they are and how train's is read is core.runs, shared with the DAG. Standard library,
core, spark_jobs.units (load's ledger) and spark_jobs.reconcile only: no Spark starts.

    python -m spark_jobs.run_records start RUN [--resume] [--engine E] [--force-publish] [--rerun STAGES]
        # its options, then the master and driver memory bin/pipeline gives spark-submit (the settings')
    python -m spark_jobs.run_records finished RUN JOB [--force-publish]  # exit 0: JOB finished in RUN
    python -m spark_jobs.run_records version RUN                         # train's model version, or nothing
    python -m spark_jobs.run_records load-args RUN [--input I ...] [--remove N ...]  # a resumed load's, one a line
    python -m spark_jobs.run_records exited RUN JOB STATUS --since EPOCH  # after a failed spark-submit:
        # a "started" record of JOB becomes "failed" with the status (spark_jobs.reconcile.record_exit)
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from core import storage
from core.inputs import input_matches, same_input
from core.runs import (DEFAULT_ENGINE, OPTIONS, forced_stages, model_version, read_record, record_options,
                       run_folder, stage_list, succeeded)
from core.settings import get_settings
from spark_jobs import units
from spark_jobs.reconcile import record_exit

# What a job records when it finished: "ok", or publish's decision (spark_jobs/publish.py). Every
# job records "started" before it does anything, and "failed" when it fails as it declares; one that
# crashed or was killed leaves "started", which its caller turns into "failed" with the exit status
# (``exited``): none of these is finished.
FINISHED = {"ok", "published", "rejected", "unchanged"}


def start(run_id: str, resume: bool, engine: str | None = None, force_publish: bool = False,
          rerun: list[str] | None = None) -> tuple[str, bool, list[str]]:
    """(engine, force publish, the stages forced to redo their work) of this run, recorded before its
    first job starts (core.runs.record_options, as the DAG records its params). ``rerun`` names
    stages of core.runs.RERUNNABLE; the stages after each are forced too (core.runs.forced_stages);
    another name is refused.

    A new run refuses an id that has records already: its jobs would replace them one by one, and
    a record another run left could make a later --resume skip a stage. A resume takes the options
    the run recorded, whether bin/pipeline or the DAG started it; one given on the resume's command
    line wins (--engine ease after a train that failed under spark; --force-publish after a rejected
    publish; --rerun clean after a load that finished, so its clean redoes every category) and is
    recorded for the next resume. A run with no options recorded (by a DAG or bin/pipeline from
    before they were recorded, or a DAG run that stopped before its load task started) resumes with
    the command line's, or the defaults (recorded only when the run has records: a resume of an
    unknown run is refused by :func:`inputs`, and must leave no folder behind).
    """
    try:
        forced = None if rerun is None else forced_stages(rerun)
    except ValueError as exc:
        raise SystemExit(f"pipeline: --rerun: {exc}") from None
    existing = storage.listdir(run_folder(run_id))
    # only its options: the run stopped before any job recorded anything (a load that waited out the
    # batch lock, a failed spark-submit), so the id may start afresh: a resume would have no inputs
    jobs = [name for name in existing if name != f"{OPTIONS}.json"]
    if not resume:
        if jobs:
            raise SystemExit(f"pipeline: run {run_id} has records already ({', '.join(jobs)} in "
                             f"{run_folder(run_id)}): resume it with --resume {run_id}, or choose another --run-id")
        recorded = {}
    else:
        recorded = read_record(run_id, OPTIONS) or {}
        if not recorded:
            print(f"pipeline: run {run_id} recorded no --engine, --force-publish or --rerun (started by an older "
                  f"DAG or bin/pipeline): resuming with {engine or DEFAULT_ENGINE}{' and --force-publish' * force_publish}"
                  f"{' and --rerun ' + ','.join(forced) if forced else ''}", file=sys.stderr)
    options = {"engine": engine or recorded.get("engine") or DEFAULT_ENGINE,
               "force_publish": force_publish or bool(recorded.get("force_publish")),
               "rerun": forced if forced is not None else list(recorded.get("rerun") or [])}
    if (existing or not resume) and options != {k: recorded.get(k) for k in options}:
        record_options(run_id, **options)
    return options["engine"], options["force_publish"], options["rerun"]


def finished(run_id: str, job: str, force_publish: bool = False) -> bool:
    """Whether ``job`` finished in this run, so a resume skips it. A publish the gate rejected is
    finished, unless the resume forces publishing: then it runs again, with ``--force``."""
    status = (read_record(run_id, job) or {}).get("status")
    if job == "publish" and force_publish and status == "rejected":
        return False
    return status in FINISHED


def version(run_id: str) -> str:
    """The model version train recorded in this run ("" when it recorded none), read as the DAG's
    ``evaluate`` task reads it (core.runs; dags/recommender/records.read_train_record)."""
    record = read_record(run_id, "train") or {}
    return model_version(record) if succeeded(record) else ""


def inputs(run_id: str, given: list[str], removing: bool = False) -> list[str]:
    """The inputs a resume of this run loads: those its load recorded (when it started, failed or
    finished; spark_jobs/load.py), never the demo default. ``given`` (the resume's --input) must
    name the same ones (compared as core.inputs.same_input: absolute and normalised, as
    bin/pipeline prefixes the caller's directory as is), and is required when load recorded
    none, unless the resume only removes files (``removing``: a run that stopped before load
    recorded anything, resumed with --remove)."""
    recorded = (read_record(run_id, "load") or {}).get("inputs")
    if recorded is None or not (recorded or removing):  # none recorded is only right for a removal
        if given or removing:
            return given
        raise SystemExit(f"pipeline: load recorded no inputs in run {run_id}: resume it with the --input "
                         f"it was started with (--input FILE_OR_GLOB, repeatable)")
    if given and sorted(map(same_input, given)) != sorted(map(same_input, recorded)):
        raise SystemExit(f"pipeline: run {run_id} loads {' '.join(recorded) or 'no input'}, not {' '.join(given)}: "
                         f"resume it without --input, or start a new run for other inputs")
    return recorded


def removes(run_id: str, given: list[str]) -> list[str]:
    """The loaded files a resume of this run takes out (load --remove): those its load recorded as it
    started (kept when it failed or finished), so a load that failed or was killed before it removed
    them removes them on the resume. ``given`` (the resume's --remove) must name the same files (a
    path names its file, as for load); it is used as is when the run has no load record yet."""
    record = read_record(run_id, "load")
    if record is None:
        return given
    recorded = record.get("remove", [])
    if given and sorted(units.file_names(given)) != sorted(units.file_names(recorded)):
        started = f"with --remove {' '.join(recorded)}" if recorded else "without --remove"
        raise SystemExit(f"pipeline: run {run_id} was started {started}, not --remove {' '.join(given)}: "
                         f"resume it without --remove, or start a new run to remove other files")
    return recorded


def changed_inputs(patterns: list[str], loaded: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The files ``patterns`` name that are not what the load ledger's entries ``loaded`` (file name
    -> entry) say was loaded: another size, modified after it was loaded, not loaded at all (a glob
    that matches a new file) or gone. Size and modification time only: a resume must not read every
    input again to find out (a load that runs compares checksums, spark_jobs/units.py)."""
    changed = []
    for pattern in patterns:
        paths = input_matches(pattern)
        if not paths:
            changed.append(f"{pattern} (matches no file now)")
        for path in paths:
            entry, stat = loaded.get(os.path.basename(path)), storage.file_stat(path)
            if stat is None:
                changed.append(f"{path} (gone)")
            elif entry is None or entry.get("size") != stat[0] or stat[1] > entry.get("loaded_at", 0):
                changed.append(path)
    return changed


def warn_changed_inputs(run_id: str, patterns: list[str]) -> None:
    """Say so when the load of this run finished and its inputs changed since (:func:`changed_inputs`):
    the resume skips load, so clean and train go on with the data loaded before. Not an error: that
    data is the run's; a new run loads the changes."""
    if not finished(run_id, "load"):
        return  # the resumed load loads what changed itself
    changed = changed_inputs(patterns, units.read_ledger(str(get_settings().data_dir / "raw")).get("units", {}))
    if changed:
        print(f"pipeline: warning: inputs of run {run_id} changed since its load finished (size or modification "
              f"time differ from the load ledger): {', '.join(changed)}. This resume goes on with the data "
              f"loaded before; start a new run to load them.", file=sys.stderr)


def load_args(run_id: str, given_inputs: list[str], given_removes: list[str]) -> list[str]:
    """load's arguments on a resume of this run: its recorded --input and --remove flags (and a
    warning when it loaded its inputs before they changed)."""
    removing = removes(run_id, given_removes)
    loading = inputs(run_id, given_inputs, removing=bool(removing))
    warn_changed_inputs(run_id, loading)
    return [*(a for path in loading for a in ("--input", path)), *(a for name in removing for a in ("--remove", name))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    begin = commands.add_parser("start", help="record a new run's options, or read a resumed run's: prints "
                                              "ENGINE, FORCE_PUBLISH (0 or 1), the stages forced (a,b; - for none), "
                                              "and SPARK_MASTER and SPARK_DRIVER_MEMORY as the settings have them")
    begin.add_argument("run_id")
    begin.add_argument("--resume", action="store_true")
    begin.add_argument("--engine")
    begin.add_argument("--force-publish", action="store_true")
    begin.add_argument("--rerun", type=stage_list,
                       help="stages to redo work done already, comma-separated (and the rerunnable ones after each)")
    done = commands.add_parser("finished", help="exit 0 when JOB finished in RUN")
    done.add_argument("run_id")
    done.add_argument("job")
    done.add_argument("--force-publish", action="store_true")
    commands.add_parser("version", help="the model version train recorded").add_argument("run_id")
    load = commands.add_parser("load-args", help="load's arguments on a resume of RUN (its --input and "
                                                 "--remove flags), one a line")
    load.add_argument("run_id")
    load.add_argument("--input", action="append", default=[])
    load.add_argument("--remove", action="append", default=[])
    exited = commands.add_parser("exited", help="after JOB's spark-submit, started at EPOCH, exited STATUS: "
                                                "its record, if still \"started\", becomes \"failed\" with it")
    exited.add_argument("run_id")
    exited.add_argument("job")
    exited.add_argument("status", type=int)
    exited.add_argument("--since", type=float, required=True)
    args = parser.parse_args(argv)
    if args.command == "exited":
        record = record_exit(args.run_id, args.job, args.status, args.since)
        if record is not None:
            print(f"pipeline: {record['error']}", file=sys.stderr)
        return 0
    if args.command == "start":
        engine, force_publish, rerun = start(args.run_id, args.resume, args.engine, args.force_publish, args.rerun)
        settings = get_settings()  # for bin/pipeline's spark-submit: the defaults the jobs have (core/settings.py)
        print(engine, int(force_publish), ",".join(rerun) or "-", settings.spark_master, settings.spark_driver_memory)
        return 0
    if args.command == "finished":
        return 0 if finished(args.run_id, args.job, args.force_publish) else 1
    if args.command == "version":
        print(version(args.run_id))
    else:
        print("\n".join(load_args(args.run_id, args.input, args.remove)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
