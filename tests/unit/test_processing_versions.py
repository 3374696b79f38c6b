"""The version of load and of clean is part of what the ledgers call done: a file loaded by
another version of load is not loaded, and a category's fingerprint (what clean and mongo_load
compare) changes with either version."""
from __future__ import annotations

import hashlib

from spark_jobs import units
from spark_jobs.clean import CLEAN_VERSION
from spark_jobs.load import LOAD_VERSION, is_loaded

UNIT = units.Unit(name="amazon2018_alpha.jsonl", path="/data/amazon2018_alpha.jsonl", category="Alpha",
                  sha256="ab" * 32, size=10)


def _entry(**changes) -> dict:
    return {"sha256": UNIT.sha256, "version": LOAD_VERSION, "category": "Alpha", **changes}


def test_a_file_loaded_by_another_version_of_load_is_not_loaded():
    assert is_loaded(_entry(), UNIT)
    assert not is_loaded(_entry(version=LOAD_VERSION + 1), UNIT)
    # a ledger from before versions is the first version's
    assert is_loaded({"sha256": UNIT.sha256, "category": "Alpha"}, UNIT) == (LOAD_VERSION == units.FIRST_VERSION)
    assert not is_loaded(_entry(sha256="cd" * 32), UNIT)
    assert not is_loaded(None, UNIT)


def test_a_category_fingerprint_changes_with_the_version_of_load_or_clean():
    ledger = {UNIT.name: _entry(), "amazon2018_beta.jsonl": _entry(category="Beta")}
    same = units.category_fingerprints(ledger, CLEAN_VERSION)
    assert units.category_fingerprints(dict(reversed(ledger.items())), CLEAN_VERSION) == same
    other_clean = units.category_fingerprints(ledger, CLEAN_VERSION + 1)
    assert other_clean.keys() == same.keys() and all(other_clean[c] != same[c] for c in same)
    other_load = units.category_fingerprints({**ledger, UNIT.name: _entry(version=LOAD_VERSION + 1)}, CLEAN_VERSION)
    assert other_load["Alpha"] != same["Alpha"] and other_load["Beta"] == same["Beta"]


def test_at_the_first_versions_ledgers_from_before_versions_stay_valid():
    """Upgrading to versioned ledgers must not load, clean and reload everything once: an entry
    without a version is the first version's, and the fingerprints at the first versions are the
    ones the clean and MongoDB ledgers already hold (the format before versions)."""
    old_entries = {UNIT.name: {"sha256": UNIT.sha256, "category": "Alpha"}}
    before = hashlib.sha256(f"{UNIT.name}:{UNIT.sha256}".encode()).hexdigest()  # units.py before versions
    assert units.category_fingerprints(old_entries, units.FIRST_VERSION) == {"Alpha": before}
    assert units.category_fingerprints({UNIT.name: _entry(version=units.FIRST_VERSION)},
                                       units.FIRST_VERSION) == {"Alpha": before}
