"""The jar of the project's own JVM functions (``spark_jobs/jvm``), built with javac when needed.

Spark calls them with ``reflect`` (a static method, so nothing of Spark's is needed to compile
them). The jar is named by a hash of the sources: the same code gives the same file, two builds at
once cannot hand Spark a half-written jar, and a changed source is built again. Sessions made in
this process get it through ``spark.jars`` (spark_jobs.common.spark_session); spark-submit needs it
in ``--jars`` (bin/pipeline and the DAG pass it), which also ships it to a cluster's executors.
Without javac (a JRE-only host) nothing is built, and each caller uses its plain-Spark form instead
(same output, slower): :func:`loaded` says which. Standard library only, so the Airflow venv can
build it too.

    python -m spark_jobs.jvm_jar   # prints spark-submit's --jars (:func:`submit_jars`): this jar, hadoop-aws for buckets
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from spark_jobs import pyfiles

SOURCES = Path(__file__).resolve().parent / "jvm"
PREFIX = "amazon_recommender-jvm-"
JAVA_RELEASE = "8"  # the oldest Java Spark 3.5 runs on: the jar loads in any cluster's JVM

log = logging.getLogger(__name__)


def javac() -> str | None:
    """``$JAVA_HOME/bin/javac``, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(Path(home) / "bin" / "javac", os.X_OK):
        return str(Path(home) / "bin" / "javac")
    return shutil.which("javac")


def _sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def build(dest_dir: Path | str | None = None) -> Path | None:
    """The jar in ``dest_dir`` (default ``$LOCAL_DIR/dist``), compiled now if it is not there yet;
    None when there is no javac to compile it with, or no sources (this module imported from the
    ``--py-files`` zip). A compile error raises (it is a bug)."""
    if not SOURCES.is_dir():  # this code runs from spark-submit's --py-files zip: the jar came with --jars
        return None
    digest = hashlib.sha256(JAVA_RELEASE.encode())
    for path in _sources():
        digest.update(path.relative_to(SOURCES).as_posix().encode() + b"\0" + path.read_bytes())
    target = pyfiles.dist_dir(dest_dir) / f"{PREFIX}{digest.hexdigest()[:16]}.jar"
    if target.exists():
        return target
    compiler = javac()
    if compiler is None:
        log.warning("no javac (JAVA_HOME or PATH): the JVM functions of %s are not built; "
                    "Spark jobs use their plain-Spark forms (same output, slower)", SOURCES)
        return None
    with tempfile.TemporaryDirectory() as classes:
        done = subprocess.run([compiler, "--release", JAVA_RELEASE, "-encoding", "UTF-8", "-d", classes,
                               *map(str, _sources())], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"javac failed on {SOURCES}:\n{done.stdout}{done.stderr}")
        data = pyfiles.zip_bytes((path.relative_to(classes).as_posix(), path.read_bytes())
                                 for path in sorted(Path(classes).rglob("*.class")))
    return pyfiles.write_once(target, data)


def submit_jars() -> list[str]:
    """What spark-submit's ``--jars`` needs: hadoop-aws and its AWS SDK when DATA_DIR or
    ARTIFACTS_DIR is in a bucket (core.storage), then this jar when it is built. bin/pipeline, the
    DAG and bench/big_run pass it."""
    from core import storage
    from core.settings import get_settings

    settings = get_settings()
    jars = storage.s3a_jars() if any(storage.is_remote(w) for w in (settings.data_dir, settings.artifacts_dir)) else []
    own = build()
    return jars + ([str(own)] if own is not None else [])


_loaded: dict[tuple[str, str], bool] = {}


def loaded(class_name: str) -> bool:
    """Whether the active Spark session's driver can load ``class_name`` as ``reflect`` will (the
    jar was in ``spark.jars`` or ``--jars``); False without an active session."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        return False
    key = (spark.sparkContext.applicationId, class_name)
    if key not in _loaded:
        jvm = spark.sparkContext._jvm
        try:
            jvm.java.lang.Class.forName(class_name, False, jvm.org.apache.spark.util.Utils.getContextOrSparkClassLoader())
            _loaded[key] = True
        except Exception:  # noqa: BLE001  py4j's error for ClassNotFoundException
            log.warning("%s is not on the Spark driver's class path (pass the jar of `python -m spark_jobs.jvm_jar` "
                        "to spark-submit --jars): using the plain-Spark form", class_name)
            _loaded[key] = False
    return _loaded[key]


if __name__ == "__main__":
    print(",".join(submit_jars()))
