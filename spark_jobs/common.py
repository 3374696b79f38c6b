"""What every Spark job shares: the session, the repo on the import path, and the job's CLI frame.

Each job module is runnable as ``spark-submit spark_jobs/<job>.py ...`` (locally or on a cluster
given by ``SPARK_MASTER``) and importable for tests. ``spark-submit`` runs a file as a script, so
the repository root is put on ``sys.path`` here for ``core`` to import; on a cluster, ship the code
with ``--py-files`` (see README).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.settings import get_settings  # noqa: E402


def spark_session(app_name: str, master: str | None = None, checkpoint_dir: str | None = None):
    """A SparkSession configured for this project.

    The checkpoint directory is always set: Spark ALS with ~20+ iterations overflows the stack
    without one. Driver memory and shuffle partitions come from the environment so the same job
    runs on a 2-core laptop and on a cluster.
    """
    from pyspark.sql import SparkSession

    from pyspark import SparkConf

    settings = get_settings()
    # spark-submit --master (what Airflow's SparkSubmitOperator passes) wins over SPARK_MASTER.
    submitted = SparkConf().get("spark.master", None)
    resolved_master = master or submitted or settings.spark_master
    if resolved_master.startswith("local"):
        # Local Python workers would otherwise start whatever `python3` is first on PATH, which
        # lacks the app's packages (pymongo, numpy) when the driver runs from the app's venv.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(f"amazon-recommender:{app_name}")
        .master(resolved_master)
        .config("spark.sql.shuffle.partitions", os.environ.get("SPARK_SHUFFLE_PARTITIONS", "8"))
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", os.environ.get("SPARK_UI_ENABLED", "false"))
        .config("spark.sql.files.maxPartitionBytes", os.environ.get("SPARK_MAX_PARTITION_BYTES", "128m"))
    )
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    _ship_core(session)
    checkpoint = checkpoint_dir or str(settings.local_dir / "spark-checkpoints")
    Path(checkpoint).mkdir(parents=True, exist_ok=True) if "://" not in checkpoint else None
    session.sparkContext.setCheckpointDir(checkpoint)
    return session


def _ship_core(session) -> None:
    """Make ``core`` importable in the Python workers (executors), on a cluster as locally."""
    import shutil
    import tempfile

    if getattr(session, "_core_shipped", False):
        return
    tmp = Path(tempfile.mkdtemp(prefix="core-pyfiles-"))
    archive = shutil.make_archive(str(tmp / "core"), "zip", root_dir=str(ROOT), base_dir="core")
    session.sparkContext.addPyFile(archive)
    session._core_shipped = True


def run_id_arg(parser) -> None:
    """Every job takes --run-id so all stages of one pipeline run share their records."""
    import time

    parser.add_argument("--run-id", default=time.strftime("run-%Y%m%dT%H%M%S", time.gmtime()),
                        help="id shared by all jobs of one pipeline run (default: from the clock)")


def without_deleted_users(reviews):
    """``reviews`` without the reviews of deleted accounts, and how many ids were deleted.

    "Delete my account" records the recommender id in MongoDB (``core.mongo.DELETED_USERS``); for
    a demo account linked to a reviewer of the data that is the reviewer's id, whose reviews are
    in the clean files. The training and load jobs leave them out, so the next model version
    and the next reload know nothing of the account. A broadcast anti-join: the list is small.
    """
    from pyspark.sql import functions as F

    from core import mongo

    deleted = sorted(mongo.deleted_user_ids())
    if not deleted:
        return reviews, 0
    ids = reviews.sparkSession.createDataFrame([(u,) for u in deleted], "user_id string")
    return reviews.join(F.broadcast(ids), "user_id", "left_anti"), len(deleted)
