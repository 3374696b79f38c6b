"""Measure the skew of real Amazon review files: the numbers bench/gen/release.py is built from.

    python -m bench.gen.measure [--data ../shared/data]

The shared samples are 5-core files (every user and product has >= 5 reviews) of the 2018 and 2014
releases and one complete 2023 category. A k-core cuts the head of the per-user and per-product
count distributions, not their tails, so the tail exponents are fitted above the core's floor
(counts >= 5, discrete power-law maximum likelihood, Clauset et al. 2009 eq. 3.7), and the means
come from the release's own totals (233.1M reviews, 43.5M users, 15.2M products). Exact duplicate
lines (an upstream artefact) are counted once.
"""
from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REVIEW_FILES_2018 = ("amazon2018_all_beauty_5.jsonl.gz", "amazon2018_amazon_fashion_5.jsonl.gz",
                     "amazon2018_appliances_5.jsonl.gz", "amazon2018_gift_cards_5.jsonl.gz")
CORE_FILES = REVIEW_FILES_2018 + ("amazon2014_musical_instruments_5.jsonl.gz",)
META_2018 = "amazon2018_meta_gift_cards.jsonl.gz"


def _distinct(path: Path) -> list[dict]:
    seen, rows = set(), []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip() and line not in seen:
                seen.add(line)
                rows.append(json.loads(line))
    return rows


def power_law_alpha(counts: np.ndarray, xmin: int) -> float:
    """Discrete power-law exponent of the counts >= xmin (continuous approximation with the -1/2 shift)."""
    x = counts[counts >= xmin].astype(np.float64)
    return float(1 + len(x) / np.log(x / (xmin - 0.5)).sum())


def measure(data: Path) -> dict:
    out: dict = {"files": {}}
    per_user, per_item = [], []
    stars_share, lengths = [], {r: [] for r in range(1, 6)}
    verified = votes = image = style = name_missing = 0
    vote_values, n_2018 = [], 0
    for name in CORE_FILES:
        rows = _distinct(data / name)
        users = Counter(r["reviewerID"] for r in rows)
        items = Counter(r["asin"] for r in rows)
        per_user.append(np.array(list(users.values())))
        per_item.append(np.array(list(items.values())))
        out["files"][name] = {"reviews": len(rows), "users": len(users), "items": len(items)}
        if not name.startswith("amazon2018"):
            continue
        n_2018 += len(rows)
        st = Counter(int(r["overall"]) for r in rows)
        stars_share.append([st[s] / len(rows) for s in range(1, 6)])
        for r in rows:
            lengths[int(r["overall"])].append(len(r.get("reviewText", "")))
            verified += bool(r.get("verified"))
            image += "image" in r
            style += "style" in r
            name_missing += "reviewerName" not in r
            if "vote" in r:
                votes += 1
                vote_values.append(int(str(r["vote"]).replace(",", "")))
    u, i = np.concatenate(per_user), np.concatenate(per_item)
    out["reviews_per_user_tail_alpha"] = round(power_law_alpha(u, 5), 3)
    out["reviews_per_item_tail_alpha"] = round(power_law_alpha(i, 5), 3)
    out["star_share_2018_mean_of_files"] = [round(x, 4) for x in np.mean(stars_share, axis=0)]
    out["text_chars_2018"] = {s: {"median": float(np.median(v)),
                                  "log_sd": round(float(np.std(np.log1p(v))), 3)} for s, v in lengths.items()}
    out["verified_share_2018"] = round(verified / n_2018, 4)
    out["vote_share_2018"] = round(votes / n_2018, 4)
    vv = np.array(vote_values)
    out["vote_values_2018"] = {"median": float(np.median(vv)), "p90": float(np.percentile(vv, 90)),
                               "max": int(vv.max()), "tail_alpha": round(power_law_alpha(vv, 2), 3)}
    out["image_share_2018"] = round(image / n_2018, 4)
    out["style_share_2018"] = round(style / n_2018, 4)
    # The one complete (not k-cored) category: the head of the distributions.
    full = _distinct(data / "amazon2023_subscription_boxes.jsonl.gz")
    fu = np.array(list(Counter(r["user_id"] for r in full).values()))
    fi = np.array(sorted(Counter(r["parent_asin"] for r in full).values(), reverse=True))
    out["complete_2023_subscription_boxes"] = {
        "reviews": len(full), "users": len(fu), "items": len(fi),
        "one_review_user_share": round(float(np.mean(fu == 1)), 4),
        "top_1pct_items_share": round(float(fi[: max(1, len(fi) // 100)].sum() / len(full)), 4),
        "top_20pct_items_share": round(float(fi[: max(1, len(fi) // 5)].sum() / len(full)), 4),
        "item_tail_alpha": round(power_law_alpha(fi, 5), 3)}
    meta = _distinct(data / META_2018)
    out["meta_2018_gift_cards"] = {
        "products": len(meta),
        "price_nonempty_share": round(sum(bool(m.get("price")) for m in meta) / len(meta), 4),
        "brand_nonempty_share": round(sum(bool(m.get("brand")) for m in meta) / len(meta), 4),
        "image_nonempty_share": round(sum(bool(m.get("image")) for m in meta) / len(meta), 4),
        "also_buy_nonempty_share": round(sum(bool(m.get("also_buy")) for m in meta) / len(meta), 4),
        "also_view_nonempty_share": round(sum(bool(m.get("also_view")) for m in meta) / len(meta), 4),
        "key_order": list(meta[0].keys())}
    return out


# Reviews kept by the release's published per-category 5-cores, against the category's reviews: the
# users' loyalty to one category that the generator must reproduce. The four small ones are the
# line counts of the shared 5-core files; Electronics is the release's own table.
RELEASE_FIVE_CORE = {"Electronics": (6_739_590, 20_994_353), "All_Beauty": (5_269, 371_345),
                     "AMAZON_FASHION": (3_176, 883_636), "Appliances": (2_277, 602_777),
                     "Gift_Cards": (2_972, 147_194)}


def k_core_size(users: np.ndarray, items: np.ndarray, k: int = 5) -> int:
    """Pairs left after repeatedly dropping users and items with fewer than ``k`` pairs (the k-core)."""
    users = np.unique(users, return_inverse=True)[1]
    items = np.unique(items, return_inverse=True)[1]
    keep = np.ones(len(users), bool)
    while True:
        ok = keep & (np.bincount(users[keep], minlength=users.max(initial=0) + 1)[users] >= k) & (
            np.bincount(items[keep], minlength=items.max(initial=0) + 1)[items] >= k)
        if ok.sum() == keep.sum():
            return int(ok.sum())
        keep = ok


def five_core_shares(generated: Path, categories=tuple(RELEASE_FIVE_CORE)) -> dict[str, dict]:
    """Per category of a generated release (bench/gen --scale): the share of its distinct pairs its
    5-core keeps, beside the release's."""
    out = {}
    for name in categories:
        path = next(generated.glob(f"{name}.json*"))
        opener = gzip.open if path.suffix == ".gz" else open
        pairs = set()
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                    pairs.add((r["reviewerID"], r["asin"]))
                except (ValueError, KeyError, TypeError):
                    continue  # the generator's deliberately broken lines
        users, items = (np.array(x) for x in zip(*pairs)) if pairs else (np.array([]), np.array([]))
        kept, total = RELEASE_FIVE_CORE[name]
        out[name] = {"pairs": len(pairs), "five_core": k_core_size(users, items) if pairs else 0,
                     "release_share": round(kept / total, 4)}
        out[name]["share"] = round(out[name]["five_core"] / max(1, len(pairs)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--five-cores", type=Path, metavar="GENERATED",
                   help="instead: the 5-core shares of a generated release's categories beside the release's")
    a = p.parse_args(argv)
    print(json.dumps(five_core_shares(a.five_cores) if a.five_cores else measure(a.data), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
