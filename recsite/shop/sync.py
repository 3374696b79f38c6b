"""Copy pipeline run and model version records from MongoDB into Django models for the admin.

The batch side (Spark, Airflow) writes to MongoDB only; the admin needs Django rows to list,
filter and search. Upserting by the MongoDB ``_id`` keeps the mirror idempotent.
"""
from __future__ import annotations

import datetime as dt

from core import mongo
from shop.models import ModelVersion, PipelineRun


def _when(ts) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(float(ts), tz=dt.timezone.utc)
    except (TypeError, ValueError):
        return None


def sync_pipeline_records() -> tuple[int, int]:
    db = mongo.get_db()
    runs = 0
    for doc in db[mongo.PIPELINE_RUNS].find({}):
        counts = {k: doc[k] for k in ("counts_in", "counts_out") if k in doc}
        details = {k: v for k, v in doc.items() if k not in {"_id", "counts_in", "counts_out"}}
        PipelineRun.objects.update_or_create(key=str(doc["_id"]), defaults={
            "run_id": str(doc.get("run_id", "")), "job": str(doc.get("job", "")),
            "status": str(doc.get("status", "")), "balanced": doc.get("balanced"),
            "counts": counts, "details": details, "recorded_at": _when(doc.get("recorded_at"))})
        runs += 1
    versions = 0
    for doc in db[mongo.MODEL_VERSIONS].find({}):
        ModelVersion.objects.update_or_create(version=str(doc["_id"]), defaults={
            "engine": str(doc.get("engine", "")), "published": bool(doc.get("published")),
            "published_at": _when(doc.get("published_at")), "metrics": doc.get("metrics") or {},
            "params": doc.get("params") or {}, "decision": str(doc.get("decision", "")),
            "pruned_at": _when(doc.get("pruned_at"))})
        versions += 1
    return runs, versions
