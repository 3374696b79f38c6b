"""Run N worker processes under one parent (what ``bin/services start worker`` launches).

    python -m kafka_workers.supervise --processes 2

Each child is an independent member of the consumer group (Kafka spreads the partitions between
them). A child that dies is restarted after a short back-off; SIGTERM to the parent stops all of
them cleanly. In production, run ``python -m kafka_workers.worker`` under your orchestrator
instead (one container per worker) and let it do the restarting.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import signal
import time

log = logging.getLogger("kafka_workers.supervise")


def _child() -> None:
    from kafka_workers.worker import main

    main()


def supervise(processes: int) -> int:
    ctx = mp.get_context("spawn")  # no inherited Kafka/Mongo sockets
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [ctx.Process(target=_child, name=f"worker-{i}") for i in range(processes)]
    for c in children:
        c.start()
    log.info("started %d worker process(es): %s", processes, [c.pid for c in children])
    while not stopping:
        time.sleep(0.5)
        for i, c in enumerate(children):
            if not c.is_alive() and not stopping:
                log.warning("worker %s (pid %s) exited with %s; restarting in 2 s", c.name, c.pid, c.exitcode)
                time.sleep(2)
                children[i] = ctx.Process(target=_child, name=c.name)
                children[i].start()
    for c in children:
        if c.is_alive():
            c.terminate()  # SIGTERM: the worker finishes its message and commits
    for c in children:
        c.join(30)
    for c in children:  # stuck past the grace period: uncommitted work is redelivered to the group
        if c.is_alive():
            log.warning("worker %s (pid %s) did not stop within 30 s; killing it", c.name, c.pid)
            c.kill()
            c.join(5)
    return 0


def main() -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=1)
    return supervise(max(1, parser.parse_args().processes))


if __name__ == "__main__":
    raise SystemExit(main())
