"""The reader threads of ``core.mongo.find_by_ids_many`` in a forked child (no server needed)."""
from __future__ import annotations

import multiprocessing

from core import mongo


def _child_reads(queue) -> None:
    queue.put(mongo._readers().submit(lambda: "read").result(timeout=10))


def test_a_forked_child_gets_its_own_reader_threads():
    assert mongo._readers().submit(lambda: 1).result(timeout=10) == 1  # the parent's pool has a thread now
    ctx = multiprocessing.get_context("fork")  # a pool's threads do not survive a fork: the child's copy has none
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(queue,))
    child.start()
    child.join(30)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child waited forever on its parent's reader threads"
    assert queue.get(timeout=5) == "read"
