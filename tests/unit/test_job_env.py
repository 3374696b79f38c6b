"""The DAG forwards to its Spark jobs every variable their code reads (dags/recommender/operators.py
``JOB_ENV_VARS``). In a cluster deploy mode the driver sees only those: a knob left out of the
hand-kept list (BATCH_LOCK_WAIT_S, EASE_LAMBDAS, SERVING_*, ...) silently fell back to its default.

The variables are found in the source, as tests/unit/test_configuration_documented.py finds them;
the operators' module imports Airflow (not in the app's venv), so its list is read from the file.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests.unit.test_configuration_documented import _names_read

ROOT = Path(__file__).resolve().parents[2]
JOB_CODE = ("core", "spark_jobs")  # what a job runs: the --py-files zip holds these two packages

# Read under core/ or spark_jobs/, but not a job's setting: forwarding them would be wrong or useless.
NOT_FORWARDED = {
    "PYSPARK_PYTHON": "job_env() sets it itself, to the app's Python",
    "PYSPARK_GATEWAY_PORT": "set by Spark for the driver's Python",
    "JAVA_HOME": "a path on the machine that runs Airflow; the driver's jvm_jar.build uses its own",
    "WORKERS": "the site's dashboard (core.freshness)",
    "WORKER_METRICS_PORT": "the site's dashboard and the rating workers",
    "WORKER_METRICS_URLS": "the site's dashboard (core.freshness)",
    "INPUT_SETTLE_S": "the DAG's wait_for_inputs and bin/pipeline --airflow, where Airflow runs",
    "INPUT_DONE_MARKER": "the DAG's done_marker param and bin/pipeline --airflow, where Airflow runs",
    "AIRFLOW_HOME": "bin/pipeline --airflow (spark_jobs/airflow_run.py), which triggers the DAG",
    "AIRFLOW_PORT": "bin/pipeline --airflow",
    "AIRFLOW_RUN_TIMEOUT": "bin/pipeline --airflow",
    "SERVICES_STATE_DIR": "bin/pipeline --airflow",
    "DJANGO_DEBUG": "bin/pipeline --airflow, for the site's sync of run records after the run",
}
# Forwarded although no code of ours reads them: Spark itself does.
READ_BY_SPARK = {"SPARK_LOCAL_IP", "PYSPARK_DRIVER_PYTHON"}


def read_by_the_jobs_code() -> dict[str, str]:
    found: dict[str, str] = {}
    for folder in JOB_CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in _names_read(ast.parse(path.read_text(), str(path))):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def forwarded() -> set[str]:
    tree = ast.parse((ROOT / "dags" / "recommender" / "operators.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "JOB_ENV_VARS" for t in node.targets):
            return set(ast.literal_eval(node.value))
    raise AssertionError("no JOB_ENV_VARS in dags/recommender/operators.py")


def test_every_variable_the_jobs_read_is_forwarded_to_them():
    missing = {name: where for name, where in read_by_the_jobs_code().items()
               if name not in forwarded() and name not in NOT_FORWARDED}
    assert not missing, f"read by a job's code, not in JOB_ENV_VARS nor NOT_FORWARDED: {missing}"


def test_the_lists_name_only_variables_that_are_read():
    read = set(read_by_the_jobs_code())
    assert forwarded() - read == READ_BY_SPARK, "JOB_ENV_VARS names a variable nothing reads"
    assert set(NOT_FORWARDED) <= read, f"no longer read: {set(NOT_FORWARDED) - read}"
    assert not forwarded() & set(NOT_FORWARDED)
