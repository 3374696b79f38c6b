"""Versioned model artifacts: item factors, id maps, parameters and metrics on disk.

A version is a directory ``<ARTIFACTS_DIR>/models/<version>/`` written to a temporary name and
renamed into place, so a reader never sees half a model. ``CURRENT`` names the published version;
publishing is an atomic rename too. Workers, Celery and the site load whatever ``CURRENT`` says and
reload when it changes, without a restart.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import ann
from core.settings import get_settings

CURRENT_FILE = "CURRENT"


def models_dir(root: Path | None = None) -> Path:
    return (root or get_settings().artifacts_dir) / "models"


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
    """Sortable by time, and unique even for two trainings in the same second."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    digest = hashlib.sha1(f"{content_hint}{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:8]
    return f"{stamp}-{digest}"


def save_model(item_ids: list[str], item_factors: np.ndarray, params: dict[str, Any],
               metrics: dict[str, Any] | None = None, version: str | None = None,
               user_ids: list[str] | None = None, user_factors: np.ndarray | None = None,
               root: Path | None = None) -> str:
    """Write a model version atomically and return its name; it is not published yet."""
    if len(item_ids) != item_factors.shape[0]:
        raise ValueError(f"{len(item_ids)} item ids for {item_factors.shape[0]} factor rows")
    version = version or new_version_name(str(params))
    base = models_dir(root)
    base.mkdir(parents=True, exist_ok=True)
    final, tmp = base / version, base / f".{version}.tmp"
    if final.exists():
        raise FileExistsError(f"model version {version} already exists")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / "item_factors.npy", np.asarray(item_factors, dtype=np.float32))
    if ann.wanted(len(item_ids), str(params.get("kind", "ials"))):  # versioned with its factors
        ann.save(ann.build(item_factors), tmp / ann.FILE)
    (tmp / "item_ids.json").write_text(json.dumps(list(item_ids)))
    if user_ids is not None and user_factors is not None:
        np.save(tmp / "user_factors.npy", np.asarray(user_factors, dtype=np.float32))
        (tmp / "user_ids.json").write_text(json.dumps(list(user_ids)))
    (tmp / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True))
    (tmp / "metrics.json").write_text(json.dumps(metrics or {}, indent=2, sort_keys=True))
    tmp.rename(final)
    return version


def publish(version: str, root: Path | None = None) -> None:
    """Make ``version`` the one every reader loads (atomic replace of the CURRENT file)."""
    base = models_dir(root)
    if not (base / version / "item_factors.npy").exists():
        raise FileNotFoundError(f"no model version {version} under {base}")
    tmp = base / f".{CURRENT_FILE}.{os.getpid()}"
    tmp.write_text(version + "\n")
    tmp.replace(base / CURRENT_FILE)


def current_version(root: Path | None = None) -> str | None:
    try:
        return (models_dir(root) / CURRENT_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def load_metrics(version: str, root: Path | None = None) -> dict[str, Any]:
    return json.loads((models_dir(root) / version / "metrics.json").read_text())


def read_metrics(version: str | None, root: Path | None = None) -> dict[str, Any]:
    """A version's metrics for display: ``{}`` when they are missing, half written or not a mapping
    (a version still being copied must not break a page)."""
    if not version:
        return {}
    try:
        metrics = load_metrics(version, root)
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def load_model(version: str | None = None, root: Path | None = None) -> Model | None:
    """Load a version (default: the published one); None when nothing is published yet."""
    version = version or current_version(root)
    if version is None:
        return None
    d = models_dir(root) / version
    item_ids = json.loads((d / "item_ids.json").read_text())
    factors = np.load(d / "item_factors.npy")
    # A half-copied or mixed-up folder can hold readable files that do not belong together.
    if factors.ndim != 2 or len(item_ids) != factors.shape[0]:
        raise ValueError(f"model {version}: {len(item_ids)} item ids for factors of shape {factors.shape}")
    model = Model(
        version=version,
        item_ids=item_ids,
        item_factors=factors,
        params=json.loads((d / "params.json").read_text()),
        metrics=json.loads((d / "metrics.json").read_text()),
    )
    if (d / ann.FILE).exists():
        model.ann = ann.load(d / ann.FILE, model.item_factors)
    return model
