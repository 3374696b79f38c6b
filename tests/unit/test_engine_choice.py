"""train's automatic engine choice: EASE for small catalogs, one node while memory allows, else Spark."""
from __future__ import annotations

import spark_jobs.engines as engines

GB = 2 ** 30
# the 10M-review synthetic run of bench/pipeline_scale.py (users and items per interaction of that shape)
TEN_M = dict(n_items=633_073, n_interactions=9_792_140, n_users=1_692_160)
# bench/train_memory.py, 2026-11-30: peak RSS of train's driver path above its base
MEASURED = [(dict(n_interactions=1_000_000, n_users=137_548, n_items=63_518), 0.37 * GB),
            (dict(n_interactions=5_000_000, n_users=649_798, n_items=315_397), 1.05 * GB),
            (dict(n_interactions=10_000_000, n_users=1_279_767, n_items=629_120), 1.51 * GB)]


def test_estimate_is_not_below_what_bench_train_memory_measured():
    for shape, measured in MEASURED:
        assert engines.single_node_bytes("implicit", **shape) >= measured


def test_fifty_million_interactions_train_on_one_node_of_this_machine():
    fifty = {k: v * 5 for k, v in TEN_M.items()}  # 49M interactions, 8.5M users, 3.2M items
    budget = 0.6 * 23.5 * GB  # SINGLE_NODE_MEMORY's default on this 24 GB machine
    assert engines.single_node_bytes("implicit", **fifty) <= budget
    assert engines.single_node_bytes("implicit", **fifty) / fifty["n_interactions"] < 300


def test_auto_switches_to_spark_when_the_estimate_passes_the_memory_budget(monkeypatch):
    monkeypatch.setattr(engines, "SINGLE_NODE_MEMORY", 14 * GB)
    assert engines.choose_engine("auto", **TEN_M) == "implicit"
    assert engines.choose_engine("auto", **{k: v * 5 for k, v in TEN_M.items()}) == "implicit"
    assert engines.choose_engine("auto", **{k: v * 10 for k, v in TEN_M.items()}) == "spark"
    monkeypatch.setattr(engines, "SINGLE_NODE_MEMORY", 2 * GB)
    assert engines.choose_engine("auto", **TEN_M) == "spark"
    assert engines.choose_engine("implicit", **TEN_M) == "implicit"  # an explicit request is obeyed


def test_small_catalogs_get_ease(monkeypatch):
    monkeypatch.setattr(engines, "SINGLE_NODE_MEMORY", 8 * GB)
    assert engines.choose_engine("auto", n_items=900, n_interactions=10_261, n_users=1_429) == "ease"
    monkeypatch.setattr(engines, "SINGLE_NODE_MAX_INTERACTIONS", 5_000)
    assert engines.choose_engine("auto", n_items=900, n_interactions=10_261, n_users=1_429) == "spark"


def test_the_mllib_grid_is_the_first_spark_grid_size_configurations(monkeypatch):
    assert engines.grid("spark") == engines.IALS_GRID[:4] and len(engines.grid("implicit")) == 8  # defaults
    monkeypatch.setattr(engines, "SPARK_GRID_SIZE", 1)
    assert engines.grid("spark") == engines.IALS_GRID[:1]
    assert engines.grid("implicit") == engines.IALS_GRID  # one node tunes on a sample: the whole grid


def test_a_single_node_memory_of_0_is_refused_not_taken_for_60_percent_of_ram(monkeypatch):
    """The README's row gives 60% of RAM as the default of an unset variable, not as the meaning
    of 0: a 0 set stops the program naming the variable (core/env.py), as any value below 0.1."""
    import pytest

    monkeypatch.setenv("SINGLE_NODE_MEMORY_GB", "0")
    with pytest.raises(ValueError, match="SINGLE_NODE_MEMORY_GB must be at least 0.1"):
        engines.single_node_memory()
    monkeypatch.setenv("SINGLE_NODE_MEMORY_GB", "2.5")
    assert engines.single_node_memory() == 2.5 * GB
    monkeypatch.delenv("SINGLE_NODE_MEMORY_GB")
    assert 0 < engines.single_node_memory() < 2 ** 50  # 60% of this machine's RAM
