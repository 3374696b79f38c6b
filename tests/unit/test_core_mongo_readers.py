"""The reader threads of ``core.mongo.find_by_ids_many`` in a forked child (no server needed)."""
from __future__ import annotations

import multiprocessing
import threading

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


class _Collection:
    """Answers every `$in` with its ids, noting the thread each query ran in."""

    def __init__(self, threads: list[str]) -> None:
        self.threads = threads

    def find(self, query, projection=None):
        self.threads.append(threading.current_thread().name)
        return [{"_id": i} for i in query["_id"]["$in"]]


def test_few_ids_are_read_in_the_calling_thread_and_many_from_the_readers():
    threads: list[str] = []
    db = {"a": _Collection(threads), "b": _Collection(threads)}
    few = mongo.find_by_ids_many([("a", ["u1"], None), ("b", ["u1"], None)], db=db)
    assert few == [{"u1": {"_id": "u1"}}, {"u1": {"_id": "u1"}}]
    assert threads == [threading.current_thread().name] * 2  # a one-rating batch: no hand-off to threads
    threads.clear()
    ids = [f"u{i}" for i in range(mongo.CONCURRENT_READS_FROM_IDS)]
    many = mongo.find_by_ids_many([("a", ids, None), ("b", ids[:1], None)], db=db)
    assert set(many[0]) == set(ids) and set(many[1]) == {"u0"}
    assert len(threads) == 2 and all(t.startswith("find-by-ids") for t in threads)
