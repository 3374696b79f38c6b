"""Manifest: the exact counts a generated folder holds, and the check of a pipeline run against them.

``manifest["expected"]`` is what spark_jobs/load.py and spark_jobs/clean.py must report for exactly
these files (lines in, reviews, products, quarantined with reasons; duplicates and repeated pairs
clean drops); ``manifest_differences`` compares their reconciliation records with it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def manifest_differences(manifest: dict, load_rec: dict | None, clean_rec: dict | None) -> list[str]:
    """Differences between what was generated and what the load and clean jobs reported (empty = exact).

    ``load_rec``/``clean_rec`` are the jobs' reconciliation records (a missing one is not compared).
    """
    problems = []
    exp_l, exp_c = manifest["expected"]["load"], manifest["expected"]["clean"]
    if load_rec:
        got = load_rec.get("counts_out", {})
        want = {"reviews": exp_l["reviews"], "products": exp_l.get("products", 0), "quarantined": exp_l["quarantined"]}
        if load_rec.get("counts_in", {}).get("lines") != exp_l["lines"] or got != want:
            problems.append(f"load: {load_rec.get('counts_in')} -> {got}, manifest {exp_l['lines']} -> {want}")
        if load_rec.get("quarantine_reasons") != exp_l["quarantine_reasons"]:
            problems.append(f"load reasons {load_rec.get('quarantine_reasons')} != {exp_l['quarantine_reasons']}")
    if clean_rec:
        got = clean_rec.get("counts_out", {})
        for key, want in (("reviews", exp_c["reviews_out"]), ("exact duplicate lines", exp_c["exact duplicate lines"]),
                          ("repeated user-item pairs", exp_c["repeated user-item pairs"])):
            if got.get(key) != want:
                problems.append(f"clean {key}: {got.get(key)} != manifest {want}")
        for key in ("products", "duplicate product records"):
            if key in exp_c and got.get(key) != exp_c[key]:
                problems.append(f"clean {key}: {got.get(key)} != manifest {exp_c[key]}")
    return problems


def print_summary(m: dict[str, Any], out: Path) -> None:
    print(f"wrote {len(m['files'])} file(s) in {m['seconds']}s to {out} (format {m['format']}, seed {m['seed']})")
    rows = [("lines", m["lines"]), ("good lines", m["good_lines"]),
            ("  of which exact duplicate lines", m["duplicate_lines"]),
            ("  of which repeated user-item pairs", m["repeated_pair_lines"]),
            ("  unique user-item pairs", m["unique_pairs"]),
            ("bad lines", m["bad_lines_total"])] + [(f"  {k}", v) for k, v in m["bad_lines"].items()]
    rows += [("distinct users", m["distinct_users"]), ("distinct items", m["distinct_items"])]
    for label, v in rows:
        print(f"  {label:<38}{v:>14,}")
    print(f"  top 1% of items hold {m['top_1pct_items_share']:.1%} of reviews; stars 1..5: "
          + ", ".join(f"{m['rating_counts'][str(s)] / max(1, m['good_lines']):.0%}" for s in range(1, 6)))
    print(f"  manifest: {out / 'manifest.json'}")
