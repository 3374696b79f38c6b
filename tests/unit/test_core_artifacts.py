"""Model versions are written atomically and published by an atomic pointer swap."""
from __future__ import annotations

import numpy as np
import pytest

from core import artifacts


def test_save_load_publish_round_trip(tmp_path):
    factors = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert artifacts.load_model(root=tmp_path) is None
    version = artifacts.save_model(["a", "b", "c", "d"], factors, {"kind": "ials", "reg": 0.1},
                                   {"ndcg@10": 0.05}, root=tmp_path)
    assert artifacts.current_version(root=tmp_path) is None  # saved is not published
    artifacts.publish(version, root=tmp_path)
    model = artifacts.load_model(root=tmp_path)
    assert model.version == version
    assert model.item_index == {"a": 0, "b": 1, "c": 2, "d": 3}
    np.testing.assert_array_equal(model.item_factors, factors)
    np.testing.assert_allclose(model.gram, factors.T.astype(np.float64) @ factors)
    assert model.metrics == {"ndcg@10": 0.05}
    assert not list(artifacts.models_dir(tmp_path).glob(".*tmp"))


def test_versions_are_unique_and_sortable(tmp_path):
    v1 = artifacts.save_model(["a"], np.ones((1, 2)), {}, root=tmp_path)
    v2 = artifacts.save_model(["a"], np.ones((1, 2)), {}, root=tmp_path)
    assert v1 != v2
    with pytest.raises(FileExistsError):
        artifacts.save_model(["a"], np.ones((1, 2)), {}, version=v1, root=tmp_path)


def test_rejects_mismatched_ids_and_unknown_versions(tmp_path):
    with pytest.raises(ValueError):
        artifacts.save_model(["a", "b"], np.ones((3, 2)), {}, root=tmp_path)
    with pytest.raises(FileNotFoundError):
        artifacts.publish("nope", root=tmp_path)


def test_serving_lists_are_gzipped_and_read_in_every_layout(tmp_path):
    import gzip
    import json

    from core import storage

    docs = [{"_id": "u1", "items": [{"product_id": "p1", "score": 0.5}]}, {"_id": "u2", "items": []}]
    text = "".join(json.dumps(d) + "\n" for d in docs)
    # the driver's file: gzip on disk, the same lines back
    packed = artifacts.serving_lists_file(tmp_path, artifacts.TOPN_LISTS)
    with storage.open_text_output(packed) as f:
        f.write(text)
    assert packed.name == "topn.jsonl.gz" and gzip.decompress(packed.read_bytes()).decode() == text
    assert list(artifacts.serving_list_docs(tmp_path / artifacts.TOPN_LISTS)) == docs
    # a version written before the lists were gzipped
    (tmp_path / "similar.jsonl").write_text(text + "\n")
    assert list(artifacts.serving_list_docs(tmp_path / artifacts.SIMILAR_LISTS)) == docs
    # Spark's executors: a folder of gzipped parts, complete only with _SUCCESS
    folder = tmp_path / "spark" / artifacts.TOPN_LISTS
    folder.mkdir(parents=True)
    for k, d in enumerate(docs):
        (folder / f"part-0000{k}.txt.gz").write_bytes(gzip.compress((json.dumps(d) + "\n").encode()))
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        list(artifacts.serving_list_docs(folder))
    (folder / "_SUCCESS").write_text("")
    assert list(artifacts.serving_list_docs(folder)) == docs


def test_prune_keeps_the_newest_and_the_protected_versions(tmp_path):
    names = [f"2026120{d}T000000-0000000{d}" for d in range(1, 8)]  # oldest first
    for name in names:
        artifacts.save_model(["a"], np.ones((1, 2)), {}, version=name, root=tmp_path)
    artifacts.publish(names[0], root=tmp_path)  # an old one is current (a rollback)
    left_by_a_dead_train = artifacts.models_dir(tmp_path) / f".{names[1]}.tmp"
    left_by_a_dead_train.mkdir()

    dropped = artifacts.prune_versions(protect={names[0], names[2]}, keep=3, root=tmp_path)

    assert dropped == [f".{names[1]}.tmp", names[1], names[3]]
    left = sorted(p.name for p in artifacts.models_dir(tmp_path).iterdir())
    assert left == sorted([artifacts.CURRENT_FILE, names[0], names[2], *names[4:]])
    assert artifacts.load_model(root=tmp_path).version == names[0]


def test_prune_keeps_a_train_still_writing_the_newest_version(tmp_path):
    old = artifacts.save_model(["a"], np.ones((1, 2)), {}, version="20260101T000000-00000001", root=tmp_path)
    writing = artifacts.models_dir(tmp_path) / ".20260102T000000-00000002.tmp"
    writing.mkdir()
    assert artifacts.prune_versions(protect=set(), keep=1, root=tmp_path) == [old]
    assert writing.is_dir()
