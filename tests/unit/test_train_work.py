"""A train removes the work folders of earlier runs and keeps its own."""
from __future__ import annotations

from spark_jobs.train import drop_earlier_work


def test_earlier_runs_work_folders_go_and_this_runs_stays(tmp_path):
    parent = tmp_path / "train"
    for run in ("run-1", "run-2", "run-3"):
        (parent / run / "interactions").mkdir(parents=True)
        (parent / run / "interactions" / "part-0.parquet").write_bytes(b"x" * 10)

    assert drop_earlier_work(parent / "run-2") == ["run-1", "run-3"]

    assert sorted(p.name for p in parent.iterdir()) == ["run-2"]
    assert (parent / "run-2" / "interactions" / "part-0.parquet").is_file()


def test_a_first_run_has_nothing_to_drop(tmp_path):
    (tmp_path / "train" / "only").mkdir(parents=True)
    assert drop_earlier_work(tmp_path / "train" / "only") == []
    assert (tmp_path / "train" / "only").is_dir()
