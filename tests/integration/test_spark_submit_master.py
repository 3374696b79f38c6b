"""A job started by ``spark-submit --master M`` runs on M, not on SPARK_MASTER's default.

That is how Airflow's SparkSubmitOperator passes the connection's master. The job's Python
reads it from spark-submit's JVM; a ``SparkConf`` read before attaching to that JVM is empty, and
every job submitted with ``--master`` alone used to run in ``local[*]`` (found when a 25M train
meant for the standalone cluster ran inside its driver).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _submit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``spark-submit --master local[1] ARGS`` with the app's venv, SPARK_MASTER unset, LOCAL_DIR in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_MASTER", "SPARK_HOME")}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '')}", SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
               LOCAL_DIR=str(tmp_path / "local"))
    return subprocess.run([str(VENV_BIN / "spark-submit"), "--master", "local[1]", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_the_submitted_master_is_the_one_the_job_runs_on(tmp_path):
    job = tmp_path / "which_master.py"
    job.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                   "from spark_jobs.common import spark_session\n"
                   "spark = spark_session('which-master')\n"
                   "print('MASTER=' + spark.sparkContext.master)\nspark.stop()\n")
    out = _submit(tmp_path, str(job))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MASTER=local[1]" in out.stdout.splitlines(), out.stdout  # not SPARK_MASTER's default local[*]


@pytest.mark.parametrize("from_zip", [True, False], ids=["code-zip", "installed-code"])
def test_a_submitted_job_keeps_its_jars_and_cleans_text_in_the_jvm(tmp_path, from_zip):
    """As bin/pipeline and the DAG submit: ``--jars`` (the project's JVM functions and any other jar)
    and ``--py-files`` (the job imports spark_jobs from the zip, where the Java sources are not), or
    without it (the installed package, which builds the jar itself and sets ``spark.jars``). The
    session keeps every submitted jar in ``spark.jars`` (what a cluster's executors fetch) and the
    clean job's text function runs in the JVM."""
    from spark_jobs import jvm_jar, pyfiles

    other = tmp_path / "other.jar"
    other.write_bytes(jvm_jar.build(tmp_path / "dist").read_bytes())  # any jar: a stand-in for hadoop-aws
    own = jvm_jar.build(tmp_path / "local" / "dist")
    job = tmp_path / "text_job.py"
    job.write_text("from pyspark.sql import functions as F\n"
                   "from spark_jobs.common import spark_session\n"
                   "from spark_jobs import jvm_jar, text_clean\n"
                   "spark = spark_session('text-job')\n"
                   "print('FROM=' + jvm_jar.__file__)\n"
                   "print('JARS=' + spark.sparkContext.getConf().get('spark.jars'))\n"
                   "print('LOADED=%s' % jvm_jar.loaded(text_clean.CLEAN_TEXT_CLASS))\n"
                   "df = spark.createDataFrame([('See www.x.y, OK!',)], 't string')\n"
                   "print('OUT=' + df.select(text_clean.clean_text_col(F.col('t'))).first()[0])\nspark.stop()\n")
    code = ["--py-files", str(pyfiles.build(tmp_path / "dist"))] if from_zip else []
    out = _submit(tmp_path, *code, "--jars", f"{other},{own}", str(job))
    assert out.returncode == 0, out.stderr[-3000:]
    lines = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert (".zip" in lines["FROM"]) == from_zip  # with the zip, the job's modules came from it, as on a cluster
    assert sorted(j.rsplit("/", 1)[-1] for j in lines["JARS"].split(",")) == sorted(["other.jar", own.name])
    assert lines["LOADED"] == "True" and lines["OUT"] == "see ok"
