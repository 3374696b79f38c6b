"""bin/pipeline's ``--input``: a relative path or glob is the caller's, not the repository's; and
``--remove`` reaches load.

bin/pipeline runs for real from another directory, with test_pipeline_resume's stand-in
spark-submit (it logs each job and its arguments, and fails clean, so the run stops after load):
no Spark starts.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from tests.integration import test_pipeline_resume as resume

pytestmark = pytest.mark.integration
ROOT = resume.ROOT
local_dir = resume.local_dir  # the fixture: a LOCAL_DIR whose venv runs the stand-in spark-submit


def _run(settings, local_dir, tmp_path, cwd, *args: str):
    """bin/pipeline with the stand-in spark-submit; returns (completed process, [[job, *args], ...])."""
    log = tmp_path / f"submitted-{uuid.uuid4().hex[:6]}.jsonl"
    env = {**os.environ, "LOCAL_DIR": str(local_dir), "STUB_LOG": str(log), "STUB_FAIL": "clean",
           "DATA_DIR": str(settings.data_dir), "ARTIFACTS_DIR": str(settings.artifacts_dir),
           "MONGO_DB": settings.mongo_db}
    done = subprocess.run([str(ROOT / "bin" / "pipeline"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    return done, [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_relative_inputs_are_taken_from_the_callers_directory(settings, mongo_db, local_dir, tmp_path):
    caller = tmp_path / "caller"
    caller.mkdir()
    absolute = str(tmp_path / "elsewhere" / "amazon2018_toys.jsonl.gz")
    done, submitted = _run(settings, local_dir, tmp_path, caller, "--input", "data/*.json.gz", "--input", absolute)
    job, *args = submitted[0] if submitted else [None]
    assert job == "load", done.stdout + done.stderr
    assert [args[i + 1] for i, a in enumerate(args) if a == "--input"] == [f"{caller}/data/*.json.gz", absolute]


def test_remove_reaches_load_and_the_dags_remove_param(settings, mongo_db, local_dir, tmp_path):
    done, submitted = _run(settings, local_dir, tmp_path, ROOT, "--remove", "amazon2018_toys.jsonl.gz")
    job, *args = submitted[0] if submitted else [None]
    assert job == "load" and args[:2] == ["--remove", "amazon2018_toys.jsonl.gz"], done.stdout + done.stderr
    # with --airflow (a stand-in airflow: the run succeeds at once), in the DAG run's conf
    given = tmp_path / "a.jsonl"
    given.write_text("{}\n")
    done, submitted = _run(settings, local_dir, tmp_path, ROOT, "--airflow", "--input", str(given),
                           "--remove", "x.jsonl", "--remove", "y.jsonl")
    assert done.returncode == 0, done.stdout + done.stderr
    [trigger] = [args for _, *args in submitted if args[:2] == ["dags", "trigger"]]
    assert json.loads(trigger[trigger.index("--conf") + 1]) == {
        "engine": "auto", "force_publish": False, "inputs": [str(given)], "remove": ["x.jsonl", "y.jsonl"]}


def test_an_input_that_names_no_file_is_refused_before_a_dag_run_is_triggered(settings, mongo_db, local_dir, tmp_path):
    """As load refuses it at once without --airflow (exit 64), rather than a DAG run that waits for
    it for hours (its wait_for_inputs) while bin/pipeline gives up with "still running"."""
    done, submitted = _run(settings, local_dir, tmp_path, tmp_path, "--airflow", "--input", "exports/*.json")
    assert done.returncode == 64, done.stdout + done.stderr
    assert f"no input file matches {tmp_path}/exports/*.json" in done.stderr
    assert not [args for _, *args in submitted if args[:2] == ["dags", "trigger"]]
