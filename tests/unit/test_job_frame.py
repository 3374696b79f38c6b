"""The shared main() of the Spark jobs (spark_jobs.common.run_job), with the session and the record
store replaced: its CLI, its record, its exit status, and that the session is always stopped.
"""
from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

import pytest

from core.runs import EXIT_PERMANENT
from core.settings import get_settings
from core.storage import RemotePath
from spark_jobs import common, reconcile, units
from spark_jobs.eda import NoData
from spark_jobs.mongo_load import DeletionsOutran
from spark_jobs.reconcile import Unbalanced


class FakeContext:
    """The part of a SparkContext the frame uses: where the session's checkpoints are."""

    def __init__(self, checkpoints: str) -> None:
        self.checkpoints = checkpoints

    def getCheckpointDir(self) -> str:  # noqa: N802  Spark's name
        return self.checkpoints


class FakeSession:
    def __init__(self, name: str, checkpoints: str = "") -> None:
        self.name = name
        self.stopped = False
        self.sparkContext = FakeContext(checkpoints)

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def frame(monkeypatch, tmp_path):
    """Sessions handed out and records written, instead of Spark and MongoDB. Each session has a
    checkpoint folder, as Spark makes one (a UUID folder, named by a ``file:`` URI)."""
    seen = {"sessions": [], "records": []}

    def session(name: str) -> FakeSession:
        folder = tmp_path / "spark-checkpoints" / f"uuid-{len(seen['sessions'])}"
        (folder / "rdd-1").mkdir(parents=True)
        (folder / "rdd-1" / "part-00000").write_bytes(b"x")
        seen["sessions"].append(FakeSession(name, f"file:{folder}"))
        return seen["sessions"][-1]

    monkeypatch.setattr(common, "spark_session", session)
    monkeypatch.setattr(common, "batch_lock", lambda stage, run_id: contextlib.nullcontext())  # MongoDB's
    monkeypatch.setattr(reconcile, "write_record", lambda run_id, job, record: seen["records"].append(
        (run_id, job, record)))
    return seen


# (module, the function its main() runs, failures it declares that a retry may fix, a record its
# summary can print)
JOBS = [
    ("load", "load", (Unbalanced,), {}),
    ("clean", "clean", (Unbalanced,), {}),
    ("mongo_load", "mongo_load", (Unbalanced, DeletionsOutran), {}),
    ("eda", "run_eda", (), {"analyses": [1], "out_dir": "o", "latest": "l", "seconds": 1}),
    ("train", "train", (), {"version": "v1", "engine": "ease"}),
]


@pytest.mark.parametrize("module, work, failures, extra", JOBS, ids=[j[0] for j in JOBS])
def test_each_job_records_its_result_under_its_name(frame, monkeypatch, module, work, failures, extra):
    job = importlib.import_module(f"spark_jobs.{module}")
    monkeypatch.setattr(job, work, lambda spark, *args: {"status": "ok", "args": list(args), **extra})
    assert job.main(["--run-id", "r-1"]) == 0
    *started, (run_id, name, record) = frame["records"]
    assert [r["status"] for _, _, r in started] == ["started"]  # every job, before it does anything
    assert (run_id, name, record["status"]) == ("r-1", module, "ok")
    assert "r-1" in record["args"]
    [session] = frame["sessions"]
    assert (session.name, session.stopped) == (module, True)


@pytest.mark.parametrize("module, work", [(j[0], j[1]) for j in JOBS] + [("publish", "publish")],
                         ids=[j[0] for j in JOBS] + ["publish"])
def test_each_job_uses_the_file_safe_run_id_everywhere(frame, monkeypatch, module, work):
    """The id is made safe where it enters (run_id_arg): the work (EDA's folders, train's work folder,
    load's staging) and the record (its file, MongoDB's _id "<id>:<job>") get the same one; a "/"
    used to reach eda's tmp_dir.mkdir() after all its Spark work."""
    job = importlib.import_module(f"spark_jobs.{module}")
    seen = []
    extra = next((j[3] for j in JOBS if j[0] == module), {})
    monkeypatch.setattr(job, work, lambda *args, **kwargs: seen.append(args) or {"status": "ok", **extra})
    assert job.main(["--run-id", "nightly/2025-01", *(["--version", "v1"] if module == "publish" else [])]) == 0
    [args] = seen
    if module != "publish":  # publish's work takes no run id: only its records carry one
        assert "nightly-2025-01" in args and "nightly/2025-01" not in args
    assert {run_id for run_id, _, _ in frame["records"]} == {"nightly-2025-01"}


DECLARED = [(module, work, failure) for module, work, failures, _ in JOBS for failure in failures]


@pytest.mark.parametrize("module, work, failure", DECLARED, ids=[f"{m}-{f.__name__}" for m, _, f in DECLARED])
def test_a_declared_failure_is_recorded_and_exits_1(frame, monkeypatch, capsys, module, work, failure):
    """Each job's declared failures (mongo_load's count mismatches, which it raised as plain
    RuntimeErrors, left its record "started" with no error)."""
    job = importlib.import_module(f"spark_jobs.{module}")

    def fail(spark, *args):
        raise failure("3 rows in but 2 accounted for")

    monkeypatch.setattr(job, work, fail)
    assert job.main(["--run-id", "r-2"]) == 1
    kept = {"inputs": [get_settings().demo_input]} if module == "load" else {}  # what load recorded as it started
    assert frame["records"][-1] == ("r-2", module, {**kept, "status": "failed", "error": "3 rows in but 2 accounted for"})
    assert f"{module}: 3 rows in but 2 accounted for" in capsys.readouterr().err
    assert frame["sessions"][0].stopped


@pytest.mark.parametrize("module, work, error", [
    ("load", "load", units.NoInputFile("load: no input file matches /d/*.jsonl.gzz")),
    ("load", "load", units.InputsRefused("load: two inputs share the file name a.json: /d/a.json and /e/a.json")),
    ("load", "load", units.InputsRefused("load: a.json: both an input and to be removed")),
    ("eda", "run_eda", NoData("no clean reviews in /d/clean/reviews; run load and clean first")),
], ids=["no-input-file", "two-of-one-name", "input-and-removed", "eda-no-data"])
def test_a_failure_a_retry_cannot_fix_is_recorded_and_exits_permanent(frame, monkeypatch, capsys, module, work, error):
    """The DAG's task fails at once on EXIT_PERMANENT instead of retrying (dags/recommender/operators.py)."""
    job = importlib.import_module(f"spark_jobs.{module}")

    def fail(spark, *args, **kwargs):
        raise error

    monkeypatch.setattr(job, work, fail)
    assert job.main(["--run-id", "r-3"]) == EXIT_PERMANENT
    assert frame["records"][-1][2]["status"] == "failed" and frame["records"][-1][2]["error"] == str(error)
    assert f"{module}: {error}" in capsys.readouterr().err
    assert frame["sessions"][0].stopped


def test_an_input_glob_that_matches_nothing_exits_permanent(frame, tmp_path, capsys):
    from spark_jobs import load

    assert load.main(["--input", str(tmp_path / "*.jsonl.gzz"), "--run-id", "r-9"]) == EXIT_PERMANENT
    assert f"load: no input file matches {tmp_path}/*.jsonl.gzz" in capsys.readouterr().err


def test_a_staged_write_that_vanished_is_left_to_the_retries(frame, monkeypatch):
    """Not every FileNotFoundError of load is about its inputs: a staged write another job's clean-up
    deleted is redone by a retry."""
    from spark_jobs import load

    def fail(spark, *args, **kwargs):
        raise FileNotFoundError("the staged write /d/_staging/x is gone; /d/reviews/unit=a is left as it was")

    monkeypatch.setattr(load, "load", fail)
    assert load.main(["--run-id", "r-4"]) == 1


@pytest.mark.parametrize("module, argv", [
    ("load", ["--inputs", "a.json"]), ("clean", ["--run-id", ":+/"]), ("train", ["--engine", "gpu"]),
    ("mongo_load", ["--force", "yes"]), ("eda", ["--run-id"]), ("publish", ["--run-id", "r-5"]),  # publish: no --version
])
def test_bad_arguments_exit_permanent_before_anything_starts(frame, module, argv, capsys):
    job = importlib.import_module(f"spark_jobs.{module}")
    with pytest.raises(SystemExit) as exited:
        job.main(argv)
    assert exited.value.code == EXIT_PERMANENT
    assert "error:" in capsys.readouterr().err  # argparse's usage and message
    assert frame["sessions"] == [] and frame["records"] == []
    with pytest.raises(SystemExit) as exited:
        job.main(["--help"])
    assert exited.value.code == 0


def test_publish_of_a_version_that_is_gone_is_recorded_and_exits_permanent(frame, monkeypatch, capsys):
    from spark_jobs import publish

    def gone(version, force=False):
        raise publish.VersionGone(f"model version {version} was pruned at 2026-12-01 00:00:00 UTC")

    monkeypatch.setattr(publish, "publish", gone)
    assert publish.main(["--version", "v-0", "--run-id", "r-8"]) == EXIT_PERMANENT
    assert [(job, r["status"]) for _, job, r in frame["records"]] == [("publish", "started"), ("publish", "failed")]
    assert "model version v-0 was pruned" in frame["records"][-1][2]["error"]
    assert "publish: model version v-0 was pruned" in capsys.readouterr().err


def test_publish_with_lists_lost_on_the_way_is_recorded_as_failed_and_exits_1(frame, monkeypatch, capsys):
    """The version's lists in the files and those the server acknowledged disagree: a retry may do
    (CURRENT did not move); the record says failed and why, not "started"."""
    from spark_jobs import publish

    def lost(version, force=False):
        raise Unbalanced("publish: batch_recommendations__vv-0: 3 lists in the files, the server acknowledged 1")

    monkeypatch.setattr(publish, "publish", lost)
    assert publish.main(["--version", "v-0", "--run-id", "r-10"]) == 1
    assert [(job, r["status"]) for _, job, r in frame["records"]] == [("publish", "started"), ("publish", "failed")]
    assert "3 lists in the files" in frame["records"][-1][2]["error"]
    assert "publish: publish: batch_recommendations" in capsys.readouterr().err


def test_load_records_its_inputs_before_it_starts_and_when_it_fails(frame, monkeypatch):
    """A load that fails, or is killed, has recorded what it was loading (bin/pipeline --resume
    loads the same inputs again)."""
    from spark_jobs import load

    def unbalanced(spark, inputs, *args, **kwargs):
        assert [(r["status"], r["inputs"]) for _, _, r in frame["records"]] == [("started", inputs)]
        raise Unbalanced("3 lines in but 2 rows out")

    monkeypatch.setattr(load, "load", unbalanced)
    assert load.main(["--input", "a.json.gz", "--input", "b/*.json", "--run-id", "r-4"]) == 1
    assert frame["records"][-1] == ("r-4", "load", {"status": "failed", "error": "3 lines in but 2 rows out",
                                                    "inputs": ["a.json.gz", "b/*.json"]})

    def killed(spark, *args, **kwargs):
        raise KeyboardInterrupt  # as far as records go, a kill: the job writes nothing more

    frame["records"].clear()
    monkeypatch.setattr(load, "load", killed)
    with pytest.raises(KeyboardInterrupt):
        load.main(["--run-id", "r-5"])
    [(_, _, record)] = frame["records"]
    assert (record["status"], record["inputs"]) == ("started", [get_settings().demo_input])  # the default, by name


def test_load_keeps_its_removals_in_its_final_record(frame, monkeypatch):
    """What load recorded as it started stays in the record it ends with: a resume of a run whose load
    finished checks a --remove against it (spark_jobs.run_records.removes)."""
    from spark_jobs import load

    monkeypatch.setattr(load, "load", lambda spark, inputs, *args, **kwargs: {"status": "ok", "inputs": inputs})
    assert load.main(["--input", "a.json.gz", "--remove", "old.json.gz", "--run-id", "r-7"]) == 0
    _, _, final = frame["records"][-1]
    assert (final["status"], final["inputs"], final["remove"]) == ("ok", ["a.json.gz"], ["old.json.gz"])


def test_load_with_only_remove_loads_no_default_input(frame, monkeypatch):
    """--remove alone removes and loads nothing else (it used to load the demo files too); a plain
    run still loads the demo files."""
    from spark_jobs import load

    seen = []
    monkeypatch.setattr(load, "load", lambda spark, inputs, *args, **kwargs: seen.append(inputs) or {"status": "ok"})
    assert load.main(["--remove", "old.json.gz", "--run-id", "r-8"]) == 0
    assert load.main(["--run-id", "r-9"]) == 0
    assert seen == [[], [get_settings().demo_input]]
    assert [r["inputs"] for _, _, r in frame["records"] if r["status"] == "started"] == seen  # what a resume loads


def test_other_errors_propagate_and_leave_the_started_record_and_the_session_still_stops(frame):
    def work(spark, args):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        common.run_job("x", "doc", ["--run-id", "r-3"], work, failures=(Unbalanced,))
    [(run_id, job, record)] = frame["records"]
    assert (run_id, job, record["status"]) == ("r-3", "x", "started")
    assert frame["sessions"][0].stopped


@pytest.mark.parametrize("outcome", ["ok", "declared failure", "crash"])
def test_the_sessions_checkpoint_folder_is_deleted_however_the_job_ends(frame, outcome):
    """Spark makes a new checkpoint folder per session and never deletes it: every job of every run
    left one under spark-checkpoints/. The frame deletes it after stopping the session; only it."""
    def work(spark, args):
        if outcome == "declared failure":
            raise Unbalanced("3 rows in but 2 accounted for")
        if outcome == "crash":
            raise KeyError("boom")
        return {"status": "ok"}

    with contextlib.suppress(KeyError):
        common.run_job("x", "doc", ["--run-id", "r-ck"], work, failures=(Unbalanced,))
    [session] = frame["sessions"]
    folder = common.checkpoint_folder(session.sparkContext.getCheckpointDir())
    assert session.stopped and not folder.exists()
    assert folder.parent.is_dir()  # the checkpoint directory itself stays, for the next session


def test_checkpoint_folders_are_storage_locations():
    assert common.checkpoint_folder("file:/tmp/ck/abc") == Path("/tmp/ck/abc")
    assert common.checkpoint_folder("file:///tmp/ck/abc") == Path("/tmp/ck/abc")
    assert common.checkpoint_folder("s3a://bucket/data/spark-checkpoints/abc") == \
        RemotePath("s3a://bucket/data/spark-checkpoints/abc")
    assert common.checkpoint_folder(None) is None


def test_a_crash_after_an_earlier_ok_leaves_the_job_unfinished_for_resume(tmp_path, monkeypatch):
    """The same job run twice in one run (a reused --run-id, an Airflow clear, a resume): the second
    attempt crashes. Its "started" record replaces the first attempt's "ok", so --resume runs it again."""
    from spark_jobs import run_records

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("core.mongo.record_pipeline_run", lambda *args, **kwargs: None)
    monkeypatch.setattr(common, "spark_session", FakeSession)
    monkeypatch.setattr(common, "batch_lock", lambda stage, run_id: contextlib.nullcontext())  # MongoDB's
    get_settings.cache_clear()
    try:
        assert common.run_job("clean", "doc", ["--run-id", "r-6"], lambda spark, args: {"status": "ok"}) == 0
        assert run_records.finished("r-6", "clean")

        def crash(spark, args):
            raise MemoryError("killed")

        with pytest.raises(MemoryError):
            common.run_job("clean", "doc", ["--run-id", "r-6"], crash)
        assert not run_records.finished("r-6", "clean")
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("status, meaning", [
    (52, "exited with status 52: Spark's driver ran out of memory (SPARK_DRIVER_MEMORY)"),
    (137, "exited with status 137: killed (SIGKILL"),
    (-9, "exited with status -9: killed by signal 9"),  # subprocess's returncode for a signal
    (1, "exited with status 1, before the job recorded its end"),
])
def test_the_caller_records_a_job_that_died_without_recording_its_end(tmp_path, monkeypatch, status, meaning):
    """What ``run_records exited`` does after a failed spark-submit: only a "started" record of this
    attempt (started since the submit) becomes "failed", with what it started with kept."""
    import time

    from core.runs import read_record

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("core.mongo.record_pipeline_run", lambda *args, **kwargs: None)
    get_settings.cache_clear()
    try:
        since = time.time()
        reconcile.write_record("r-8", "load", {"status": "started", "inputs": ["a.json"], "started_at": since + 1})
        failed = reconcile.record_exit("r-8", "load", status, since)
        assert failed == read_record("r-8", "load")
        assert (failed["status"], failed["exit_status"], failed["inputs"]) == ("failed", status, ["a.json"])
        assert meaning in failed["error"]
        # its own end recorded, or an earlier attempt's "started": left as they are
        reconcile.write_record("r-8", "clean", {"status": "ok"})
        reconcile.write_record("r-8", "eda", {"status": "started", "started_at": since - 60})
        assert reconcile.record_exit("r-8", "clean", status, since) is None
        assert reconcile.record_exit("r-8", "eda", status, since) is None
        assert reconcile.record_exit("r-8", "train", status, since) is None  # spark-submit failed before it began
        assert (read_record("r-8", "clean")["status"], read_record("r-8", "eda")["status"]) == ("ok", "started")
        assert read_record("r-8", "train") is None
    finally:
        get_settings.cache_clear()


def test_options_summary_and_default_run_id(frame, capsys):
    code = common.run_job(
        "x", "The x job.\n\nMore.", ["--engine", "spark"],
        lambda spark, args: {"engine": args.engine},
        options=lambda parser: parser.add_argument("--engine", default="auto"),
        summary=lambda record: f"x: engine {record['engine']}")
    assert code == 0
    (first, _, started), (run_id, _, record) = frame["records"]
    assert run_id.startswith("run-") and record == {"engine": "spark"}
    assert first == run_id and started["status"] == "started"
    assert "x: engine spark" in capsys.readouterr().out


def test_train_refuses_an_unknown_engine(frame):
    from spark_jobs import train

    with pytest.raises(SystemExit):
        train.main(["--engine", "gpu"])
    assert frame["sessions"] == []  # argparse stops it before a session starts


def test_publish_records_started_before_it_publishes(frame, monkeypatch):
    """publish has its own main (no Spark); it too replaces an earlier attempt's record first."""
    from spark_jobs import publish

    def killed(version, force=False):
        assert [(r[1], r[2]["status"]) for r in frame["records"]] == [("publish", "started")]
        raise KeyboardInterrupt

    monkeypatch.setattr(publish, "publish", killed)
    with pytest.raises(KeyboardInterrupt):
        publish.main(["--version", "v-1", "--run-id", "r-7"])
    [(run_id, job, record)] = frame["records"]
    assert (run_id, job, record["status"], record["version"]) == ("r-7", "publish", "started", "v-1")


def test_the_job_holds_the_batch_lock_from_before_its_first_record_until_its_last(frame, monkeypatch):
    from spark_jobs import load

    events = []

    @contextlib.contextmanager
    def lock(stage, run_id):
        events.append(("lock", stage, run_id))
        yield
        events.append(("unlock", len(frame["records"])))

    monkeypatch.setattr(common, "batch_lock", lock)
    monkeypatch.setattr(common, "spark_session", lambda name: events.append("session") or FakeSession(name))
    monkeypatch.setattr(load, "load", lambda spark, *args, **kwargs: {"status": "ok"})
    assert load.main(["--run-id", "r-6"]) == 0
    assert events == [("lock", "load", "r-6"), "session", ("unlock", 2)]  # "started" and "ok" recorded under it


def test_the_spark_settings_of_the_environment_are_checked_before_the_session(monkeypatch):
    """Read as raw strings, a bad value failed later in a JVM trace that never named the variable."""
    assert common.tuning("local[*]") == {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false",
                                         "spark.sql.files.maxPartitionBytes": "128m"}
    assert common.tuning("spark://h:7077")["spark.executor.memory"] == "1g"
    monkeypatch.setenv("SPARK_UI_ENABLED", "yes")
    assert common.tuning("local[2]")["spark.ui.enabled"] == "true"
    for name, bad, master in (("SPARK_SHUFFLE_PARTITIONS", "0", "local[*]"),
                              ("SPARK_SHUFFLE_PARTITIONS", "eight", "local[*]"),
                              ("SPARK_UI_ENABLED", "maybe", "local[*]"),
                              ("SPARK_MAX_PARTITION_BYTES", "128 MB", "local[*]"),
                              ("SPARK_EXECUTOR_MEMORY", "1.5g", "spark://h:7077")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=f"environment variable {name} must be"):
            common.tuning(master)
        monkeypatch.delenv(name)


def test_job_records_is_the_frame_without_spark(frame):
    """publish.main and the admin's make current run in job_records too: under the lock they are
    given, "started" first, then the final record or the declared failure's, never raised."""
    events = []

    @contextlib.contextmanager
    def lease():
        events.append("locked")
        yield
        events.append("unlocked")

    with common.job_records("publish", "r-11", {"version": "v-1"}, failures=(Exception,), lock=lease()) as job:
        events.append([r["status"] for _, _, r in frame["records"]])
        raise OSError("MongoDB down")
    assert events == ["locked", ["started"], "unlocked"]
    assert isinstance(job.error, OSError) and job.exit_status == 1
    assert frame["records"][-1] == ("r-11", "publish", {"version": "v-1", "status": "failed", "error": "MongoDB down"})

    with common.job_records("publish", "r-12", {"version": "v-2"}, lock=lease()) as job:
        job.record = {"status": "published"}
    assert (job.error, job.exit_status) == (None, 0)
    assert frame["records"][-1] == ("r-12", "publish", {"version": "v-2", "status": "published"})
    assert not frame["sessions"]
