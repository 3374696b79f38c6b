"""bench.proc_rss: the peak-RSS columns of the benchmarks count a stage's whole process tree."""
import subprocess
import sys
import time

import psutil

from bench.proc_rss import executors_rss, tree_rss


def test_tree_rss_counts_the_grandchild_and_is_zero_once_reaped():
    # a shell whose child holds 200 MiB: the memory is the grandchild's, not the shell's
    child = subprocess.Popen(["sh", "-c", f"{sys.executable} -c 'x = bytearray(200 * 2**20); import time; "
                                          "print(1, flush=True); time.sleep(30)'"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # the grandchild has its 200 MiB
        assert tree_rss(child.pid) >= 200 * 2**20
    finally:
        for p in [*psutil.Process(child.pid).children(recursive=True), child]:
            p.kill()
        child.wait()
    time.sleep(0.1)
    assert tree_rss(child.pid) == 0


def test_executors_of_an_application_that_does_not_run_count_nothing():
    assert executors_rss("app-00000000000000-0000-not-running") == 0
