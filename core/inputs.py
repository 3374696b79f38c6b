"""Load's input rules: which files an input names, which inputs load refuses and why, and what the
DAG's wait for them waits for (files still being written, an export's done marker).

load (spark_jobs.units.list_units), the DAG's ``wait_for_inputs`` sensor (dags/recommender/params.py),
``bin/pipeline --airflow``'s check before it triggers a run (spark_jobs/airflow_run.py) and a resume's
comparison of a run's inputs (spark_jobs/run_records.py) all decide with these functions, so none
of them can accept inputs another refuses.

Standard library, core.env, core.settings and core.storage only: the Airflow venv imports this
module and has neither pyspark nor pymongo (requirements-airflow.txt).
"""
from __future__ import annotations

import fnmatch
import glob
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from core import storage
from core.env import env_int, env_str
from core.settings import PROJECT_ROOT, get_settings


def from_repository(pattern: str, root: Path | str = PROJECT_ROOT) -> str:
    """An input file or glob as load gets it: a relative one is taken from the repository, ``root``
    (where bin/pipeline runs the jobs, and did before it made --input absolute; the DAG passes its
    APP_ROOT, which is the repository too, but may be set where the DAG folder is elsewhere). A URI
    and an absolute path are left as they are: resolving ``..`` lexically would change what a path
    through a symlink names."""
    return pattern if "://" in pattern else os.path.join(str(root), pattern)


def local_path(path: str) -> str:
    """A local path as given, or as a ``file://`` URI names it."""
    return path[len("file://"):] if path.startswith("file://") else path


def input_matches(pattern: str) -> list[str]:
    """The local paths a load input names: a path that exists is that file, even when its name holds
    glob characters (``reviews_toys[1].jsonl``); otherwise a glob's matches, sorted (maybe none).
    The one glob of load's inputs: :func:`input_files` (load's and the DAG's wait's rules) and a
    resume's check of them (spark_jobs/run_records.py) match them here."""
    if storage.is_remote(pattern):
        return storage.remote_matches(pattern)
    local = local_path(pattern)
    return sorted(glob.glob(local)) if glob.has_magic(local) and not os.path.exists(local) else [local]


def input_patterns(given: list[str] | None, remove: Sequence[str], demo_input: str,
                   root: Path | str | None = None) -> list[str]:
    """What load reads: the --input given; without any, the demo files, unless the run removes
    files (--remove alone takes them out and loads nothing else). Decided by the job, so a run from
    bin/pipeline and one from the DAG, which both leave --input out when none is given, agree; the
    DAG's wait for the inputs and ``bin/pipeline --airflow``'s check before it triggers a run ask
    the same, with ``root``: each relative input taken from that repository (:func:`from_repository`)."""
    patterns = list(given or ([] if remove else [demo_input]))
    return patterns if root is None else [from_repository(p, root) for p in patterns]


class InputFiles(NamedTuple):
    """What load's inputs name now (:func:`input_files`)."""
    files: list[str]  # the files they match, absolute, each once, in the order given
    missing: list[str]  # the inputs that name no file yet: a glob that matches none, a path not there
    refusal: str  # why load refuses the inputs as given, "" when it does not: no wait or retry helps


def input_files(patterns: Sequence[str]) -> InputFiles:
    """The files load's inputs name, the inputs that name none yet, and why load refuses them.

    The rules of load's inputs, in one place for load (spark_jobs.units.list_units: it fails on a
    refusal or a missing input) and for the DAG's wait for them (which waits only while an input is
    missing, and fails at once on a refusal, as load would): every input is a local path or glob
    or an object-store one (``s3a://``; a ``file://`` URI needs an absolute path), every match a file
    (a folder is no input), and no two files share a file name (one unit each). An object-store
    input needs DATA_DIR in an object store too, which is what gives Spark its s3a settings (a
    cluster's shared storage), and glob characters in its file name only.
    """
    files, missing = [], []
    for pattern in patterns:
        refusal = _refusal(pattern)
        if refusal:
            return InputFiles([], [], refusal)
        # a local path is its own match even when it is not there (yet): only what is there counts
        matched = [path for path in input_matches(pattern) if storage.is_remote(path) or os.path.exists(path)]
        if not matched:
            missing.append(pattern)
        folder = next((path for path in matched if storage.file_stat(path) is None), None)
        if folder is not None:
            how = "" if folder in (local_path(pattern), storage.spark_uri(pattern)) else f" ({pattern} matches it)"
            return InputFiles([], [], f"{folder} is not a file{how}")
        files.extend(path if storage.is_remote(path) else os.path.abspath(path) for path in matched)
    seen: dict[str, str] = {}
    for path in dict.fromkeys(files):
        name = os.path.basename(path)
        if name.startswith((".", "_")):  # Hadoop's hidden files: Spark would read 0 lines, and load pass
            return InputFiles([], [], f"{path}: Spark reads no file whose name starts with '.' or '_'; rename it")
        if name in seen:
            return InputFiles([], [], f"two inputs share the file name {name}: {seen[name]} and {path}")
        seen[name] = path
    return InputFiles(list(seen.values()), missing, "")


def _refusal(pattern: str) -> str:
    """Why load refuses an input as it is given, before anything is matched (:func:`input_files`);
    "" when it does not."""
    if storage.is_remote(pattern):
        if not storage.is_remote(get_settings().data_dir):
            return (f"{pattern}: an object-store input needs DATA_DIR in an object store too (what gives Spark "
                    "its s3a settings); copy the file here, or set DATA_DIR to a bucket")
        if glob.has_magic(os.path.dirname(pattern.split("://", 1)[1])):
            return f"{pattern}: glob characters in an object-store input's file name only"
        return ""
    local = local_path(pattern)
    if "://" in local:
        return f"{pattern}: only local or object-store (s3a://, s3://) input files can be read"
    if not local or (local != pattern and not os.path.isabs(local)):
        return f"{pattern!r}: no local file or glob (a file:// URI needs an absolute path)"
    return ""


def unsettled(files: Sequence[str], settle_s: float, now: float | None = None) -> list[str]:
    """The files of ``files`` modified less than ``settle_s`` seconds before ``now`` (default: the
    clock), each so labelled: maybe still being written (a nightly export caught mid-copy would be
    loaded truncated). The modification time alone, no state kept between two looks; an input
    delivered by an atomic rename (written to a temporary name, then renamed) is never half-written,
    nor is an object in an object store (it appears whole when its upload ends): not looked at."""
    now = time.time() if now is None else now
    return [f"{path} (modified less than {settle_s:g} s ago)" for path in files
            if not storage.is_remote(path) and now - os.path.getmtime(path) < settle_s]


def input_settle_s() -> int:
    """``INPUT_SETTLE_S``: how long (seconds) an input file must be left unmodified before the DAG's
    wait_for_inputs counts it as there (:func:`unsettled`); bin/pipeline --airflow says what that
    wait waits for with the same."""
    return env_int("INPUT_SETTLE_S", 60, minimum=0)


def input_done_marker() -> str:
    """``INPUT_DONE_MARKER``: the default of the DAG's ``done_marker`` param, a file name its
    wait_for_inputs also waits for in the folder of every input (:func:`missing_markers`); "" (the
    default) for none."""
    return env_str("INPUT_DONE_MARKER", "")


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if storage.is_remote(path) else os.path.dirname(local_path(path))


def marker_refusal(patterns: Sequence[str], marker: str) -> str:
    """Why a done marker cannot be waited for with these inputs ("" when it can): it must be a file
    name, and no input may match it, or load would read the marker as data (or, for a name
    starting with "_", refuse the inputs the moment the export completes)."""
    if not marker:
        return ""
    if "/" in marker or marker in (".", ".."):
        return f"done marker {marker!r}: a file name, not a path"
    matching = [p for p in patterns if fnmatch.fnmatchcase(marker, os.path.basename(local_path(p)))]
    return (f"{matching[0]} matches the done marker {marker}: load would read it as an input; name the "
            "export's files only") if matching else ""


def missing_markers(found: InputFiles, marker: str) -> list[str]:
    """The done markers not there yet: ``marker`` (e.g. ``_SUCCESS``, what Spark and Hadoop write
    when they finish writing a folder) in the folder of every file the inputs match and of every
    input that matches none yet (when its folder is no glob), each so labelled. A glob's first
    settled file says nothing of the files of a multi-file export still to come; the marker,
    written last by the exporter, does. A marker older than a matched file beside it is one an
    earlier export left in a reused folder, so it is waited on too (both times from one clock: the
    file system's, or the object store's)."""
    newest: dict[str, tuple[float, str]] = {}
    for path in found.files:
        modified = (storage.file_stat(path) or (0, 0.0))[1]
        newest[_folder(path)] = max(newest.get(_folder(path), (modified, path)), (modified, path))
    folders = dict.fromkeys(newest)
    folders.update(dict.fromkeys(_folder(p) for p in found.missing if not glob.has_magic(_folder(p))))
    waits = []
    for folder in folders:
        path = storage.join(folder, marker)
        stat = storage.file_stat(path)
        if stat is None:
            waits.append(f"{path} (the export's done marker)")
        elif folder in newest and stat[1] < newest[folder][0]:
            waits.append(f"{path} (the export's done marker, older than {newest[folder][1]})")
    return waits


def awaited_inputs(patterns: Sequence[str], settle_s: float, marker: str | None = None) -> tuple[list[str], str]:
    """What the DAG's ``wait_for_inputs`` waits for before load reads ``patterns``: the inputs that
    name no file yet, the files modified less than ``settle_s`` seconds ago (:func:`unsettled`) and,
    with a done ``marker`` (default :func:`input_done_marker`), the folders without it
    (:func:`missing_markers`); and why load would refuse them, or the marker cannot be waited for
    ("" when neither), on which it fails at once instead."""
    marker = input_done_marker() if marker is None else marker.strip()
    found = input_files(patterns)
    refusal = found.refusal or marker_refusal(patterns, marker)
    if refusal:
        return [], refusal
    return (found.missing + unsettled(found.files, settle_s)
            + (missing_markers(found, marker) if marker else [])), ""


def same_input(pattern: str) -> str:
    """An input as bin/pipeline --resume compares the ones a run recorded with the ones it is
    given, however either was written: :func:`from_repository`, with ``.`` and ``..`` resolved
    (bin/pipeline prefixes the caller's directory as it is); an object-store URI as Spark names it."""
    if storage.is_remote(pattern):
        return storage.spark_uri(pattern)  # s3:// and s3a:// name one object
    return pattern if "://" in pattern else os.path.normpath(from_repository(pattern))
