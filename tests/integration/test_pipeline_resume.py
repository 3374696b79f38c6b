"""``bin/pipeline --resume``: which stages run again, with which inputs and which model version.

bin/pipeline itself runs (the real script, its real record reading), but with a stand-in
spark-submit: a stub that logs the job and its arguments and writes the record the job would
(through spark_jobs.reconcile.write_record, so the file and MongoDB's copy), or fails when told
to (before the job begins, or after its "started" record, as a driver killed half-way). No Spark
starts; what is under test is bin/pipeline's choice of stages and arguments. The records a run
leaves behind are written by the test first, as the jobs write them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from core.runs import STAGES
from tests.conftest import DEMO_FILE, real_file

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

STUB = '''#!{python}
"""spark-submit for tests/integration/test_pipeline_resume.py: log the job, write its record."""
import json, os, sys, time
from pathlib import Path

script = next(a for a in sys.argv[1:] if a.endswith(".py"))
sys.path.insert(0, str(Path(script).resolve().parents[1]))  # the tree bin/pipeline runs from
job, args = Path(script).stem, sys.argv[sys.argv.index(script) + 1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps([job, *args]) + "\\n")
if job in os.environ.get("STUB_FAIL", "").split(","):
    sys.exit(1)
run_id = args[args.index("--run-id") + 1]
from spark_jobs.reconcile import write_record
dying, _, status = os.environ.get("STUB_DIE", "").partition(":")
if job == dying:  # what the job's frame records first, then a driver that exits with no record of its end
    write_record(run_id, job, {{"status": "started", "started_at": time.time()}})
    sys.exit(int(status))
record = {{"status": "ok"}}
if job == "load":
    record["inputs"] = [args[i + 1] for i, a in enumerate(args) if a == "--input"] or ["the demo"]
    record["remove"] = [args[i + 1] for i, a in enumerate(args) if a == "--remove"]
elif job == "train":
    record["version"] = "v-" + run_id
elif job == "publish":
    record = {{"status": "published", "version": args[args.index("--version") + 1]}}
write_record(run_id, job, record)
'''


AIRFLOW_STUB = '''#!{python}
"""airflow for bin/pipeline --airflow in tests: log the command; every triggered run succeeded."""
import json, os, sys

args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(["airflow", *args]) + "\\n")
if args[:2] == ["dags", "list-runs"]:
    with open(os.environ["STUB_LOG"]) as f:
        logged = [json.loads(line) for line in f]
    runs = [a[a.index("--run-id") + 1] for a in logged if a[:3] == ["airflow", "dags", "trigger"]]
    print(json.dumps([{{"run_id": run, "state": "success"}} for run in runs]))
'''


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory):
    """A LOCAL_DIR whose venv runs the real python and the stub spark-submit, and whose Airflow venv
    the stub airflow."""
    local = tmp_path_factory.mktemp("pipeline-local")
    bin_dir, airflow_bin = local / "venv" / "bin", local / "airflow-venv" / "bin"
    bin_dir.mkdir(parents=True)
    airflow_bin.mkdir(parents=True)
    python = Path(sys.prefix) / "bin" / "python"
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    (bin_dir / "spark-submit").write_text(STUB.format(python=python))
    (airflow_bin / "airflow").write_text(AIRFLOW_STUB.format(python=python))
    for path in (bin_dir / "python", bin_dir / "spark-submit", airflow_bin / "airflow"):
        path.chmod(0o755)
    return local


@pytest.fixture
def pipeline(settings, mongo_db, local_dir, tmp_path):
    """Run bin/pipeline with the stub; returns (completed process, [[job, *args], ...] submitted)."""
    def run(*args: str, fail: str = "", die: str = "") -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        log = tmp_path / f"submitted-{uuid.uuid4().hex[:6]}.jsonl"
        env = {**os.environ, "LOCAL_DIR": str(local_dir), "STUB_LOG": str(log), "STUB_FAIL": fail, "STUB_DIE": die,
               "DATA_DIR": str(settings.data_dir), "ARTIFACTS_DIR": str(settings.artifacts_dir),
               "MONGO_DB": settings.mongo_db}
        done = subprocess.run([str(ROOT / "bin" / "pipeline"), *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        submitted = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return done, submitted
    return run


def _run_id() -> str:
    return f"it-resume-{uuid.uuid4().hex[:8]}"


def _record(run_id: str, job: str, record: dict) -> None:
    """What the job writes at the end of a run (the file, and MongoDB's copy)."""
    from spark_jobs.reconcile import write_record

    write_record(run_id, job, {"run_id": run_id, **record})


def _jobs(submitted: list[list[str]]) -> list[str]:
    return [job for job, *_ in submitted]


def _args(submitted: list[list[str]], job: str) -> list[str]:
    return next(args for name, *args in submitted if name == job)


def _finished_run(run_id: str, publish: dict) -> None:
    """Every stage recorded as the jobs record a finished run; publish as given."""
    _record(run_id, "load", {"status": "ok", "inputs": [str(DEMO_FILE)]})
    for job in ("clean", "mongo_load", "eda"):
        _record(run_id, job, {"status": "ok"})
    _record(run_id, "train", {"status": "ok", "version": f"v-{run_id}", "metrics": {"ndcg@10": 0.1}})
    if publish:
        _record(run_id, "publish", {"version": f"v-{run_id}", **publish})


# --- 1. a resumed load loads the run's own inputs ----------------------------------------------

@pytest.mark.parametrize("status", ["failed", "started"])
def test_resume_without_input_loads_the_recorded_inputs_not_the_demo(pipeline, status):
    run_id = _run_id()
    one = str(real_file("amazon2018_all_beauty_5.jsonl.gz"))
    _record(run_id, "load", {"status": status, "inputs": [one], **({"error": "unbalanced"} if status == "failed" else {})})
    done, submitted = pipeline("--resume", run_id, fail="clean")  # stop after load
    assert _jobs(submitted) == ["load", "clean"], done.stdout + done.stderr
    assert _args(submitted, "load") == ["--input", one, "--run-id", run_id]


@pytest.mark.parametrize("load_record", [None, {"status": "failed", "error": "unbalanced"}],
                         ids=["no-record", "record-without-inputs"])
def test_resume_refuses_when_the_run_recorded_no_inputs(pipeline, load_record):
    run_id = _run_id()
    if load_record is not None:
        _record(run_id, "load", load_record)
    done, submitted = pipeline("--resume", run_id)
    assert done.returncode != 0 and submitted == []
    assert "--input" in done.stderr and run_id in done.stderr, done.stderr


def test_resume_refuses_inputs_other_than_the_recorded_ones(pipeline):
    run_id = _run_id()
    one, other = str(real_file("amazon2018_all_beauty_5.jsonl.gz")), str(DEMO_FILE)
    _record(run_id, "load", {"status": "failed", "error": "unbalanced", "inputs": [one]})
    done, submitted = pipeline("--resume", run_id, "--input", other)
    assert done.returncode != 0 and submitted == []
    assert one in done.stderr and other in done.stderr, done.stderr

    # the same inputs again are fine
    done, submitted = pipeline("--resume", run_id, "--input", one, fail="clean")
    assert _args(submitted, "load") == ["--input", one, "--run-id", run_id], done.stdout + done.stderr


def test_resume_takes_a_relative_input_as_the_relative_one_an_older_run_recorded(pipeline):
    """bin/pipeline makes --input data/... absolute from the caller's directory (here the repository);
    a run of a bin/pipeline from before recorded it as given, and load ran it from the repository."""
    run_id = _run_id()
    relative = str(DEMO_FILE.relative_to(ROOT))
    _record(run_id, "load", {"status": "failed", "error": "unbalanced", "inputs": [relative]})
    done, submitted = pipeline("--resume", run_id, "--input", f"./{relative}", fail="clean")
    assert _args(submitted, "load") == ["--input", relative, "--run-id", run_id], done.stdout + done.stderr


def test_resume_removes_what_the_run_recorded_and_refuses_another_remove(pipeline):
    """A load killed before it removed the file (review: the resume used to drop the --remove)."""
    run_id = _run_id()
    one = str(real_file("amazon2018_all_beauty_5.jsonl.gz"))
    _record(run_id, "load", {"status": "started", "inputs": [one], "remove": ["amazon2018_gift_cards.jsonl.gz"]})
    done, submitted = pipeline("--resume", run_id, "--remove", "other.jsonl.gz")
    assert done.returncode != 0 and submitted == []
    assert "--remove amazon2018_gift_cards.jsonl.gz, not --remove other.jsonl.gz" in done.stderr, done.stderr

    done, submitted = pipeline("--resume", run_id, fail="clean")
    assert _args(submitted, "load") == ["--input", one, "--remove", "amazon2018_gift_cards.jsonl.gz",
                                        "--run-id", run_id], done.stdout + done.stderr


# --- 2. a resume does not publish again ----------------------------------------------------------

@pytest.mark.parametrize("status", ["published", "rejected", "unchanged"])
def test_resume_after_a_finished_publish_runs_nothing(pipeline, status):
    run_id = _run_id()
    _finished_run(run_id, {"status": status})
    done, submitted = pipeline("--resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert submitted == []
    assert f"publish finished in run {run_id} already" in done.stdout


@pytest.mark.parametrize("publish, args", [({}, []), ({"status": "rejected"}, ["--force-publish"])],
                         ids=["publish-failed", "rejected-then-forced"])
def test_resume_publishes_when_publish_did_not_finish_or_is_forced(pipeline, publish, args):
    """Kept behaviour: a publish that left no record (it failed) runs again, and so does a rejected
    one when the resume asks for --force-publish."""
    run_id = _run_id()
    _finished_run(run_id, publish)
    done, submitted = pipeline("--resume", run_id, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _jobs(submitted) == ["publish"]
    assert _args(submitted, "publish") == ["--version", f"v-{run_id}", *(["--force"] if args else []),
                                           "--run-id", run_id]


# --- 3. the model version comes from train's record file -------------------------------------------

def test_resume_takes_the_model_version_from_trains_record_file(pipeline, mongo_db):
    """The file is the record of truth (reconcile.write_record); MongoDB's copy is best effort."""
    from core import mongo

    run_id = _run_id()
    _finished_run(run_id, {})
    mongo_db[mongo.PIPELINE_RUNS].delete_one({"_id": f"{run_id}:train"})  # MongoDB was down when train recorded
    done, submitted = pipeline("--resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _args(submitted, "publish") == ["--version", f"v-{run_id}", "--run-id", run_id]


# --- 4. run ids: a new run never reuses one, a resume never goes through Airflow ---------------------

def test_a_new_run_refuses_a_run_id_that_has_records(pipeline, settings):
    """A reused --run-id would replace the run's records job by job; one left "ok" by the earlier
    run would make a later --resume skip a stage that never ran in this one (review-batch #4)."""
    run_id = _run_id()
    _record(run_id, "clean", {"status": "ok"})
    done, submitted = pipeline("--run-id", run_id)
    assert done.returncode != 0 and submitted == []
    assert f"--resume {run_id}" in done.stderr and "clean.json" in done.stderr, done.stderr
    assert sorted(p.name for p in (settings.data_dir / "runs" / run_id).iterdir()) == ["clean.json"]


def test_resume_with_airflow_is_refused(pipeline):
    """--airflow would trigger a new DAG run on the demo default under the id (review-batch #3)."""
    run_id = _run_id()
    _record(run_id, "load", {"status": "failed", "inputs": [str(DEMO_FILE)]})
    done, submitted = pipeline("--resume", run_id, "--airflow")
    assert done.returncode == 2 and submitted == []
    assert "--resume with --airflow" in done.stderr, done.stderr


# --- 5. a resume restores the run's --engine and --force-publish ----------------------------------

def test_resume_restores_the_engine_and_force_publish_the_run_started_with(pipeline):
    run_id = _run_id()
    done, submitted = pipeline("--run-id", run_id, "--engine", "spark", "--force-publish", fail="train")
    assert done.returncode != 0 and _args(submitted, "train") == ["--engine", "spark", "--run-id", run_id]

    done, submitted = pipeline("--resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _jobs(submitted) == ["train", "publish"]
    assert _args(submitted, "train") == ["--engine", "spark", "--run-id", run_id]
    assert _args(submitted, "publish") == ["--version", f"v-{run_id}", "--force", "--run-id", run_id]


def test_an_engine_given_to_the_resume_wins_and_is_kept(pipeline):
    run_id = _run_id()
    done, submitted = pipeline("--run-id", run_id, "--engine", "spark", fail="train")
    assert done.returncode != 0

    done, submitted = pipeline("--resume", run_id, "--engine", "ease", fail="train")
    assert _args(submitted, "train") == ["--engine", "ease", "--run-id", run_id]
    done, submitted = pipeline("--resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _args(submitted, "train") == ["--engine", "ease", "--run-id", run_id]
    assert _args(submitted, "publish") == ["--version", f"v-{run_id}", "--run-id", run_id]


def test_a_run_id_with_a_slash_is_one_safe_id_for_every_stage_and_the_resume(pipeline, settings):
    run_id = f"nightly/{uuid.uuid4().hex[:8]}"
    done, submitted = pipeline("--run-id", run_id, fail="eda")
    assert _jobs(submitted) == list(STAGES[:4]), done.stdout + done.stderr
    safe = run_id.replace("/", "-")
    assert sorted(p.name for p in (settings.data_dir / "runs" / safe).iterdir()) == [
        "clean.json", "load.json", "mongo_load.json", "pipeline.json"]
    done, submitted = pipeline("--resume", run_id)
    assert done.returncode == 0 and _jobs(submitted) == list(STAGES[3:]), done.stdout + done.stderr


# --- 6. --rerun: the stages it forces redo their work, and a resume restores it -------------------

def test_rerun_forces_the_stages_it_names_and_the_ones_after_and_a_resume_restores_it(pipeline):
    """--rerun clean: clean and mongo_load get --force (mongo_load would see the clean ledger of
    before and skip), load does not; the resume of the run forces the stages it runs again."""
    run_id = _run_id()
    done, submitted = pipeline("--run-id", run_id, "--input", str(DEMO_FILE), "--rerun", "clean", fail="mongo_load")
    assert _jobs(submitted) == ["load", "clean", "mongo_load"], done.stdout + done.stderr
    assert _args(submitted, "load") == ["--input", str(DEMO_FILE), "--run-id", run_id]
    assert _args(submitted, "clean") == _args(submitted, "mongo_load") == ["--force", "--run-id", run_id]

    done, submitted = pipeline("--resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _jobs(submitted) == ["mongo_load", "eda", "train", "publish"]
    assert _args(submitted, "mongo_load") == ["--force", "--run-id", run_id]
    assert _args(submitted, "eda") == ["--run-id", run_id]


def test_rerun_of_a_stage_with_nothing_to_redo_is_refused_and_reaches_the_dags_rerun_param(pipeline):
    done, submitted = pipeline("--rerun", "load,train")
    assert done.returncode != 0 and submitted == []
    assert "--rerun: cannot rerun train: only load, clean, mongo_load" in done.stderr, done.stderr
    # with --airflow (a stand-in airflow: the run succeeds at once), in the DAG run's conf
    done, submitted = pipeline("--airflow", "--rerun", "load")
    assert done.returncode == 0, done.stdout + done.stderr
    [trigger] = [args for _, *args in submitted if args[:2] == ["dags", "trigger"]]
    assert json.loads(trigger[trigger.index("--conf") + 1]) == {
        "engine": "auto", "force_publish": False, "rerun": ["load", "clean", "mongo_load"]}


# --- 7. a job that died half-way says so in its record ---------------------------------------------

def test_a_job_killed_half_way_is_recorded_failed_with_its_exit_status_and_the_resume_runs_it(pipeline, mongo_db):
    """Spark's driver exits 52 on an OutOfMemoryError and takes the job's Python with it: mongo_load
    at 51.6M reviews left "started" and no error, as if it still ran. bin/pipeline records it."""
    from core import mongo
    from core.runs import read_record

    run_id = _run_id()
    done, submitted = pipeline("--run-id", run_id, "--input", str(DEMO_FILE), die="mongo_load:52")
    assert done.returncode == 52, done.stdout + done.stderr
    assert _jobs(submitted) == ["load", "clean", "mongo_load"]
    record = read_record(run_id, "mongo_load")
    assert (record["status"], record["exit_status"]) == ("failed", 52), record
    assert "exited with status 52: Spark's driver ran out of memory" in record["error"]
    assert record["error"] in done.stderr
    assert mongo_db[mongo.PIPELINE_RUNS].find_one({"_id": f"{run_id}:mongo_load"})["status"] == "failed"  # the admin's
    done, submitted = pipeline("--resume", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _jobs(submitted) == ["mongo_load", "eda", "train", "publish"]


def test_a_submit_that_failed_before_the_job_began_leaves_an_earlier_attempts_record_alone(pipeline):
    """Only this attempt's "started" record is its to mark: an older one (a job killed before this
    resume) is not relabelled with a status it never had."""
    from core.runs import read_record

    run_id = _run_id()
    _record(run_id, "load", {"status": "ok", "inputs": [str(DEMO_FILE)]})
    _record(run_id, "clean", {"status": "ok"})
    _record(run_id, "mongo_load", {"status": "started", "started_at": time.time() - 3600})
    done, submitted = pipeline("--resume", run_id, fail="mongo_load")
    assert done.returncode == 1 and _jobs(submitted) == ["mongo_load"], done.stdout + done.stderr
    assert read_record(run_id, "mongo_load")["status"] == "started"
