"""The big run (issue 12, item 8): a generated release through the whole pipeline, stage by stage.

    python -m bench.gen --scale 0.22 --out /big/data                       # ~51M review lines
    .local/venv/bin/python bench/big_run.py --data /big/data --work /big/run
    .local/venv/bin/python bench/big_run.py --data /big/data --work /big/run   # again: resumes
    .local/venv/bin/python bench/big_run.py --report /big/run/result.json --smaller /small/run/result.json

Each stage (load, clean, mongo_load, eda, train, publish) is its own ``spark-submit`` process, as in
bin/pipeline, with its wall time and the peak RSS of its process tree sampled (bench/pipeline_scale's
``run_stage``). A stage whose run record says "ok" and whose measurement is in ``result.json`` is
skipped, so a run too long for one sitting resumes where it stopped (the same records as
``bin/pipeline --resume``). The report checks load and clean against the generator's manifest and
gives test NDCG@10 against popularity. With ``--smaller`` (the same benchmark on a smaller release)
it extrapolates each stage to the 233.1M-line release from the growth measured between the two
sizes, t2 * (N / n2) ** e with e = log(t2 / t1) / log(n2 / n1), rather than assuming linear time.
Needs the MongoDB server (``bin/services start mongo``); the data goes to its own database.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen.manifest import manifest_differences  # noqa: E402
from bench.pipeline_scale import FULL_2018, GB, ROOT, VENV, run_record, run_stage, stage_env, submit  # noqa: E402
from core.runs import DEFAULT_ENGINE, STAGES  # noqa: E402
from core.settings import get_settings  # noqa: E402
from spark_jobs.run_records import FINISHED  # noqa: E402


def stage_args(stage: str, data: Path, work: Path, run_id: str, engine: str = DEFAULT_ENGINE) -> list[str]:
    if stage == "load":  # the generator's files, not its manifest.json (load would quarantine its lines)
        manifest = json.loads((data / "manifest.json").read_text())
        return [arg for f in manifest["files"] for arg in ("--input", str(data / f["path"]))]
    if stage == "train":
        return ["--engine", engine]
    if stage == "publish":
        train = run_record(work, run_id, "train") or {}
        return ["--version", train["version"], "--force"]  # the gate compares with a previous version: none here
    return []


def run(opts: argparse.Namespace) -> dict:
    work: Path = opts.work
    (work / "logs").mkdir(parents=True, exist_ok=True)
    result_path = work / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {
        "data": str(opts.data), "run_id": opts.run_id or f"big-{opts.data.name}", "stages": {}}
    # the report's size, kept beside the timings: the data (and its manifest) is often deleted after
    if (manifest := manifest_of(result)) is not None:
        result.setdefault("review_lines", manifest["review_lines"])
    run_id = result["run_id"]
    env = stage_env(work, opts.db or f"big_{opts.data.name}")
    for stage in opts.stages:
        rec = run_record(work, run_id, stage)
        if stage in result["stages"] and rec and rec.get("status") in FINISHED:  # publish: its decision
            print(f"  {stage}: done in an earlier sitting ({result['stages'][stage]['seconds']:.0f} s); skipped")
            continue
        cmd = submit(f"spark_jobs/{stage}.py", [*stage_args(stage, opts.data, work, run_id, opts.engine),
                                                   "--run-id", run_id], opts)
        since = time.time()
        r = run_stage(stage, cmd, env, work / "logs" / f"{stage}.log", opts.timeout, int(opts.max_rss * GB))
        r["load_average_after"] = [round(x, 1) for x in os.getloadavg()]
        result["stages"][stage] = r
        result_path.write_text(json.dumps(result, indent=2))
        if not r["ok"]:
            # as bin/pipeline: a job killed half-way (out of memory, or by --timeout) says so in its record
            subprocess.run([str(VENV / "bin" / "python"), "-m", "spark_jobs.run_records", "exited", run_id, stage,
                            str(r["exit_status"]), "--since", str(since)], env=env, cwd=str(ROOT), check=False)
            print(f"big_run: stopped at {stage}: {r['status']}")
            break
    return result


def _stage_rows(result: dict, stage: str, work: Path) -> int | None:
    rec = run_record(work, result["run_id"], stage) or {}
    if stage == "load":
        return (rec.get("counts_in") or {}).get("lines")
    if stage in ("clean", "mongo_load"):
        return (rec.get("counts_in") or {}).get("reviews")
    if stage == "train":
        return ((rec.get("metrics") or {}).get("counts") or {}).get("interactions")
    return None


def manifest_of(result: dict) -> dict | None:
    """The generator's manifest of the run's data (None once the data is deleted, as a 50M-review
    release's 20 GB usually is after its run)."""
    path = Path(result["data"]) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def recorded_lines(result: dict) -> int | None:
    """The run's size as the release counts it (233.1M for the whole release): recorded in
    result.json by the run, else its manifest's; None once neither is left."""
    if result.get("review_lines"):
        return result["review_lines"]
    manifest = manifest_of(result)
    return manifest["review_lines"] if manifest else None


def review_lines(result: dict, work: Path) -> int | None:
    """:func:`recorded_lines`, else the lines load read (a little more: the generator's duplicate
    and bad lines)."""
    return recorded_lines(result) or _stage_rows(result, "load", work)


def growth(result: dict, work: Path, smaller: dict, smaller_work: Path) -> tuple[float, str]:
    """n1 / n2, the smaller run's size over this one's, and what it was measured in: the review
    lines both runs recorded, else (an older run's manifest deleted with its data) the lines both
    loads read, a ratio in one unit either way."""
    n1, n2 = recorded_lines(smaller), recorded_lines(result)
    if n1 and n2:
        return n1 / n2, "review lines"
    n1, n2 = _stage_rows(smaller, "load", smaller_work), _stage_rows(result, "load", work)
    if not (n1 and n2):
        raise SystemExit("big_run: neither the runs' manifests nor both loads' records give their sizes")
    return n1 / n2, "lines load read (a manifest is gone)"


def report(result: dict, smaller: dict | None, work: Path, smaller_work: Path | None = None) -> None:
    """Print the run's table; ``work`` is the run's folder (its result.json and run records), and
    ``smaller_work`` the smaller run's."""
    manifest = manifest_of(result)
    lines = review_lines(result, work)
    print(f"\nBig run: {lines:,} review lines from {result['data']} (run {result['run_id']})")
    head = f"{'stage':<12}{'rows in':>14}{'seconds':>10}{'rows/s':>10}{'peak RSS':>10}  status"
    print(head + "\n" + "-" * len(head))
    for stage, r in result["stages"].items():
        rows = _stage_rows(result, stage, work)
        rate = f"{rows / r['seconds']:,.0f}" if rows and r["ok"] else ""
        print(f"{stage:<12}{(f'{rows:,}' if rows else ''):>14}{r['seconds']:>10.0f}{rate:>10}"
              f"{r['peak_rss'] / GB:>8.2f}GB  {r['status']} (load after {r.get('load_average_after')})"
              + (f"; executors' peak RSS {r['executors_peak_rss'] / GB:.2f} GB" if r.get("executors_peak_rss") else ""))
    load, clean = run_record(work, result["run_id"], "load"), run_record(work, result["run_id"], "clean")
    if load and clean:
        probs = manifest_differences(manifest, load, clean) if manifest else ["the manifest is gone (data deleted)"]
        print("reconciliation with the manifest: " + ("exact (0 unaccounted rows)" if not probs else "; ".join(probs)))
    train = run_record(work, result["run_id"], "train")
    if train and train.get("status") == "ok":
        m = train["metrics"]
        pop = (m.get("baselines") or {}).get("popularity") or {}
        print(f"train: engine {train['engine']}, {m['counts']}; test NDCG@10 ours {m['test']['ndcg@10']:.4f}, "
              f"popularity {pop.get('ndcg@10', float('nan')):.4f}")
        if train.get("timings"):
            print("train by phase (s): " + ", ".join(f"{k} {v:.0f}" for k, v in train["timings"].items()))
        print(f"serving lists: {m.get('serving_lists')}")
    if smaller:
        q, unit = growth(result, work, smaller, smaller_work or work)
        print(f"\nExtrapolation to {FULL_2018 / 1e6:.1f}M lines from the growth between {q * lines:,.0f} and "
              f"{lines:,} lines (their ratio from the {unit}; t = t2 * (N/n2)^e, e = log(t2/t1)/log(n2/n1); "
              "peak RSS linear through both points):")
        total = 0.0
        for stage, r2 in result["stages"].items():
            r1 = smaller["stages"].get(stage)
            if not (r1 and r1["ok"] and r2["ok"]):
                continue
            e = math.log(r2["seconds"] / r1["seconds"]) / math.log(1 / q)
            t = r2["seconds"] * (FULL_2018 / lines) ** e
            b = (r2["peak_rss"] - r1["peak_rss"]) / (lines * (1 - q))
            mem = r2["peak_rss"] + b * (FULL_2018 - lines)
            total += t
            print(f"  {stage:<12} e = {e:4.2f}: {t / 3600:6.1f} h; peak RSS {mem / GB:6.1f} GB "
                  f"({b:.0f} bytes per line above {r2['peak_rss'] / GB:.1f} GB)")
        print(f"  all stages: {total / 3600:.1f} h on this machine")


def main(argv: list[str] | None = None) -> int:
    import psutil

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a generated release (python -m bench.gen --scale ...)")
    ap.add_argument("--work", type=Path, help="where the run's data, artifacts, logs and result.json go")
    ap.add_argument("--run-id")
    ap.add_argument("--db", help="MongoDB database (default big_<data folder name>)")
    ap.add_argument("--stages", type=lambda s: s.split(","), default=list(STAGES))
    ap.add_argument("--master", default=os.environ.get("SPARK_MASTER", "local[2]"))
    ap.add_argument("--engine", default=DEFAULT_ENGINE, help="train's engine (spark: MLlib, whatever the size)")
    ap.add_argument("--driver-memory", default=get_settings().spark_driver_memory)
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per stage before it is stopped")
    ap.add_argument("--max-rss", type=float, default=0.9 * psutil.virtual_memory().total / GB, help="GB")
    ap.add_argument("--report", type=Path, help="only print the report of this result.json")
    ap.add_argument("--smaller", type=Path, help="result.json of the same benchmark on a smaller release")
    a = ap.parse_args(argv)
    smaller = json.loads(a.smaller.read_text()) if a.smaller else None
    if a.report:
        report(json.loads(a.report.read_text()), smaller, a.report.parent, a.smaller and a.smaller.parent)
        return 0
    if not (a.data and a.work):
        ap.error("--data and --work are needed to run")
    report(run(a), smaller, a.work, a.smaller and a.smaller.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
