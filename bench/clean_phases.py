"""Where clean's time goes: each phase of spark_jobs/clean.py timed alone on the same loaded files, in one session.

    .local/venv/bin/python bench/clean_phases.py --raw RAW_DIR [--work DIR] [--repeat 2] [--baseline GIT_REF]

``RAW_DIR`` is what load wrote (e.g. ``bench/ingest_speed.py --keep --work W`` leaves ``W/raw``). Each line
adds one step to the one before, ending in a ``noop`` write (every row and column materialised,
nothing written), so the difference between two lines is that step's cost:

* read: the loaded review columns read from Parquet (the ceiling of anything clean does);
* + window: the latest-per-pair window (clean's one shuffle of the full rows);
* + unescape: HTML references decoded in review text, summary and reviewer name;
* + clean_text: the analysable copies (text_clean, summary_clean): clean_reviews as the job runs it;
* write: clean_reviews written as partitioned Parquet, without and with the dropped rows counted
  as they are written (the job's write);
* counts: the reconciliation's other reads (raw count, read-back);
* clean(): the whole job, and with ``--baseline`` the job as it was at GIT_REF, same files, same session.

Rates are rows of the loaded reviews per second, with the load average beside each (the machine is
shared: compare within one run; ``--repeat`` runs the list again to show the noise).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def loadavg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def timed(name: str, n: int, fn) -> float:
    la = loadavg()
    t = time.time()
    fn()
    s = time.time() - t
    print(f"  {name:<52}{n:>11,} rows {s:>7.1f} s {n / s:>10,.0f} rows/s   load avg {la}", flush=True)
    return s


def noop(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def _git_module(ref: str, path: str, name: str, work: Path, source=lambda s: s):
    file = work / f"{name}.py"
    file.write_text(source(subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True,
                                          capture_output=True, text=True).stdout))
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def old_clean(ref: str, work: Path):
    """clean.py as it was at ``ref``, with text_clean.py as it was then too (not today's)."""
    _git_module(ref, "spark_jobs/text_clean.py", "old_text_clean", work)
    return _git_module(ref, "spark_jobs/clean.py", "old_clean", work,
                       lambda s: s.replace("from spark_jobs.text_clean import", "from old_text_clean import"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True, help="load's output folder")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--baseline", metavar="GIT_REF", help="also time clean() as it was at this commit")
    ap.add_argument("--jobs-only", action="store_true", help="phases in the first run only, then only the jobs")
    ap.add_argument("--no-phases", action="store_true", help="only the jobs (at full scale the phases take long)")
    opts = ap.parse_args(argv)
    work = opts.work or Path(tempfile.mkdtemp(prefix="clean-phases-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DATA_DIR", str(work / "data"))

    from spark_jobs import clean as job
    from spark_jobs.common import spark_session

    spark = spark_session("bench-clean-phases", master=os.environ.get("SPARK_MASTER", "local[2]"))
    raw = spark.read.parquet(f"{opts.raw}/reviews").select(*job._REVIEW_COLS)
    n = raw.count()  # warm: JVM, the files in the page cache
    baseline = old_clean(opts.baseline, work) if opts.baseline else None
    text_cols = ("review_text", "summary", "reviewer_name")
    print(f"clean_phases: {n:,} loaded reviews from {opts.raw}; {os.cpu_count()} cores; "
          f"shuffle partitions {spark.conf.get('spark.sql.shuffle.partitions')}; load avg {loadavg()}", flush=True)
    for i in range(opts.repeat):
        print(f"run {i + 1}", flush=True)
        if not opts.no_phases and (i == 0 or not opts.jobs_only):
            phases(spark, job, raw, n, work, text_cols)
        shutil.rmtree(work / "clean", ignore_errors=True)
        timed("clean() whole job (this tree)", n, lambda: job.clean(spark, opts.raw, str(work / "clean"), "bench"))
        if baseline:
            shutil.rmtree(work / "old_clean", ignore_errors=True)
            timed(f"clean() whole job at {opts.baseline}", n,
                  lambda: baseline.clean(spark, opts.raw, str(work / "old_clean"), "bench-old"))
    spark.stop()
    if not opts.work:
        shutil.rmtree(work, ignore_errors=True)
    print(f"clean_phases: done; load avg {loadavg()}")
    return 0


def phases(spark, job, raw, n, work, text_cols) -> None:
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    from spark_jobs import hadoop_fs
    from spark_jobs.text_clean import clean_text_col, unescape_html_col

    timed("read -> noop", n, lambda: noop(raw))
    timed("+ window (latest per pair) -> noop", n, lambda: noop(job.latest_per_pair(job.tag_reviews(raw))))
    timed("+ unescape (3 columns) -> noop", n, lambda: noop(job.latest_per_pair(job.tag_reviews(raw)).withColumns(
        {c: unescape_html_col(F.col(c)) for c in text_cols})))
    timed("read + clean_text only (no window, no unescape) -> noop", n, lambda: noop(raw.select(
        clean_text_col(F.col("review_text")).alias("a"), clean_text_col(F.col("summary")).alias("b"))))
    old = sys.modules.get("old_text_clean")
    if old is not None:
        timed("read + clean_text only, as at the baseline -> noop", n, lambda: noop(raw.select(
            old.clean_text_col(F.col("review_text")).alias("a"), old.clean_text_col(F.col("summary")).alias("b"))))
    timed("+ clean_text = clean_reviews -> noop", n, lambda: noop(job.clean_reviews(raw)))
    out = str(work / "phase_out")
    timed("clean_reviews -> partitioned Parquet write", n,
          lambda: hadoop_fs.write_partitioned(job.clean_reviews(raw), out, "category", plain=job.PLAIN_COLUMNS))
    timed("clean_reviews, dropped rows counted -> partitioned Parquet write", n,
          lambda: hadoop_fs.write_partitioned(job.clean_reviews(raw, observation=Observation()), out, "category",
                                          plain=job.PLAIN_COLUMNS))
    timed("counts: raw count", n, lambda: raw.count())
    timed("counts: read back the written rows", n, lambda: spark.read.parquet(out).count())


if __name__ == "__main__":
    sys.exit(main())
