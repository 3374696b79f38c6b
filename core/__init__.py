"""Shared core of amazon-recommender.

Everything the batch jobs, the site, the Kafka workers and the DAGs have in common lives here and
only here: settings from the environment, the rating-event contract, the MongoDB access layer,
model artifacts and the recommendation maths. Keep it small and free of framework imports so each
of those programs can import it cheaply.
"""
