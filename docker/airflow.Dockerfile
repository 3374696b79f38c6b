# Airflow with the Spark provider, plus a JVM and the app's code so SparkSubmitOperator can run
# spark-submit for the jobs in spark_jobs/ against the Spark cluster in docker-compose.yml (a JDK:
# javac builds the jar of spark_jobs/jvm that the jobs are submitted with).
FROM apache/airflow:3.1.8-python3.11

USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless \
 && rm -rf /var/lib/apt/lists/*
USER airflow

COPY requirements-airflow.txt /opt/requirements-airflow.txt
COPY requirements.txt /opt/requirements-app.txt
# The app's own dependencies go into a separate venv: Airflow's pins clash with them.
RUN pip install --no-cache-dir -r /opt/requirements-airflow.txt \
 && python -m venv /opt/app-venv \
 && /opt/app-venv/bin/pip install --no-cache-dir -r /opt/requirements-app.txt

COPY --chown=airflow:root pyproject.toml /opt/app/pyproject.toml
COPY --chown=airflow:root core /opt/app/core
COPY --chown=airflow:root spark_jobs /opt/app/spark_jobs
COPY --chown=airflow:root recsite /opt/app/recsite
COPY --chown=airflow:root data /opt/app/data
COPY --chown=airflow:root dags /opt/airflow/dags
# The project's packages into both: the app venv runs the jobs, Airflow's Python parses the DAG
# (which imports core.settings, spark_jobs.pyfiles and spark_jobs.jvm_jar, standard library only;
# no dependencies).
RUN /opt/app-venv/bin/pip install --no-cache-dir --no-deps -e /opt/app \
 && pip install --no-cache-dir --no-deps -e /opt/app
