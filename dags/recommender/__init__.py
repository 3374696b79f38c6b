"""The pipeline DAG's building blocks (dags/recommender_pipeline.py keeps the tasks and their order).

Airflow puts the DAG folder on the import path, so the DAG file imports this package as
``recommender``; ``.airflowignore`` keeps the DAG processor from parsing it for DAGs.

- :mod:`recommender.operators`: ``SparkJobOperator`` (``spark-submit`` of one of spark_jobs/ with
  the app's binary, Python and settings).
- :mod:`recommender.params`: the params as the jobs' arguments (no Airflow: unit-tested in the app's venv).
- :mod:`recommender.records`: train's record, read for ``evaluate``.
"""
