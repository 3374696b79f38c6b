"""Redis keys shared by Celery (which writes them) and the site (which reads them)."""

# Bumped after each newly published model; the site folds it into cache keys so every cached
# page or summary computed under the old model is ignored at once.
CACHE_GENERATION = "recsys:cache_generation"
LAST_RESCORED_MODEL = "recsys:last_rescored_model"
