"""What the project installs and starts lives in ``.local`` (README), which git must never take in,
whatever form it has. A worktree's ``.local`` is a symlink to the main checkout's; ``.local/``
ignored only a directory, so ``git add -A`` committed the link, and checking that commit out in the
main checkout replaced its ``.local`` (venv, services' data, Kafka's jars) with the link."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("form", ["directory", "symlink", "file"])
def test_git_takes_in_no_local_folder_whatever_its_form(tmp_path, form):
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    local = tmp_path / ".local"
    if form == "directory":
        local.mkdir()
        (local / "venv").write_text("x")
    elif form == "symlink":
        local.symlink_to(ROOT)
    else:
        local.write_text("x")
    git = ["git", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    staged = subprocess.run([*git, "diff", "--cached", "--name-only"], check=True, capture_output=True,
                            text=True).stdout.split()
    assert staged == [".gitignore"]
