"""What a worker asks of MongoDB besides its events: the indexes (at each start) and the
remembered catalog (at each start and each new model). Neither is ever fatal: MongoDB down
only delays them."""
from __future__ import annotations

import logging
import time

from pymongo.errors import PyMongoError

from core import catalog, mongo
from kafka_workers.config import remember_catalog_max

log = logging.getLogger("kafka_workers.startup")


def ensure_indexes() -> None:
    """Create the indexes the site and the workers query by, at each start, as ``mongo_load`` does:
    a deploy that adds one (the staff records' ``deleted_users.refs``) would otherwise scan until
    the next load. MongoDB being down only delays them to the next start or load."""
    try:
        mongo.ensure_indexes()
    except PyMongoError as exc:
        log.warning("indexes not checked (%s): the next start or mongo_load creates them", exc)


def remember_catalog() -> None:
    """:func:`core.catalog.remember_catalog`, never fatal: without it the products are read as needed."""
    limit = remember_catalog_max()
    if limit <= 0:
        return
    try:
        started = time.monotonic()
        read = catalog.remember_catalog(limit)
        if read:
            log.info("catalog remembered: %d products in %.2fs", read, time.monotonic() - started)
    except Exception as exc:  # noqa: BLE001 - MongoDB down: the batches read the products they need
        log.warning("catalog not remembered (%s: %s)", exc.__class__.__name__, str(exc)[:200])
