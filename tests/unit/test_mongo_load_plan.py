"""mongo_load's choice between a full reload, an upsert of new categories and nothing
(spark_jobs.mongo_load.load_plan): only new categories may be upserted, since a changed or
removed category's old documents would stay in MongoDB; and how many partitions its shuffles get."""
from __future__ import annotations

import pytest

from spark_jobs.mongo_load import load_plan

CLEAN = {"Books": "b1", "Toys": "t1"}


def test_nothing_new_is_skipped():
    assert load_plan(CLEAN, dict(CLEAN), True)[:2] == ("skipped", [])


def test_only_new_categories_are_upserted():
    mode, categories, why = load_plan({**CLEAN, "Tools": "x1"}, dict(CLEAN), True)
    assert (mode, categories) == ("incremental", ["Tools"]) and "Tools" in why


@pytest.mark.parametrize("held", [{"Books": "b0", "Toys": "t1"},  # Books changed
                                  {"Books": "b1", "Toys": "t1", "Gone": "g1"}])  # Gone removed
def test_a_changed_or_removed_category_reloads_everything(held):
    mode, categories, why = load_plan({**CLEAN, "Tools": "x1"}, held, True)
    assert (mode, categories) == ("full", ["Books", "Tools", "Toys"])
    assert ("Books" if "Gone" not in held else "Gone") in why


@pytest.mark.parametrize("fingerprints, held, exist, force", [
    (None, dict(CLEAN), True, False),  # a clean folder without a ledger
    (CLEAN, {}, True, False),  # a database loaded before ledgers, or emptied
    (CLEAN, dict(CLEAN), False, False),  # nothing to upsert into
    (CLEAN, dict(CLEAN), True, True),  # asked for
])
def test_unknown_state_or_force_reloads_everything(fingerprints, held, exist, force):
    mode, categories, _why = load_plan(fingerprints, held, exist, force)
    assert mode == "full" and categories == sorted(fingerprints or {})


def test_a_loads_shuffles_grow_with_its_reviews_from_the_configured_floor():
    """At 51.6M reviews the review pages' window ran out of the 4 GB driver with the default 8
    partitions; a task's share of the reviews is now bounded (REVIEWS_PER_SHUFFLE_PARTITION)."""
    from spark_jobs.mongo_load import REVIEWS_PER_SHUFFLE_PARTITION, shuffle_partitions

    assert shuffle_partitions(50_000, 8) == 8  # the demo: the configured floor
    assert shuffle_partitions(5_129_676, 8) == 21
    assert shuffle_partitions(51_298_186, 8) == 206
    assert shuffle_partitions(51_298_186, 400) == 400  # an operator's larger setting stays
    assert shuffle_partitions(8 * REVIEWS_PER_SHUFFLE_PARTITION + 1, 8) == 9
