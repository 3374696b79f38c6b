"""core/storage.py without a server: locations, Spark settings, and local files as before."""
from __future__ import annotations

from pathlib import Path

import pytest

from core import storage
from core.settings import Settings


def test_remote_locations_join_like_paths_and_stay_strings():
    base = storage.location("s3a://bucket/prefix/")
    assert isinstance(base, storage.RemotePath) and base == "s3a://bucket/prefix"
    run = base / "runs" / "r1" / "train.json"
    assert run == "s3a://bucket/prefix/runs/r1/train.json" and f"{base}/clean" == "s3a://bucket/prefix/clean"
    assert run.name == "train.json" and run.parent == "s3a://bucket/prefix/runs/r1"
    assert storage.location("/tmp/x") == Path("/tmp/x") and not storage.is_remote(Path("/tmp/x"))
    assert storage.spark_uri("s3://b/k") == "s3a://b/k" and storage.spark_uri("/tmp/x") == "/tmp/x"
    assert not hasattr(base, "mkdir")  # local-only calls fail loudly on a bucket


def test_settings_take_bucket_uris_and_keep_eda_local(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("DATA_DIR", "s3a://recs/data")
    monkeypatch.setenv("ARTIFACTS_DIR", "s3a://recs/artifacts")
    monkeypatch.delenv("EDA_DIR", raising=False)
    s = Settings.from_env()
    assert s.data_dir == "s3a://recs/data" and s.artifacts_dir / "models" == "s3a://recs/artifacts/models"
    assert s.eda_dir == tmp_path / "data" / "eda"  # the site reads the plots from its own disk
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "d"))
    assert Settings.from_env().eda_dir == tmp_path / "d" / "eda"


def test_spark_conf_only_for_buckets(monkeypatch, tmp_path):
    assert storage.spark_conf([tmp_path, tmp_path / "a"]) == {}
    jars = tmp_path / "opt" / f"spark-s3a-{storage.HADOOP_AWS_VERSION}"
    monkeypatch.setattr(storage, "s3a_jars", lambda local_dir=None: [])
    with pytest.raises(RuntimeError, match="bin/services install spark"):
        storage.spark_conf(["s3a://b/data"])
    jars.mkdir(parents=True)
    (jars / "hadoop-aws.jar").write_bytes(b"")
    monkeypatch.setattr(storage, "s3a_jars", lambda local_dir=None: [str(jars / "hadoop-aws.jar")])
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    conf = storage.spark_conf([tmp_path, "s3a://b/data"])
    assert conf["spark.jars"].endswith("hadoop-aws.jar")
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9999"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.access.key"] == "k" and conf["spark.hadoop.fs.s3a.secret.key"] == "s"


def test_local_files_are_written_whole(tmp_path):
    target = tmp_path / "runs" / "r" / "load.json"
    storage.write_text(target, "one")
    storage.write_text(target, "two")
    assert storage.read_text(target) == "two" and storage.listdir(target.parent) == ["load.json"]
    with pytest.raises(FileNotFoundError):
        storage.read_text(tmp_path / "missing")
    storage.remove_tree(tmp_path / "runs")
    assert not storage.exists(tmp_path / "runs")
    storage.remove_tree(tmp_path / "runs")  # nothing there: no error
