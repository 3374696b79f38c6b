"""Scale benchmark of the batch pipeline: load -> clean -> train on synthetic review files of growing size.

    .local/venv/bin/python bench/pipeline_scale.py [--sizes 100k,1m,10m] [--work DIR] [--timeout 7200]

For each size, ``bench/gen_reviews.py`` writes 2018-format files (8 category files, Zipf-skewed users
and items, 1% exact duplicate lines, 1% repeated pairs, 0.1% broken lines; its manifest holds the
exact counts load and clean must report). Then every stage runs as its own ``spark-submit`` process,
exactly as bin/pipeline and the Airflow DAG run it, so the peak memory of each stage can be measured:
the resident set size (RSS) of the process tree (the spark-submit JVM, the Python driver and its
Python workers) is sampled with psutil every 0.2 s. Stages:

* ``load``, ``clean``: the jobs themselves; their reconciliation records are checked against the manifest.
* ``train``: ``spark_jobs/train.py --engine auto`` (engine picked by the job; the whole job: ids,
  split, validation grid, refit, test metrics, baselines incl. the seed ALS and the explicit RMSE
  models, the served model, and the top-N lists of every user).
* ``ials:implicit`` and ``ials:spark``: the same implicit-feedback ALS configuration fitted by the
  ``implicit`` library on one node and by Spark MLlib, on the interactions and split the train job
  wrote (train + validation -> test), each in its own process: fit time, peak RSS, NDCG@10.

A stage that fails (exit code, out of memory, ``--max-rss`` exceeded, ``--timeout``) is killed with
its process group and reported; the stages after it at that size are skipped and no larger size is
tried. The summary extrapolates linearly to the 233.1M reviews of the 2018 release and says where
the single-node training path stops on this machine's memory.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.gen_reviews import manifest_differences
from bench.proc_rss import executors_rss, tree_rss
from core import runs
from core.settings import get_settings
from spark_jobs import jvm_jar

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("LOCAL_DIR", ROOT / ".local")) / "venv"
FULL_2018 = 233_100_000
GB = 1024 ** 3
# One configuration for the engine comparison, in implicit's terms (confidence c = alpha on a
# rating, 1 elsewhere); Spark MLlib gets alpha - 1 (its c = 1 + alpha * r) and the same nominal
# regParam, which MLlib scales by each user's and item's count (ALS-WR).
COMPARE = dict(factors=64, reg=0.1, alpha=10.0, iterations=15)
K = 10


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("kmg")) * mult)


def human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:g}{unit}" if (n / div) == int(n / div) else f"{n / div:.1f}{unit}"
    return str(int(n))


# --- running one stage with its peak memory ----------------------------------------------------

def _kill_group(proc: subprocess.Popen) -> None:
    """Stop the stage's own process group (spark-submit's JVM, the driver and its workers)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_stage(name: str, cmd: list[str], env: dict, log: Path, timeout: float, max_rss: int) -> dict:
    import psutil

    print(f"  {name}: {' '.join(cmd[:3])} ... (log {log})", flush=True)
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                start_new_session=True)
    peak, min_avail, cpu_busy, samples, stop = 0, psutil.virtual_memory().available, 0.0, 0, None
    # a standalone cluster's executor JVMs are the workers' children, not the driver's; all of this
    # host's are counted: the stage is taken to be the cluster's only application
    executors_peak = 0
    psutil.cpu_percent()
    while proc.poll() is None:
        peak = max(peak, tree_rss(proc.pid))
        min_avail = min(min_avail, psutil.virtual_memory().available)
        if samples % 5 == 0:
            executors_peak = max(executors_peak, executors_rss())
        elapsed = time.monotonic() - started
        if elapsed > timeout:
            stop = f"timeout after {timeout:.0f}s"
        elif peak > max_rss:
            stop = f"memory limit: RSS {peak / GB:.1f} GB > --max-rss {max_rss / GB:.1f} GB"
        if stop:
            _kill_group(proc)
            break
        time.sleep(0.2)
        samples += 1
        if samples % 25 == 0:
            cpu_busy = max(cpu_busy, psutil.cpu_percent())
    rc = proc.wait()
    seconds = time.monotonic() - started
    tail = log.read_text(errors="replace")[-20_000:]
    if stop is None and rc != 0:
        if "OutOfMemoryError" in tail or "MemoryError" in tail or "Cannot allocate memory" in tail:
            stop = f"out of memory (exit {rc})"
        elif rc == -signal.SIGKILL:
            stop = "killed by SIGKILL (the kernel's OOM killer?)"
        else:
            last = [ln for ln in tail.splitlines() if ln.strip()][-1:] or [""]
            stop = f"exit {rc}: {last[0][:160]}"
    status = "ok" if stop is None else stop
    on_cluster = f", executors' peak RSS {executors_peak / GB:.2f} GB" if executors_peak else ""
    print(f"  {name}: {status} in {seconds:.1f}s, peak RSS {peak / GB:.2f} GB{on_cluster}", flush=True)
    return {"stage": name, "status": status, "ok": stop is None, "exit_status": rc, "seconds": round(seconds, 2),
            "peak_rss": peak, "executors_peak_rss": executors_peak, "min_available": min_avail, "log": str(log)}


# --- the engine comparison (runs inside spark-submit) -------------------------------------------

def engine_main(args: argparse.Namespace) -> int:
    """Fit COMPARE with one engine on train+validation of the train job's split; NDCG@10 on test."""
    import pyarrow.parquet as pq

    from spark_jobs.evaluation import factor_scorer, rank_metrics
    from spark_jobs.engines import eval_users
    from spark_jobs.interactions import csr, heldout

    t0 = time.time()
    table = pq.read_table(args.interactions)
    arr = {c: table.column(c).to_numpy() for c in ("uid", "iid", "rating", "part")}
    shape = (int(arr["uid"].max()) + 1, int(arr["iid"].max()) + 1)
    trval = arr["part"] <= 1
    x_trval = csr(arr, trval, shape)
    test = heldout(arr, 2, eval_users(shape[1]))  # the same users train measured on
    read_s = time.time() - t0
    p = COMPARE
    t1 = time.time()
    collect_s = 0.0
    if args.engine == "implicit":
        from spark_jobs.single_node import ials_factors

        uf, itf = ials_factors(x_trval, **p)
    else:
        from pyspark.sql import functions as F

        from spark_jobs.common import spark_session
        from spark_jobs.engines import factors_numpy, spark_als

        spark = spark_session("bench-ials-spark", checkpoint_dir=str(Path(args.out).parent / "checkpoints"))
        df = (spark.read.parquet(args.interactions).where("part <= 1")
              .select("uid", "iid", F.lit(1.0).alias("rating")))
        model = spark_als(spark, df, True, rank=p["factors"], regParam=p["reg"], alpha=p["alpha"] - 1.0,
                          maxIter=p["iterations"])
        t_c = time.time()
        uf, itf = factors_numpy(model, *shape, tmp=Path(args.out).parent)
        collect_s = time.time() - t_c
    fit_s = time.time() - t1
    t2 = time.time()
    metrics = rank_metrics(factor_scorer(uf, itf), x_trval, test, K)
    eval_s = time.time() - t2
    result = {"engine": args.engine, "params": p, "interactions_fit": int(trval.sum()), "users": shape[0],
              "items": shape[1], "read_seconds": round(read_s, 2), "fit_seconds": round(fit_s, 2),
              "collect_seconds": round(collect_s, 2), "eval_seconds": round(eval_s, 2), "test": metrics}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.engine == "spark":
        spark.stop()
    return 0


# --- one size ------------------------------------------------------------------------------------

def stage_env(base: Path, db: str) -> dict:
    env = dict(os.environ)
    env.update(DATA_DIR=str(base / "data"), ARTIFACTS_DIR=str(base / "artifacts"), EDA_DIR=str(base / "eda"),
               LOCAL_DIR=str(base / "local"), MONGO_DB=db, PYSPARK_PYTHON=str(VENV / "bin" / "python"),
               PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    env.pop("SPARK_HOME", None)
    return env


def submit(script: str, args: list[str], opts: argparse.Namespace) -> list[str]:
    """The job's spark-submit, with the jars bin/pipeline passes (the project's JVM functions)."""
    jars = jvm_jar.submit_jars()
    return [str(VENV / "bin" / "spark-submit"), "--master", opts.master, "--driver-memory", opts.driver_memory,
            *(["--jars", ",".join(jars)] if jars else []), str(ROOT / script), *args]


def run_record(base: Path, run_id: str, job: str) -> dict | None:
    """The job's run record under ``base``'s DATA_DIR (what bin/pipeline --resume reads), if written."""
    return runs.read_record(run_id, job, data_dir=base / "data")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_size(rows: int, work: Path, db: str, opts: argparse.Namespace) -> dict:
    base = work / human(rows)
    shutil.rmtree(base, ignore_errors=True)
    (base / "logs").mkdir(parents=True)
    env = stage_env(base, db)
    run_id = f"scale-{human(rows)}-{uuid.uuid4().hex[:6]}"
    res: dict = {"rows": rows, "run_id": run_id, "stages": [], "stopped": None}

    def stage(name: str, cmd: list[str], n_rows: int | None) -> dict:
        r = run_stage(name, cmd, env, base / "logs" / f"{name.replace(':', '-')}.log", opts.timeout, opts.max_rss)
        r["rows"] = n_rows
        res["stages"].append(r)
        return r

    inp = base / "input"
    gen = stage("generate", [str(VENV / "bin" / "python"), str(ROOT / "bench" / "gen_reviews.py"), "--rows", str(rows),
                             "--out", str(inp), "--format", "2018", "--files", str(opts.files), "--bad-fraction",
                             "0.001", "--seed", "1", "--processes", "2"], rows)
    if not gen["ok"]:
        res["stopped"] = "generate"
        return res
    manifest = json.loads((inp / "manifest.json").read_text())
    res["manifest"] = {k: manifest[k] for k in ("lines", "unique_pairs", "distinct_users", "distinct_items",
                                                "bad_lines_total", "duplicate_lines", "repeated_pair_lines",
                                                "top_1pct_items_share")}
    res["input_bytes"] = du(inp)
    glob = str(inp / "*.jsonl.gz")
    for name, script, args, n in (
            ("load", "spark_jobs/load.py", ["--input", glob], manifest["lines"]),
            ("clean", "spark_jobs/clean.py", [], manifest["expected"]["load"]["reviews"]),
            ("train", "spark_jobs/train.py", ["--engine", opts.engine], manifest["unique_pairs"])):
        r = stage(name, submit(script, [*args, "--run-id", run_id], opts), n)
        if not r["ok"]:
            res["stopped"] = name
            break
    res["load_record"], res["clean_record"] = run_record(base, run_id, "load"), run_record(base, run_id, "clean")
    train_rec = run_record(base, run_id, "train")
    if train_rec:
        res["train"] = {k: train_rec.get(k) for k in ("engine", "seconds", "timings")}
        m = train_rec.get("metrics") or {}
        res["train"]["counts"] = m.get("counts")
        res["train"]["best"] = (m.get("selection") or {}).get("best")
        res["train"]["serving_lists"] = m.get("serving_lists")
        res["train"]["ndcg"] = {"ours": (m.get("test") or {}).get("ndcg@10"),
                                "popularity": ((m.get("baselines") or {}).get("popularity") or {}).get("ndcg@10"),
                                "seed": ((m.get("baselines") or {}).get("seed_explicit_als") or {}).get("ndcg@10")}
    res["reconciliation_problems"] = manifest_differences(manifest, res["load_record"], res["clean_record"])
    res["data_bytes"] = du(base / "data")

    interactions = base / "data" / "train" / run_id / "interactions"
    res["engines"] = {}
    if interactions.is_dir() and not opts.skip_compare:
        for engine in ("implicit", "spark"):
            out = base / f"ials-{engine}.json"
            r = stage(f"ials:{engine}", submit("bench/pipeline_scale.py",
                                               ["engine", "--engine", engine, "--interactions", str(interactions),
                                                "--out", str(out)], opts), None)
            if r["ok"] and out.is_file():
                res["engines"][engine] = json.loads(out.read_text())
                r["rows"] = res["engines"][engine]["interactions_fit"]
            else:
                res["engines"][engine] = {"status": r["status"]}
    if not opts.keep:
        shutil.rmtree(inp, ignore_errors=True)
        shutil.rmtree(base / "data", ignore_errors=True)
        shutil.rmtree(base / "artifacts", ignore_errors=True)
        shutil.rmtree(base / "local", ignore_errors=True)
    return res


# --- the report ----------------------------------------------------------------------------------

def print_report(results: list[dict], opts: argparse.Namespace, started: float, load_before: tuple) -> None:
    import psutil

    print("\nPipeline scale benchmark (each stage a separate spark-submit process; peak RSS of its process tree)")
    print(f"machine: {os.cpu_count()} cores, {psutil.virtual_memory().total / GB:.1f} GB RAM, {platform.platform()}; "
          f"Spark {opts.master}, driver memory {opts.driver_memory}; load average at start "
          f"{load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, at end "
          + "/".join(f"{x:.1f}" for x in os.getloadavg()))
    head = f"{'size':>6}  {'stage':<14}{'rows':>13}{'seconds':>10}{'rows/s':>11}{'peak RSS':>10}  status"
    print(head)
    print("-" * len(head))
    for res in results:
        for s in res["stages"]:
            rows = s.get("rows")
            rate = f"{rows / s['seconds']:,.0f}" if rows and s["ok"] and s["seconds"] else ""
            print(f"{human(res['rows']):>6}  {s['stage']:<14}{(f'{rows:,}' if rows else ''):>13}{s['seconds']:>10.1f}"
                  f"{rate:>11}{s['peak_rss'] / GB:>8.2f}GB  {s['status']}")
    print()
    for res in results:
        m = res.get("manifest") or {}
        tag = human(res["rows"])
        if m:
            print(f"{tag}: {m['lines']:,} lines -> {m['unique_pairs']:,} distinct pairs, {m['distinct_users']:,} users, "
                  f"{m['distinct_items']:,} items (top 1% of items hold {m['top_1pct_items_share']:.0%}); "
                  f"input {res.get('input_bytes', 0) / GB:.2f} GB gz, Parquet + artifacts {res.get('data_bytes', 0) / GB:.2f} GB")
        probs = res.get("reconciliation_problems")
        if res.get("load_record") and res.get("clean_record"):
            print(f"{tag}: reconciliation " + ("= manifest exactly (0 unaccounted rows)" if not probs
                                               else "DIFFERS: " + "; ".join(probs)))
        t = res.get("train")
        if t:
            nd = t.get("ndcg") or {}
            fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
            print(f"{tag}: train engine {t.get('engine')} {t.get('best')}; test NDCG@10 ours {fmt(nd.get('ours'))}, "
                  f"popularity {fmt(nd.get('popularity'))}, seed ALS {fmt(nd.get('seed'))}")
            if t.get("timings"):
                print(f"{tag}: train breakdown (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t["timings"].items()))
        eng = res.get("engines") or {}
        if eng:
            parts = []
            for name in ("implicit", "spark"):
                e = eng.get(name) or {}
                st = next((s for s in res["stages"] if s["stage"] == f"ials:{name}"), None)
                if "test" in e:
                    parts.append(f"{name}: fit {e['fit_seconds']:.0f}s (factors to numpy {e['collect_seconds']:.0f}s), "
                                 f"peak RSS {st['peak_rss'] / GB:.2f} GB, NDCG@10 {e['test']['ndcg@10']:.4f}")
                elif e:
                    parts.append(f"{name}: {e.get('status')}")
            print(f"{tag}: same iALS config {COMPARE} on train+validation -> test: " + "; ".join(parts))
        if res.get("stopped"):
            print(f"{tag}: STOPPED at stage {res['stopped']}")
    extrapolate(results)
    print(f"\npipeline_scale: {time.time() - started:.0f}s in all")


def extrapolate(results: list[dict]) -> None:
    """Linear extrapolation of time per stage to the 233.1M reviews of the 2018 release."""
    done = {}
    for res in results:
        for s in res["stages"]:
            if s["ok"] and s.get("rows"):
                done.setdefault(s["stage"], []).append((s["rows"], s["seconds"], s["peak_rss"]))
    if not done:
        return
    print(f"\nExtrapolation to the 2018 release ({FULL_2018 / 1e6:.1f}M lines), linear in rows from the largest size "
          "measured; exponent = log(t2/t1)/log(n2/n1) between the two largest sizes (1 = linear):")
    total = 0.0
    for stage in ("generate", "load", "clean", "train", "ials:implicit", "ials:spark"):
        pts = sorted(done.get(stage, []))
        if not pts:
            continue
        n, t, _ = pts[-1]
        exp = (math.log(pts[-1][1] / pts[-2][1]) / math.log(pts[-1][0] / pts[-2][0])
               if len(pts) >= 2 and pts[-2][1] > 0 and pts[-1][0] != pts[-2][0] else float("nan"))
        est = t / n * FULL_2018
        if stage in ("load", "clean", "train"):
            total += est
        print(f"  {stage:<14} {t / n * 1e6:8.1f} s per 1M rows (at {human(n)}), exponent {exp:5.2f}  -> "
              f"{est / 3600:7.1f} h for 233.1M rows on this machine")
    print(f"  load + clean + train: {total / 3600:.1f} h on 2 cores, if time stays linear (it is not, where the "
          "exponent is > 1: then this is a lower bound)")
    big = next((r for r in reversed(results) if (r.get("train") or {}).get("timings")), None)
    if big:  # train by phase: the top-N of every user over every item grows with users x items
        n = big["train"]["counts"]["interactions"]
        f = FULL_2018 / n
        parts = []
        served = big["train"].get("serving_lists") or {}
        # every user x every item grows with rows squared; under SERVING_MAX_USERS/ITEMS the listed
        # users (items) stay fixed and only the items scored grow: linear
        capped = bool(served) and (served["users_listed"] < served["users"] or served["items_listed"] < served["items"])
        for phase, sec in big["train"]["timings"].items():
            quadratic = phase.startswith("serving lists") and not capped
            parts.append((phase, sec * (f * f if quadratic else f), quadratic))
        how = (f"capped at {served['users_listed']:,} users and {served['items_listed']:,} items: linear"
               if capped else "users x items: quadratic")
        print(f"  train by phase, from {human(big['rows'])} ({big['train']['engine']}): linear in rows, except the "
              f"serving lists ({how}; evaluation is capped by EVAL_MAX_SCORES):")
        for phase, est, quadratic in parts:
            print(f"    {phase:<55} -> {est / 3600:10.1f} h{'  (quadratic)' if quadratic else ''}")
    # memory: peak = a + b * interactions between the two largest sizes, for stages whose work is the
    # same kind at both (train only if it chose the same engine at both sizes)
    import psutil

    total_mem = psutil.virtual_memory().total
    series = {"ials:implicit": [(n, m) for n, _, m in sorted(done.get("ials:implicit", []))], "train": []}
    train_runs = [(s["rows"], s["peak_rss"], (res.get("train") or {}).get("engine"))
                  for res in results for s in res["stages"] if s["stage"] == "train" and s["ok"]]
    if train_runs:  # only sizes where train chose the same engine as at the largest size
        last = max(train_runs)[2]
        series["train"] = sorted((n, m) for n, m, e in train_runs if e == last)
    for stage, pts in series.items():
        if len(pts) < 2:
            continue
        (n1, m1), (n2, m2) = pts[-2], pts[-1]
        b = (m2 - m1) / (n2 - n1)
        a = m2 - b * n2
        print(f"  {stage} peak RSS ~ {a / GB:.2f} GB + {b:.0f} bytes x interaction (from {human(n1)} and {human(n2)}"
              f"{', engine ' + str(last) if stage == 'train' else ''}) -> {(a + b * FULL_2018) / GB:.0f} GB at 233.1M")
    # where the single-node engine stops: train's own estimate, at the users/items per interaction measured
    big = next((r for r in reversed(results) if (r.get("train") or {}).get("counts")), None)
    if big:
        from spark_jobs.engines import SINGLE_NODE_MEMORY, single_node_bytes

        c = big["train"]["counts"]
        per = single_node_bytes("implicit", c["interactions"], c["users"], c["items"]) / c["interactions"]
        print(f"  single-node iALS in train, estimated (train.single_node_bytes) at {c['users'] / c['interactions']:.3f} "
              f"users and {c['items'] / c['interactions']:.3f} items per interaction (measured at {human(big['rows'])}): "
              f"{per:.0f} bytes x interaction -> {per * FULL_2018 / GB:.0f} GB at 233.1M; auto switches to Spark MLlib "
              f"above {SINGLE_NODE_MEMORY / per / 1e6:.0f}M interactions (SINGLE_NODE_MEMORY_GB = "
              f"{SINGLE_NODE_MEMORY / GB:.1f}), and all of RAM ({total_mem / GB:.1f} GB) holds at most "
              f"{total_mem / per / 1e6:.0f}M")
    print("  assumptions: same 2-core machine and load; synthetic skew as gen_reviews (users ~ rows/5, items ~ rows/15 "
          "id spaces); Spark stages stream partitions, so their memory is bounded by the driver memory setting, "
          "not by the data; disk: input + Parquet scale with rows.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["engine"]:
        ep = argparse.ArgumentParser(prog="pipeline_scale.py engine")
        ep.add_argument("--engine", choices=["implicit", "spark"], required=True)
        ep.add_argument("--interactions", required=True)
        ep.add_argument("--out", required=True)
        return engine_main(ep.parse_args(argv[1:]))
    import psutil

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1m,10m", help="comma-separated line counts, e.g. 100k,1m,10m")
    ap.add_argument("--work", type=Path, help="working folder (default: a new folder under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep generated files and Parquet of each size")
    ap.add_argument("--files", type=int, default=8, help="category files per size")
    ap.add_argument("--engine", default=runs.DEFAULT_ENGINE, choices=runs.ENGINES)
    ap.add_argument("--skip-compare", action="store_true", help="skip the implicit vs Spark MLlib comparison")
    ap.add_argument("--master", default=os.environ.get("SPARK_MASTER", "local[2]"))
    ap.add_argument("--driver-memory", default=get_settings().spark_driver_memory)
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per stage before it is stopped")
    ap.add_argument("--max-rss", type=float, default=0.9 * psutil.virtual_memory().total / GB,
                    help="GB of RSS per stage before it is stopped (default 90%% of RAM)")
    ap.add_argument("--json", type=Path, help="also write every measured number here")
    ap.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                    help="only print the report of earlier runs' --json files (sizes merged, in order)")
    opts = ap.parse_args(argv)
    if opts.report:
        merged = sorted((r for f in opts.report for r in json.loads(f.read_text())), key=lambda r: r["rows"])
        print_report(merged, opts, time.time(), os.getloadavg())
        return 0
    opts.max_rss = int(opts.max_rss * GB)
    sizes = [parse_size(s) for s in opts.sizes.split(",") if s.strip()]
    work = opts.work or Path(tempfile.mkdtemp(prefix="pipeline-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    db = f"bench_scale_{uuid.uuid4().hex[:8]}"
    load_before = os.getloadavg()
    started = time.time()
    print(f"pipeline_scale: sizes {[human(s) for s in sizes]}; work {work}; MongoDB database {db}", flush=True)
    results: list[dict] = []
    bytes_per_row = 1500.0  # input + Parquet + artifacts; re-measured after each size
    try:
        for rows in sizes:
            free = shutil.disk_usage(work).free
            need = rows * bytes_per_row * 1.3
            if need > free:
                results.append({"rows": rows, "stages": [], "stopped": f"disk: need ~{need / GB:.0f} GB, "
                                f"{free / GB:.0f} GB free"})
                print(f"pipeline_scale: {human(rows)} STOPPED before starting: needs ~{need / GB:.0f} GB of disk, "
                      f"{free / GB:.0f} GB free", flush=True)
                break
            print(f"\n=== {human(rows)} lines", flush=True)
            res = run_size(rows, work, db, opts)
            results.append(res)
            used = res.get("input_bytes", 0) + res.get("data_bytes", 0)
            if used:
                bytes_per_row = max(bytes_per_row * 0.5, used / rows)
            if res["stopped"]:
                print(f"pipeline_scale: stopping at {human(rows)}: stage {res['stopped']} failed", flush=True)
                break
    except KeyboardInterrupt:
        print("pipeline_scale: interrupted; reporting what was measured")
    finally:
        try:
            os.environ["MONGO_DB"] = db
            from core import mongo

            mongo.get_client().drop_database(db)
        except Exception as exc:  # the report matters more than the clean-up
            print(f"pipeline_scale: could not drop {db}: {exc}")
    print_report(results, opts, started, load_before)
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if results and not any(r.get("stopped") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
