"""Shared core of amazon-recommender.

Everything the batch jobs, the site, the Kafka workers and the DAGs have in common lives here and
only here: settings from the environment, the rating-event contract, the MongoDB access layer,
model artifacts and the recommendation maths. Keep it small and free of framework imports so each
of those programs can import it cheaply (``core.spark_schemas`` alone imports pyspark: the review
files' schemas, which load and the benchmarks share; nothing else in core imports it).
"""
