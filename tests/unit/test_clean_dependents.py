"""spark_jobs.clean.with_dependents: which categories a clean must redo besides the changed ones."""
from spark_jobs.clean import with_dependents


def test_a_category_deferring_to_a_changed_one_is_redone_transitively():
    deferred = {"B": ["A"], "C": ["B"], "D": ["E"]}
    assert with_dependents(["A"], deferred, "ABCDE") == ["A", "B", "C"]
    assert with_dependents(["E"], deferred, "ABCDE") == ["D", "E"]
    assert with_dependents(["C"], deferred, "ABCDE") == ["C"]  # holders are not redone for their dependents


def test_a_category_no_longer_loaded_is_not_brought_back():
    assert with_dependents(["A"], {"B": ["A"]}, ["A"]) == ["A"]
