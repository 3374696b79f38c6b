"""The synthetic review generator's historical entry point; the code lives in the bench/gen/ package.

    python bench/gen_reviews.py --rows N --out DIR [--format 2018] [--files K] ...   # fuzz files
    python bench/gen_reviews.py --scale 0.001 --out DIR                               # 2018 release shape
    (same as ``python -m bench.gen ...``)
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the repository
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen.cli import main  # noqa: E402
from bench.gen.formats import BAD_KINDS, FORMATS, LOAD_REASON, TIME_RANGE  # noqa: E402,F401
from bench.gen.fuzz import generate  # noqa: E402,F401
from bench.gen.manifest import manifest_differences  # noqa: E402,F401
from bench.gen.release import generate_release  # noqa: E402,F401
from bench.gen.sampling import split_counts  # noqa: E402,F401

__all__ = ["BAD_KINDS", "FORMATS", "LOAD_REASON", "TIME_RANGE", "generate", "generate_release", "main",
           "manifest_differences", "split_counts"]

if __name__ == "__main__":
    sys.exit(main())
