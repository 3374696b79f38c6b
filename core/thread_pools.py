"""Named thread pools, one set per process: a pool's threads do not survive a fork, and a forked
child that submitted to its parent's pool would wait forever (the worker and Celery fork)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

_POOLS: dict[int, dict[str, ThreadPoolExecutor]] = {}


def thread_pool(name: str, workers: int) -> ThreadPoolExecutor:
    """This process's pool called ``name`` (its threads are named after it), made on first use."""
    pools = _POOLS.get(os.getpid())
    if pools is None:
        _POOLS.clear()
        pools = _POOLS[os.getpid()] = {}
    if name not in pools:
        pools[name] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    return pools[name]
