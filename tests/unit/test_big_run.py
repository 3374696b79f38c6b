"""bench/big_run.py's report: the growth exponent between two sizes and the extrapolation from it."""
from __future__ import annotations

import json
from pathlib import Path

from bench import big_run
from core import runs


def _result(tmp: Path, name: str, review_lines: int, seconds: float, rss: int) -> dict:
    data = tmp / name / "data"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"review_lines": review_lines}))
    log = tmp / name / "work" / "logs" / "load.log"
    return {"data": str(data), "run_id": name, "stages": {
        "load": {"ok": True, "status": "ok", "seconds": seconds, "peak_rss": rss, "log": str(log)}}}


def test_growth_exponent_and_extrapolation(tmp_path: Path, capsys) -> None:
    # 10x the rows in 20x the time: e = log(20)/log(10) = 1.30, and 233.1M is 23.31x the larger size
    small = _result(tmp_path, "small", 1_000_000, 10.0, 1 * 2 ** 30)
    big = _result(tmp_path, "big", 10_000_000, 200.0, 2 * 2 ** 30)
    big_run.report(big, small, tmp_path / "big" / "work")
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("load") and "e =" in ln)
    hours = 200.0 * 23.31 ** 1.30103 / 3600
    assert "e = 1.30" in line
    assert f"{hours:6.1f} h" in line  # not the linear 1.3 h
    # peak RSS through both points: 1 GB per 9M lines -> 2 + 223.1/9 GB at 233.1M
    assert f"{2 + 223.1 / 9:6.1f} GB" in line


def _load_record(work: Path, run_id: str, lines: int) -> None:
    path = Path(str(runs.record_path(run_id, "load", data_dir=work / "data")))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": "ok", "counts_in": {"lines": lines}}))


def test_the_report_does_without_the_manifests_once_the_data_is_deleted(tmp_path: Path, capsys) -> None:
    """A 50M-review release's data is deleted after its run: the bigger run's size comes from its
    result.json, and an older smaller run (no size recorded) is sized with the bigger one by the
    lines both loads read; the growth is the same as from the manifests."""
    small = _result(tmp_path, "small", 1_000_000, 10.0, 1 * 2 ** 30)
    big = {**_result(tmp_path, "big", 10_000_000, 200.0, 2 * 2 ** 30), "review_lines": 10_000_000}
    _load_record(tmp_path / "small" / "work", "small", 1_050_000)
    _load_record(tmp_path / "big" / "work", "big", 10_500_000)
    for name in ("small", "big"):
        (tmp_path / name / "data" / "manifest.json").unlink()
    big_run.report(big, small, tmp_path / "big" / "work", tmp_path / "small" / "work")
    out = capsys.readouterr().out
    assert "Big run: 10,000,000 review lines" in out
    assert "lines load read (a manifest is gone)" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("load") and "e =" in ln)
    assert "e = 1.30" in line and f"{200.0 * 23.31 ** 1.30103 / 3600:6.1f} h" in line
    assert f"{2 + 223.1 / 9:6.1f} GB" in line


def test_load_reads_the_manifest_file_list_not_a_glob(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"files": [{"path": "Books.json.gz"},
                                                                  {"path": "meta_Books.json.gz"}]}))
    args = big_run.stage_args("load", tmp_path, tmp_path / "work", "r1")
    assert args == ["--input", str(tmp_path / "Books.json.gz"), "--input", str(tmp_path / "meta_Books.json.gz")]


def test_train_gets_the_engine_asked_for(tmp_path: Path) -> None:
    assert big_run.stage_args("train", tmp_path, tmp_path, "r") == ["--engine", "auto"]
    assert big_run.stage_args("train", tmp_path, tmp_path, "r", "spark") == ["--engine", "spark"]
