"""Load and clean rows/s beside their ceilings, and mongo_load docs/s beside a plain insert_many, in one run.

    .local/venv/bin/python bench/ingest_speed.py --rows 2000000 [--files 4] [--mongo-rows 200000] [--work DIR]
        [--baseline GIT_REF]   # also the load and clean jobs of an earlier commit, same files, same session

The same generated files (bench/gen_reviews.py, 2018 format) are read by:

* ``zcat FILES | wc -l``: decompression alone, one stream (lines/s);
* plain Python ``json.loads`` of every line, one process per core (2 here);
* Spark's bare ``spark.read.schema(RAW_LINE).json(...)``: ``.count()`` (Spark skips parsing when no
  column is needed) and a ``noop`` write (every field parsed and materialised);
* our ``load`` (spark_jobs/load.py) and ``clean`` (spark_jobs/clean.py), in the same Spark session.

Our rates are printed as a share of each ceiling, with the load average beside every figure (the
machine is shared: compare within one run). mongo_load runs on a smaller clean set (``--mongo-rows``)
into a scratch database, beside a plain pymongo ``insert_many`` (batches of 1,000, unordered) of the
same review documents into a scratch collection of the same server.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _json_lines(path: str) -> int:
    n = 0
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            try:
                json.loads(line)
            except ValueError:
                pass
            n += 1
    return n


def generate(rows: int, out: Path, files: int) -> dict:
    if not (out / "manifest.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_reviews.py"), "--rows", str(rows), "--out", str(out),
                        "--format", "2018", "--files", str(files), "--bad-fraction", "0.001", "--seed", "1",
                        "--processes", "2"], check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "manifest.json").read_text())


def timed(results: list, name: str, n: int, fn, unit: str = "rows") -> float:
    la = loadavg()
    t = time.time()
    fn()
    s = time.time() - t
    results.append({"what": name, "n": n, "seconds": round(s, 2), "rate": n / s, "unit": unit, "loadavg": la})
    print(f"  {name:<48}{n:>12,} {unit} {s:>8.1f} s {n / s:>12,.0f} {unit}/s   load avg {la}", flush=True)
    return n / s


def old_jobs(ref: str, work: Path):
    """spark_jobs/load.py and clean.py as they were at git ``ref``, imported as modules (clean with the
    text_clean.py of ``ref`` too, not today's)."""
    import importlib.util

    mods = []
    for job in ("text_clean", "load", "clean"):
        path = work / f"old_{job}.py"
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:spark_jobs/{job}.py"], check=True,
                                capture_output=True, text=True).stdout
        path.write_text(source.replace("from spark_jobs.text_clean import", "from old_text_clean import"))
        spec = importlib.util.spec_from_file_location(f"old_{job}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{job}"] = mod
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[1:]


def speed(files: list[str], n_lines: int, work: Path, results: list, baseline=None) -> dict:
    from core.spark_schemas import RAW_LINE
    from spark_jobs.clean import clean
    from spark_jobs.common import spark_session
    from spark_jobs.load import load

    spark = spark_session("bench-ingest", master=os.environ.get("SPARK_MASTER", "local[2]"))
    spark.read.text(files).count()  # the JVM warmed up and the files in the page cache for everyone
    rates = {}
    rates["zcat"] = timed(results, "zcat | wc -l (1 stream)", n_lines, lambda: subprocess.run(
        f"zcat {' '.join(files)} | wc -l", shell=True, check=True, stdout=subprocess.DEVNULL))
    with Pool(2) as pool:
        rates["json"] = timed(results, "Python json.loads, 2 processes", n_lines,
                              lambda: pool.map(_json_lines, files, chunksize=1))
    rates["spark_count"] = timed(results, "Spark read.json(schema).count()", n_lines,
                                 lambda: spark.read.schema(RAW_LINE).json(files).count())
    rates["spark_noop"] = timed(results, "Spark read.json(schema) -> noop write", n_lines,
                                lambda: spark.read.schema(RAW_LINE).json(files).write.format("noop")
                                .mode("overwrite").save())
    rec = {}
    if baseline:  # both codes once, untimed, on one file: the first run of a job in a JVM is the
        # slowest (~30% at 2M lines here), which would favour whichever code runs second
        for job_load, job_clean in ((load, clean), (baseline[0].load, baseline[1].clean)):
            job_load(spark, files[:1], str(work / "warm" / "raw"), "bench-warm")
            job_clean(spark, str(work / "warm" / "raw"), str(work / "warm" / "clean"), "bench-warm")
            shutil.rmtree(work / "warm", ignore_errors=True)
    rates["load"] = timed(results, "ours: load (parse, classify, write, read back)", n_lines,
                          lambda: rec.update(load=load(spark, files, str(work / "raw"), "bench")))
    n_reviews = rec["load"]["counts_out"]["reviews"]
    rates["clean"] = timed(results, "ours: clean (dedup, text, write, read back)", n_reviews,
                           lambda: rec.update(clean=clean(spark, str(work / "raw"), str(work / "clean"), "bench")))
    if baseline:  # the jobs of an earlier commit, same files, same session
        old_load, old_clean = baseline
        rates["old_load"] = timed(results, "before: load", n_lines,
                                  lambda: old_load.load(spark, files, str(work / "old_raw"), "bench-old"))
        rates["old_clean"] = timed(results, "before: clean", n_reviews,
                                   lambda: old_clean.clean(spark, str(work / "old_raw"), str(work / "old_clean"),
                                                           "bench-old"))
        print(f"\n  load {rates['load'] / rates['old_load']:.2f}x and clean {rates['clean'] / rates['old_clean']:.2f}x "
              "the rate of the earlier commit's jobs")
    print(f"\n  load  = {rates['load'] / rates['spark_noop']:.0%} of Spark's bare parse (noop), "
          f"{rates['load'] / rates['json']:.0%} of 2-process json.loads, {rates['load'] / rates['zcat']:.0%} of zcat")
    print(f"  clean = {rates['clean'] / rates['spark_noop']:.0%} of Spark's bare parse (noop), "
          f"{rates['clean'] / rates['json']:.0%} of 2-process json.loads")
    spark.stop()
    return {"rates": rates, "load": rec["load"], "clean": rec["clean"]}


def mongo_speed(files: list[str], work: Path, results: list) -> dict:
    os.environ["MONGO_DB"] = db_name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    os.environ["DATA_DIR"] = str(work / "data")
    from core import mongo
    from core.settings import get_settings

    get_settings.cache_clear()
    from spark_jobs.clean import clean
    from spark_jobs.common import spark_session
    from spark_jobs.load import load
    from spark_jobs.mongo_load import mongo_load, review_docs

    spark = spark_session("bench-mongo", master=os.environ.get("SPARK_MASTER", "local[2]"))
    try:
        load(spark, files, str(work / "raw"), "bench-m")
        clean(spark, str(work / "raw"), str(work / "clean"), "bench-m")
        docs = [r.asDict() for r in review_docs(spark.read.parquet(str(work / "clean" / "reviews"))).collect()]
        db = mongo.get_db()
        scratch = db["plain_insert"]

        def plain():
            for i in range(0, len(docs), 1000):
                scratch.insert_many(docs[i:i + 1000], ordered=False)
        rate_plain = timed(results, "plain pymongo insert_many (review docs)", len(docs), plain, "docs")
        db.drop_collection("plain_insert")
        rec = {}
        t = time.time()
        la = loadavg()
        rec.update(mongo_load(spark, str(work / "clean"), "bench-m"))
        total_s = time.time() - t
        print(f"  mongo_load in all: {total_s:.1f} s (load avg {la})")
        for name, c in rec["collections"].items():
            print(f"    {name:<18}{c['documents']:>10,} docs {c['seconds']:>8.1f} s {c['docs_per_s']:>10,.0f} docs/s "
                  f"({c['docs_per_s'] / rate_plain:.0%} of plain insert_many)")
            results.append({"what": f"mongo_load {name}", "n": c["documents"], "seconds": c["seconds"],
                            "rate": c["docs_per_s"], "unit": "docs", "loadavg": la})
        return {"plain_insert_many": rate_plain, "mongo_load": rec, "mongo_load_seconds": total_s}
    finally:
        spark.stop()
        mongo.get_client().drop_database(db_name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mongo-rows", type=int, default=200_000, help="0: skip the MongoDB part")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--baseline", metavar="GIT_REF", help="also time load and clean as they were at this commit")
    ap.add_argument("--keep", action="store_true", help="keep the generated files (re-used by the next run)")
    ap.add_argument("--json", type=Path, help="also write every measured number here")
    opts = ap.parse_args(argv)
    work = opts.work or Path(tempfile.mkdtemp(prefix="ingest-speed-"))
    os.environ.setdefault("DATA_DIR", str(work / "data"))
    print(f"ingest_speed: {opts.rows:,} lines in {opts.files} files; work {work}; {os.cpu_count()} cores; "
          f"load avg {loadavg()}", flush=True)
    results: list = []
    manifest = generate(opts.rows, work / f"in-{opts.rows}", opts.files)
    files = sorted(glob.glob(str(work / f"in-{opts.rows}" / "*.jsonl.gz")))
    for d in ("raw", "clean"):
        shutil.rmtree(work / d, ignore_errors=True)
    for d in ("old_raw", "old_clean"):
        shutil.rmtree(work / d, ignore_errors=True)
    baseline = old_jobs(opts.baseline, work) if opts.baseline else None
    out = {"rows": opts.rows, "speed": speed(files, manifest["lines"], work, results, baseline)}
    if opts.mongo_rows:
        mwork = work / "mongo"
        shutil.rmtree(mwork / "raw", ignore_errors=True)
        shutil.rmtree(mwork / "clean", ignore_errors=True)
        m = generate(opts.mongo_rows, work / f"in-{opts.mongo_rows}", opts.files)
        print(f"\nmongo_load on {m['lines']:,} lines", flush=True)
        out["mongo"] = mongo_speed(sorted(glob.glob(str(work / f"in-{opts.mongo_rows}" / "*.jsonl.gz"))), mwork, results)
    out["results"] = results
    if opts.json:
        opts.json.write_text(json.dumps(out, indent=2, default=str))
    if not opts.keep and not opts.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ningest_speed: done; load avg {loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
