"""bin/pipeline's options that take a value: one left without it is named, exit 2 (it was bash's
"line 46: $2: unbound variable", exit 1). The check comes before anything runs: a stand-in venv
with a spark-submit that must not be called is enough."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local_dir(tmp_path) -> Path:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("spark-submit", "python"):
        (bin_dir / name).write_text("#!/bin/sh\necho \"$0 must not run\" >&2\nexit 99\n")
        (bin_dir / name).chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("args, named", [
    (["--input"], "--input"), (["--remove"], "--remove"), (["--run-id"], "--run-id"), (["--resume"], "--resume"),
    (["--engine"], "--engine"), (["--rerun"], "--rerun"), (["--input", "a.jsonl", "--run-id"], "--run-id"),
    (["--input", "--airflow"], "--input"), (["--engine", "--force-publish"], "--engine")])
def test_an_option_without_its_value_is_named(local_dir, args, named):
    done = subprocess.run([str(ROOT / "bin" / "pipeline"), *args], env={**os.environ, "LOCAL_DIR": str(local_dir)},
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stderr) == (2, f"pipeline: {named} needs a value\n")


def test_every_rerun_adds_its_stages(tmp_path, local_dir):
    """--rerun given twice forces both (it kept only the last, while --input and --remove add up)."""
    seen = tmp_path / "args"
    (local_dir / "venv" / "bin" / "python").write_text(f"#!/bin/sh\necho \"$@\" > {seen}\nexit 3\n")
    done = subprocess.run([str(ROOT / "bin" / "pipeline"), "--rerun", "load", "--rerun", "clean,mongo_load"],
                          env={**os.environ, "LOCAL_DIR": str(local_dir)}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3 and seen.read_text().split()[-2:] == ["--rerun", "load,clean,mongo_load"]
