"""The server's own bulk-insert rate for mongo_load's documents, beside mongo_load's (issue 12, item 2).

    MONGO_URI=mongodb://127.0.0.1:27117/ .local/venv/bin/python bench/mongo_insert_ceiling.py \
        --db big_run61 --record /work/big/run/data/runs/big-data/mongo_load.json

For each collection mongo_load writes, ``--docs`` of its documents (at most ``--max-mb``) are read
from a loaded database (its live generation) and inserted again, as copies, into a scratch
collection of a scratch database by ``--writers`` processes (Spark local[2] inserts from two tasks) with mongo_load's own call,
``core.mongo.insert_docs`` (unordered ``insert_many``, 2,000 a batch); then the scratch database is
dropped. Only the inserts are timed: what mongo_load adds on top (Spark building the documents, its
shuffles, the new generation's switch) is the difference from its rate in ``--record``, which is
printed beside when given.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bson  # noqa: E402

from core import mongo  # noqa: E402
from core.settings import get_settings  # noqa: E402

COLLECTIONS = ("products", "recent_reviews", "product_reviews", "user_history", "search_index", "catalog_index")


def _insert(docs: list[dict], db_name: str, collection: str, out: multiprocessing.Queue) -> None:
    """One writer: a client of its own (the parent's cached one is not to be used across a fork)."""
    from pymongo import MongoClient

    with MongoClient(get_settings().mongo_uri) as client:
        out.put(mongo.insert_docs(collection, docs, db=client[db_name]))


def ceiling(db_name: str, collection: str, n_docs: int, max_bytes: int, writers: int) -> dict:
    source = mongo.get_db(get_settings().mongo_uri, db_name)
    physical = mongo.physical_name(source, collection)
    t0 = time.perf_counter()
    docs, size = [], 0
    for doc in source[physical].find({}).limit(n_docs).batch_size(50):  # FerretDB does not cap a reply by size
        docs.append(doc)
        size += len(bson.encode(doc))
        if size >= max_bytes:
            break
    read_s = time.perf_counter() - t0
    if not docs:
        return {"collection": collection, "physical": physical, "documents": 0}
    scratch = f"{db_name}_insert_ceiling"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    parts = [docs[i::writers] for i in range(writers)]
    procs = [ctx.Process(target=_insert, args=(part, scratch, collection, out)) for part in parts]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    acknowledged = sum(out.get() for _ in procs)
    for p in procs:
        p.join()
    seconds = time.perf_counter() - t0
    mongo.get_client(get_settings().mongo_uri).drop_database(scratch)
    return {"collection": collection, "physical": physical, "documents": len(docs), "acknowledged": acknowledged,
            "bytes_per_doc": round(size / len(docs)), "read_s": round(read_s, 2), "seconds": round(seconds, 2),
            "docs_per_s": round(len(docs) / seconds, 1), "mb_per_s": round(size / seconds / 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="a database mongo_load loaded")
    ap.add_argument("--docs", type=int, default=200_000, help="documents per collection (its first ones)")
    ap.add_argument("--max-mb", type=float, default=300, help="at most this many MB of BSON per collection")
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--record", type=Path, help="mongo_load's run record, for its rates beside")
    ap.add_argument("--collections", default=",".join(COLLECTIONS))
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    loaded = json.loads(args.record.read_text()).get("collections", {}) if args.record else {}
    print(f"{'collection':<16}{'docs':>10}{'bytes/doc':>11}{'insert docs/s':>15}{'MB/s':>7}"
          f"{'mongo_load docs/s':>19}{'share':>7}")
    results = []
    for name in args.collections.split(","):
        r = ceiling(args.db, name, args.docs, int(args.max_mb * 1e6), args.writers)
        ours = (loaded.get(name) or {}).get("docs_per_s")
        r["mongo_load_docs_per_s"] = ours
        results.append(r)
        if not r["documents"]:
            print(f"{name:<16} empty")
            continue
        share = f"{ours / r['docs_per_s']:.0%}" if ours else "-"
        print(f"{name:<16}{r['documents']:>10,}{r['bytes_per_doc']:>11,}{r['docs_per_s']:>15,.0f}"
              f"{r['mb_per_s']:>7.1f}{ours or 0:>19,.0f}{share:>7}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
