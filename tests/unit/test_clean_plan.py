"""spark_jobs.clean.clean_plan: which categories a clean redoes, removes or skips, and the ledger it
leaves, decided from the load and clean ledgers alone (no Spark session)."""
from __future__ import annotations

from spark_jobs.clean import CLEAN_VERSION, clean_plan
from spark_jobs.units import category_fingerprints

# load's ledger: file name -> entry (category from the file name, checksum, load's version)
LOADED = {
    "reviews_Alpha.json": {"category": "Alpha", "sha256": "a1", "version": 2},
    "meta_Alpha.json": {"category": "Alpha", "sha256": "a2", "version": 2},
    "reviews_Beta.json": {"category": "Beta", "sha256": "b1", "version": 2},
    "reviews_Gamma.json": {"category": "Gamma", "sha256": "g1", "version": 2},
}


def _cleaned(load_units: dict[str, dict], deferred: dict[str, list[str]] | None = None) -> dict:
    """Clean's ledger as a clean of exactly ``load_units`` leaves it."""
    return {"categories": category_fingerprints(load_units, CLEAN_VERSION), "deferred": deferred or {}}


def test_nothing_changed_is_nothing_to_do():
    plan = clean_plan(LOADED, _cleaned(LOADED))
    assert (plan.dirty, plan.redone, plan.unloaded, plan.units) == ([], [], [], [])
    assert plan.skipped == ["Alpha", "Beta", "Gamma"]


def test_a_changed_file_redoes_its_category_only_reading_its_files():
    changed = {**LOADED, "meta_Alpha.json": {**LOADED["meta_Alpha.json"], "sha256": "a2-new"}}
    plan = clean_plan(changed, _cleaned(LOADED))
    assert (plan.dirty, plan.redone, plan.unloaded) == (["Alpha"], ["Alpha"], [])
    assert sorted(plan.units) == ["meta_Alpha.json", "reviews_Alpha.json"]
    assert plan.skipped == ["Beta", "Gamma"]


def test_a_new_category_is_cleaned_and_an_empty_ledger_cleans_all():
    old = {name: u for name, u in LOADED.items() if u["category"] != "Gamma"}
    assert clean_plan(LOADED, _cleaned(old)).dirty == ["Gamma"]
    assert clean_plan(LOADED, {}).dirty == ["Alpha", "Beta", "Gamma"]


def test_force_redoes_every_category():
    plan = clean_plan(LOADED, _cleaned(LOADED), force=True)
    assert plan.redone == ["Alpha", "Beta", "Gamma"] and plan.skipped == []
    assert sorted(plan.units) == sorted(LOADED)


def test_a_file_loaded_by_another_load_version_redoes_its_category():
    reloaded = {**LOADED, "reviews_Beta.json": {**LOADED["reviews_Beta.json"], "version": 3}}
    assert clean_plan(reloaded, _cleaned(LOADED)).dirty == ["Beta"]


def test_a_category_whose_files_are_gone_is_removed_not_redone():
    remaining = {name: u for name, u in LOADED.items() if u["category"] != "Beta"}
    plan = clean_plan(remaining, _cleaned(LOADED))
    assert (plan.dirty, plan.redone, plan.unloaded, plan.units) == (["Beta"], [], ["Beta"], [])
    assert plan.skipped == ["Alpha", "Gamma"]


def test_the_categories_deferring_to_a_dirty_one_are_redone_with_it():
    """Gamma gave pairs up to Beta; Beta removed (or changed): Gamma is cleaned again to take them back."""
    remaining = {name: u for name, u in LOADED.items() if u["category"] != "Beta"}
    plan = clean_plan(remaining, _cleaned(LOADED, {"Gamma": ["Beta"]}))
    assert (plan.dirty, plan.redone, plan.unloaded) == (["Beta", "Gamma"], ["Gamma"], ["Beta"])
    assert plan.units == ["reviews_Gamma.json"]


def test_the_ledger_after_holds_the_new_fingerprints_and_this_cleans_deferrals():
    remaining = {name: u for name, u in LOADED.items() if u["category"] != "Beta"}
    changed = {**remaining, "reviews_Gamma.json": {**remaining["reviews_Gamma.json"], "sha256": "g1-new"}}
    before = {**_cleaned(LOADED, {"Gamma": ["Beta"], "Alpha": ["Beta"]}), "other": "kept"}
    plan = clean_plan(changed, before)
    assert plan.dirty == ["Alpha", "Beta", "Gamma"] and plan.unloaded == ["Beta"]
    after = plan.ledger_after(before, {"Gamma": ["Alpha"]})
    assert after == {"categories": category_fingerprints(changed, CLEAN_VERSION),
                     "deferred": {"Gamma": ["Alpha"]}, "other": "kept"}
    assert "Beta" not in after["categories"] and before["categories"]["Beta"]  # the input is not changed


def test_the_ledger_after_keeps_what_the_clean_did_not_touch():
    changed = {**LOADED, "reviews_Gamma.json": {**LOADED["reviews_Gamma.json"], "sha256": "g1-new"}}
    before = _cleaned(LOADED, {"Beta": ["Alpha"]})
    plan = clean_plan(changed, before)
    after = plan.ledger_after(before, {})
    assert after["deferred"] == {"Beta": ["Alpha"]}  # Beta was not cleaned: what it defers to holds
    assert after["categories"]["Alpha"] == before["categories"]["Alpha"]
    assert after["categories"]["Gamma"] == category_fingerprints(changed, CLEAN_VERSION)["Gamma"]
