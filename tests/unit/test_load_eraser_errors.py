"""mongo_load runs the eraser after the steps that follow the switch to the new generations, even
if they failed (spark_jobs.mongo_load.erasing_afterwards): the first error wins, so a load that
failed reports its own failure, not an eraser's that came after it."""
from __future__ import annotations

import pytest

from spark_jobs.mongo_load import erasing_afterwards


class LoadFailed(Exception):
    pass


class EraserFailed(Exception):
    pass


def _eraser(calls: list[str], fails: bool = False):
    def erase() -> int:
        calls.append("erased")
        if fails:
            raise EraserFailed("deleted_users unreadable")
        return 3
    return erase


def test_the_loads_own_failure_wins_over_the_erasers(capsys):
    calls: list[str] = []
    record: dict = {}
    with pytest.raises(LoadFailed) as raised:
        with erasing_afterwards(record, _eraser(calls, fails=True)):
            raise LoadFailed("drop_retired timed out")
    assert calls == ["erased"]  # the eraser still ran
    assert "deleted_accounts_erased" not in record
    assert any("EraserFailed" in note for note in getattr(raised.value, "__notes__", []))
    logged = capsys.readouterr().err
    assert "the eraser failed too" in logged and "Traceback" in logged and "deleted_users unreadable" in logged


def test_the_eraser_runs_after_a_failed_load_which_is_raised():
    calls: list[str] = []
    with pytest.raises(LoadFailed):
        with erasing_afterwards({}, _eraser(calls)):
            raise LoadFailed("drop_retired timed out")
    assert calls == ["erased"]


def test_the_erasers_failure_alone_fails_the_load():
    calls: list[str] = []
    with pytest.raises(EraserFailed):
        with erasing_afterwards({}, _eraser(calls, fails=True)):
            pass
    assert calls == ["erased"]


def test_a_load_and_eraser_that_succeed_record_the_erased_accounts():
    calls: list[str] = []
    record: dict = {}
    with erasing_afterwards(record, _eraser(calls)):
        calls.append("loaded")
    assert calls == ["loaded", "erased"] and record == {"deleted_accounts_erased": 3}


def test_a_failed_load_prints_how_many_accounts_its_eraser_erased(capsys):
    """The load's failure is raised, so its record (where the count goes on success) is never
    written: the count of the eraser that ran after it is printed instead."""
    record: dict = {}
    with pytest.raises(LoadFailed):
        with erasing_afterwards(record, _eraser([])):
            raise LoadFailed("the review pages' write failed")
    assert "deleted_accounts_erased" not in record
    assert "erased 3 accounts deleted during the load" in capsys.readouterr().err


@pytest.mark.parametrize("fails", [False, True])
def test_a_load_changes_the_catalog_revision_even_when_its_eraser_had_nothing_to_do(monkeypatch, fails):
    """The site keys its cached titles, counts and categories by the model version and the catalog
    revision; the revision changed only when the eraser erased someone, so after a load whose model
    publish rejected, a category the load added was a 404 until the cached list lapsed."""
    from spark_jobs import mongo_load

    bumps: list[int] = []

    def nothing_to_erase(*args) -> int:
        if fails:
            raise EraserFailed("deleted_users unreadable")
        return 0

    monkeypatch.setattr(mongo_load, "_erase_and_recount", nothing_to_erase)
    monkeypatch.setattr(mongo_load.catalog_revision, "bump", lambda: bumps.append(1))
    if fails:
        with pytest.raises(EraserFailed):
            mongo_load.erase_accounts_deleted_since(0.0, None, None, 1)
    else:
        assert mongo_load.erase_accounts_deleted_since(0.0, None, None, 1) == 0
    assert bumps == [1]
