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


def test_the_submitted_master_is_the_one_the_job_runs_on(tmp_path):
    job = tmp_path / "which_master.py"
    job.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                   "from spark_jobs.common import spark_session\n"
                   "spark = spark_session('which-master')\n"
                   "print('MASTER=' + spark.sparkContext.master)\nspark.stop()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_MASTER", "SPARK_HOME")}
    env.update(PATH=f"{VENV_BIN}:{env.get('PATH', '')}", SPARK_LOCAL_IP="127.0.0.1", PYSPARK_PYTHON=sys.executable,
               LOCAL_DIR=str(tmp_path / "local"))
    out = subprocess.run([str(VENV_BIN / "spark-submit"), "--master", "local[1]", str(job)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MASTER=local[1]" in out.stdout.splitlines(), out.stdout  # not SPARK_MASTER's default local[*]
