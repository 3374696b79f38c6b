"""A job that writes a folder per run (train's work folder, EDA's output) removes those of earlier
runs once its own is complete, and keeps its own (spark_jobs.common.drop_earlier_runs)."""
from __future__ import annotations

from spark_jobs.common import drop_earlier_runs


def test_earlier_runs_work_folders_go_and_this_runs_stays(tmp_path):
    parent = tmp_path / "train"
    for run in ("run-1", "run-2", "run-3"):
        (parent / run / "interactions").mkdir(parents=True)
        (parent / run / "interactions" / "part-0.parquet").write_bytes(b"x" * 10)

    assert drop_earlier_runs(parent / "run-2") == ["run-1", "run-3"]

    assert sorted(p.name for p in parent.iterdir()) == ["run-2"]
    assert (parent / "run-2" / "interactions" / "part-0.parquet").is_file()


def test_a_first_run_has_nothing_to_drop(tmp_path):
    (tmp_path / "train" / "only").mkdir(parents=True)
    assert drop_earlier_runs(tmp_path / "train" / "only") == []
    assert (tmp_path / "train" / "only").is_dir()


def test_the_names_kept_stay(tmp_path):
    """EDA's folder holds "latest" (what the site shows) beside the runs' folders."""
    eda = tmp_path / "eda"
    for name in ("run-1", "run-2", "latest"):
        (eda / name).mkdir(parents=True)
        (eda / name / "summary.json").write_text("{}")
    assert drop_earlier_runs(eda / "run-2", keep={"latest"}) == ["run-1"]
    assert sorted(p.name for p in eda.iterdir()) == ["latest", "run-2"]
