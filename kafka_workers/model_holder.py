"""The published model, reloaded when the batch pipeline publishes a new version.

``CURRENT`` is how a new model is announced (see spark_jobs/publish.py for why it is the only
way). Checking it costs one small read (``core.published``, shared with the other readers), so
the worker does it every few seconds between batches; a new version is loaded fully before it replaces the old one, so events are never
scored against half a model and no restart is needed.
"""
from __future__ import annotations

import logging
import time

from core import artifacts, published
from core.artifacts import Model

log = logging.getLogger(__name__)


class ModelHolder:
    """State is real here: the loaded model and when the published version was last checked
    (``check_every_s``: how often a version that failed to load is tried again)."""

    def __init__(self, check_every_s: float = 2.0) -> None:
        self.model: Model | None = None
        self.check_every_s = check_every_s
        self._checked_at = 0.0

    @property
    def version(self) -> str | None:
        return self.model.version if self.model else None

    def refresh(self, force: bool = False) -> bool:
        """Load the published version if it changed; True when a new model was loaded."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.check_every_s:
            return False
        self._checked_at = now
        try:
            wanted = published.current_version(fresh=force)  # the last known one while the store is unreachable
        except published.ModelStoreUnreachable as exc:  # never read: no model yet; the messages wait
            log.warning("no model loaded (%s); will try again", exc)  # (their writes meet the same outage)
            return False
        if wanted is None or wanted == self.version:
            return False
        try:
            model = artifacts.load_model(wanted)
        except Exception as exc:  # noqa: BLE001  a half-copied folder (an empty .npy is an EOFError), a
            # bad file, anything: keep serving the model we have and try again at the next check
            log.warning("could not load model %s (keeping %s): %s: %s", wanted, self.version,
                        exc.__class__.__name__, exc)
            return False
        old, self.model = self.version, model
        log.info("model %s loaded (was %s): %d items, rank %d", wanted, old, len(model.item_ids), model.rank)
        return True
