"""The generator's command line: ``--scale`` writes the 2018 release's shape, ``--rows`` fuzz files."""
from __future__ import annotations

import argparse

from bench.gen.formats import FORMATS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gen",
                                description="Write synthetic Amazon review files with an exact manifest.")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--scale", type=float, help="the 2018 release's shape: 1.0 = 233.1M review lines in 29 "
                                                   "category files + their metadata (0.001 = 233k)")
    size.add_argument("--rows", type=int, help="fuzz files: lines to write in all (good + duplicate + bad)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--processes", type=int, help="worker processes (default: cores)")
    p.add_argument("--compresslevel", type=int, default=1, choices=range(0, 10), metavar="0-9",
                   help="gzip level; 0 writes uncompressed files (--scale: plain .json)")
    p.add_argument("--bad-fraction", type=float, default=0.0, help="share of lines that are broken")
    p.add_argument("--duplicate-fraction", type=float, help="share of lines that are exact copies "
                                                              "(default 0.01 with --rows, 0 with --scale)")
    fuzz = p.add_argument_group("fuzz files (--rows)")
    fuzz.add_argument("--format", choices=FORMATS, default="2018")
    fuzz.add_argument("--users", type=int, help="size of the user id space (default rows/5)")
    fuzz.add_argument("--items", type=int, help="size of the item id space (default rows/15)")
    fuzz.add_argument("--files", type=int, default=1, help="number of files (= categories); one process each")
    fuzz.add_argument("--repeat-fraction", type=float, default=0.01, help="share of good lines re-rating a pair")
    a = p.parse_args(argv)
    try:
        if a.scale is not None:
            from bench.gen.release import generate_release

            generate_release(a.scale, a.out, seed=a.seed, processes=a.processes, compresslevel=a.compresslevel,
                             duplicate_fraction=a.duplicate_fraction or 0.0, bad_fraction=a.bad_fraction,
                             quiet=False)
        else:
            from bench.gen.fuzz import generate

            generate(a.rows, a.out, a.format, users=a.users, items=a.items, seed=a.seed, files=a.files,
                     bad_fraction=a.bad_fraction,
                     duplicate_fraction=0.01 if a.duplicate_fraction is None else a.duplicate_fraction,
                     repeat_fraction=a.repeat_fraction, processes=a.processes, compresslevel=a.compresslevel,
                     quiet=False)
    except ValueError as exc:
        p.error(str(exc))
    return 0
