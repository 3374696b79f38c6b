"""core.runs: where a run's job records live and how train's is read, the one rule that the jobs'
writer (spark_jobs.reconcile), bin/pipeline's reader (spark_jobs.run_records) and the DAG's reader
(dags/recommender/records.py, checked in the Airflow venv by tests/integration/test_airflow_dag.py)
all follow. MongoDB's copy of a record is replaced here; the file is the record of truth.
"""
from __future__ import annotations

import os

import pytest

from core import runs, storage
from core.settings import get_settings
from spark_jobs import reconcile, run_records, units

AIRFLOW_RUN_ID = "manual__2026-11-25T11:40:32.728943+00:00"
SAFE_RUN_ID = "manual__2026-11-25T11-40-32.728943-00-00"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """DATA_DIR in a temporary folder, and no MongoDB copy of the records written."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("core.mongo.record_pipeline_run", lambda *args, **kwargs: None)
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def test_fs_safe_replaces_what_a_path_or_document_id_cannot_hold():
    assert runs.fs_safe(AIRFLOW_RUN_ID) == SAFE_RUN_ID
    assert runs.fs_safe("scheduled__2025-01-01T00:00:00+00:00") == "scheduled__2025-01-01T00-00-00-00-00"
    assert runs.fs_safe("../a/b") == "a-b"
    assert runs.fs_safe(SAFE_RUN_ID) == SAFE_RUN_ID  # the DAG hands the jobs ids it made safe already
    with pytest.raises(ValueError, match="no file-system safe characters"):
        runs.fs_safe(":+/")


def test_record_path_is_under_data_dir_runs_and_joins_a_bucket_too(data_dir):
    assert runs.record_path(AIRFLOW_RUN_ID, "train") == data_dir / "runs" / SAFE_RUN_ID / "train.json"
    bucket = storage.location("s3a://bucket/prefix/data")
    assert runs.record_path("r1", "load", bucket) == "s3a://bucket/prefix/data/runs/r1/load.json"


@pytest.mark.parametrize("written_as", [AIRFLOW_RUN_ID, SAFE_RUN_ID], ids=["raw id", "safe id"])
def test_a_record_the_jobs_write_is_what_the_readers_find(data_dir, written_as):
    """As the DAG runs them, the jobs get the safe id and evaluate reads with Airflow's own; bin/pipeline
    hands its --run-id to both. Either way the writer and the readers meet in one folder."""
    record = {"status": "ok", "version": "v-1", "metrics": {"ndcg@10": 0.1}}
    written = reconcile.write_record(written_as, "train", record)
    for read_as in (AIRFLOW_RUN_ID, SAFE_RUN_ID):
        assert runs.record_path(read_as, "train") == written
        assert runs.read_record(read_as, "train") == record
        assert run_records.version(read_as) == "v-1"
        assert run_records.finished(read_as, "train")
    assert [p.name for p in (data_dir / "runs").iterdir()] == [SAFE_RUN_ID]


@pytest.mark.parametrize("record, ok, version", [
    ({"status": "ok", "version": "v1"}, True, "v1"),
    ({"version": "v1"}, False, "v1"),  # no status: not a finished train's (train always writes one)
    ({"status": "ok", "model_version": "v0"}, True, ""),  # a name train never wrote
    ({"status": "failed", "version": "v1"}, False, "v1"),
    ({"status": "started"}, False, ""),
    ({}, False, ""),
])
def test_the_reading_rule_for_train_records(data_dir, record, ok, version):
    assert (runs.succeeded(record), runs.model_version(record)) == (ok, version)
    reconcile.write_record("r-1", "train", record)
    assert run_records.version("r-1") == (version if ok else "")


def test_no_record_reads_as_none(data_dir):
    assert runs.read_record("r-none", "train") is None
    assert run_records.version("r-none") == "" and not run_records.finished("r-none", "train")


def test_the_file_and_mongodbs_copy_use_the_same_safe_id(data_dir, monkeypatch):
    """MongoDB's pipeline_runs _id is "<id>:<job>" with the id of the record's folder, whoever hands
    write_record a raw id (the admin's "make current" builds one from a user name)."""
    copies = []
    monkeypatch.setattr("core.mongo.record_pipeline_run", lambda run_id, job, record: copies.append(run_id))
    written = reconcile.write_record("admin-1-ann@example.com/x", "publish", {"status": "published"})
    assert written == data_dir / "runs" / "admin-1-ann-example.com-x" / "publish.json"
    assert copies == ["admin-1-ann-example.com-x"]


def test_start_records_a_new_runs_options_and_a_resume_restores_them(data_dir):
    assert run_records.start("nightly/1", resume=False, engine="spark") == ("spark", False, [])
    assert runs.read_record("nightly-1", run_records.OPTIONS)["engine"] == "spark"
    # no job recorded anything (it stopped before load started): the id starts afresh, new options
    assert run_records.start("nightly/1", resume=False, engine="ease") == ("ease", False, [])
    assert run_records.start("nightly/1", resume=False, engine="spark", rerun=["clean"]) == (
        "spark", False, ["clean", "mongo_load"])
    reconcile.write_record("nightly/1", "load", {"status": "started", "inputs": ["a.json"]})
    with pytest.raises(SystemExit, match="--resume nightly/1"):
        run_records.start("nightly/1", resume=False)  # a job recorded something now
    assert run_records.start("nightly-1", resume=True) == ("spark", False, ["clean", "mongo_load"])
    assert run_records.start("nightly-1", resume=True, force_publish=True) == ("spark", True, ["clean", "mongo_load"])
    assert run_records.start("nightly-1", resume=True, engine="ease") == ("ease", True, ["clean", "mongo_load"])
    assert run_records.start("nightly-1", resume=True) == ("ease", True, ["clean", "mongo_load"])  # the flag wins, kept
    # a --rerun given to the resume wins too, and is kept; an empty one forces nothing from then on
    assert run_records.start("nightly-1", resume=True, rerun=["load"]) == ("ease", True, ["load", "clean", "mongo_load"])
    assert run_records.start("nightly-1", resume=True) == ("ease", True, ["load", "clean", "mongo_load"])
    assert run_records.start("nightly-1", resume=True, rerun=[]) == ("ease", True, [])
    assert run_records.start("nightly-1", resume=True) == ("ease", True, [])


def test_a_run_recorded_before_rerun_existed_resumes_without_it(data_dir):
    """pipeline.json of a run started before --rerun: no stage forced, unless the resume asks."""
    storage.write_text(runs.record_path("r-old", run_records.OPTIONS), '{"engine": "ease", "force_publish": false}')
    reconcile.write_record("r-old", "load", {"status": "ok", "inputs": ["a.json"]})
    assert run_records.start("r-old", resume=True) == ("ease", False, [])
    assert run_records.start("r-old", resume=True, rerun=["mongo_load"]) == ("ease", False, ["mongo_load"])


def test_start_refuses_a_stage_that_has_nothing_to_rerun(data_dir, capsys):
    with pytest.raises(SystemExit, match="--rerun: cannot rerun eda, train: only load, clean, mongo_load"):
        run_records.start("r-bad", resume=False, rerun=["train", "eda"])
    assert not (data_dir / "runs" / "r-bad").exists()


def test_bin_pipeline_reads_the_options_start_prints(data_dir, capsys):
    """``start`` prints ENGINE FORCE_PUBLISH RERUN SPARK_MASTER SPARK_DRIVER_MEMORY on one line, RERUN
    a,b or - (bin/pipeline's read)."""
    spark = f"{get_settings().spark_master} {get_settings().spark_driver_memory}"
    assert run_records.main(["start", "r-cli", "--engine", "ease", "--rerun", "clean"]) == 0
    assert capsys.readouterr().out == f"ease 0 clean,mongo_load {spark}\n"
    reconcile.write_record("r-cli", "load", {"status": "ok", "inputs": ["a.json"]})
    assert run_records.main(["start", "r-cli", "--resume", "--force-publish", "--rerun", ""]) == 0
    assert capsys.readouterr().out == f"ease 1 - {spark}\n"


@pytest.mark.parametrize("named, forced", [
    ([], []), (["load"], ["load", "clean", "mongo_load"]), (["clean"], ["clean", "mongo_load"]),
    (["mongo_load", "clean"], ["clean", "mongo_load"]), (["mongo_load"], ["mongo_load"]),
])
def test_a_forced_stage_forces_the_rerunnable_ones_after_it(named, forced):
    """A forced load or clean writes the ledger entries of before: the stages after it would skip."""
    assert runs.forced_stages(named) == forced


def test_a_resume_of_an_unknown_run_leaves_no_folder_behind(data_dir, capsys):
    """A run without an options record (an older DAG or bin/pipeline started it): the defaults, said
    so; an id with no records at all gets no folder (inputs() refuses it next, and a new run may take
    the id)."""
    assert run_records.start("r-unknown", resume=True) == ("auto", False, [])
    assert "recorded no --engine" in capsys.readouterr().err
    assert not (data_dir / "runs" / "r-unknown").exists()


# --- a resumed load's arguments (bin/pipeline --resume: run_records load-args) ----------------------

@pytest.mark.parametrize("status", ["started", "failed", "ok"])
def test_a_resume_removes_the_files_the_runs_load_recorded(data_dir, status):
    """load records its --remove as it starts (kept when it fails or finishes): a resume of a load
    that stopped before it removed them removes them still, and a resume of a finished one says the
    same (load is skipped then)."""
    reconcile.write_record("r-rm", "load", {"status": status, "inputs": ["/d/a.json"], "remove": ["old.json"]})
    assert run_records.load_args("r-rm", [], []) == ["--input", "/d/a.json", "--remove", "old.json"]
    # the same again (a path names its file, as for load) is fine
    assert run_records.load_args("r-rm", [], ["/elsewhere/old.json"]) == ["--input", "/d/a.json", "--remove", "old.json"]


@pytest.mark.parametrize("recorded, given, said", [
    (["old.json"], ["other.json"], "started with --remove old.json, not --remove other.json"),
    ([], ["other.json"], "started without --remove, not --remove other.json"),
])
def test_a_resume_refuses_a_remove_other_than_the_recorded_one(data_dir, recorded, given, said):
    reconcile.write_record("r-rm2", "load", {"status": "failed", "inputs": ["/d/a.json"],
                                             **({"remove": recorded} if recorded else {})})
    with pytest.raises(SystemExit, match=said):
        run_records.load_args("r-rm2", [], given)


def test_a_remove_only_run_resumes_with_no_input(data_dir):
    """A run that only removed files recorded no input (load's default is none then): its resume
    loads nothing either, rather than asking for an --input or loading the demo default."""
    reconcile.write_record("r-rm3", "load", {"status": "started", "inputs": [], "remove": ["old.json"]})
    assert run_records.load_args("r-rm3", [], []) == ["--remove", "old.json"]
    # a run that stopped before load recorded anything, resumed with its --remove only
    assert run_records.load_args("r-rm4", [], ["old.json"]) == ["--remove", "old.json"]
    with pytest.raises(SystemExit, match="load recorded no inputs in run r-rm4"):
        run_records.load_args("r-rm4", [], [])
    # no input and no removal recorded: not the demo default either
    reconcile.write_record("r-rm5", "load", {"status": "started", "inputs": []})
    with pytest.raises(SystemExit, match="load recorded no inputs in run r-rm5"):
        run_records.load_args("r-rm5", [], [])


def test_a_resume_warns_of_inputs_changed_since_its_load_finished(data_dir, tmp_path, capsys):
    """The resume skips a finished load: clean and train go on with the data loaded then. It says
    which inputs changed since (by size and modification time against the load ledger; no file is
    read), and does not fail."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    same, grown, touched, gone = (inputs / f"amazon2018_{n}.jsonl" for n in ("same", "grown", "touched", "gone"))
    for path in (same, grown, touched, gone):
        path.write_text("{}\n")
        os.utime(path, (1_000, 1_000))
    loaded = {p.name: {"sha256": "x", "size": 3, "loaded_at": 2_000.0, "path": str(p)} for p in (same, grown, touched, gone)}
    units.write_ledger(str(data_dir / "raw"), {"units": loaded})
    patterns = [str(inputs / "*.jsonl"), str(gone)]
    reconcile.write_record("r-ch", "load", {"status": "ok", "inputs": patterns})
    assert run_records.load_args("r-ch", [], []) == ["--input", *patterns[:1], "--input", str(gone)]
    assert "changed" not in capsys.readouterr().err  # nothing changed yet

    grown.write_text("{}\n{}\n")
    os.utime(grown, (1_000, 1_000))
    os.utime(touched, (3_000, 3_000))  # modified after its load
    gone.unlink()
    new = inputs / "amazon2018_new.jsonl"  # the glob matches a file the run never loaded
    new.write_text("{}\n")
    os.utime(new, (1_000, 1_000))
    assert run_records.load_args("r-ch", [], []) == ["--input", *patterns[:1], "--input", str(gone)]
    err = capsys.readouterr().err
    assert "warning: inputs of run r-ch changed since its load finished" in err and "start a new run" in err
    assert all(str(p) in err for p in (grown, touched, new)) and f"{gone} (gone)" in err
    assert str(same) not in err
    # as load names them: a file:// path is that file; a glob that matches nothing now is said so
    assert run_records.changed_inputs([f"file://{touched}", f"file://{same}"], loaded) == [str(touched)]
    assert run_records.changed_inputs([str(inputs / "*.json.gz")], loaded) == [f"{inputs}/*.json.gz (matches no file now)"]

    # a load that did not finish loads the changes itself: no warning
    reconcile.write_record("r-ch", "load", {"status": "started", "inputs": patterns})
    run_records.load_args("r-ch", [], [])
    assert "changed" not in capsys.readouterr().err


def test_a_resumes_input_matches_the_recorded_one_however_either_is_written(data_dir):
    """bin/pipeline makes a relative --input absolute from the caller's directory as is
    ($PWD/./data/x); runs before it recorded them relative, as load ran them from the repository.
    Both sides are compared as absolute, normalised paths; the run's own are what load gets."""
    from core.settings import PROJECT_ROOT

    recorded = ["data/demo/a.jsonl.gz", f"{PROJECT_ROOT}/data/samples/../samples/*.json.gz", "s3a://b/in/c.json"]
    reconcile.write_record("r-rel", "load", {"status": "failed", "inputs": recorded})
    given = [f"{PROJECT_ROOT}/./data/demo/a.jsonl.gz", f"{PROJECT_ROOT}/data/samples/*.json.gz", "s3a://b/in/c.json"]
    expected = [arg for path in recorded for arg in ("--input", path)]
    assert run_records.load_args("r-rel", given, []) == expected
    assert run_records.load_args("r-rel", ["s3a://b/in/c.json", "data/samples/*.json.gz", "./data/demo/a.jsonl.gz"],
                                 []) == expected
    with pytest.raises(SystemExit, match="not .*data/demo/b.jsonl.gz"):
        run_records.load_args("r-rel", [f"{PROJECT_ROOT}/data/demo/b.jsonl.gz", *given[1:]], [])
    with pytest.raises(SystemExit, match="resume it without --input"):
        run_records.load_args("r-rel", ["s3a://b/in/./c.json", *given[:2]], [])  # a URI is compared as written


def test_an_object_given_as_s3_or_s3a_is_one_input_on_a_resume():
    from core.inputs import same_input

    assert same_input("s3://b/in/c.json") == same_input("s3a://b/in/c.json") == "s3a://b/in/c.json"


def test_start_hands_bin_pipeline_the_settings_spark_master_and_driver_memory(data_dir, monkeypatch, capsys):
    """bin/pipeline's spark-submit takes its master and driver memory from this line, so they are
    core/settings.py's defaults (or the environment's), not defaults of its own."""
    monkeypatch.delenv("SPARK_MASTER", raising=False)
    monkeypatch.delenv("SPARK_DRIVER_MEMORY", raising=False)
    get_settings.cache_clear()
    assert run_records.main(["start", "r-spark"]) == 0
    assert capsys.readouterr().out.split() == ["auto", "0", "-", "local[*]", "4g"]
    monkeypatch.setenv("SPARK_MASTER", "spark://master:7077")
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", " ")  # blank is unset, as for every setting
    get_settings.cache_clear()
    assert run_records.main(["start", "r-cluster", "--engine", "ease", "--rerun", "clean"]) == 0
    assert capsys.readouterr().out.split() == ["ease", "0", "clean,mongo_load", "spark://master:7077", "4g"]


@pytest.mark.parametrize("size", ["4 g", "4.5g", "four"])
def test_a_driver_memory_spark_cannot_read_stops_the_run_naming_it(data_dir, monkeypatch, size):
    """It was handed on as given (to bin/pipeline's spark-submit, the DAG's, a job's session), to
    fail there in a JVM trace that never names the variable, as the other sizes did before."""
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", size)
    get_settings.cache_clear()
    with pytest.raises(ValueError, match=f"SPARK_DRIVER_MEMORY must be a JVM size above 0 .*'{size}'"):
        run_records.main(["start", "r-size"])
