"""dags/recommender/params.py: the DAG's params as the jobs' arguments. The module needs no Airflow
(the app's venv has none), so it is loaded here from its file, as the DAG folder would import it;
tests/integration/test_airflow_dag.py checks the DAG that uses it with Airflow itself."""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import time
from pathlib import Path

import pytest

from core.inputs import input_settle_s, unsettled

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def params(monkeypatch):
    monkeypatch.delenv("APP_ROOT", raising=False)
    spec = importlib.util.spec_from_file_location("dag_params", ROOT / "dags" / "recommender" / "params.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_load_args_pass_inputs_from_the_repository_and_removals_by_name(params):
    assert params.load_args({"inputs": ["data/x.jsonl.gz", "/abs/*.json.gz"], "remove": ["old.jsonl.gz"]}) == [
        "--input", str(ROOT / "data" / "x.jsonl.gz"), "--input", "/abs/*.json.gz", "--remove", "old.jsonl.gz"]


def test_the_dag_hands_load_its_inputs_from_the_repository_as_given(params):
    """A relative input is taken from the repository; nothing else changes: a lexically resolved
    ``..`` after a symlink names another place (``/x/current/../archive`` is not ``/x/archive``
    when ``current`` links elsewhere). A resume compares them resolved (core.inputs.same_input)."""
    from core.inputs import same_input

    given = ["./data/demo/../demo/x.jsonl.gz", "/abs/current/../in/*.json.gz", "s3a://b/./c.json"]
    assert params.load_args({"inputs": given}) == ["--input", str(ROOT) + "/./data/demo/../demo/x.jsonl.gz",
                                                   "--input", "/abs/current/../in/*.json.gz", "--input", "s3a://b/./c.json"]
    assert [same_input(path) for path in params.load_args({"inputs": given})[1::2]] == [
        str(ROOT / "data" / "demo" / "x.jsonl.gz"), "/abs/in/*.json.gz", "s3a://b/./c.json"]


@pytest.mark.parametrize("given, args", [
    ({"inputs": [], "remove": []}, []),                   # load's default: the demo files
    ({"inputs": [], "remove": ["a.json"]}, ["--remove", "a.json"]),  # a removal only: load loads nothing
    ({"inputs": ["/d/b.json"]}, ["--input", "/d/b.json"]),  # a run triggered with the params of before
])
def test_load_args_leave_the_default_to_load(params, given, args):
    assert params.load_args(given) == args


@pytest.mark.parametrize("rerun, forced", [
    ([], []), (["load"], ["load", "clean", "mongo_load"]), (["clean"], ["clean", "mongo_load"]),
    (["mongo_load"], ["mongo_load"])])
def test_the_rerun_param_forces_the_stages_it_names_and_the_rerunnable_ones_after_them(params, rerun, forced):
    """As bin/pipeline --rerun: each forced stage gets --force; load's comes after its inputs."""
    given = {"inputs": ["/d/a.json"], "remove": [], "rerun": rerun}
    assert {job: params.rerun_args(job)(given) for job in ("load", "clean", "mongo_load")} == {
        job: ["--force"] if job in forced else [] for job in ("load", "clean", "mongo_load")}
    assert params.load_args(given) == ["--input", "/d/a.json", *(["--force"] if "load" in forced else [])]
    assert params.rerun_args("clean")({}) == []  # a run triggered with the params of before


def test_force_args(params):
    assert (params.force_args({"force_publish": True}), params.force_args({"force_publish": False})) == (["--force"], [])


def test_the_jobs_get_the_demo_input_from_the_repository(params, monkeypatch):
    from core.settings import get_settings

    monkeypatch.setenv("DEMO_INPUT", "data/demo/one.jsonl")
    get_settings.cache_clear()
    try:
        assert params.demo_input() == str(ROOT / "data" / "demo" / "one.jsonl")
    finally:
        get_settings.cache_clear()


def test_bin_pipeline_resumes_a_dag_run_with_its_params(params, tmp_path, monkeypatch):
    """The DAG's load task records the run's params (record_options) as bin/pipeline records its flags,
    so a resume by hand forces the stages the DAG run forced: clean failed, the resume runs it and
    mongo_load, both with --force (else they would skip what their ledgers say is done)."""
    from core import runs
    from core.settings import get_settings
    from spark_jobs import reconcile, run_records

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("core.mongo.record_pipeline_run", lambda *args, **kwargs: None)
    get_settings.cache_clear()
    try:
        airflow_run_id = "manual__2026-12-05T10:00:00+00:00"
        params.record_options(airflow_run_id, {"inputs": [], "remove": [], "engine": "ease", "force_publish": True,
                                               "rerun": ["clean"]})
        safe = runs.fs_safe(airflow_run_id)
        reconcile.write_record(safe, "load", {"status": "ok", "inputs": []})
        reconcile.write_record(safe, "clean", {"status": "failed"})
        assert run_records.start(safe, resume=True) == ("ease", True, ["clean", "mongo_load"])
        params.record_options("scheduled__2026-12-05T00:00:00+00:00", {"engine": "auto", "force_publish": False})
        assert run_records.start("scheduled__2026-12-05T00-00-00-00-00", resume=True) == ("auto", False, [])
    finally:
        get_settings.cache_clear()


def test_a_retried_load_task_keeps_the_options_a_resume_by_hand_recorded(params, tmp_path, monkeypatch):
    """The load task recorded the DAG's params on every try: a retry (or a cleared task) after a
    resume by hand with --engine ease wrote the DAG's engine back, and the next resume used it."""
    from core.settings import get_settings
    from spark_jobs import reconcile, run_records

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("core.mongo.record_pipeline_run", lambda *args, **kwargs: None)
    get_settings.cache_clear()
    try:
        run_id, dag_params = "manual__2026-12-05T11:00:00+00:00", {"engine": "spark", "force_publish": False}
        params.record_options(run_id, dag_params)  # the load task's first try
        reconcile.write_record(run_id, "load", {"status": "failed", "inputs": []})
        assert run_records.start(run_id, resume=True, engine="ease") == ("ease", False, [])  # by hand
        params.record_options(run_id, dag_params)  # the load task cleared, or retried, in Airflow
        assert run_records.start(run_id, resume=True) == ("ease", False, [])
    finally:
        get_settings.cache_clear()


def test_the_dags_load_task_records_the_runs_options_before_it_starts():
    """The DAG needs Airflow to run (tests/integration/test_airflow_dag.py); its wiring is read here."""
    tree = ast.parse((ROOT / "dags" / "recommender_pipeline.py").read_text())
    on_start = {kw.value.id for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "SparkJobOperator"
                and any(kw.arg == "job" and kw.value.value == "load" for kw in node.keywords)
                for kw in node.keywords if kw.arg == "on_start"}
    assert on_start == {"record_options"}


def test_the_dag_waits_for_inputs_that_name_no_file_yet(params, tmp_path):
    """wait_for_inputs (the DAG's sensor before load) waits while an input load is to read names no
    file, as load matches it (core.inputs.input_files): load would fail for good on it (exit 64),
    and a file that arrives later would never be loaded."""
    given = {"inputs": [str(tmp_path / "*.jsonl.gz"), str(tmp_path / "meta.json")], "remove": []}
    assert params.inputs_awaited(given, 0) == (given["inputs"], "")
    (tmp_path / "Books.jsonl.gz").write_bytes(b"")
    assert params.inputs_awaited(given, 0) == ([str(tmp_path / "meta.json")], "")
    (tmp_path / "meta.json").write_text("{}")
    assert params.inputs_awaited(given, 0) == ([], "")


def test_with_a_done_marker_the_dag_waits_for_the_whole_export(params, tmp_path, monkeypatch):
    """A multi-file export matched by a glob: its first settled file ended the wait, and load read
    the export without the files still to come. With INPUT_DONE_MARKER the wait also needs the
    marker the exporter writes last in each input's folder; without it nothing changes."""
    exports, meta = tmp_path / "exports", tmp_path / "meta"
    exports.mkdir(), meta.mkdir()
    (exports / "part-00000.json.gz").write_bytes(b"")
    (meta / "meta_Books.json").write_text("{}")
    given = {"inputs": [str(exports / "part-*.json.gz"), str(meta / "meta_Books.json")]}
    assert params.inputs_awaited(given, 0) == ([], "")  # the default: no marker
    monkeypatch.setenv("INPUT_DONE_MARKER", "_SUCCESS")
    assert params.inputs_awaited(given, 0) == ([f"{exports / '_SUCCESS'} (the export's done marker)",
                                                f"{meta / '_SUCCESS'} (the export's done marker)"], "")
    (exports / "part-00001.json.gz").write_bytes(b"")
    (exports / "_SUCCESS").write_bytes(b"")
    (meta / "_SUCCESS").write_bytes(b"")
    assert params.inputs_awaited(given, 0) == ([], "")
    assert params.inputs_awaited({**given, "done_marker": "DONE"}, 0)[0] == [  # the run's param wins
        f"{exports / 'DONE'} (the export's done marker)", f"{meta / 'DONE'} (the export's done marker)"]


def test_a_done_marker_is_looked_for_beside_each_file_and_refused_when_an_input_matches_it(params, tmp_path):
    """A glob with a wildcard folder looked for ".../*/_SUCCESS" itself and waited out its timeout;
    a glob matching the marker was refused only once the export completed (an "_" name) or read it
    as data (any other name); a path for a name made one file satisfy every input."""
    for day, category in (("d1", "Books"), ("d2", "Toys")):
        (tmp_path / day).mkdir()
        (tmp_path / day / f"reviews_{category}.json").write_text("{}")
    given = {"inputs": [str(tmp_path / "*" / "reviews_*.json")], "done_marker": "_SUCCESS"}
    assert params.inputs_awaited(given, 0) == ([f"{tmp_path / d / '_SUCCESS'} (the export's done marker)"
                                                for d in ("d1", "d2")], "")
    (tmp_path / "d1" / "_SUCCESS").write_bytes(b"")
    (tmp_path / "d2" / "_SUCCESS").write_bytes(b"")
    assert params.inputs_awaited(given, 0) == ([], "")
    for marker in ("_SUCCESS", "DONE"):  # refused before the marker is there, not once the export ends
        refused = params.inputs_awaited({"inputs": [str(tmp_path / "new" / "*")], "done_marker": marker}, 0)
        assert refused == ([], f"{tmp_path / 'new' / '*'} matches the done marker {marker}: load would read it "
                               "as an input; name the export's files only"), refused
    for marker in ("/etc/hostname", ".", ".."):
        assert params.inputs_awaited({**given, "done_marker": marker}, 0)[1] == (
            f"done marker {marker!r}: a file name, not a path")


def test_a_done_marker_older_than_a_file_beside_it_is_from_an_earlier_export(params, tmp_path):
    """A folder reused by the exporter: the marker its last export left counted, and the wait ended
    on the first settled file of the next export. A marker older than a file it would vouch for
    is waited on until the exporter writes it again."""
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "_SUCCESS").write_bytes(b"")
    (exports / "part-00000.json.gz").write_bytes(b"")
    os.utime(exports / "_SUCCESS", (1_000_000_000, 1_000_000_000))  # the earlier export's
    given = {"inputs": [str(exports / "part-*.json.gz")], "done_marker": "_SUCCESS"}
    assert params.inputs_awaited(given, 0) == ([
        f"{exports / '_SUCCESS'} (the export's done marker, older than {exports / 'part-00000.json.gz'})"], "")
    (exports / "_SUCCESS").write_bytes(b"")  # written again, last
    assert params.inputs_awaited(given, 0) == ([], "")


def test_the_dag_waits_for_the_inputs_load_decides_on(params, tmp_path, monkeypatch):
    """Relative inputs from the repository; none given: load's default (the demo files, here
    missing), or nothing to wait for when the run only removes files."""
    from core.settings import get_settings

    assert params.inputs_awaited({"inputs": ["data/demo/*.json*"]}, 0) == ([], "")
    assert params.inputs_awaited({"inputs": ["data/demo/none-such-*.json"]}, 0) == (
        [str(ROOT / "data" / "demo" / "none-such-*.json")], "")
    monkeypatch.setenv("DEMO_INPUT", str(tmp_path / "demo" / "*.json"))
    get_settings.cache_clear()
    try:
        assert params.inputs_awaited({"inputs": [], "remove": []}, 0) == ([str(tmp_path / "demo" / "*.json")], "")
        assert params.inputs_awaited({"inputs": [], "remove": ["old.json"]}, 0) == ([], "")
    finally:
        get_settings.cache_clear()


def test_the_dag_waits_until_an_input_file_is_left_unmodified_for_the_settle_time(params, tmp_path):
    """A nightly export the sensor sees mid-copy would be loaded truncated (and its checksum kept in
    the ledger): a file counts only once it has not been modified for INPUT_SETTLE_S seconds. The
    modification times are set here, not waited for."""
    export = tmp_path / "reviews_Books.json"
    export.write_text('{"reviewerID": "A1", "revie')
    an_hour_ago = time.time() - 3600
    os.utime(export, (an_hour_ago, an_hour_ago))
    given = {"inputs": [str(tmp_path / "*.json")]}
    assert params.inputs_awaited(given, 2 * 3600) == ([f"{export} (modified less than 7200 s ago)"], "")
    assert params.inputs_awaited(given, 60) == ([], "")
    assert unsettled([str(export)], 60, now=an_hour_ago + 59) == [f"{export} (modified less than 60 s ago)"]
    assert unsettled([str(export)], 60, now=an_hour_ago + 60) == []


def test_the_dags_settle_time_is_a_documented_knob(monkeypatch):
    """INPUT_SETTLE_S, read where the DAG is parsed (and by bin/pipeline --airflow, which says what
    the sensor waits for); README's configuration table holds its default
    (tests/unit/test_configuration_documented.py)."""
    monkeypatch.delenv("INPUT_SETTLE_S", raising=False)
    assert input_settle_s() == 60
    monkeypatch.setenv("INPUT_SETTLE_S", "0")
    assert input_settle_s() == 0
    tree = ast.parse((ROOT / "dags" / "recommender_pipeline.py").read_text())
    [sensor] = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "wait_for_inputs"]
    assert "INPUT_SETTLE_S" in ast.unparse(sensor)


def _refused_inputs(tmp_path: Path) -> dict[str, list[str]]:
    """Inputs load refuses whatever arrives later (the review's cases)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "reviews_Books.json").write_text("{}\n")
    (tmp_path / "in" / "_hidden.json").write_text("{}\n")
    (tmp_path / "in" / "sub.json").mkdir()
    (tmp_path / "folder").mkdir()
    for part in ("a", "b"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "reviews_X.json").write_text("{}\n")
    return {"a glob matching a file and a folder": [str(tmp_path / "in" / "*.json")],
            "a folder": [str(tmp_path / "folder")],
            "an empty string (the repository, a folder)": [""],
            "a relative file:// URI": ["file://in/reviews_Books.json"],
            "two files of one name": [str(tmp_path / "a" / "reviews_X.json"), str(tmp_path / "b" / "*.json")],
            "an object-store URI with a local DATA_DIR": ["s3a://bucket/in/*.json"],
            "a file Spark would not read (a name starting with _)": [str(tmp_path / "in" / "_hidden.json")],
            "a missing input beside a refused one": [str(tmp_path / "none-yet.json"), str(tmp_path / "folder")]}


def test_the_dag_fails_at_once_on_inputs_load_refuses_as_load_does(params, tmp_path):
    """The sensor and load decide with one function (core.inputs.input_files): the sensor fails at
    once (AirflowFailException, no retries) where load would refuse the inputs whatever arrives,
    rather than pass and let load fail, or wait for hours for what load would refuse at once."""
    from spark_jobs import units

    for case, inputs in _refused_inputs(tmp_path).items():
        awaited, refusal = params.inputs_awaited({"inputs": inputs}, 0)
        assert refusal and awaited == [], case
        with pytest.raises(units.InputsRefused, match=re.escape(refusal)):
            units.list_units(params.load_args({"inputs": inputs})[1::2])
    tree = ast.parse((ROOT / "dags" / "recommender_pipeline.py").read_text())
    [sensor] = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "wait_for_inputs"]
    assert [ast.unparse(node.exc.func) for node in ast.walk(sensor) if isinstance(node, ast.Raise)] == ["AirflowFailException"]


def test_the_dag_looks_for_inputs_every_interval_until_its_timeout():
    """The sensor's knobs, read where the DAG is parsed (tests/integration/test_airflow_dag.py checks
    the sensor in the parsed DAG): reschedule mode, so no worker slot is held between looks."""
    tree = ast.parse((ROOT / "dags" / "recommender_pipeline.py").read_text())
    [sensor] = [d for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "wait_for_inputs"
                for d in node.decorator_list]
    assert ast.unparse(sensor.func) == "task.sensor"
    assert {kw.arg: ast.unparse(kw.value) for kw in sensor.keywords} == {
        "mode": "'reschedule'", "poke_interval": "INPUT_WAIT_INTERVAL", "timeout": "INPUT_WAIT_TIMEOUT"}
