"""Publish gate: make a trained model version the one the workers, Celery and the site use.

    spark-submit spark_jobs/publish.py --version V [--run-id R] [--force]

The version is published only if its validation NDCG@10 beats popularity on the same split and is
at least the currently published version's; otherwise the run records why and the old version
stays. ``--force`` publishes anyway (the first model of a fresh install) and records that it was
forced. Publishing loads the version's top-N lists and similar items into MongoDB first, then
swaps the ``CURRENT`` pointer atomically, then announces the version on the model topic.
Re-publishing the current version changes nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from core import artifacts, mongo
from core.settings import get_settings
from spark_jobs.common import run_id_arg
from spark_jobs.reconcile import write_record


def gate(candidate: dict, current: dict | None) -> tuple[bool, str]:
    """(publish?, reason) from the two versions' validation metrics."""
    val = candidate.get("validation") or {}
    ours, pop = val.get("ndcg@10"), val.get("popularity_ndcg@10")
    if ours is None or pop is None:
        return False, "the candidate has no validation metrics"
    if ours <= pop:
        return False, f"validation NDCG@10 {ours:.4f} does not beat popularity {pop:.4f}"
    if current is not None:
        cur = (current.get("validation") or {}).get("ndcg@10")
        if cur is not None and ours < cur:
            return False, f"validation NDCG@10 {ours:.4f} is below the current version's {cur:.4f}"
    return True, f"validation NDCG@10 {ours:.4f} beats popularity {pop:.4f}" + (
        "" if current is None else " and is at least the current version's")


def _jsonl(path: Path):
    with open(path) as f:
        for line in f:
            yield json.loads(line)


def load_serving_lists(version: str) -> dict[str, int]:
    """Top-N per batch user and similar items per product into MongoDB, by ``_id`` (idempotent)."""
    d = artifacts.models_dir() / version
    now = time.time()
    recs = ({"_id": doc["_id"], "items": doc["items"], "model_version": version, "source_event_id": None,
             "updated_at": now} for doc in _jsonl(d / "topn.jsonl") if doc["items"])
    out = {"recommendations": mongo.write_recommendations_bulk(recs)["sent"]}
    staging = mongo.replace_collection_start(mongo.SIMILAR_ITEMS)
    out["similar_items"] = mongo.insert_docs(staging, _jsonl(d / "similar.jsonl"))
    mongo.replace_collection_finish(mongo.SIMILAR_ITEMS)
    return out


def publish(version: str, run_id: str, force: bool = False) -> dict:
    current = artifacts.current_version()
    if current == version:
        print(f"publish: {version} is already the published version; nothing to do")
        return {"status": "unchanged", "version": version, "decision": "already the published version"}
    candidate = artifacts.load_metrics(version)
    ok, reason = gate(candidate, artifacts.load_metrics(current) if current else None)
    if not ok and not force:
        mongo.record_model_version(version, {"published": False, "decision": f"kept {current}: {reason}"})
        print(f"publish: NOT publishing {version}: {reason}; {current or 'no version'} stays current")
        return {"status": "rejected", "version": version, "current": current, "decision": reason}
    decision = reason if ok else f"forced despite: {reason}"
    loaded = load_serving_lists(version)
    artifacts.publish(version)
    mongo.record_model_version(version, {"published": True, "published_at": time.time(), "decision": decision,
                                         "replaced": current})
    try:
        from core import kafka_io

        kafka_io.publish_json(get_settings().model_topic, {"version": version, "published_at": time.time()},
                              key="model")
    except Exception as exc:  # workers also poll CURRENT; the announcement only makes it faster
        print(f"publish: could not announce on Kafka ({exc.__class__.__name__}); workers will poll")
    print(f"publish: {version} is now current ({decision}); loaded {loaded}")
    return {"status": "published", "version": version, "replaced": current, "decision": decision, "loaded": loaded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    run_id_arg(parser)
    parser.add_argument("--version", required=True)
    parser.add_argument("--force", action="store_true", help="publish even if the gate says no")
    args = parser.parse_args(argv)
    record = publish(args.version, args.run_id, args.force)
    write_record(args.run_id, "publish", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
