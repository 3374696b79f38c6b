"""Generation rate of bench/gen: the 2018 release shape against the fuzz generator and a gzip ceiling.

    .local/venv/bin/python bench/gen_rate.py [--scales 0.002,0.02] [--processes 2] [--work DIR]

For each scale, in the same run and on the same machine load: ``generate_release`` with gzip level
1 and uncompressed (level 0), and the fuzz generator (bench/gen/fuzz.py) writing the same number of
review lines into 29 files. Each runs in its own process, so its peak RSS (parent and worker
processes, from getrusage) is its own: the release generator's must not grow with the scale. The
ceiling is what writing the same bytes costs without generating them: gzip level 1 of the release's
uncompressed output on one core, times the processes. The summary extrapolates the release rate to
scale 0.25 (58.3M review lines) and 1.0.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(args: argparse.Namespace) -> int:
    """Run one generation in this process and print its numbers as JSON (peak RSS included)."""
    started = time.time()
    if args.kind == "fuzz":
        from bench.gen.fuzz import generate

        m = generate(args.rows, args.out, "2018", files=29, processes=args.processes, compresslevel=1, seed=1)
        lines = m["lines"]
    else:
        from bench.gen.release import generate_release

        m = generate_release(args.scale, args.out, seed=1, processes=args.processes,
                             compresslevel=0 if args.kind == "release-plain" else 1)
        lines = m["lines"]
    seconds = time.time() - started
    print(json.dumps({"lines": lines, "review_lines": m.get("review_lines", lines), "seconds": seconds,
                      "bytes": sum(p.stat().st_size for p in Path(args.out).iterdir()),
                      "rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
    return 0


def run(kind: str, out: Path, processes: int, scale: float = 0.0, rows: int = 0) -> dict:
    cmd = [sys.executable, "-m", "bench.gen_rate", "--child", kind, "--out", str(out), "--processes", str(processes),
           "--scale", str(scale), "--rows", str(rows)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def gzip_ceiling(folder: Path, processes: int) -> float:
    """Lines/s of gzip level 1 alone over the uncompressed files (one core), times ``processes``."""
    lines = size = 0
    started = time.process_time()
    for p in sorted(folder.glob("*.json")):
        data = p.read_bytes()
        lines += data.count(b"\n")
        size += len(data)
        c = zlib.compressobj(1, zlib.DEFLATED, 31)
        for a in range(0, len(data), 1 << 22):
            c.compress(data[a:a + (1 << 22)])
        c.flush()
    return lines / max(time.process_time() - started, 1e-9) * processes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="0.002,0.02")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--child", choices=("release", "release-plain", "fuzz"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--scale", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.kind = args.child
        return child(args)

    work = args.work or Path(tempfile.mkdtemp(prefix="gen-rate-"))
    print(f"gen_rate: {os.cpu_count()} cores, processes {args.processes}; load average at start "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    head = f"{'scale':>7}  {'generator':<26}{'lines':>12}{'seconds':>9}{'lines/s':>10}{'MB out':>8}{'RSS parent':>11}{'RSS worker':>11}"
    rows, best = [], None
    for scale in [float(s) for s in args.scales.split(",")]:
        gz = run("release", work / "gz", args.processes, scale=scale)
        plain = run("release-plain", work / "plain", args.processes, scale=scale)
        ceiling = gzip_ceiling(work / "plain", args.processes)
        fuzz = run("fuzz", work / "fuzz", args.processes, rows=gz["review_lines"])
        for name, r in (("release, gzip 1", gz), ("release, uncompressed", plain), ("fuzz (old), gzip 1", fuzz)):
            rows.append((scale, name, r))
        rows.append((scale, "ceiling: gzip 1 alone", {"lines": plain["lines"], "rate": ceiling}))
        best = gz
        for d in ("gz", "plain", "fuzz"):
            shutil.rmtree(work / d, ignore_errors=True)
    print(head)
    print("-" * len(head))
    for scale, name, r in rows:
        if "rate" in r:
            print(f"{scale:>7g}  {name:<26}{r['lines']:>12,}{'':>9}{r['rate']:>10,.0f}")
            continue
        print(f"{scale:>7g}  {name:<26}{r['lines']:>12,}{r['seconds']:>9.1f}{r['lines'] / r['seconds']:>10,.0f}"
              f"{r['bytes'] / 1e6:>8.0f}{r['rss_parent_mb']:>10.0f}M{r['rss_worker_mb']:>10.0f}M")
    rate = best["lines"] / best["seconds"]
    per_scale = best["lines"] / float(args.scales.split(",")[-1])
    for target in (0.25, 1.0):
        print(f"estimate at scale {target:g} ({per_scale * target / 1e6:.1f}M lines, gzip 1, this machine and load): "
              f"{per_scale * target / rate / 3600:.2f} h at {rate:,.0f} lines/s; output ~"
              f"{best['bytes'] / best['lines'] * per_scale * target / 1e9:.0f} GB")
    print("load average at end " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
