"""The zip that ``spark-submit --py-files`` ships, so a job imports the same code on a cluster.

The driver imports ``core`` and ``spark_jobs`` from the installed package (``pip install -e .``,
bin/setup), but Python workers on other machines have only what Spark hands them: this zip of the
two packages. bin/pipeline and the DAG build it right before each submit, so it is never older than
the code. It is named by a hash of its content: the same code gives the same file, and two builds
at once cannot hand Spark a half-written zip. Standard library only, so the Airflow venv can
build it too.

    python -m spark_jobs.pyfiles [DIR]   # prints the zip's path (default DIR: $LOCAL_DIR/dist)
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

PACKAGES = ("core", "spark_jobs")
PREFIX = "amazon_recommender-"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not importable; run bin/setup (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations)))


def _sources() -> list[tuple[str, Path]]:
    """(name in the zip, file) for every module of PACKAGES, in a stable order."""
    files = []
    for name in PACKAGES:
        root = _package_dir(name)
        files += [(f"{name}/{path.relative_to(root).as_posix()}", path)
                  for path in sorted(root.rglob("*.py")) if "__pycache__" not in path.parts]
    return files


def dist_dir(dest_dir: Path | str | None = None) -> Path:
    """``dest_dir``, by default ``$LOCAL_DIR/dist``: where what spark-submit ships is built."""
    if dest_dir is None:
        from core.settings import get_settings

        return get_settings().local_dir / "dist"
    return Path(dest_dir)


def zip_bytes(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """A zip of (name, content) with a fixed timestamp: the same contents give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in entries:
            archive.writestr(zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0)), data,
                             compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def write_once(target: Path, data: bytes) -> Path:
    """``data`` at ``target`` unless it is there: written beside it and renamed, so two builds at
    once never leave Spark a half-written file."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, target)
    return target


def build(dest_dir: Path | str | None = None) -> Path:
    """Write the zip of PACKAGES into ``dest_dir`` (default ``$LOCAL_DIR/dist``) and return its path."""
    data = zip_bytes((arcname, path.read_bytes()) for arcname, path in _sources())
    return write_once(dist_dir(dest_dir) / f"{PREFIX}{hashlib.sha256(data).hexdigest()[:16]}.zip", data)


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else None))
