"""Two batch runs at once (a bin/pipeline beside the DAG's run, an Airflow retry beside a first try
that still runs), on the real MongoDB-protocol server, Spark and Parquet.

Every job holds the batch lock (``spark_jobs.common.batch_lock``, a ``core.locking.lease``): a
second job waits, then fails naming the holder; a holder that died is taken over once its lease
ran out. Should the lock ever be bypassed, load and clean still delete only their own staging and
never a live partition for a staged write that went, and a MongoDB reload never switches readers
to a generation another load began.
"""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from core import locking, mongo
from spark_jobs import common
from tests.conftest import real_file

pytestmark = pytest.mark.integration

WAIT_S = 60.0  # bounds of the waits below, never reached when the code works


@pytest.fixture
def locks(mongo_db, monkeypatch):
    """The session database's lock collection, without the batch lock afterwards; a second job fails at once."""
    monkeypatch.setenv("BATCH_LOCK_WAIT_S", "0")
    yield mongo_db[mongo.EVENT_CLAIMS]
    mongo_db[mongo.EVENT_CLAIMS].delete_many({"_id": common.BATCH_LOCK})


def _holder(message: str, run_id: str, stage: str) -> bool:
    """Whether a refusal names the holder: its run, stage, host and pid."""
    return all(part in message for part in (f"run id {run_id}", f"stage {stage}", "host ", "pid "))


# --- the lock ---------------------------------------------------------------------------------

def test_a_job_is_not_started_while_another_holds_the_batch_lock(locks, settings):
    """A Spark job (through run_job, before its session starts) and publish (no Spark) both."""
    from spark_jobs import clean, publish

    with common.batch_lock("train", "run-a"):
        for main, args in ((clean.main, []), (publish.main, ["--version", "v-none"])):
            with pytest.raises(SystemExit) as refused:
                main([*args, "--run-id", "run-b"])
            assert "not started" in str(refused.value) and _holder(str(refused.value), "run-a", "train")
            assert not (settings.data_dir / "runs" / "run-b").exists()  # it recorded nothing
    assert locks.find_one({"_id": common.BATCH_LOCK}) is None  # given back at the end


def test_two_holders_never_hold_the_lock_at_once(mongo_db):
    name, inside, most, errors = f"test:{uuid.uuid4().hex[:8]}", [0], [0], []
    count = threading.Lock()

    def job(k: int) -> None:
        try:
            for _ in range(5):
                with locking.lease(name, {"run_id": f"r{k}"}, lease_s=60, wait_s=WAIT_S, db=mongo_db, poll_s=0.01):
                    with count:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.005)  # the insert of another holder gets its chance
                    with count:
                        inside[0] -= 1
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=job, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and most[0] == 1


def test_a_second_holder_waits_for_the_first(mongo_db):
    name, waited, got = f"test:{uuid.uuid4().hex[:8]}", [], threading.Event()
    waiting = threading.Event()

    def second() -> None:
        with locking.lease(name, {"run_id": "b"}, lease_s=60, wait_s=WAIT_S, db=mongo_db, poll_s=0.01,
                           on_wait=lambda held: waited.append(held) or waiting.set()):
            got.set()

    with locking.lease(name, {"run_id": "a", "stage": "clean"}, lease_s=60, wait_s=0, db=mongo_db):
        thread = threading.Thread(target=second)
        thread.start()
        assert waiting.wait(WAIT_S)
        assert not got.is_set()
    thread.join()
    assert got.is_set() and [(h["run_id"], h["stage"]) for h in waited] == [("a", "clean")]


def test_an_expired_lease_is_taken_over_and_a_renewed_one_is_not(locks, capsys):
    now = time.time()
    dead = {**locking.lock_doc(common.BATCH_LOCK, "dead", now - 600), "run_id": "run-dead", "stage": "load",
            "host": "gone", "pid": 1, "started_at": now - 900, "expires": now - 480}
    locks.insert_one(dead)
    with common.batch_lock("load", "run-next"):
        held = locks.find_one({"_id": common.BATCH_LOCK})
        assert (held["run_id"], held["stage"]) == ("run-next", "load") and held["expires"] > time.time()
    assert "took over the batch lock" in capsys.readouterr().err
    # a lease renewed long after it was taken (its "at" old, its "expires" ahead) stays its holder's
    locks.insert_one({**dead, "expires": time.time() + 600})
    with pytest.raises(SystemExit) as refused:
        with common.batch_lock("load", "run-next"):
            pytest.fail("a live lease was taken over")
    assert _holder(str(refused.value), "run-dead", "load")


def test_a_lease_is_renewed_and_its_holder_told_when_it_is_lost(mongo_db):
    name, lost = f"test:{uuid.uuid4().hex[:8]}", threading.Event()
    with pytest.raises(locking.LeaseLost):
        with locking.lease(name, {"run_id": "a"}, lease_s=0.4, wait_s=0, db=mongo_db, on_lost=lambda msg: lost.set()):
            first = mongo_db[mongo.EVENT_CLAIMS].find_one({"_id": name})["expires"]
            deadline = time.monotonic() + WAIT_S
            while mongo_db[mongo.EVENT_CLAIMS].find_one({"_id": name})["expires"] == first and time.monotonic() < deadline:
                time.sleep(0.05)
            assert mongo_db[mongo.EVENT_CLAIMS].find_one({"_id": name})["expires"] > first  # renewed
            mongo_db[mongo.EVENT_CLAIMS].delete_one({"_id": name})  # as a takeover would, after it expired
            assert lost.wait(WAIT_S)


# --- staging ----------------------------------------------------------------------------------

def _plant(folder, began: float | None = None) -> object:
    """Another run's staged Parquet file under ``folder``, as its load or clean left it mid-way
    (``began``: when that job started; now by default)."""
    began = time.time() if began is None else began
    part = folder / "_staging" / f"{int(began)}-other-run-{uuid.uuid4().hex[:8]}" / "kind=review" / "unit=x"
    part.mkdir(parents=True)
    (part / "part-00000.parquet").write_bytes(b"PAR1")
    return part / "part-00000.parquet"


def test_load_and_clean_leave_another_runs_staging_alone(spark, tmp_path):
    from spark_jobs import clean as clean_job
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    others = [_plant(raw), _plant(cleaned)]
    assert load(spark, [str(real_file("amazon2018_appliances_5.jsonl.gz"))], str(raw), "run-own")["loaded"]
    assert clean_job.clean(spark, str(raw), str(cleaned), "run-own")["cleaned"]
    assert all(p.exists() for p in others)
    assert [p.name for p in (raw / "_staging").iterdir()] == [others[0].parents[2].name]  # its own went
    assert [p.name for p in (cleaned / "_staging").iterdir()] == [others[1].parents[2].name]


def test_load_and_clean_delete_a_killed_jobs_staging_once_it_is_a_day_old(spark, tmp_path):
    """A killed load's or clean's staging (as much as the data it staged) does not stay for ever:
    the next load or clean of that folder deletes it once it is older than any job runs."""
    from spark_jobs import clean as clean_job
    from spark_jobs import hadoop_fs
    from spark_jobs.load import load

    raw, cleaned = tmp_path / "raw", tmp_path / "clean"
    day_old = time.time() - hadoop_fs.STAGING_KEPT_S - 60
    old = [_plant(raw, day_old), _plant(cleaned, day_old)]
    recent = [_plant(raw, time.time() - 3600), _plant(cleaned, time.time() - 3600)]
    before_names = raw / "_staging" / "run-from-before-names-had-a-time-0a1b2c3d"
    before_names.mkdir()
    assert load(spark, [str(real_file("amazon2018_appliances_5.jsonl.gz"))], str(raw), "run-own")["loaded"]
    assert clean_job.clean(spark, str(raw), str(cleaned), "run-own")["cleaned"]
    assert not any(p.exists() for p in old) and not before_names.exists()
    assert all(p.exists() for p in recent)


def test_a_staged_write_that_went_does_not_take_the_live_partition_with_it(spark, tmp_path):
    from spark_jobs import hadoop_fs

    live, staged = tmp_path / "reviews" / "category=A", tmp_path / "_staging" / "run-a"
    spark.createDataFrame([("u", "p")], "user_id string, product_id string").write.parquet(str(live))
    with pytest.raises(FileNotFoundError, match="is gone"):
        hadoop_fs.replace_partition(spark, f"{staged}/category=A", str(live), str(staged))
    assert any(live.glob("*.parquet"))
    # the write is there and has no rows for A: A has none now, and its old partition goes
    spark.createDataFrame([("u", "p", "B")], "user_id string, product_id string, category string") \
        .write.partitionBy("category").parquet(str(staged))
    hadoop_fs.replace_partition(spark, f"{staged}/category=A", str(live), str(staged))
    assert not live.exists()


# --- MongoDB generations ----------------------------------------------------------------------

def test_a_reload_never_switches_readers_to_a_generation_another_load_began(mongo_db):
    name = f"test_reload_{uuid.uuid4().hex[:8]}"
    first = mongo.replace_collection_start(name, db=mongo_db)
    mongo.insert_docs(first, [{"_id": 1}], db=mongo_db)
    mongo.replace_collection_finish(name, db=mongo_db, staging=first)
    mine = mongo.replace_collection_start(name, db=mongo_db)
    theirs = mongo.replace_collection_start(name, db=mongo_db)  # another load began (and dropped mine)
    with pytest.raises(RuntimeError, match="replaced by another"):
        mongo.replace_collection_finish(name, db=mongo_db, staging=mine)
    assert mongo.live_generation(name, db=mongo_db) == first  # readers stay on the complete one
    assert mongo.replace_collection_finish(name, db=mongo_db, staging=theirs) == theirs


def test_a_start_racing_a_finish_is_never_switched_over(mongo_db):
    """The finish's switch is an update conditional on the pointer still naming its generation, but
    FerretDB v1 runs a filtered update as a read, then a write: a start's ``$set`` of its own
    generation landing between the two was overwritten (the start's staging lost, readers switched
    to a generation it had just dropped; 37 of 400 races in review). Both now take the pointer's lock."""
    lost = []
    for i in range(300):
        name = f"race_{uuid.uuid4().hex[:6]}"
        mine = mongo.replace_collection_start(name, db=mongo_db)
        barrier, result = threading.Barrier(2), {}

        def finish() -> None:
            barrier.wait()
            try:
                result["finished"] = mongo.replace_collection_finish(name, db=mongo_db, staging=mine)
            except RuntimeError:  # the start came first: refused, readers stay
                result["finished"] = None

        def start() -> None:
            barrier.wait()
            result["started"] = mongo.replace_collection_start(name, db=mongo_db)

        threads = [threading.Thread(target=finish), threading.Thread(target=start)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        pointer = mongo.raw_collection(mongo_db, mongo.POINTERS).find_one({"_id": name}) or {}
        if pointer.get("staging") != result["started"]:
            lost.append((i, pointer, result))
        for generation in (mine, result["started"]):
            mongo_db.drop_collection(generation)
    assert not lost, f"a start's generation was switched over: {lost[:3]}"
