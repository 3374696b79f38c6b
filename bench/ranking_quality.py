"""Ranking quality of the trained model against popularity and the seed ALS, on every real review file.

For each review file in the shared data folder (metadata files are skipped) this runs the real
batch code path in one process — ``spark_jobs.load.load`` -> ``spark_jobs.clean.clean`` ->
``spark_jobs.train.train`` (engine ``auto``) — and prints one table: the model train chose against
popularity and the seed's explicit ALS (rank 5, maxIter 30, regParam 0.5, nonnegative), all
measured by train on the same leave-last-out split (hyper-parameters chosen on validation only),
and PASS/FAIL against the targets NDCG@10 >= 1.3x popularity and >= 10x the seed configuration.

A file whose split holds too few test users (or too small a catalog) for a ranking comparison
means anything is listed as such, with its numbers, but gets no PASS/FAIL (see ``enough_data``).
A second table reconciles every row of every file (lines in = reviews + products + quarantined,
reviews = clean rows + duplicates removed), on the real files and on a fuzzed synthetic file with
broken lines, whose expected counts come from the generator's manifest, not from the pipeline.

``--generated-scale S`` (e.g. 0.001 = 233k reviews) also writes a set of the 2018 release's shape
with bench/gen/release.py (29 categories with metadata, latent taste structure) and runs the same
load -> clean -> train on all its files at once: the line "ours vs popularity" says by how much the
trained model beats popularity on that split; the set's load and clean counts are checked against
its manifest. ``--skip-real`` leaves out the real files.

Everything runs in its own MongoDB database, data and artifact folders under ``--work`` (default
a new folder under /tmp), so the demo's data is never touched; the database is dropped at the end.

    .local/venv/bin/python bench/ranking_quality.py [--data ../shared/data] [--only musical] [--json out.json]
    .local/venv/bin/python bench/ranking_quality.py --skip-real --fuzzed-rows 0 --generated-scale 0.002
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
K = 10
TARGET_VS_POPULARITY = 1.3
TARGET_VS_SEED = 10.0
# Below these a leave-last-out ranking comparison is noise: with fewer than 100 test users one hit
# moves NDCG@10 by more than the differences being measured, and with fewer than 3*K items a top-10
# list is a third of the catalog, so every method recommends nearly the same items.
MIN_TEST_USERS = 100
MIN_ITEMS = 3 * K


def isolate(work: Path) -> str:
    """Point every setting the jobs read at ``work`` and a fresh database, before anything reads them."""
    db = f"bench_ranking_{uuid.uuid4().hex[:8]}"
    os.environ["MONGO_DB"] = db
    os.environ["DATA_DIR"] = str(work / "data")
    os.environ["ARTIFACTS_DIR"] = str(work / "artifacts")
    os.environ["EDA_DIR"] = str(work / "eda")
    from core.settings import get_settings

    get_settings.cache_clear()
    return db


def review_files(data: Path, only: list[str]) -> list[Path]:
    files = sorted(p for p in data.iterdir()
                   if p.name.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")) and "_meta_" not in p.name)
    return [p for p in files if not only or any(o.lower() in p.name.lower() for o in only)]


def enough_data(counts: dict, test_users: int) -> str | None:
    """Why a file is too small for the targets to mean anything, or None if it is big enough."""
    why = []
    if test_users < MIN_TEST_USERS:
        why.append(f"{test_users} test users (< {MIN_TEST_USERS}): only users with >= 3 distinct items are "
                   f"tested; {counts['interactions']:,} distinct pairs / {counts['users']:,} users")
    if counts["items"] < MIN_ITEMS:
        why.append(f"{counts['items']} items (< {MIN_ITEMS})")
    return "; ".join(why) or None


def run_file(spark, path: Path, work: Path) -> dict:
    from spark_jobs.clean import clean
    from spark_jobs.load import load
    from spark_jobs.train import train

    name = path.name.split(".json")[0]
    base = work / "files" / name
    run_id = f"rq-{name}-{uuid.uuid4().hex[:6]}"
    t0 = time.time()
    loaded = load(spark, [str(path)], str(base / "raw"), run_id)
    cleaned = clean(spark, str(base / "raw"), str(base / "clean"), run_id)
    t1 = time.time()
    trained = train(spark, str(base / "clean"), run_id, engine="auto")
    t2 = time.time()
    return {"file": path.name, "load": loaded, "clean": cleaned, "train": trained,
            "seconds": {"load+clean": round(t1 - t0, 1), "train": round(t2 - t1, 1)}}


def run_generated(spark, work: Path, scale: float, seed: int) -> dict:
    """Load + clean + train a generated set of the release's shape, all 58 files in one run."""
    from bench.gen.manifest import manifest_differences
    from bench.gen.release import generate_release
    from spark_jobs.clean import clean
    from spark_jobs.load import load
    from spark_jobs.train import train

    base = work / "generated"
    t0 = time.time()
    manifest = generate_release(scale, base / "in", seed=seed, duplicate_fraction=0.01, bad_fraction=0.001)
    t1 = time.time()
    files = [str(base / "in" / f["path"]) for f in manifest["files"]]
    run_id = f"rq-generated-{uuid.uuid4().hex[:6]}"
    loaded = load(spark, files, str(base / "raw"), run_id)
    cleaned = clean(spark, str(base / "raw"), str(base / "clean"), run_id)
    t2 = time.time()
    trained = train(spark, str(base / "clean"), run_id, engine="auto")
    t3 = time.time()
    print(f"generated: {manifest['review_lines']:,} review lines, {manifest['products']:,} products in "
          f"{t1 - t0:.0f}s; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return {"file": f"generated 2018 shape, scale {scale:g}", "load": loaded, "clean": cleaned, "train": trained,
            "manifest_matches": not manifest_differences(manifest, loaded, cleaned),
            "seconds": {"generate": round(t1 - t0, 1), "load+clean": round(t2 - t1, 1), "train": round(t3 - t2, 1)}}


def run_fuzzed(spark, work: Path, rows: int, bad_fraction: float) -> dict:
    """Load + clean a generated file with broken lines; compare with the generator's own counts."""
    from bench.gen_reviews import generate, manifest_differences
    from spark_jobs.clean import clean
    from spark_jobs.load import load

    base = work / "fuzzed"
    manifest = generate(rows, base / "in", "2018", bad_fraction=bad_fraction, duplicate_fraction=0.02,
                        repeat_fraction=0.02, seed=3, files=2)
    files = [str(base / "in" / f["path"]) for f in manifest["files"]]
    run_id = f"rq-fuzzed-{uuid.uuid4().hex[:6]}"
    loaded = load(spark, files, str(base / "raw"), run_id)
    cleaned = clean(spark, str(base / "raw"), str(base / "clean"), run_id)
    return {"file": f"fuzzed 2018, {rows:,} lines, {bad_fraction:.0%} broken", "load": loaded, "clean": cleaned,
            "manifest_matches": not manifest_differences(manifest, loaded, cleaned), "manifest": manifest["expected"]}


# --- printing -------------------------------------------------------------------------------

def _ratio(a: float, b: float) -> float:
    return float("inf") if b == 0 else a / b


def _fmt_ratio(r: float) -> str:
    return "inf" if r == float("inf") else f"{r:.2f}x"


def half_width(ndcg: float, n: int) -> float:
    """An upper bound on the 95% half-width of a mean NDCG over n users (per-user NDCG g in [0, 1]
    has variance <= E[g] (1 - E[g])): how far a small file's number can move by chance."""
    return 1.96 * (ndcg * (1 - ndcg) / n) ** 0.5 if n else float("nan")


def quality_row(res: dict) -> dict:
    m = res["train"]["metrics"]
    ours, pop, seed = m["test"], m["baselines"]["popularity"], m["baselines"]["seed_explicit_als"]
    nd = f"ndcg@{K}"
    r_pop, r_seed = _ratio(ours[nd], pop[nd]), _ratio(ours[nd], seed[nd])
    small = enough_data(m["counts"], ours["users"])
    if small:
        verdict = "too little data"
    else:
        verdict = "PASS" if r_pop >= TARGET_VS_POPULARITY and r_seed >= TARGET_VS_SEED else "FAIL"
        out_of_reach = [f"{target:g}x {name} = {target * base[nd]:.2f}"
                        for name, target, base, ratio in (("popularity", TARGET_VS_POPULARITY, pop, r_pop),
                                                          ("seed", TARGET_VS_SEED, seed, r_seed))
                        if ratio < target and target * base[nd] > 1]
        if out_of_reach:
            verdict += f" ({', '.join(out_of_reach)} > 1, the maximum NDCG)"
    best = m["selection"]["best"]
    return {"file": res["file"], "users": m["counts"]["users"], "items": m["counts"]["items"],
            "pairs": m["counts"]["interactions"], "test_users": ours["users"], "engine": res["train"]["engine"],
            "params": best, "ours": ours, "popularity": pop, "seed": seed,
            "rmse_ours": m["rating_model"]["rmse"], "rmse_seed": m["rating_model"]["seed_rmse"],
            "rmse_rows": m["rating_model"]["rmse_rows"],
            "validation_ndcg": m["validation"]["ndcg@10"], "validation_pop_ndcg": m["validation"]["popularity_ndcg@10"],
            "ratio_pop": r_pop, "ratio_seed": r_seed, "verdict": verdict, "why_small": small,
            "ours_pm": half_width(ours[nd], ours["users"]), "pop_pm": half_width(pop[nd], pop["users"]),
            "seconds": res["seconds"]}


def print_quality(rows: list[dict]) -> None:
    nd, rc, hr = f"ndcg@{K}", f"recall@{K}", f"hr@{K}"
    head = (f"{'file':<38}{'users':>7}{'items':>6}{'test':>6}  {'engine':<8}"
            f"{'NDCG@10 ours/pop/seed':>24}{'±95%':>6}{'Recall@10 ours/pop/seed':>25}{'HR@10 ours/pop/seed':>22}"
            f"{'coverage ours/pop/seed':>24}{'RMSE ours/seed':>16}{'/pop':>8}{'/seed':>8}  result")
    print("\nRanking quality (test split: each user's latest review; users with >= 3 reviews; full ranking)")
    print(head)
    print("-" * len(head))
    for r in rows:
        o, p, s = r["ours"], r["popularity"], r["seed"]
        trip = lambda key, w=3: f"{o[key]:.{w}f}/{p[key]:.{w}f}/{s[key]:.{w}f}"  # noqa: E731
        rmse = (f"{r['rmse_ours']:.3f}/{r['rmse_seed']:.3f}" if r["rmse_ours"] is not None
                and r["rmse_seed"] is not None else "n/a")
        print(f"{r['file'].split('.json')[0]:<38}{r['users']:>7,}{r['items']:>6,}{r['test_users']:>6,}  "
              f"{r['engine']:<8}{trip(nd, 4):>24}{r['ours_pm']:>6.3f}{trip(rc):>25}{trip(hr):>22}{trip('coverage'):>24}{rmse:>16}"
              f"{_fmt_ratio(r['ratio_pop']):>8}{_fmt_ratio(r['ratio_seed']):>8}  {r['verdict']}")
    print(f"\ntargets: ours >= {TARGET_VS_POPULARITY}x popularity and >= {TARGET_VS_SEED:g}x the seed ALS on NDCG@10; "
          "±95%: bound on the 95% half-width of ours' NDCG@10 from the number of test users")
    for r in rows:
        print(f"  {r['file']}: chose {r['engine']} {r['params']} on validation "
              f"(validation NDCG@10 {r['validation_ndcg']:.4f} vs popularity {r['validation_pop_ndcg']:.4f}); "
              f"load+clean {r['seconds']['load+clean']}s, train {r['seconds']['train']}s"
              + (f"; too little data: {r['why_small']}" if r["why_small"] else ""))


def reconciliation_row(res: dict) -> dict:
    lo, cl = res["load"], res["clean"]
    lines = lo["counts_in"]["lines"]
    out = lo["counts_out"]
    c_out = cl["counts_out"]
    unaccounted_load = lines - (out["reviews"] + out["products"] + out["quarantined"])
    unaccounted_clean = cl["counts_in"]["reviews"] - (c_out["reviews"] + c_out["exact duplicate lines"]
                                                      + c_out["repeated user-item pairs"])
    return {"file": res["file"], "lines": lines, "reviews": out["reviews"], "products": out["products"],
            "quarantined": out["quarantined"], "reasons": lo["quarantine_reasons"],
            "duplicates": c_out["exact duplicate lines"], "repeated": c_out["repeated user-item pairs"],
            "clean": c_out["reviews"], "unaccounted": unaccounted_load + unaccounted_clean,
            "manifest_matches": res.get("manifest_matches")}


def print_reconciliation(rows: list[dict]) -> None:
    head = (f"{'file':<44}{'lines':>9}{'reviews':>9}{'quarant.':>9}{'dup lines':>10}{'repeat':>8}"
            f"{'clean':>8}{'unaccounted':>12}  check")
    print("\nReconciliation (load: lines = reviews + products + quarantined; clean: reviews = clean + dropped)")
    print(head)
    print("-" * len(head))
    for r in rows:
        check = "ok" if r["unaccounted"] == 0 else "ROWS LOST"
        if r["manifest_matches"] is not None:
            check += ", = manifest" if r["manifest_matches"] else ", DIFFERS FROM MANIFEST"
        print(f"{r['file'].split('.json')[0]:<44}{r['lines']:>9,}{r['reviews']:>9,}{r['quarantined']:>9,}"
              f"{r['duplicates']:>10,}{r['repeated']:>8,}{r['clean']:>8,}{r['unaccounted']:>12,}  {check}")
        if r["reasons"]:
            print(f"{'':<6}quarantined: " + ", ".join(f"{k} {v:,}" for k, v in r["reasons"].items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of real review files")
    ap.add_argument("--only", action="append", default=[], help="substring of the file names to run (repeatable)")
    ap.add_argument("--work", type=Path, help="working folder (default: a new folder under /tmp, removed after)")
    ap.add_argument("--fuzzed-rows", type=int, default=50_000, help="lines of the fuzzed file (0 to skip)")
    ap.add_argument("--fuzzed-bad", type=float, default=0.02, help="share of broken lines in the fuzzed file")
    ap.add_argument("--generated-scale", type=float, default=0.0,
                    help="also run a generated set of the 2018 release's shape at this scale (0 to skip)")
    ap.add_argument("--generated-seed", type=int, default=1)
    ap.add_argument("--skip-real", action="store_true", help="do not run the real files")
    ap.add_argument("--master", default=os.environ.get("SPARK_MASTER", "local[2]"))
    ap.add_argument("--json", type=Path, help="also write every measured number here")
    args = ap.parse_args(argv)

    keep = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="ranking-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    db = isolate(work)
    from core import mongo
    from spark_jobs.common import spark_session

    files = [] if args.skip_real else review_files(args.data, args.only)
    print(f"ranking_quality: {len(files)} review files from {args.data}; work {work}; MongoDB database {db}")
    started = time.time()
    spark = spark_session("bench-ranking-quality", master=args.master, checkpoint_dir=str(work / "checkpoints"))
    results, failures = [], []
    try:
        for path in files:
            print(f"\n=== {path.name}")
            try:
                results.append(run_file(spark, path, work))
            except Exception as exc:  # report and go on: one broken file must not hide the others
                failures.append((path.name, f"{exc.__class__.__name__}: {exc}"))
                print(f"ranking_quality: {path.name} FAILED: {exc!r}")
        fuzzed = run_fuzzed(spark, work, args.fuzzed_rows, args.fuzzed_bad) if args.fuzzed_rows else None
        generated = None
        if args.generated_scale:
            try:
                generated = run_generated(spark, work, args.generated_scale, args.generated_seed)
                results.append(generated)
            except Exception as exc:
                failures.append(("generated", f"{exc.__class__.__name__}: {exc}"))
                print(f"ranking_quality: generated set FAILED: {exc!r}")
    finally:
        spark.stop()
        mongo.get_client().drop_database(db)
        if not keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)

    quality = [quality_row(r) for r in results]
    recon = [reconciliation_row(r) for r in results] + ([reconciliation_row(fuzzed)] if fuzzed else [])
    print_quality(quality)
    print_reconciliation(recon)
    gen_row = next((r for r in quality if r["file"].startswith("generated")), None)
    if gen_row:
        print(f"\ngenerated 2018-shape set: ours ({gen_row['engine']}) NDCG@10 {gen_row['ours']['ndcg@10']:.4f} vs "
              f"popularity {gen_row['popularity']['ndcg@10']:.4f} on the same split: ours/popularity "
              f"{_fmt_ratio(gen_row['ratio_pop'])} ({gen_row['test_users']:,} test users, "
              f"{gen_row['pairs']:,} pairs, {gen_row['items']:,} items); load average now "
              + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    for name, err in failures:
        print(f"FAILED to run: {name}: {err}")
    print(f"\nranking_quality: {time.time() - started:.0f}s in all; Spark {args.master}; K={K}")
    if args.json:
        args.json.write_text(json.dumps({"quality": quality, "reconciliation": recon, "failures": failures},
                                        indent=2, default=str))
    judged = [r for r in quality if r["verdict"] != "too little data"]
    ok = not failures and all(r["verdict"] == "PASS" for r in judged) and all(r["unaccounted"] == 0 for r in recon)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
