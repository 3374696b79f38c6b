"""Configuration from environment variables only (12-factor), with defaults that work locally.

The settings more than one program needs are read here, once, through :func:`get_settings`, so one
variable name means the same thing for Spark, Django, the workers, Celery and Airflow. A knob of one
program stays beside its use (e.g. ``kafka_workers/config.py``); every read goes through
:mod:`core.env`. The README lists every variable (tests/unit/test_configuration_documented.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from core.env import env_int, env_jvm_size, env_str
from core.storage import Location, is_remote, location


def _project_root() -> Path:
    """The repository, where ``.local/`` and ``data/demo/`` are unless the environment says otherwise.

    That is the folder above this package, except in a spark-submit driver: it imports ``core`` from
    the ``--py-files`` zip (spark_jobs/pyfiles.py), which is no folder; bin/pipeline runs
    spark-submit from the repository and the DAG hands the jobs ``LOCAL_DIR``.
    """
    above = Path(__file__).resolve().parent.parent
    return above if above.is_dir() else Path.cwd()


PROJECT_ROOT = _project_root()

# How long Celery lets a task of the default queue run (popular, trending, check_model: minutes in
# practice; an hour is a hung task). kafka_workers/celery_app.py gives it to Celery, and the publish
# job waits as long for a trending refresh that holds the state (core.trending.WAIT_S). A constant,
# not a variable; here because core must not import kafka_workers (celery_app builds the Celery app).
TASK_TIME_LIMIT_S = 3600


@dataclass(frozen=True)
class Settings:
    local_dir: Path
    mongo_uri: str
    mongo_db: str
    kafka_bootstrap_servers: str
    ratings_topic: str
    dead_letter_topic: str
    ratings_partitions: int
    redis_url: str
    spark_master: str
    spark_driver_memory: str  # the DAG's spark-submit and a job started without one agree on it
    data_dir: Location  # a Path, or an object-store URI (core/storage.py) shared by a cluster
    artifacts_dir: Location
    eda_dir: Path
    demo_input: str
    top_n: int
    kafka_delivery_timeout_ms: int
    mongo_request_timeout_ms: int

    @classmethod
    def from_env(cls) -> "Settings":
        local_dir = Path(env_str("LOCAL_DIR", str(PROJECT_ROOT / ".local")))
        data_dir = location(env_str("DATA_DIR", str(local_dir / "data")))
        # The site reads the EDA plots from its disk: beside a DATA_DIR in a bucket they stay local.
        eda_default = local_dir / "data" / "eda" if is_remote(data_dir) else data_dir / "eda"
        return cls(
            local_dir=local_dir,
            mongo_uri=env_str("MONGO_URI", f"mongodb://127.0.0.1:{env_int('MONGO_PORT', 27017, minimum=1)}/"),
            mongo_db=env_str("MONGO_DB", "amazon_recommender"),
            kafka_bootstrap_servers=env_str(
                "KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{env_int('KAFKA_PORT', 9092, minimum=1)}"
            ),
            ratings_topic=env_str("KAFKA_RATINGS_TOPIC", "ratings.v1"),
            dead_letter_topic=env_str("KAFKA_DEAD_LETTER_TOPIC", "ratings.dead-letter"),
            ratings_partitions=env_int("KAFKA_RATINGS_PARTITIONS", 6, minimum=1),
            redis_url=env_str("REDIS_URL", f"redis://127.0.0.1:{env_int('REDIS_PORT', 6379, minimum=1)}/0"),
            spark_master=env_str("SPARK_MASTER", "local[*]"),
            spark_driver_memory=env_jvm_size("SPARK_DRIVER_MEMORY", "4g"),
            data_dir=data_dir,
            artifacts_dir=location(env_str("ARTIFACTS_DIR", str(local_dir / "artifacts"))),
            # EDA plots and summary.json; "<eda_dir>/latest" is what the site's dashboard shows.
            eda_dir=Path(env_str("EDA_DIR", str(eda_default))),
            # Every bundled real file (reviews and metadata of three categories); a glob load expands.
            demo_input=env_str("DEMO_INPUT", str(PROJECT_ROOT / "data" / "demo" / "*.json*")),
            top_n=env_int("RECS_TOP_N", 20, minimum=1),
            # How long a send may take in all (queueing, retries, the ack); the site waits for the
            # ack a little longer (core.kafka_io.ack_wait_s), so "not saved" means the producer gave
            # up too (no late ghost delivery), after up to this long for the topic's metadata.
            kafka_delivery_timeout_ms=env_int("KAFKA_DELIVERY_TIMEOUT_MS", 1500),
            # How long a page waits for MongoDB before it answers 503 (the rating form's checks).
            mongo_request_timeout_ms=env_int("MONGO_REQUEST_TIMEOUT_MS", 1000),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests that change the environment call ``get_settings.cache_clear()``."""
    return Settings.from_env()
