"""Redis keys of Celery's own bookkeeping, named here so that tests can read them without
importing the Celery app (which binds to ``REDIS_URL`` when it is imported).

A new model is announced by ``CURRENT`` alone (spark_jobs/publish.py); this key only records
which version the active users were last re-scored with, so that happens once per version.
"""

LAST_RESCORED_MODEL = "recsys:last_rescored_model"
