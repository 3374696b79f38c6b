"""bench/gen/release.py: files of the 2018 release's shape, counted exactly, deterministic, skewed as measured.

Every count in the manifest is recounted here from the written files by an independent parser
(tests/unit/test_gen_reviews.py's ``classify``), the fields are compared with the real 2018 lines
shipped in data/samples, and the proportions with the release's table and the measured parameters.
"""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from bench.gen import release as rel
from bench.gen.formats import BAD_KINDS
from tests.unit.test_gen_reviews import classify

DATA = Path(__file__).resolve().parents[2] / "data"
REAL_2018 = DATA / "samples" / "amazon2018_all_beauty_5.jsonl.gz"
REAL_META = DATA / "demo" / "amazon2018_meta_gift_cards.jsonl.gz"
SCALE = 0.0003  # ~70k review lines, 13k users, 4.6k products


def _read(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="ascii") as f:
        text = f.read()
    assert text == "" or text.endswith("\n")
    return text[:-1].split("\n") if text else []


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    m = rel.generate_release(SCALE, out, seed=5, processes=2, duplicate_fraction=0.01, bad_fraction=0.01)
    files = {}
    for f in m["files"]:
        files[f["path"]] = _read(out / f["path"])
    return out, m, files


def test_files_are_the_release_categories_with_metadata(generated):
    out, m, files = generated
    names = [c for c, _, _ in rel.RELEASE_CATEGORIES]
    assert len(names) == 29 and names[0] == "AMAZON_FASHION" and names[-1] == "Video_Games"
    on_disk = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    want = sorted([f"{c}.json.gz" for c in names] + [f"meta_{c}.json.gz" for c in names] + ["manifest.json"])
    assert on_disk == want
    assert sorted(files) == sorted(w for w in want if w != "manifest.json")
    assert m == json.loads((out / "manifest.json").read_text())


def test_manifest_counts_match_the_written_lines(generated):
    _, m, files = generated
    kinds, per_cat_pairs = Counter(), {}
    good_lines, pairs, users, reviewed, stars = [], set(), set(), set(), Counter()
    meta_asins: dict[str, set[str]] = {}
    for f in m["files"]:
        lines = files[f["path"]]
        assert f["lines"] == len(lines), f["path"]
        if f["kind"] == "metadata":
            objs = [json.loads(x) for x in lines]
            meta_asins[f["category"]] = {o["asin"] for o in objs}
            assert len(meta_asins[f["category"]]) == len(objs) == f["products"]
            continue
        cat_pairs = set()
        for line in lines:
            kind, obj = classify("2018", line)
            kinds[kind] += 1
            if kind == "good":
                good_lines.append(line)
                cat_pairs.add((obj["reviewerID"], obj["asin"]))
                users.add(obj["reviewerID"])
                reviewed.add(obj["asin"])
                stars[int(obj["overall"])] += 1
        per_cat_pairs[f["category"]] = cat_pairs
        pairs |= cat_pairs
    good = kinds.pop("good")
    distinct = len(set(good_lines))
    assert good == m["good_lines"] and distinct == m["distinct_good_lines"]
    assert good - distinct == m["duplicate_lines"] > 0
    assert len(pairs) == m["unique_pairs"] and distinct - len(pairs) == m["repeated_pair_lines"]
    assert dict(kinds) == {k: v for k, v in m["bad_lines"].items() if v}
    assert set(kinds) == set(BAD_KINDS) and sum(kinds.values()) == m["bad_lines_total"]
    assert len(users) == m["distinct_users"] == m["users"] == round(rel.RELEASE_USERS * SCALE)
    assert len(reviewed) == m["distinct_items"]
    assert {str(s): n for s, n in stars.items()} == m["rating_counts"]
    for cat, info in m["categories"].items():
        assert len(per_cat_pairs[cat]) == info["unique_pairs"]
        assert len(meta_asins[cat]) == info["metadata_lines"]
    # every reviewed product has its metadata line in its own category's file, and only there
    all_meta = Counter(a for s in meta_asins.values() for a in s)
    assert all(n == 1 for n in all_meta.values())
    for cat, cat_pairs in per_cat_pairs.items():
        assert {a for _, a in cat_pairs} <= meta_asins[cat], cat
    load, clean = m["expected"]["load"], m["expected"]["clean"]
    assert load["lines"] == sum(len(v) for v in files.values()) == load["reviews"] + load["products"] + load["quarantined"]
    assert load["products"] == m["products"] == sum(len(s) for s in meta_asins.values())
    assert sum(load["quarantine_reasons"].values()) == load["quarantined"] == m["bad_lines_total"]
    assert clean["reviews_in"] == clean["reviews_out"] + clean["exact duplicate lines"] + clean["repeated user-item pairs"]
    assert clean["reviews_out"] == len(pairs) and clean["products"] == m["products"]


def test_fields_and_types_match_the_real_2018_files(generated):
    _, m, files = generated
    real = [json.loads(x) for x in _read(REAL_2018)]
    real_keys = set().union(*(set(o) for o in real))
    real_order = list(real[0])
    real_meta_keys = set(json.loads(_read(REAL_META)[0])) | {"imageURL", "imageURLHighRes"}
    for f in m["files"][:6]:
        for line in files[f["path"]][:500]:
            if f["kind"] == "metadata":
                obj = json.loads(line)
                assert set(obj) <= real_meta_keys and list(obj)[0] == "category" and obj["asin"]
                assert isinstance(obj["category"], list) and obj["main_cat"] == rel.display_name(f["category"])
                assert re.fullmatch(r"(\$\d+\.\d\d)?", obj["price"])
                continue
            kind, obj = classify("2018", line)
            if kind != "good":
                continue
            assert set(obj) <= real_keys
            assert [k for k in obj if k in real_order] == [k for k in real_order if k in obj]
            assert re.fullmatch(r"A[0-9A-Z]{13}", obj["reviewerID"])
            assert obj["unixReviewTime"] % 86400 == 0 and 1 <= obj["overall"] <= 5


def test_proportions_follow_the_release_and_the_measured_skew(generated):
    _, m, _ = generated
    shares = np.array([r for _, r, _ in rel.RELEASE_CATEGORIES], float)
    shares /= shares.sum()
    got = np.array([m["categories"][c]["review_lines"] for c, _, _ in rel.RELEASE_CATEGORIES], float)
    got /= got.sum()
    big = shares > 0.02  # Books, Clothing, Home and Kitchen, Electronics, ...
    assert np.all(np.abs(got[big] / shares[big] - 1) < 0.15), dict(zip(np.array(rel.RELEASE_CATEGORIES)[big, 0], got[big]))
    assert got.argmax() == shares.argmax()  # Books is the biggest file
    s = m["skew"]
    assert abs(s["mean_reviews_per_user"] / (233.1 / 43.5) - 1) < 0.08
    assert abs(s["mean_reviews_per_product"] / (233.1 / 15.18) - 1) < 0.15
    assert 0.15 < s["one_review_user_share"] < 0.45 and s["max_reviews_per_user"] >= 50
    assert m["top_1pct_items_share"] > 0.05 and s["max_reviews_per_product"] > 30 * s["mean_reviews_per_product"] / 4
    stars = np.array([m["rating_counts"][str(k)] for k in range(1, 6)], float)
    assert np.all(np.abs(stars / stars.sum() - np.array(rel.STAR_SHARE)) < 0.02)


def test_verified_and_text_length_as_measured(generated):
    _, m, files = generated
    objs = [json.loads(x) for x in files["Books.json.gz"] + files["Electronics.json.gz"]
            if classify("2018", x)[0] == "good"]
    verified = np.mean([o["verified"] for o in objs])
    assert abs(verified - rel.RELEASE_SHAPE.verified_share) < 0.03
    assert abs(np.mean(["vote" in o for o in objs]) - rel.RELEASE_SHAPE.vote_share) < 0.03
    by_star = defaultdict(list)
    for o in objs:
        by_star[int(o["overall"])].append(len(o.get("reviewText", "")))
    assert np.median(by_star[3]) > 1.5 * np.median(by_star[5])  # measured: 170 vs 56 characters


def test_a_users_reviews_share_their_taste(generated):
    """Latent structure: two reviews by one user fall in the same subcategory far more often than two
    random reviews of the same category with the same popularity (what a recommender can learn)."""
    _, m, files = generated
    same_user, total_same, total = 0, 0, 0
    pairs_user = 0
    for cat in ("Books", "Clothing_Shoes_and_Jewelry", "Home_and_Kitchen", "Electronics"):
        sub = {o["asin"]: o["category"][1] for o in map(json.loads, files[f"meta_{cat}.json.gz"])}
        by_user = defaultdict(list)
        seq = []
        for line in files[f"{cat}.json.gz"]:
            kind, o = classify("2018", line)
            if kind == "good":
                by_user[o["reviewerID"]].append(sub[o["asin"]])
                seq.append(sub[o["asin"]])
        for subs in by_user.values():
            for a in range(len(subs)):
                for b in range(a + 1, len(subs)):
                    same_user += subs[a] == subs[b]
                    pairs_user += 1
        counts = Counter(seq)
        n = len(seq)
        total_same += sum(c * (c - 1) for c in counts.values())
        total += n * (n - 1)
    p_user, p_random = same_user / pairs_user, total_same / total
    assert p_user > 2.5 * p_random, (p_user, p_random)


def test_users_are_loyal_to_a_home_category(generated):
    """Users with 5+ reviews write most of them in one category, as the release's 5-cores show
    (0.58 of their reviews in their top category with HOME_CATEGORY_SHARE 0.5; 0.33 without)."""
    _, m, files = generated
    by_user = defaultdict(Counter)
    for f in m["files"]:
        if f["kind"] == "reviews":
            for line in files[f["path"]]:
                kind, o = classify("2018", line)
                if kind == "good":
                    by_user[o["reviewerID"]][f["category"]] += 1
    heavy = [c for c in by_user.values() if sum(c.values()) >= 5]
    top = sum(max(c.values()) for c in heavy) / sum(sum(c.values()) for c in heavy)
    assert len(heavy) > 1000 and top > 0.5, (len(heavy), top)


def test_k_core_drops_until_every_user_and_item_has_k():
    from bench.gen.measure import k_core_size
    # u1 and u2 rate i1..i3 (a 2-core); u3 rates i1 only and i4 is rated by u3 only: both go,
    # and u3's going takes i1 down to 2 ratings, still in the core.
    users = np.array(["u1", "u1", "u1", "u2", "u2", "u2", "u3", "u3"])
    items = np.array(["i1", "i2", "i3", "i1", "i2", "i3", "i1", "i4"])
    assert k_core_size(users, items, 2) == 6
    assert k_core_size(users, items, 3) == 0
    assert k_core_size(users[:6], items[:6], 2) == 6


def test_same_seed_same_bytes_and_other_seed_other_data(tmp_path):
    a = rel.generate_release(0.00005, tmp_path / "a", seed=3, processes=1, bad_fraction=0.01)
    b = rel.generate_release(0.00005, tmp_path / "b", seed=3, processes=2, bad_fraction=0.01)
    rel.generate_release(0.00005, tmp_path / "c", seed=4, processes=2, bad_fraction=0.01)
    for f in a["files"]:
        assert (tmp_path / "a" / f["path"]).read_bytes() == (tmp_path / "b" / f["path"]).read_bytes(), f["path"]
    assert (tmp_path / "a" / "Books.json.gz").read_bytes() != (tmp_path / "c" / "Books.json.gz").read_bytes()
    def timeless(m: dict) -> dict:  # timings differ run to run, nothing else may
        return {k: [{fk: fv for fk, fv in f.items() if fk != "seconds"} for f in v] if k == "files" else v
                for k, v in m.items() if k != "seconds"}

    assert timeless(a) == timeless(b)


def test_uncompressed_output_and_cli(tmp_path, capsys):
    from bench.gen.cli import main

    assert main(["--scale", "0.00002", "--out", str(tmp_path), "--compresslevel", "0", "--processes", "1"]) == 0
    assert "lines/s" in capsys.readouterr().out
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert (tmp_path / "Books.json").is_file() and (tmp_path / "meta_Books.json").is_file()
    assert sum(len(_read(tmp_path / f["path"])) for f in m["files"]) == m["lines"]
    with pytest.raises(SystemExit):
        main(["--scale", "5", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--scale", "0.001", "--rows", "10", "--out", str(tmp_path)])


def test_user_count_law_has_the_release_mean():
    c, cdf = rel.user_count_law()
    n = np.arange(1, len(cdf) + 1)
    pmf = np.diff(np.concatenate([[0], cdf]))
    assert abs((n * pmf).sum() - 233.1 / 43.5) < 1e-3 and c > 0
