"""What every Spark job shares: the session, the code on the executors, and the job's CLI frame.

Each job module is runnable as ``spark-submit --py-files <zip> spark_jobs/<job>.py ...`` (locally
or on a cluster given by ``SPARK_MASTER``) and importable for tests. Under spark-submit the driver
and the executors import ``core`` and ``spark_jobs`` from that zip (spark_jobs/pyfiles.py; bin/pipeline
and the DAG build it); a session made in-process imports the installed package (bin/setup:
``pip install -e .``) and ships the zip to its executors itself.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from core import storage
from core.env import env_bool, env_float, env_int, env_jvm_size, env_str
from core.runs import EXIT_PERMANENT
from core.settings import get_settings
from spark_jobs import jvm_jar


def _submitted(key: str) -> str | None:
    """A setting spark-submit was given (``--master``, ``--jars``), when spark-submit started this process.

    Its JVM holds it; a ``SparkConf`` made before the driver has attached to that JVM is empty
    (so every job submitted with ``--master`` alone used to run in SPARK_MASTER's default,
    ``local[*]``). Attaching first is what ``getOrCreate`` would do next anyway. Without
    spark-submit (tests, benchmarks) nothing is started here: the builder's driver memory must
    reach the JVM it launches.
    """
    if not os.environ.get("PYSPARK_GATEWAY_PORT"):  # set by spark-submit for the Python it starts
        return None
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return SparkConf().get(key, None)


def _jars(*lists: str | None) -> str:
    """``spark.jars`` of several comma-separated lists, each jar once by its file name (spark-submit
    gives ``--jars`` back as ``file:`` URIs; Spark's file server names them by file name)."""
    seen: dict[str, str] = {}
    for jar in ",".join(filter(None, lists)).split(","):
        if jar:
            seen.setdefault(jar.rsplit("/", 1)[-1], jar)
    return ",".join(seen.values())


def tuning(master: str) -> dict[str, str]:
    """The Spark settings an operator sets through the environment, read and checked before the
    session starts: a bad value stops the job naming its variable (core/env.py), where Spark would
    fail later in a JVM trace that never names it."""
    conf = {
        "spark.sql.shuffle.partitions": str(env_int("SPARK_SHUFFLE_PARTITIONS", 8, minimum=1)),
        "spark.ui.enabled": str(env_bool("SPARK_UI_ENABLED", False)).lower(),
        "spark.sql.files.maxPartitionBytes": env_jvm_size("SPARK_MAX_PARTITION_BYTES", "128m"),
    }
    if master.startswith("spark://"):  # a standalone cluster: each executor's share of a worker
        conf["spark.executor.memory"] = env_jvm_size("SPARK_EXECUTOR_MEMORY", "1g")
    return conf


def spark_session(app_name: str, master: str | None = None, checkpoint_dir: str | None = None):
    """A SparkSession configured for this project.

    The checkpoint directory is always set: Spark ALS with ~20+ iterations overflows the stack
    without one. Driver memory and shuffle partitions come from the environment so the same job
    runs on a 2-core laptop and on a cluster.
    """
    from pyspark.sql import SparkSession

    settings = get_settings()
    # spark-submit --master (what Airflow's SparkSubmitOperator passes) wins over SPARK_MASTER.
    resolved_master = master or _submitted("spark.master") or settings.spark_master
    if resolved_master.startswith("local"):
        # Local Python workers would otherwise start whatever `python3` is first on PATH, which
        # lacks the app's packages (pymongo, numpy) when the driver runs from the app's venv.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    log_level = env_str("SPARK_LOG_LEVEL", "WARN")
    builder = (
        SparkSession.builder.appName(f"amazon-recommender:{app_name}")
        .master(resolved_master)
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        # from the context's start (Spark >= 3.5): setLogLevel below comes after its INFO lines
        .config("spark.log.level", log_level)
        # Shuffle files go when the driver's garbage collector drops their RDDs, by default every
        # 30 min: train --engine spark at 25.7M interactions had 48 GB of them on the executors'
        # disks during its fourth ALS fit, and one driver GC brought that to 24 GB.
        .config("spark.cleaner.periodicGC.interval", "5min")
        # an RDD's checkpoint files go with it too; the session's folder goes when the job ends
        # (run_job: drop_checkpoints), or every job left one behind for ever
        .config("spark.cleaner.referenceTracking.cleanCheckpoints", "true")
    )
    for key, value in tuning(resolved_master).items():
        builder = builder.config(key, value)
    # DATA_DIR / ARTIFACTS_DIR in an object store: the s3a filesystem, its endpoint and credentials
    conf = storage.spark_conf([settings.data_dir, settings.artifacts_dir])
    # spark.jars set here replaces spark-submit's --jars, which must stay (what a cluster's executors
    # fetch); the project's JVM functions join them (None without javac or sources: plain Spark)
    own = jvm_jar.build()
    jars = _jars(_submitted("spark.jars"), conf.get("spark.jars"), str(own) if own is not None else None)
    if jars:
        conf["spark.jars"] = jars
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(log_level)
    _ship_code(session)
    # Executors write the checkpoints: beside the data when that is shared storage (a bucket).
    default = settings.data_dir / "spark-checkpoints" if storage.is_remote(settings.data_dir) \
        else settings.local_dir / "spark-checkpoints"
    checkpoint = storage.spark_uri(checkpoint_dir or default)
    Path(checkpoint).mkdir(parents=True, exist_ok=True) if "://" not in checkpoint else None
    session.sparkContext.setCheckpointDir(checkpoint)
    return session


def checkpoint_folder(uri: str | None) -> storage.Location | None:
    """The session's own checkpoint folder (``SparkContext.getCheckpointDir()``: a UUID folder Spark
    makes under the directory :func:`spark_session` sets) as a storage location: ``file:`` URIs as
    local paths, object-store URIs as they are."""
    if not uri:
        return None
    if uri.startswith("file:"):
        return Path(urlparse(uri).path)
    return storage.location(uri)


def drop_checkpoints(folder: storage.Location | None) -> None:
    """Delete a stopped session's checkpoint folder; housekeeping, so a failure is only said: the
    job's outcome stands (its record is written either way)."""
    if folder is None:
        return
    try:
        storage.remove_tree(folder)
    except Exception as exc:  # noqa: BLE001
        print(f"could not delete the Spark checkpoint folder {folder}: {exc.__class__.__name__}: {exc}",
              file=sys.stderr)


def _ship_code(session) -> None:
    """Make ``core`` and ``spark_jobs`` importable in the Python workers when spark-submit did not.

    ``spark-submit --py-files`` (bin/pipeline, the DAG) already shipped the zip; a session made
    in-process (tests, benchmarks) ships it here.
    """
    from spark_jobs import pyfiles

    if getattr(session, "_code_shipped", False):
        return
    submitted = session.sparkContext.getConf().get("spark.submit.pyFiles", "") or ""
    if pyfiles.PREFIX not in submitted:
        session.sparkContext.addPyFile(str(pyfiles.build()))
    session._code_shipped = True


BATCH_LOCK = "batch:jobs"  # the one batch lock of a deployment, in its MONGO_DB (core/locking.py)
BATCH_LEASE_S = 120.0  # how long a batch job that died blocks the next one at most


def batch_holder(stage: str, run_id: str) -> dict[str, Any]:
    """Who holds the batch lock, as the lock document records it for whoever waits (core.locking.describe)."""
    return {"run_id": run_id, "stage": stage, "host": socket.gethostname(), "pid": os.getpid(),
            "started_at": time.time(), "data_dir": str(get_settings().data_dir)}


@contextmanager
def batch_lock(stage: str, run_id: str) -> Iterator[None]:
    """Hold the deployment's batch lock while job ``stage`` of run ``run_id`` runs: one batch job
    at a time, whoever started it (bin/pipeline, the Airflow DAG, an Airflow retry of a task whose
    first try still runs).

    Two jobs at once share ``DATA_DIR``'s folders and ledgers, ``ARTIFACTS_DIR`` and ``MONGO_DB``'s
    collections (staging generations, pointers, the ingest ledger, serving lists): one's clean-up
    deleted the other's staged rows, and with them live data. The lock is a lease in ``MONGO_DB``
    (core.locking.lease: renewed from a thread, taken over when its holder died), so it covers
    everything that shares the database; deployments that share a ``DATA_DIR`` or
    ``ARTIFACTS_DIR`` must share ``MONGO_DB`` too. A second job waits up to ``BATCH_LOCK_WAIT_S``
    (the holder's job usually ends within it: a delay, not a failed run), then fails naming the
    holder (``SystemExit``: exit status 1, the message on stderr), and Airflow's retries or
    ``bin/pipeline --resume`` take it from there. Jobs of two runs may still alternate: each job
    reads what the one before it left, whole.
    """
    from core import locking

    holder = batch_holder(stage, run_id)
    wait_s = env_float("BATCH_LOCK_WAIT_S", 1800.0, minimum=0)

    def waiting(held: dict[str, Any]) -> None:
        print(f"{stage}: waiting up to {wait_s:.0f} s for the batch lock, held{locking.describe(held)}",
              file=sys.stderr, flush=True)

    with ExitStack() as held:
        try:
            stale = held.enter_context(locking.lease(BATCH_LOCK, holder, BATCH_LEASE_S, wait_s, on_wait=waiting))
        except locking.LockHeld as exc:
            raise SystemExit(f"{stage}: not started: the batch {exc}") from None
        if stale:
            print(f"{stage}: took over the batch lock from a job that stopped renewing it{locking.describe(stale)}",
                  file=sys.stderr, flush=True)
        yield


def drop_earlier_runs(folder: storage.Location, keep: Collection[str] = ()) -> list[str]:
    """Delete the folders of every other run beside this run's ``folder`` (its parent's other
    entries, but the names in ``keep``), once this run's is complete; returns their names.

    A job that writes a folder per run (train's work folder ``DATA_DIR/train/<run id>``, EDA's
    ``EDA_DIR/<run id>``) otherwise kept adding one a day. This run's own stays until the next
    run. One batch job runs at a time (:func:`batch_lock`), so no other run is using them.
    """
    here = storage.location(folder)
    earlier = sorted(name for name in storage.listdir(here.parent) if name != here.name and name not in keep)
    for name in earlier:
        storage.remove_tree(storage.join(here.parent, name))
    return earlier


def run_id_arg(parser) -> None:
    """Every job takes --run-id so all stages of one pipeline run share their records.

    The id is made file and document-id safe here, where it enters (core.runs.fs_safe), so every
    use downstream (the record folder, EDA's folders, train's work folder, load's staging, MongoDB's
    pipeline_runs ``_id``) gets the same id: ``nightly/2025-01`` is ``nightly-2025-01`` everywhere,
    and an Airflow id resumed through bin/pipeline is the id the DAG's tasks used.
    """
    from core.runs import fs_safe

    parser.add_argument("--run-id", type=fs_safe, default=time.strftime("run-%Y%m%dT%H%M%S", time.gmtime()),
                        help="id shared by all jobs of one pipeline run (default: from the clock); "
                             "characters outside [A-Za-z0-9._-] become '-'")


def _deleted_ids(spark):
    """(DataFrame of the deleted accounts' ids, how many); a small list, broadcast by the joins."""
    from core import rating_history

    deleted = sorted(rating_history.deleted_user_ids())
    return spark.createDataFrame([(u,) for u in deleted], "user_id string"), len(deleted)


def without_deleted_users(reviews):
    """``reviews`` without the reviews of deleted accounts, and how many ids were deleted.

    "Delete my account" records the recommender id in MongoDB (``core.mongo.DELETED_USERS``); for
    a demo account linked to a reviewer of the data that is the reviewer's id, whose reviews are
    in the clean files. The training and load jobs leave them out, so the next model version
    and the next reload know nothing of the account. A broadcast anti-join: the list is small.
    """
    from pyspark.sql import functions as F

    ids, n = _deleted_ids(reviews.sparkSession)
    return (reviews.join(F.broadcast(ids), "user_id", "left_anti") if n else reviews), n


def of_deleted_users(reviews):
    """The reviews of deleted accounts (the rows :func:`without_deleted_users` leaves out)."""
    from pyspark.sql import functions as F

    ids, _ = _deleted_ids(reviews.sparkSession)
    return reviews.join(F.broadcast(ids), "user_id", "left_semi")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but a usage error (argparse exits 2: an unknown option, an engine
    train does not know, a run id with no file-safe character) exits core.runs.EXIT_PERMANENT: the
    same arguments fail the same way on every retry, so the DAG does not retry it."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2:
            raise SystemExit(EXIT_PERMANENT) from None
        raise


@dataclass
class JobRun:
    """A job's outcome inside :func:`job_records`: the job sets ``record`` (its final record); a
    declared failure sets ``exit_status`` (1, or EXIT_PERMANENT) and ``error``."""
    record: dict[str, Any] = field(default_factory=dict)
    exit_status: int = 0
    error: BaseException | None = None


@contextmanager
def job_records(name: str, run_id: str, started: dict[str, Any] | None = None, *,
                failures: tuple[type[BaseException], ...] = (),
                permanent: tuple[type[BaseException], ...] = (),
                lock: AbstractContextManager[Any] | None = None) -> Iterator[JobRun]:
    """The frame of every batch job, Spark or not (run_job, publish.main, the admin's make
    current): the lock, then the "started" record, then the job's final record or its failure's.

    Held: ``lock``, by default the batch lock (:func:`batch_lock`; the admin passes a lease of its
    own that fits a web request). Before the job runs it records ``{"status": "started", ...}``:
    a job killed or crashed half-way then leaves "started", never the "ok" of an earlier attempt in
    the same run, which ``bin/pipeline --resume`` would skip as finished (spark_jobs/run_records.py).
    ``started`` (load: its inputs; publish: the version) goes into that record and is kept in the
    failure record and the final one, so a job that failed or was killed still says what it was
    doing. A failure the job declares (``failures``: an unbalanced count, a retry may fix it) or
    one of ``permanent`` (a retry would fail the same way) is recorded as ``{"status": "failed",
    "error": ...}``, said on stderr and not raised: the caller returns ``run.exit_status``. Anything
    else propagates and leaves "started" (and so does a JVM that exits on OutOfMemoryError); the
    process's caller then records its exit status (:func:`spark_jobs.reconcile.record_exit`).
    """
    from spark_jobs import reconcile

    begun = started or {}
    with lock if lock is not None else batch_lock(name, run_id):
        reconcile.write_record(run_id, name, {"status": "started", **begun, "started_at": time.time()})
        run = JobRun()
        try:
            yield run
        except (*permanent, *failures) as exc:
            reconcile.write_record(run_id, name, {**begun, "status": "failed", "error": str(exc)})
            print(f"{name}: {exc}", file=sys.stderr)
            run.exit_status, run.error = (EXIT_PERMANENT if isinstance(exc, permanent) else 1), exc
            return
        reconcile.write_record(run_id, name, {**begun, **run.record})


def run_job(name: str, doc: str | None, argv: list[str] | None,
            work: Callable[[Any, argparse.Namespace], dict[str, Any]], *,
            options: Callable[[argparse.ArgumentParser], None] | None = None,
            failures: tuple[type[Exception], ...] = (),
            permanent: tuple[type[Exception], ...] = (),
            summary: Callable[[dict[str, Any]], str] | None = None,
            started: Callable[[argparse.Namespace], dict[str, Any]] | None = None) -> int:
    """The main() of every Spark job: its CLI, one session, its records (:func:`job_records`), its
    exit status.

    ``work(spark, args)`` does the job and returns its record. A failure the job declares (an
    unbalanced count) is recorded as ``{"status": "failed"}`` and exits 1, so Airflow retries and
    the admin shows why; one of ``permanent`` (an input that names no file, no data: a retry would
    fail the same way) is recorded alike and exits core.runs.EXIT_PERMANENT, on which the DAG's
    task fails without its retries, and so do bad arguments (:func:`parse_args`). Anything else
    propagates (exit 1: retried). The session starts under the batch lock (a job waiting for it
    holds no driver), after the "started" record; it is stopped however the job ends, and its
    checkpoint folder deleted. ``started(args)`` (load: its inputs and removals) goes into every
    record, so a resume loads and removes the same files, and one that finished says what it did.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    if options is not None:
        options(parser)
    run_id_arg(parser)
    args = parse_args(parser, argv)
    begun = started(args) if started is not None else {}
    with job_records(name, args.run_id, begun, failures=failures, permanent=permanent) as job:
        spark = spark_session(name)
        checkpoints = checkpoint_folder(spark.sparkContext.getCheckpointDir())
        try:
            job.record = work(spark, args)
        finally:
            spark.stop()
            drop_checkpoints(checkpoints)
    if job.exit_status:
        return job.exit_status
    if summary is not None:
        print(summary(job.record))
    return 0
