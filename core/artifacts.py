"""Versioned model artifacts: item factors, id maps, parameters and metrics on disk or in a bucket.

A version is a directory ``<ARTIFACTS_DIR>/models/<version>/`` written to a temporary name and
renamed into place, so a reader never sees half a model. ``CURRENT`` names the published version;
publishing is an atomic rename too. Workers, Celery and the site load whatever ``CURRENT`` says and
reload when it changes, without a restart. With ``ARTIFACTS_DIR`` in an object store
(``s3a://bucket/prefix``, core/storage.py) there is no rename: each file is one PUT, the version's
folder is complete before anything names it, and ``CURRENT`` (one PUT, read whole or not at all)
is written last.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core import ann, storage
from core.env import env_int
from core.settings import get_settings
from core.storage import Location

CURRENT_FILE = "CURRENT"
# model versions publish keeps beside the published one and the one it replaced (prune_versions):
# every train writes one (factors, ANN index, serving lists: gigabytes at the full release's scale)
VERSIONS_KEPT = env_int("MODEL_VERSIONS_KEPT", 5, minimum=1)


def models_dir(root: Location | str | None = None) -> Location:
    return storage.location(root or get_settings().artifacts_dir) / "models"


TOPN_LISTS, SIMILAR_LISTS = "topn.jsonl", "similar.jsonl"  # a version's serving lists, by logical name


def serving_lists_file(version_dir: Location, name: str) -> Location:
    """Where the training driver writes a version's serving lists: gzipped JSON lines. The top-N of
    the 9.57M users of a 51.6M-review run is 16.8 GB of JSON, which with the database it is loaded
    into did not fit this machine's disk; gzip's fastest level keeps about a quarter of it."""
    return version_dir / f"{name}.gz"


def serving_list_docs(path: Location) -> Iterator[dict[str, Any]]:
    """The documents of a version's serving lists ``<version>/topn.jsonl`` (or ``similar.jsonl``).

    Written as ``topn.jsonl.gz`` by the driver, as a plain ``topn.jsonl`` by versions older than
    that, or as a folder ``topn.jsonl/`` of part files by Spark's executors (engine spark,
    serving_lists_spark.py), read one part at a time. A folder without Spark's ``_SUCCESS`` marker
    is a write that did not finish, and fails the reader (publish).
    """
    packed = serving_lists_file(path.parent, path.name)
    if storage.is_file(packed):
        parts = [packed]
    elif storage.is_file(path):
        parts = [path]
    else:
        names = storage.listdir(path)
        if "_SUCCESS" not in names:
            raise FileNotFoundError(f"{path} is neither a file nor a complete folder of parts (no _SUCCESS)")
        parts = [path / name for name in names if name.startswith("part-")]
    for part in parts:
        with storage.open_text_input(part) as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@dataclass
class Model:
    """What the online side needs of a trained model: item factors and how to fold a user in."""

    version: str
    item_ids: list[str]
    item_factors: np.ndarray  # (n_items, rank) float32; for EASE the (n_items, n_items) weights B
    params: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    item_index: dict[str, int] = field(init=False)
    gram: np.ndarray = field(init=False)  # Yᵀ Y, precomputed once per model for implicit fold-in
    ann: Any = field(default=None, init=False)  # core.ann.Index above ANN_MIN_ITEMS items (load_model)

    def __post_init__(self) -> None:
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        if self.kind == "ease":  # item-item weights, not factors: no Gram matrix to fold in with
            self.gram = np.zeros((0, 0))
            return
        y = self.item_factors.astype(np.float64)
        self.gram = y.T @ y

    @property
    def kind(self) -> str:
        """'ials' (implicit factors), 'explicit' (rating factors) or 'ease' (item-item weights)."""
        return str(self.params.get("kind", "ials"))

    @property
    def rank(self) -> int:
        return int(self.item_factors.shape[1])


def new_version_name(content_hint: str = "") -> str:
    """Sortable by time to the microsecond (:func:`prune_versions` keeps the newest by name), and
    unique even for two trainings in the same microsecond."""
    ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 1_000_000_000)) + f"{ns // 1000 % 1_000_000:06d}"
    digest = hashlib.sha1(f"{content_hint}{ns}{os.getpid()}".encode()).hexdigest()[:8]
    return f"{stamp}-{digest}"


def save_model(item_ids: list[str], item_factors: np.ndarray, params: dict[str, Any],
               metrics: dict[str, Any] | None = None, version: str | None = None,
               root: Location | str | None = None) -> str:
    """Write a model version atomically and return its name; it is not published yet."""
    if len(item_ids) != item_factors.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids for {item_factors.shape[0]} factor rows")
    version = version or new_version_name(str(params))
    base = models_dir(root)
    arrays = {"item_factors.npy": np.asarray(item_factors, dtype=np.float32)}
    texts = {"item_ids.json": json.dumps(list(item_ids))}
    index = ann.build(item_factors) if ann.wanted(len(item_ids), str(params.get("kind", "ials"))) else None
    # that it has an index, so a folder copied without it fails to load (load_model) instead of
    # serving by exact scoring, slowly, for as long as it is current
    stored = {k: v for k, v in params.items() if k != "ann_index"}  # (params of a loaded model)
    texts["params.json"] = json.dumps({**stored, **({"ann_index": True} if index is not None else {})},
                                      indent=2, sort_keys=True)
    texts["metrics.json"] = json.dumps(metrics or {}, indent=2, sort_keys=True)
    if storage.is_remote(base):
        if storage.exists(base / version / "item_factors.npy"):
            raise FileExistsError(f"model version {version} already exists")
        for name, text in texts.items():
            storage.write_text(base / version / name, text)
        if index is not None:  # versioned with its factors
            ann.save(index, base / version / ann.FILE)
        for name in sorted(arrays, reverse=True):  # item_factors.npy, which marks a version as there, last
            storage.write_bytes(base / version / name, _npy(arrays[name]))
        return version
    base.mkdir(parents=True, exist_ok=True)
    final, tmp = base / version, base / f".{version}.tmp"
    if final.exists():
        raise FileExistsError(f"model version {version} already exists")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, array in arrays.items():
        np.save(tmp / name, array)
    for name, text in texts.items():
        (tmp / name).write_text(text)
    if index is not None:  # versioned with its factors
        ann.save(index, tmp / ann.FILE)
    tmp.rename(final)
    return version


def has_version(version: str, root: Location | str | None = None) -> bool:
    """Whether ``version``'s folder is there and complete (``item_factors.npy`` is written last)."""
    return storage.exists(models_dir(root) / version / "item_factors.npy")


def publish(version: str, root: Location | str | None = None) -> None:
    """Make ``version`` the one every reader loads (atomic replace of the CURRENT file)."""
    base = models_dir(root)
    if not has_version(version, root):
        raise FileNotFoundError(f"no model version {version} under {base}")
    if storage.is_remote(base):
        storage.write_text(base / CURRENT_FILE, version + "\n")
        return
    tmp = base / f".{CURRENT_FILE}.{os.getpid()}"
    tmp.write_text(version + "\n")
    tmp.replace(base / CURRENT_FILE)


def folder_version(name: str) -> str:
    """The version a folder of ``models/`` holds: its name, or ``X`` for a train's unfinished ``.X.tmp``."""
    return name[1:-len(".tmp")] if name.startswith(".") and name.endswith(".tmp") else name


def prune_versions(protect: set[str], keep: int | None = None, root: Location | str | None = None) -> list[str]:
    """Delete every version folder but the ``keep`` newest (``MODEL_VERSIONS_KEPT``) and those in
    ``protect`` (the published one, the one it replaced); returns the names deleted, oldest first.

    Versions are never deleted otherwise, and a daily train writes one, published or rejected: the
    disk filled. Names sort by time (:func:`new_version_name`); a local ``.<version>.tmp`` left by a
    train that died counts as its version, so the newest (maybe a train still writing) is kept.
    Older versions stay for a rollback (``publish --version X --force``) within ``keep``. The
    caller records the deleted versions as pruned (``core.mongo.record_pruned_versions``)."""
    keep = VERSIONS_KEPT if keep is None else keep
    base = models_dir(root)
    names = [n for n in storage.listdir(base) if n != CURRENT_FILE and not n.startswith(f".{CURRENT_FILE}.")]
    newest_first = sorted(names, key=lambda n: (folder_version(n), n), reverse=True)
    kept = {folder_version(n) for n in newest_first[:keep]} | protect
    dropped = [n for n in reversed(newest_first) if folder_version(n) not in kept]
    for name in dropped:
        storage.remove_tree(base / name)
    return dropped


def current_version(root: Location | str | None = None) -> str | None:
    try:
        return storage.read_text(models_dir(root) / CURRENT_FILE).strip() or None
    except FileNotFoundError:
        return None


def load_metrics(version: str, root: Location | str | None = None) -> dict[str, Any]:
    return json.loads(storage.read_text(models_dir(root) / version / "metrics.json"))


def read_metrics(version: str | None, root: Location | str | None = None) -> dict[str, Any]:
    """A version's metrics for display: ``{}`` when they are missing, half written or not a mapping
    (a version still being copied must not break a page)."""
    if not version:
        return {}
    try:
        metrics = load_metrics(version, root)
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def load_model(version: str | None = None, root: Location | str | None = None) -> Model | None:
    """Load a version (default: the published one); None when nothing is published yet."""
    version = version or current_version(root)
    if version is None:
        return None
    d = models_dir(root) / version
    item_ids = json.loads(storage.read_text(d / "item_ids.json"))
    factors = (np.load(io.BytesIO(storage.read_bytes(d / "item_factors.npy"))) if storage.is_remote(d)
               else np.load(d / "item_factors.npy"))
    # A half-copied or mixed-up folder can hold readable files that do not belong together.
    if factors.ndim != 2 or len(item_ids) != factors.shape[0]:
        raise ValueError(f"model {version}: {len(item_ids)} item ids for factors of shape {factors.shape}")
    model = Model(
        version=version,
        item_ids=item_ids,
        item_factors=factors,
        params=json.loads(storage.read_text(d / "params.json")),
        metrics=json.loads(storage.read_text(d / "metrics.json")),
    )
    if storage.exists(d / ann.FILE):
        model.ann = ann.load(d / ann.FILE, model.item_factors)
    elif model.params.get("ann_index"):
        raise FileNotFoundError(f"model {version}: its ANN index {ann.FILE} is missing (a folder copied in part?)")
    return model
