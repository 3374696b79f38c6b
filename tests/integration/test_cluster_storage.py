"""The distributed path: a Spark standalone cluster and an S3-compatible object store, both real.

``bin/services start s3 spark`` starts them (as CI would, from nothing: gofakes3 is built from its
Go module, hadoop-aws comes from Maven Central); services this module started are stopped again.
The fast tests check core/storage.py and the model artifacts against the real server; the slow
one runs ``airflow dags test`` with the Spark connection at ``spark://127.0.0.1:7077`` and the
review files, ``DATA_DIR`` and ``ARTIFACTS_DIR`` in the bucket, and checks from the master that
the jobs ran on its workers, from the bucket that every record, Parquet folder and model file is
there, and that a worker serves the published model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.integration.test_airflow_dag import airflow_venv  # noqa: F401  the same fixture (bin/services install airflow)

ROOT = Path(__file__).resolve().parents[2]
MASTER = f"spark://127.0.0.1:{os.environ.get('SPARK_MASTER_PORT', '7077')}"
BUCKET = os.environ.get("S3_BUCKET", "recommender")
CLUSTER_SERVICES = ["s3", "spark-master", "spark-worker-1", "spark-worker-2"]

pytestmark = pytest.mark.integration


def _services(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "bin" / "services"), *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def cluster():
    """The object store and the Spark cluster, started by bin/services; stopped after if we started them."""
    was_running = [s for s in CLUSTER_SERVICES if _services("status", s).returncode == 0]
    started = _services("start", "s3", "spark")
    assert started.returncode == 0, f"bin/services start s3 spark failed:\n{started.stdout}\n{started.stderr}"
    yield
    stop = [s for s in CLUSTER_SERVICES if s not in was_running]
    if stop:
        _services("stop", *stop)


@pytest.fixture
def prefix(cluster):
    """A fresh prefix in the bucket, removed afterwards."""
    from core import storage

    where = storage.location(f"s3a://{BUCKET}/test-{uuid.uuid4().hex[:10]}")
    yield where
    storage.remove_tree(where)


def _master_state() -> dict:
    port = os.environ.get("SPARK_MASTER_WEBUI_PORT", "8090")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=10) as r:
        return json.loads(r.read())


def test_cluster_has_two_alive_workers(cluster):
    state = _master_state()
    assert state["status"] == "ALIVE" and state["url"] == MASTER
    alive = [w for w in state["workers"] if w["state"] == "ALIVE"]
    assert len(alive) >= 2, state["workers"]
    assert all(w["cores"] == 1 for w in alive), alive


def test_storage_round_trip_in_the_bucket(prefix):
    """Files, listing, atomic whole-file writes, deletion and a missing file, on the real server."""
    from core import storage

    assert not storage.exists(prefix / "a.txt")
    with pytest.raises(FileNotFoundError):
        storage.read_text(prefix / "a.txt")
    storage.write_text(prefix / "a.txt", "one")
    storage.write_text(prefix / "a.txt", "two")  # replaced whole
    storage.write_bytes(prefix / "sub" / "b.bin", b"\x00\x01")
    with storage.open_text_output(prefix / "lines.jsonl") as f:
        f.write("".join(json.dumps({"i": i}) + "\n" for i in range(1000)))
    assert storage.read_text(prefix / "a.txt") == "two"
    assert storage.read_bytes(prefix / "sub" / "b.bin") == b"\x00\x01"
    assert storage.listdir(prefix) == ["a.txt", "lines.jsonl", "sub"]
    assert storage.is_file(prefix / "a.txt") and not storage.is_file(prefix / "sub")
    with storage.open_text_input(prefix / "lines.jsonl") as f:
        assert [json.loads(line)["i"] for line in f] == list(range(1000))
    storage.remove_tree(prefix / "sub")
    assert storage.listdir(prefix) == ["a.txt", "lines.jsonl"]


def test_a_whole_file_is_stored_as_its_bytes_whatever_its_name(prefix):
    """pyarrow picks a codec from the name: ``write_bytes`` of a gzip file's bytes to a name ending
    in .gz gzipped them again (a review file copied to the bucket was unreadable), and
    ``read_bytes`` gunzipped them; locally both were the bytes as they are."""
    import gzip

    from core import storage

    data = gzip.compress(b'{"overall": 5.0}\n')
    storage.write_bytes(prefix / "reviews.jsonl.gz", data)
    assert storage.read_bytes(prefix / "reviews.jsonl.gz") == data
    with storage.open_binary_input(prefix / "reviews.jsonl.gz") as f:
        assert f.read() == data  # what load checksums
    with storage.open_text_input(prefix / "reviews.jsonl.gz") as f:
        assert f.read() == '{"overall": 5.0}\n'  # what a reader of lines gets


def test_the_airflow_venv_writes_to_the_bucket(airflow_venv, prefix):
    """The DAG's load task records the run's options in the bucket from the Airflow venv, whose
    pyarrow (26, not pinned by Airflow) uploaded with a checksum and no Content-Length: the local
    server answered 411 and the load task failed before it submitted anything."""
    from core import storage

    where = prefix / "runs" / "r" / "pipeline.json"
    env = {k: v for k, v in os.environ.items() if k != "AWS_REQUEST_CHECKSUM_CALCULATION"}
    wrote = subprocess.run([str(airflow_venv / "bin" / "python"), "-c",
                            "import sys; from core import storage; storage.write_text(sys.argv[1], 'from airflow')",
                            str(where)], env=env, capture_output=True, text=True, timeout=120)
    assert wrote.returncode == 0, wrote.stderr[-2000:]
    assert storage.read_text(where) == "from airflow"


def test_model_versions_publish_and_load_from_the_bucket(prefix):
    """What the workers and the site read: a version, CURRENT, the metrics, as on a local disk."""
    from core import artifacts

    root = prefix / "artifacts"
    assert artifacts.current_version(root) is None and artifacts.load_model(root=root) is None
    factors = np.arange(12, dtype=np.float32).reshape(4, 3)
    version = artifacts.save_model(["p1", "p2", "p3", "p4"], factors, {"kind": "ials"}, {"ndcg@10": 0.5},
                                   root=root)
    with pytest.raises(FileExistsError):
        artifacts.save_model(["p1", "p2", "p3", "p4"], factors, {"kind": "ials"}, version=version, root=root)
    with pytest.raises(FileNotFoundError):
        artifacts.publish("no-such-version", root=root)
    artifacts.publish(version, root=root)
    assert artifacts.current_version(root) == version
    model = artifacts.load_model(root=root)
    assert model.version == version and model.item_ids == ["p1", "p2", "p3", "p4"]
    np.testing.assert_array_equal(model.item_factors, factors)
    assert artifacts.read_metrics(version, root) == {"ndcg@10": 0.5}


def _run_env(prefix, mongo_db: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_"))}
    env.update(SPARK_MASTER=MASTER, DATA_DIR=str(prefix / "data"), ARTIFACTS_DIR=str(prefix / "artifacts"),
               EDA_DIR=str(tmp_path / "eda"), MONGO_DB=mongo_db, SPARK_LOCAL_IP="127.0.0.1",
               SPARK_DRIVER_MEMORY="2g", SPARK_EXECUTOR_MEMORY="1g", SPARK_SHUFFLE_PARTITIONS="4",
               PYTHONPATH=str(ROOT))
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def _apps_since(before: set[str]) -> list[dict]:
    state = _master_state()
    return [a for a in state.get("completedapps", []) + state.get("activeapps", []) if a["id"] not in before]


def _apps_with_executors_on(worker: int) -> set[str]:
    """Ids of the applications that had an executor on worker N (its own JSON status)."""
    port = int(os.environ.get("SPARK_MASTER_WEBUI_PORT", "8090")) + worker
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=10) as r:
        state = json.loads(r.read())
    return {e["appid"] for e in state.get("executors", []) + state.get("finishedexecutors", [])}


@pytest.fixture
def scratch_db():
    from core import mongo
    from core.settings import get_settings

    # under the session's name, so the session's end clears its Redis keys too (tests/conftest.py)
    name = f"{get_settings().mongo_db}_cluster_{uuid.uuid4().hex[:8]}"
    yield name
    mongo.get_client().drop_database(name)


def test_object_store_inputs_match_as_local_ones(prefix, monkeypatch):
    """An object-store input is matched as ``glob.glob`` matches a local one (core.inputs.input_files):
    a glob skips names starting with "." (Spark would read 0 lines of one and load pass it), a name
    starting with "_" is refused (as Spark skips it too), a "folder" is refused at once (it was a
    missing input the DAG waited hours for), a glob that matches nothing is missing."""
    from core import inputs, storage
    from core.settings import get_settings

    for name in ("a_5.json", ".b_5.json", "sub/d.json"):
        storage.write_bytes(prefix / "in" / name, b'{"overall": 5}\n')
    monkeypatch.setenv("DATA_DIR", str(prefix / "data"))
    get_settings.cache_clear()
    try:
        uri = storage.spark_uri(f"{prefix}/in")
        assert inputs.input_files([f"{prefix}/in/*_5.json"]) == ([f"{uri}/a_5.json"], [], "")
        assert inputs.input_files([f"{prefix}/in/sub"]).refusal == f"{uri}/sub is not a file"
        assert "is not a file" in inputs.input_files([f"{prefix}/in/*"]).refusal
        assert inputs.input_files([f"{prefix}/in/none*.json"]) == ([], [f"{prefix}/in/none*.json"], "")
        storage.write_bytes(prefix / "in" / "_c_5.json", b'{"overall": 5}\n')
        assert "Spark reads no file whose name starts" in inputs.input_files([f"{prefix}/in/*_5.json"]).refusal
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_airflow_dag_runs_on_the_cluster_with_data_and_models_in_the_bucket(airflow_venv, prefix, scratch_db,
                                                                          tmp_path):
    """``airflow dags test`` with the Spark connection pointed at the master, its review files,
    data and models in the bucket: every task succeeds, every job ran on both workers, the records,
    Parquet and model are in the bucket, publish loaded the lists, and a real worker serves the
    model. Load reads ``s3a://`` inputs (a glob and a name) with the executors, checksummed from
    their bytes as a local file is, and balanced line by line (it refused them once: "only local
    input files can be fingerprinted").

    The chain's only run on real jobs in the tests: each run on the cluster costs ten minutes of CI
    (which ran out of its 5,400 s with three of them). ``bin/pipeline`` submits the same jobs with
    the same helpers (spark_jobs.pyfiles, spark_jobs.jvm_jar); its own arguments and stage order are
    checked with a stub spark-submit (test_pipeline_resume.py, test_pipeline_inputs.py).
    """
    import gzip
    import hashlib

    from core import artifacts, mongo, stored_lists, storage
    from core.events import RatingEvent
    from tests.integration.realtime_support import delete_topics, process_env, start_worker, topics_env, wait_until
    from tests.integration.test_airflow_dag import CHAIN, DAG_ID, _airflow, _airflow_env, _json_output

    names = ["amazon2018_gift_cards_5.jsonl.gz", "amazon2018_meta_gift_cards.jsonl.gz"]
    for name in names:
        storage.write_bytes(prefix / "inputs" / name, (ROOT / "data" / "demo" / name).read_bytes())
    inputs = [f"{prefix}/inputs/amazon2018_g*_5.jsonl.gz", f"{prefix}/inputs/{names[1]}"]

    before = {a["id"] for a in _master_state().get("completedapps", [])}
    env = _airflow_env(tmp_path / "airflow-home", **{
        k: v for k, v in _run_env(prefix, scratch_db, tmp_path).items()
        if k in ("SPARK_MASTER", "DATA_DIR", "ARTIFACTS_DIR", "EDA_DIR", "MONGO_DB", "SPARK_LOCAL_IP",
                 "SPARK_DRIVER_MEMORY", "SPARK_EXECUTOR_MEMORY", "SPARK_SHUFFLE_PARTITIONS")},
        AIRFLOW_CONN_SPARK_DEFAULT=json.dumps({"conn_type": "spark", "host": MASTER}))
    for k in ("SPARK_SUBMIT_BINARY", "APP_VENV", "APP_PYTHON", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"):
        env.pop(k, None)
    assert _airflow(airflow_venv, env, "db", "migrate").returncode == 0
    conf = {"engine": "auto", "inputs": inputs}
    run = _airflow(airflow_venv, env, "dags", "test", DAG_ID, "-c", json.dumps(conf))
    log = f"{run.stdout[-6000:]}\n{run.stderr[-6000:]}"
    runs = _airflow(airflow_venv, env, "dags", "list-runs", DAG_ID, "-o", "json")
    (dag_run,) = _json_output(runs.stdout)
    states = _airflow(airflow_venv, env, "tasks", "states-for-dag-run", DAG_ID, dag_run["run_id"], "-o", "json")
    assert {t["task_id"]: t["state"] for t in _json_output(states.stdout)} == {t: "success" for t in CHAIN}, log
    assert dag_run["state"] == "success", log

    # every job was an application of the standalone master, and used both workers
    apps = _apps_since(before)
    names_run = {a["name"] for a in apps}
    assert {f"amazon-recommender:{j}" for j in ("load", "clean", "mongo_load", "eda", "train")} <= names_run, names_run
    ours = {a["id"] for a in apps}
    assert ours <= _apps_with_executors_on(1) and ours <= _apps_with_executors_on(2), "an executor missing"

    # the records, the Parquet and the model are in the bucket; load read the bucket's files
    (run_id,) = storage.listdir(prefix / "data" / "runs")
    records = prefix / "data" / "runs" / run_id
    assert {f"{j}.json" for j in ("clean", "eda", "load", "mongo_load", "publish", "train")} <= set(
        storage.listdir(records))
    load = json.loads(storage.read_text(records / "load.json"))
    assert load["balanced"] and load["counts_in"]["lines"] == sum(load["counts_out"].values())
    lines = {n: sum(1 for _ in gzip.open(ROOT / "data" / "demo" / n, "rt")) for n in names}
    assert sorted(load["loaded"]) == sorted(names)
    assert {f["file"]: f["lines"] for f in load["per_file"]} == lines, load["per_file"]
    ledger = json.loads(storage.read_text(prefix / "data" / "raw" / "_ledger.json"))["units"]
    assert {n: (e["path"], e["sha256"]) for n, e in ledger.items()} == {
        n: (f"s3a://{BUCKET}/{str(prefix).split(BUCKET + '/', 1)[1]}/inputs/{n}",
            hashlib.sha256((ROOT / "data" / "demo" / n).read_bytes()).hexdigest()) for n in names}
    assert {"reviews", "products"} <= set(storage.listdir(prefix / "data" / "clean"))
    version = json.loads(storage.read_text(records / "train.json"))["version"]
    assert artifacts.current_version(prefix / "artifacts") == version, log
    files = storage.listdir(prefix / "artifacts" / "models" / version)
    assert {"item_factors.npy", "item_ids.json", "metrics.json", "params.json", "topn.jsonl.gz",
            "similar.jsonl.gz"} <= set(files)

    # publish loaded the version's lists from the bucket into MongoDB
    db = mongo.get_db(name=scratch_db)
    with storage.open_text_input(prefix / "artifacts" / "models" / version / "topn.jsonl.gz") as f:  # gunzipped
        listed = sum(1 for line in f if json.loads(line)["items"])
    stored = db[mongo.per_version_name(mongo.BATCH_RECOMMENDATIONS, version)].count_documents({})
    assert stored == listed > 0

    # The published model is what a real worker then serves: one rating event by a new user goes
    # through Kafka to `python -m kafka_workers.worker`, which reads the model from the bucket and
    # writes a list under that version.
    product = db[mongo.CATALOG_INDEX].find_one({"_id": f"{mongo.ALL}:0"})["ids"][0]  # most reviewed
    topics = topics_env("airflow")
    worker_env = process_env(MONGO_DB=scratch_db, ARTIFACTS_DIR=str(prefix / "artifacts"), **topics)
    worker = start_worker(worker_env, tmp_path / "worker.log")
    try:
        _publish_in_child(worker_env, RatingEvent(user_id="airflow-test-user", product_id=product, rating=5))
        recs = wait_until(lambda: stored_lists.get_live_recommendations("airflow-test-user", db=db), 120,
                          f"the worker's recommendations\n{worker.log()[-3000:]}")
    finally:
        worker.stop()
        delete_topics(worker_env["KAFKA_BOOTSTRAP_SERVERS"], [topics[k] for k in topics if k.endswith("TOPIC")])
    assert recs["model_version"] == version, recs
    assert recs["items"] and product not in {i["product_id"] for i in recs["items"]}
    assert all(i["because"] == product for i in recs["items"])  # the one rated item explains each


def _publish_in_child(env: dict[str, str], event) -> None:
    """Create the topics and publish with the worker's settings (this process's are the session's)."""
    code = ("import sys, json; from core import kafka_io; from core.events import validate; "
            "kafka_io.ensure_topics(); kafka_io.publish_event(validate(json.loads(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(event.to_dict())], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
