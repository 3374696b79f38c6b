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


def build(dest_dir: Path | str | None = None) -> Path:
    """Write the zip of PACKAGES into ``dest_dir`` (default ``$LOCAL_DIR/dist``) and return its path."""
    if dest_dir is None:
        from core.settings import get_settings

        dest_dir = get_settings().local_dir / "dist"
    dest_dir = Path(dest_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, path in _sources():
            # a fixed timestamp: the same sources give the same bytes, hence the same name
            archive.writestr(zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0)), path.read_bytes(),
                              compress_type=zipfile.ZIP_DEFLATED)
    data = buffer.getvalue()
    target = dest_dir / f"{PREFIX}{hashlib.sha256(data).hexdigest()[:16]}.zip"
    if not target.exists():
        dest_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(data)
        os.replace(partial, target)
    return target


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else None))
