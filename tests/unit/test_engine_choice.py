"""train's automatic engine choice: EASE for small catalogs, one node while memory allows, else Spark."""
from __future__ import annotations

import spark_jobs.engines as train

# the 10M-review synthetic run of bench/pipeline_scale.py: its measured peak was 10.4 GB in all
TEN_M = dict(n_items=633_073, n_interactions=9_792_140, n_users=1_692_160)


def test_estimate_is_not_below_what_the_10m_run_measured():
    jvm_and_base = 4.45 * 2 ** 30  # the run's intercept (1M and 10M peaks), the Spark JVM mostly
    measured = 10.38 * 2 ** 30
    est = train.single_node_bytes("implicit", TEN_M["n_interactions"], TEN_M["n_users"], TEN_M["n_items"])
    assert est >= measured - jvm_and_base


def test_auto_switches_to_spark_when_the_estimate_passes_the_memory_budget(monkeypatch):
    monkeypatch.setattr(train, "SINGLE_NODE_MEMORY", 24 * 2 ** 30)
    assert train.choose_engine("auto", **TEN_M) == "implicit"
    monkeypatch.setattr(train, "SINGLE_NODE_MEMORY", 4 * 2 ** 30)
    assert train.choose_engine("auto", **TEN_M) == "spark"
    assert train.choose_engine("implicit", **TEN_M) == "implicit"  # an explicit request is obeyed


def test_small_catalogs_get_ease(monkeypatch):
    monkeypatch.setattr(train, "SINGLE_NODE_MEMORY", 8 * 2 ** 30)
    assert train.choose_engine("auto", n_items=900, n_interactions=10_261, n_users=1_429) == "ease"
    monkeypatch.setattr(train, "SINGLE_NODE_MAX_INTERACTIONS", 5_000)
    assert train.choose_engine("auto", n_items=900, n_interactions=10_261, n_users=1_429) == "spark"
