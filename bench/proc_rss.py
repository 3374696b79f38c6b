"""Resident memory of a benchmark's processes, for the peak-RSS columns of its tables.

Two kinds of process are counted: a stage's own process tree (spark-submit's JVM, the Python
driver, its Python workers) and a standalone cluster's executor JVMs, which are children of the
cluster's workers, not of the driver, so a tree walk from the driver misses them.
"""
from __future__ import annotations

import psutil

EXECUTOR_CLASS = "org.apache.spark.executor.CoarseGrainedExecutorBackend"


def tree_rss(pid: int) -> int:
    """RSS of ``pid`` and all its descendants, in bytes (0 once it has exited)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def executors_rss(app_id: str | None = None) -> int:
    """RSS of the Spark executor JVMs on this host, in bytes: of application ``app_id`` only when
    given (other applications may share the workers), else of every application."""
    total = 0
    for p in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = p.info["cmdline"] or []
        if EXECUTOR_CLASS in cmd and (app_id is None or app_id in cmd) and p.info["memory_info"]:
            total += p.info["memory_info"].rss
    return total
