"""Reads by `_id` through several MongoDB-protocol servers that share one storage, side by side.

    .local/venv/bin/python -m bench.mongo_id_reads --sizes 10000,200000,1000000 \
        --uri patched=mongodb://127.0.0.1:27017/ --uri unpatched=mongodb://127.0.0.1:27018/

Why: FerretDB v1 on PostgreSQL pushes a find by `_id` down as `_jsonb->'_id' @> ...`, which its own
unique btree index cannot serve, so every product page, history and list read scanned its table
(2.0 s per read at 3.3M products), and neither of its backends pushes `_id: {$in: [...]}` down at
all. bin/services builds FerretDB with patches that push both down to the `_id` index
(services/mongo/*.snippet). Two FerretDB processes, the one bin/services built and one built
without the patches, can serve the same PostgreSQL server; each fills a collection of its own (a
FerretDB process does not see the tables another one creates until it restarts). Then, through
each: `find_one({"_id": ...})` reads, finds of 500 ids by `_id` `$in` (what a worker's batch
reads), and the plan of one read (FerretDB's `explain` returns its backend's).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from pymongo import MongoClient

COLLECTION = "id_reads"


def fill(db, n: int) -> None:
    """A new collection of ``n`` list-like documents (an `_id` and 20 short entries). (Never
    counted: FerretDB v1 counts a collection by reading all of it.)"""
    db[COLLECTION].drop()
    for start in range(0, n, 10_000):
        db[COLLECTION].insert_many([{"_id": f"u:{i}", "items": [{"p": f"B{i % 977:06d}", "s": 0.5}] * 20}
                                    for i in range(start, min(n, start + 10_000))], ordered=False)


def plan_node(db) -> str:
    """The top plan node of one read, with its index or filter (FerretDB on PostgreSQL)."""
    try:
        plan = db.command("explain", {"find": COLLECTION, "filter": {"_id": "u:1"}})["queryPlanner"]["Plan"]
    except Exception as exc:  # noqa: BLE001 - another server's explain: say what it said
        return f"(explain: {exc})"[:80]
    while plan.get("Node Type") == "Gather" and plan.get("Plans"):
        plan = plan["Plans"][0]
    return f"{plan.get('Node Type')} {plan.get('Index Name') or plan.get('Filter') or ''}".strip()


def time_in_reads(db, n: int, reads: int, batch: int = 500) -> float:
    """Mean milliseconds of ``reads`` finds of ``batch`` ids by `_id` `$in` (a worker batch's read)."""
    t0 = time.perf_counter()
    for k in range(reads):
        ids = [f"u:{(k * batch + j) * 7919 % n}" for j in range(batch)]
        if len(list(db[COLLECTION].find({"_id": {"$in": ids}}, {"_id": 1}))) != len(set(ids)):
            raise SystemExit("an $in read missed documents")
    return (time.perf_counter() - t0) / reads * 1000


def time_reads(db, n: int, reads: int) -> float:
    """Mean milliseconds of ``reads`` find_one by `_id`, spread over the collection."""
    t0 = time.perf_counter()
    for k in range(reads):
        if db[COLLECTION].find_one({"_id": f"u:{(k * 7919) % n}"}) is None:
            raise SystemExit(f"u:{(k * 7919) % n} is missing")
    return (time.perf_counter() - t0) / reads * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri", action="append", required=True, help="label=mongodb://... (one database each)")
    ap.add_argument("--sizes", default="10000,200000")
    ap.add_argument("--reads", type=int, default=50)
    ap.add_argument("--in-reads", type=int, default=5, help="finds of 500 ids by $in per size and server")
    ap.add_argument("--database", default="bench_id_reads")
    args = ap.parse_args()
    servers = [tuple(u.split("=", 1)) for u in args.uri]
    clients = {label: MongoClient(uri) for label, uri in servers}
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'documents':>10} {'server':>12} {'find_one ms':>12} {'$in 500 ms':>11}  plan of the find_one")
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for label, _uri in servers:
            db = clients[label][f"{args.database}_{label}"]
            t0 = time.perf_counter()
            fill(db, n)
            print(f"# {label}: {n:,} documents ready in {time.perf_counter() - t0:.1f} s")
            ms, in_ms = time_reads(db, n, args.reads), time_in_reads(db, n, args.in_reads)
            node = plan_node(db)
            rows.append({"documents": n, "server": label, "find_one_ms": round(ms, 3), "in_500_ms": round(in_ms, 1),
                         "plan": node})
            print(f"{n:>10,} {label:>12} {ms:>12.2f} {in_ms:>11.1f}  {node[:90]}")
    print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(json.dumps(rows))
    for label, client in clients.items():
        client.drop_database(f"{args.database}_{label}")


if __name__ == "__main__":
    main()
