"""bin/pipeline --airflow: run the pipeline as a triggered run of the Airflow DAG, and wait for it.

The same run as bin/pipeline's spark-submit stages, but on the Airflow that ``bin/services start
airflow`` runs (dags/recommender_pipeline.py), so the Airflow UI shows the run, its tasks and their
logs. bin/pipeline has parsed the flags and recorded the run's options (spark_jobs/run_records.py
``start``) before it hands over here. Airflow is driven through its CLI, never imported: it has a
venv of its own. Standard library and core only: no Spark starts.

    python -m spark_jobs.airflow_run trigger RUN --engine E [--force-publish] [--rerun A,B] [--input I ...]
        [--remove N ...]

Exit 0 when the DAG run succeeded; 64 (core.runs.EXIT_PERMANENT), before anything is triggered,
when load's inputs name no file or load would refuse them; 1 when Airflow is missing, does not know
the DAG, a CLI step fails, the run failed, or it is still running after ``AIRFLOW_RUN_TIMEOUT``
seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from core.env import env_int, env_str
from core.inputs import awaited_inputs, input_done_marker, input_files, input_patterns, input_settle_s
from core.runs import EXIT_PERMANENT, stage_list
from core.settings import PROJECT_ROOT, get_settings

# dags/recommender_pipeline.py's DAG_ID; the DAG folder is no package of the app, so it is repeated
# here (tests/unit/test_airflow_run.py holds the two, and the conf's keys to the DAG's params, together)
DAG_ID = "amazon_recommender_pipeline"
POLL_S = 10  # between two looks at the run's state
DAG_WAIT_TRIES, DAG_WAIT_S = 60, 2  # how long to wait for the DAG processor to know the DAG (2 minutes)
SENSOR = "wait_for_inputs"  # the DAG's task that waits for load's inputs
# its states before it is done (None: not scheduled yet); any other: it no longer waits, or the CLI failed
SENSOR_PENDING = ("None", "scheduled", "queued", "running", "up_for_reschedule", "up_for_retry")


def dag_conf(engine: str, force_publish: bool, inputs: list[str], removes: list[str],
             rerun: Sequence[str] = (), done_marker: str = "") -> dict[str, Any]:
    """The DAG run's conf: bin/pipeline's flags as the DAG's params. ``inputs``, ``remove`` and
    ``rerun`` are left out when not given, so the DAG's defaults apply (load's demo files; no
    removal; no stage forced). ``done_marker``: this process's ``INPUT_DONE_MARKER``, when set, so the
    run waits for the marker this script says it waits for (unset: the DAG's default, from the
    environment Airflow was started with)."""
    conf: dict[str, Any] = {"engine": engine, "force_publish": force_publish}
    for key, values in (("inputs", inputs), ("remove", removes), ("rerun", rerun)):
        if values:
            conf[key] = list(values)
    if done_marker:
        conf["done_marker"] = done_marker
    return conf


def _listed(listing: str) -> list[dict[str, Any]]:
    """The rows of an ``airflow ... -o json`` listing. The CLI may print other lines before its JSON
    (warnings, log lines), so the JSON is the last line that starts with "[", the list of rows."""
    lines = [line for line in listing.splitlines() if line.startswith("[")]
    try:
        rows = json.loads(lines[-1]) if lines else []
    except ValueError:
        return []
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def run_state(listing: str, run_id: str) -> str:
    """The state of ``run_id`` in the output of ``airflow dags list-runs DAG -o json``, or "unknown"
    (not listed yet, or no JSON)."""
    return next((str(r.get("state")) for r in _listed(listing) if r.get("run_id") == run_id), "unknown")


def task_state(listing: str, task_id: str) -> str:
    """The state of ``task_id`` in the output of ``airflow tasks states-for-dag-run DAG RUN -o json``,
    or "unknown"."""
    return next((str(r.get("state")) for r in _listed(listing) if r.get("task_id") == task_id), "unknown")


def _say(message: str, error: bool = False) -> None:
    """A line of bin/pipeline's output, flushed: the airflow commands write to the same terminal."""
    print(message, file=sys.stderr if error else sys.stdout, flush=True)


class Airflow(NamedTuple):
    """The Airflow CLI of ``$LOCAL_DIR/airflow-venv`` (its own venv: Airflow's pins clash with the
    app's) and the log its chatter goes to, shown only when a step fails: the terminal keeps
    bin/pipeline's own lines."""
    cli: Path
    log: Path


def quiet(airflow: Airflow, *args: str) -> bool:
    """Run ``airflow ARGS``, its output appended to the log; whether it succeeded."""
    with airflow.log.open("a") as log:
        return subprocess.run([str(airflow.cli), *args], stdout=log, stderr=subprocess.STDOUT).returncode == 0


def step(airflow: Airflow, *args: str) -> bool:
    """:func:`quiet` for a step that must succeed: on failure, say which, with the log's last 20 lines."""
    if quiet(airflow, *args):
        return True
    with airflow.log.open(errors="replace") as log:
        tail = [line.rstrip("\n") for line in deque(log, maxlen=20)]
    _say("\n".join([f"pipeline: airflow {' '.join(args)} failed:", *tail]), error=True)
    return False


def wait_for_dag(airflow: Airflow) -> bool:
    """Whether Airflow knows the DAG, having had it parse dags/ now rather than at the DAG processor's
    next scan, and waited up to 2 minutes for that: a trigger before it fails."""
    quiet(airflow, "dags", "reserialize")
    for _ in range(DAG_WAIT_TRIES):
        if quiet(airflow, "dags", "details", DAG_ID):
            return True
        time.sleep(DAG_WAIT_S)
    return step(airflow, "dags", "details", DAG_ID)  # once more, to show why not


def _listing(airflow: Airflow, *args: str) -> str:
    """The output of ``airflow ARGS -o json``, "" when the command failed (its logging: not shown)."""
    done = subprocess.run([str(airflow.cli), *args, "-o", "json"], text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
    return done.stdout if done.returncode == 0 else ""


def wait_for_run(airflow: Airflow, run_id: str, timeout_s: int,
                 awaited: Callable[[], list[str]] = list) -> str:
    """The run's state once it is "success" or "failed", or after ``timeout_s`` seconds. Polled every
    POLL_S seconds; each new state is said, with the seconds since the trigger. While the run is
    running and its ``wait_for_inputs`` has not finished, that task's state is asked too, and when
    it waits for load's inputs (up for reschedule) so is what it waits for, ``awaited()``: the run
    is not stuck, it waits for inputs (for up to the DAG's INPUT_WAIT_TIMEOUT)."""
    t0, last, sensing = time.monotonic(), "", True
    while True:
        state = run_state(_listing(airflow, "dags", "list-runs", DAG_ID), run_id)
        said = state
        if state == "running" and sensing:
            sensor = task_state(_listing(airflow, "tasks", "states-for-dag-run", DAG_ID, run_id), SENSOR)
            sensing = sensor in SENSOR_PENDING
            if sensor == "up_for_reschedule":
                said = f"running, {SENSOR} waits for load's inputs: {', '.join(awaited()) or 'see its log'}"
        elapsed = int(time.monotonic() - t0)
        if said != last:
            _say(f"pipeline: Airflow run {run_id}: {said} ({elapsed} s)")
            last = said
        if state in ("success", "failed") or elapsed >= timeout_s:
            return state
        time.sleep(POLL_S)


def airflow_home_dir(local_dir: Path) -> Path:
    """AIRFLOW_HOME, else bin/services' default: ``airflow/`` of its state dir (SERVICES_STATE_DIR,
    else LOCAL_DIR), so a private state dir's Airflow is the one asked."""
    state_dir = Path(env_str("SERVICES_STATE_DIR", "") or local_dir)
    return Path(env_str("AIRFLOW_HOME", str(state_dir / "airflow")))


def trigger(run_id: str, conf: dict[str, Any]) -> int:
    """Trigger the DAG run ``run_id`` with ``conf`` on the local Airflow and wait for it; 0 when it
    succeeded. Its records are then mirrored into the Django admin, as after a spark-submit run.

    Inputs that name no file, or that load refuses, are refused here (EXIT_PERMANENT, as load
    exits on them under bin/pipeline without Airflow): the DAG run would wait for them for hours
    (its wait_for_inputs) and hold back the next run. Airflow runs on this host in this mode, so
    the files it would look for are the ones looked at here."""
    port, timeout_s = env_int("AIRFLOW_PORT", 8080), env_int("AIRFLOW_RUN_TIMEOUT", 3600)  # a typo stops us here
    settings = get_settings()
    patterns = input_patterns(conf.get("inputs"), conf.get("remove") or [], settings.demo_input, PROJECT_ROOT)
    found = input_files(patterns)
    if found.refusal or found.missing:
        why = found.refusal or f"no input file matches {', '.join(found.missing)}"
        _say(f"pipeline: load would fail: {why}; not triggering Airflow run {run_id}", error=True)
        return EXIT_PERMANENT
    local_dir = settings.local_dir
    cli = local_dir / "airflow-venv" / "bin" / "airflow"
    if not os.access(cli, os.X_OK):
        _say(f"pipeline: no Airflow in {local_dir}/airflow-venv; run bin/services start airflow first", error=True)
        return 1
    # where bin/services keeps airflow.cfg and Airflow's DB; for every airflow command below
    airflow_home = os.environ["AIRFLOW_HOME"] = str(airflow_home_dir(local_dir))
    airflow = Airflow(cli, local_dir / "log" / "pipeline-airflow-cli.log")
    airflow.log.parent.mkdir(parents=True, exist_ok=True)

    if not wait_for_dag(airflow):
        _say(f"pipeline: Airflow does not know the DAG {DAG_ID}", error=True)
        return 1
    if not step(airflow, "dags", "unpause", DAG_ID):  # a paused DAG's triggered run would wait forever
        return 1
    _say(f"pipeline: triggering Airflow DAG {DAG_ID}, run {run_id}, conf {json.dumps(conf)}")
    if not step(airflow, "dags", "trigger", DAG_ID, "--run-id", run_id, "--conf", json.dumps(conf)):
        return 1
    _say(f"pipeline: follow it at http://127.0.0.1:{port}/dags/{DAG_ID}/runs/{run_id}")
    state = wait_for_run(airflow, run_id, timeout_s, lambda: awaited_inputs(patterns, input_settle_s())[0])
    if state not in ("success", "failed"):
        _say(f"pipeline: Airflow run {run_id} still {state} after {timeout_s} s", error=True)
        return 1
    with airflow.log.open("a") as log:  # the task states on the terminal, the CLI's logging into the log
        subprocess.run([str(cli), "tasks", "states-for-dag-run", DAG_ID, run_id], stderr=log)
    if state == "failed":
        _say(f"pipeline: Airflow run {run_id} failed; its task logs are in the Airflow UI ({airflow_home}/logs)",
             error=True)
        return 1
    # best effort, as after a spark-submit run (bin/pipeline): the site may not be migrated yet;
    # with DJANGO_DEBUG unset the local settings, or a shell without DJANGO_SECRET_KEY never synced
    subprocess.run([sys.executable, str(PROJECT_ROOT / "recsite" / "manage.py"), "sync_pipeline_records"],
                   stderr=subprocess.DEVNULL, env={**os.environ, "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG") or "1"})
    _say(f"pipeline: run {run_id} finished in Airflow")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("trigger", help="trigger RUN as a run of the DAG and wait for it")
    run.add_argument("run_id")
    run.add_argument("--engine", required=True)
    run.add_argument("--force-publish", action="store_true")
    run.add_argument("--rerun", type=stage_list, default=[],
                     help="the stages forced to redo their work, comma-separated (run_records start's)")
    run.add_argument("--input", action="append", default=[], help="a file or glob for load (repeatable)")
    run.add_argument("--remove", action="append", default=[], help="a loaded file to take out (repeatable)")
    args = parser.parse_args(argv)
    try:
        return trigger(args.run_id, dag_conf(args.engine, args.force_publish, args.input, args.remove, args.rerun,
                                             input_done_marker()))
    except KeyboardInterrupt:  # the run goes on in Airflow: say so rather than print a traceback
        _say(f"pipeline: stopped waiting; Airflow run {args.run_id} goes on (the Airflow UI shows it)", error=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
