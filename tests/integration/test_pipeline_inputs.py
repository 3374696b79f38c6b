"""bin/pipeline's ``--input``: a relative path or glob is the caller's, not the repository's.

bin/pipeline runs for real from another directory, with a stand-in spark-submit that logs the job
and its arguments and fails, so the run stops after load: no Spark starts.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STUB = '''#!{python}
import json, os, sys
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(1)
'''


def test_relative_inputs_are_taken_from_the_callers_directory(tmp_path):
    local = tmp_path / "local"
    bin_dir = local / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = Path(sys.prefix) / "bin" / "python"
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{python}" "$@"\n')
    (bin_dir / "spark-submit").write_text(STUB.format(python=python))
    for name in ("python", "spark-submit"):
        (bin_dir / name).chmod(0o755)
    caller = tmp_path / "caller"
    caller.mkdir()
    log = tmp_path / "submitted.jsonl"
    absolute = str(tmp_path / "elsewhere" / "amazon2018_toys.jsonl.gz")
    done = subprocess.run([str(ROOT / "bin" / "pipeline"), "--input", "data/*.json.gz", "--input", absolute],
                          cwd=caller, env={**os.environ, "LOCAL_DIR": str(local), "STUB_LOG": str(log)},
                          capture_output=True, text=True, timeout=300)
    submitted = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert len(submitted) == 1, done.stdout + done.stderr  # load, which the stub fails
    args = submitted[0]
    inputs = [args[i + 1] for i, a in enumerate(args) if a == "--input"]
    assert inputs == [f"{caller}/data/*.json.gz", absolute]
