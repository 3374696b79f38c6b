"""spark_jobs/airflow_run.py, bin/pipeline --airflow: the DAG run's conf built from the flags, and the
run's state read from ``airflow dags list-runs -o json``. The CLI itself is exercised with a stand-in
airflow by tests/integration/test_pipeline_inputs.py and test_pipeline_resume.py."""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from core.runs import EXIT_PERMANENT
from spark_jobs import airflow_run
from spark_jobs.airflow_run import DAG_ID, airflow_home_dir, dag_conf, main, run_state, trigger

ROOT = Path(__file__).resolve().parents[2]


def test_the_flags_become_the_dags_params_in_their_order():
    assert dag_conf("ease", True, ["/d/a.jsonl", "/d/b*.json.gz"], ["x.jsonl", "y.jsonl"]) == {
        "engine": "ease", "force_publish": True, "inputs": ["/d/a.jsonl", "/d/b*.json.gz"],
        "remove": ["x.jsonl", "y.jsonl"]}


def test_the_stages_to_rerun_become_the_rerun_param():
    assert dag_conf("auto", False, [], [], ["clean", "mongo_load"]) == {
        "engine": "auto", "force_publish": False, "rerun": ["clean", "mongo_load"]}


def test_inputs_remove_and_rerun_are_left_to_the_dags_defaults_when_not_given():
    """An empty list would be the same param for the DAG, but a conf without them is the one
    bin/pipeline has always sent (the demo files are load's default, not the DAG's)."""
    assert dag_conf("auto", False, [], []) == {"engine": "auto", "force_publish": False}


def test_the_command_line_reaches_the_conf(monkeypatch):
    triggered = []
    monkeypatch.setattr("spark_jobs.airflow_run.trigger", lambda run_id, conf: triggered.append((run_id, conf)) or 0)
    assert main(["trigger", "r-1", "--engine", "spark", "--input", "/a", "--remove", "x", "--input", "/b"]) == 0
    assert main(["trigger", "r-2", "--engine", "ease", "--rerun", "clean,mongo_load"]) == 0
    assert main(["trigger", "r-3", "--engine", "ease", "--rerun", ""]) == 0  # bin/pipeline's "no stage forced"
    assert triggered == [("r-1", {"engine": "spark", "force_publish": False, "inputs": ["/a", "/b"], "remove": ["x"]}),
                         ("r-2", {"engine": "ease", "force_publish": False, "rerun": ["clean", "mongo_load"]}),
                         ("r-3", {"engine": "ease", "force_publish": False})]


def _dag_file() -> tuple[str, set[str]]:
    """(DAG_ID, the names of its params) of dags/recommender_pipeline.py, read as text: the app's
    venv has no Airflow to import it with."""
    tree = ast.parse((ROOT / "dags" / "recommender_pipeline.py").read_text())
    dag_id = next(node.value.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and getattr(node.targets[0], "id", "") == "DAG_ID")
    params = next(kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and getattr(node.func, "id", "") == "DAG" for kw in node.keywords if kw.arg == "params")
    return dag_id, {key.value for key in params.keys}


def test_the_conf_names_the_dag_and_its_params():
    dag_id, params = _dag_file()
    assert DAG_ID == dag_id
    assert set(dag_conf("auto", False, ["/a"], ["x"], ["load"], "_SUCCESS")) == params


RUNS = [{"dag_id": DAG_ID, "run_id": "older", "state": "failed"},
        {"dag_id": DAG_ID, "run_id": "r-1", "state": "running"}]


@pytest.mark.parametrize("listing, state", [
    (json.dumps(RUNS), "running"),
    # what the CLI prints on stdout before its JSON: warnings, log lines that also start with "["
    ("/airflow/configuration.py:123 DeprecationWarning: the [core] sql_alchemy_conn option is deprecated\n"
     "[2026-12-05T07:53:27.123+0000] {dagbag.py:588} INFO - Filling up the DagBag from /work/dags\n"
     + json.dumps(RUNS) + "\n", "running"),
    (json.dumps(RUNS[:1]), "unknown"),           # not listed yet: the trigger is still being processed
    ("[]\n", "unknown"),                         # no runs at all
    ("", "unknown"),                             # nothing printed
    ("No data found\n", "unknown"),
    ("[2026-12-05T07:53:27] {cli.py:1} ERROR - the API server is down\n", "unknown"),  # no JSON after the noise
])
def test_the_run_state_is_read_from_the_list_runs_json(listing, state):
    assert run_state(listing, "r-1") == state


def test_the_airflow_asked_is_the_state_dirs_as_bin_services_runs_it(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW_HOME", raising=False)
    monkeypatch.delenv("SERVICES_STATE_DIR", raising=False)
    assert airflow_home_dir(tmp_path / "local") == tmp_path / "local" / "airflow"
    monkeypatch.setenv("SERVICES_STATE_DIR", str(tmp_path / "private"))
    assert airflow_home_dir(tmp_path / "local") == tmp_path / "private" / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "mine"))
    assert airflow_home_dir(tmp_path / "local") == tmp_path / "mine"


def test_inputs_that_name_no_file_are_refused_before_a_run_is_triggered(monkeypatch, tmp_path, capsys):
    """A mistyped or missing input: load would fail at once (exit 64) under bin/pipeline alone;
    under Airflow the run's wait_for_inputs would wait for it for hours, bin/pipeline give up after
    AIRFLOW_RUN_TIMEOUT and a corrected run queue behind it. Airflow runs on this host in this
    mode, so the input is checked here, before anything is triggered."""
    from core.settings import get_settings

    # a LOCAL_DIR without an Airflow venv: a run that got past the input check stops at once
    no_airflow = dataclasses.replace(get_settings(), local_dir=tmp_path / "local")
    monkeypatch.setattr(airflow_run, "get_settings", lambda: no_airflow)
    missing = str(tmp_path / "exports" / "*.json")
    assert trigger("r-1", dag_conf("auto", False, [missing], [])) == EXIT_PERMANENT
    err = capsys.readouterr().err
    assert f"no input file matches {missing}" in err and "not triggering" in err
    (tmp_path / "folder").mkdir()  # what load refuses, whatever arrives
    assert trigger("r-1", dag_conf("auto", False, [str(tmp_path / "folder")], [])) == EXIT_PERMANENT
    assert f"{tmp_path / 'folder'} is not a file" in capsys.readouterr().err
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "reviews_Books.json").write_text("{}\n")
    assert trigger("r-1", dag_conf("auto", False, [missing], [])) == 1  # on to Airflow: none here
    assert "no Airflow in" in capsys.readouterr().err


def test_waiting_for_a_run_says_when_its_sensor_waits_for_inputs(monkeypatch, capsys, tmp_path):
    """A run whose wait_for_inputs is up for reschedule is not stuck: bin/pipeline says it waits for
    load's inputs, and which; once the sensor is done its state is no longer asked."""
    runs = iter(["running", "running", "running", "running", "success"])
    sensor = iter(["None", "up_for_reschedule", "up_for_reschedule", "success"])
    asked = []

    def airflow_cli(cmd, **kwargs):
        asked.append(cmd[1:3])
        if cmd[1:3] == ["dags", "list-runs"]:
            rows = [{"run_id": "r-1", "state": next(runs)}]
        else:
            rows = [{"task_id": "wait_for_inputs", "state": next(sensor)}, {"task_id": "load", "state": None}]
        return subprocess.CompletedProcess(cmd, 0, stdout="a log line\n" + json.dumps(rows) + "\n")

    monkeypatch.setattr(airflow_run.subprocess, "run", airflow_cli)
    monkeypatch.setattr(airflow_run.time, "sleep", lambda s: None)
    airflow = airflow_run.Airflow(tmp_path / "airflow", tmp_path / "airflow.log")
    assert airflow_run.wait_for_run(airflow, "r-1", 3600, lambda: ["/exports/*.json"]) == "success"
    said = [line.split(" (")[0] for line in capsys.readouterr().out.splitlines()]
    assert said == ["pipeline: Airflow run r-1: running",
                    "pipeline: Airflow run r-1: running, wait_for_inputs waits for load's inputs: /exports/*.json",
                    "pipeline: Airflow run r-1: running", "pipeline: Airflow run r-1: success"]
    assert asked.count(["tasks", "states-for-dag-run"]) == 4
