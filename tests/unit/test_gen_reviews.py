"""bench/gen_reviews.py: synthetic files must look like the real ones and the manifest must be exact.

The manifest is what a pipeline scale test reconciles against, so every count in it is recounted
here from the written lines by an independent parser, and the generated fields are compared with
real lines of the same release shipped in data/ (see its PROVENANCE.md files).
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from bench import gen_reviews as gr

DATA = Path(__file__).resolve().parents[2] / "data"
REAL = {"2014": DATA / "demo" / "amazon2014_musical_instruments_5.jsonl.gz",
        "2018": DATA / "samples" / "amazon2018_all_beauty_5.jsonl.gz",
        "2023": DATA / "samples" / "amazon2023_subscription_boxes.jsonl.gz"}
ROWS, BAD = 2000, 0.05


def _user_item_rating(fmt: str, obj: dict) -> tuple[str, str, float]:
    if fmt == "2023":
        return obj.get("user_id"), obj.get("parent_asin") or obj.get("asin"), obj.get("rating")
    return obj.get("reviewerID"), obj.get("asin"), obj.get("overall")


def classify(fmt: str, line: str) -> tuple[str, dict | None]:
    """(kind, parsed object): 'good' or one of gen_reviews.BAD_KINDS, decided without the generator."""
    if line == "":
        return "empty_line", None
    try:
        obj = json.loads(line)
    except ValueError:
        return "truncated_json", None
    if not isinstance(obj, dict):
        return "not_an_object", None
    _, item, rating = _user_item_rating(fmt, obj)
    if not item:
        return "missing_asin", obj
    if not 1 <= rating <= 5:
        return "rating_out_of_range", obj
    return "good", obj


def recount(fmt: str, paths: list[Path]) -> dict:
    kinds: Counter = Counter()
    good_lines, pairs, users, items, stars = [], set(), set(), set(), Counter()
    objects, per_file = [], {}
    for path in paths:
        with gzip.open(path, "rt", encoding="ascii") as f:
            text = f.read()
        assert text == "" or text.endswith("\n")  # a file can be empty when there are more files than rows
        lines = text[:-1].split("\n") if text else []
        per_file[path.name] = len(lines)
        for line in lines:
            kind, obj = classify(fmt, line)
            kinds[kind] += 1
            if kind == "good":
                user, item, rating = _user_item_rating(fmt, obj)
                good_lines.append(line)
                pairs.add((user, item))
                users.add(user)
                items.add(item)
                stars[int(rating)] += 1
                objects.append(obj)
    distinct = len(set(good_lines))
    return {"lines": sum(kinds.values()), "good_lines": kinds.pop("good", 0), "bad_lines": dict(kinds),
            "duplicate_lines": len(good_lines) - distinct, "distinct_good_lines": distinct,
            "unique_pairs": len(pairs), "repeated_pair_lines": distinct - len(pairs),
            "distinct_users": len(users), "distinct_items": len(items), "stars": stars,
            "objects": objects, "per_file": per_file}


@pytest.fixture(scope="module", params=gr.FORMATS)
def generated(request, tmp_path_factory):
    fmt = request.param
    out = tmp_path_factory.mktemp(f"synth{fmt}")
    manifest = gr.generate(ROWS, out, fmt, seed=7, files=3, bad_fraction=BAD)
    paths = sorted(out.glob("*.jsonl.gz"))
    return fmt, out, manifest, recount(fmt, paths)


def _real(fmt: str) -> tuple[dict, dict[str, set[str]]]:
    """The first real line of the release, and every key -> value types over the whole real file."""
    types: dict[str, set[str]] = {}
    with gzip.open(REAL[fmt], "rt") as f:
        first = None
        for line in f:
            obj = json.loads(line)
            first = first or obj
            for k, v in obj.items():
                types.setdefault(k, set()).add(type(v).__name__)
    return first, types


def test_manifest_counts_match_the_written_lines(generated):
    fmt, out, m, c = generated
    assert m == json.loads((out / "manifest.json").read_text())
    assert c["lines"] == m["lines"] == ROWS
    assert c["good_lines"] == m["good_lines"]
    assert c["duplicate_lines"] == m["duplicate_lines"] > 0
    assert c["distinct_good_lines"] == m["distinct_good_lines"]
    assert c["unique_pairs"] == m["unique_pairs"]
    assert c["repeated_pair_lines"] == m["repeated_pair_lines"] > 0
    assert c["bad_lines"] == {k: v for k, v in m["bad_lines"].items() if v}
    assert set(m["bad_lines"]) == set(gr.BAD_KINDS) and all(v > 0 for v in m["bad_lines"].values())
    assert m["bad_lines_total"] == sum(c["bad_lines"].values()) == round(ROWS * BAD)
    assert c["distinct_users"] == m["distinct_users"]
    assert c["distinct_items"] == m["distinct_items"]
    assert {str(s): n for s, n in c["stars"].items()} == {k: v for k, v in m["rating_counts"].items() if v}
    assert {f["path"]: f["lines"] for f in m["files"]} == c["per_file"]
    assert len(c["per_file"]) == 3


def test_expected_pipeline_counts_add_up(generated):
    _, _, m, c = generated
    load, clean = m["expected"]["load"], m["expected"]["clean"]
    assert load["lines"] == load["reviews"] + load["quarantined"] == c["lines"]
    assert sum(load["quarantine_reasons"].values()) == load["quarantined"]
    assert set(load["quarantine_reasons"]) == {"bad JSON", "empty line", "rating out of range", "missing item",
                                               "not a JSON object"}
    assert clean["reviews_in"] == clean["reviews_out"] + clean["exact duplicate lines"] \
        + clean["repeated user-item pairs"]
    assert clean["reviews_out"] == c["unique_pairs"]


def test_fields_and_types_match_real_lines(generated):
    fmt, _, _, c = generated
    real_first, real_types = _real(fmt)
    objs = c["objects"]
    always = set.intersection(*(set(o) for o in objs))
    seen = set.union(*(set(o) for o in objs))
    assert always <= set(real_first), f"always-present fields not in a real {fmt} line: {always - set(real_first)}"
    assert seen <= set(real_types), f"fields never seen in real {fmt} data: {seen - set(real_types)}"
    for o in objs:
        for k, v in o.items():
            assert type(v).__name__ in real_types[k], (k, v)
    core = {"2014": {"reviewerID", "asin", "helpful", "reviewText", "overall", "summary", "unixReviewTime",
                     "reviewTime"},
            "2018": {"overall", "verified", "reviewTime", "reviewerID", "asin", "reviewerName", "summary",
                     "unixReviewTime"},
            "2023": {"rating", "title", "text", "images", "asin", "parent_asin", "user_id", "timestamp",
                     "helpful_vote", "verified_purchase"}}[fmt]
    assert core <= always
    for o in objs:
        # key order as in the real files (after dropping fields the real line does not have)
        order = [k for k in real_first if k in o]
        assert [k for k in o if k in real_first] == order


def test_values_look_like_the_release(generated):
    fmt, _, _, c = generated
    objs = c["objects"]
    lo, hi = gr.TIME_RANGE[fmt]
    if fmt == "2023":
        assert all(lo * 1000 <= o["timestamp"] <= (hi + 400 * 86400) * 1000 for o in objs)  # milliseconds
        assert all(re.fullmatch(r"AE[0-9A-Z]{26}", o["user_id"]) for o in objs)
        assert all(re.fullmatch(r"B0[0-9A-Z]{8}", o["parent_asin"]) for o in objs)
        assert 0.4 < sum(o["asin"] != o["parent_asin"] for o in objs) / len(objs) < 0.9
        assert any(o["images"] for o in objs) and all(isinstance(o["helpful_vote"], int) for o in objs)
        assert any("\u2019" in o["text"] for o in objs)
        return
    for o in objs:
        assert o["unixReviewTime"] % 86400 == 0
        day = dt.datetime.fromtimestamp(o["unixReviewTime"], dt.timezone.utc)
        assert o["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"
        assert re.fullmatch(r"A[0-9A-Z]{13}", o["reviewerID"])
        assert re.fullmatch(r"B0[0-9A-Z]{8}|[01][0-9]{9}", o["asin"])
    years = {dt.datetime.fromtimestamp(o["unixReviewTime"], dt.timezone.utc).year for o in objs}
    assert max(years) - min(years) >= 8
    if fmt == "2014":
        assert all(len(o["helpful"]) == 2 and 0 <= o["helpful"][0] <= o["helpful"][1] for o in objs)
        assert any(o["helpful"][1] > 0 for o in objs)
    else:
        votes = [o["vote"] for o in objs if "vote" in o]
        assert votes and all(re.fullmatch(r"[1-9]\d{0,2}(,\d{3})*", v) for v in votes)
        assert any("style" in o for o in objs) and any("image" in o for o in objs)


def test_skew_like_real_data(generated):
    fmt, _, m, c = generated
    objs = c["objects"]
    stars = c["stars"]
    assert 0.5 < stars[5] / sum(stars.values()) < 0.72
    assert stars[4] > stars[3] and stars[5] > stars[4]
    per_item = sorted(Counter(_user_item_rating(fmt, o)[1] for o in objs).values(), reverse=True)
    per_user = sorted(Counter(_user_item_rating(fmt, o)[0] for o in objs).values(), reverse=True)
    assert sum(per_item[: len(per_item) // 5]) > 0.55 * len(objs)  # a few items hold most reviews
    assert per_user[0] >= 4 * (len(objs) / len(per_user))          # and a few users write a lot
    assert per_user[-1] == 1
    text = "text" if fmt == "2023" else "reviewText"
    mean_len = {r: sum(len(o.get(text, "")) for o in objs if _user_item_rating(fmt, o)[2] == r)
                / max(1, stars[r]) for r in (1.0, 5.0)}
    assert mean_len[1.0] > 1.3 * mean_len[5.0]  # unhappy reviewers write more
    assert m["top_1pct_items_share"] > 0


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = gr.generate(300, tmp_path / "a", "2018", seed=3, files=2, bad_fraction=0.1, processes=1)
    b = gr.generate(300, tmp_path / "b", "2018", seed=3, files=2, bad_fraction=0.1, processes=2)
    c = gr.generate(300, tmp_path / "c", "2018", seed=4, files=2, bad_fraction=0.1, processes=1)
    for f in a["files"]:
        assert (tmp_path / "a" / f["path"]).read_bytes() == (tmp_path / "b" / f["path"]).read_bytes()
        assert (tmp_path / "a" / f["path"]).read_bytes() != (tmp_path / "c" / f["path"]).read_bytes()
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert c["lines"] == 300


def test_more_files_than_rows_and_no_dirt(tmp_path):
    m = gr.generate(20, tmp_path, "2014", files=5, bad_fraction=0.0, duplicate_fraction=0.0,
                    repeat_fraction=0.0, processes=1)
    c = recount("2014", sorted(tmp_path.glob("*.jsonl.gz")))
    assert len(c["per_file"]) == 5 and c["lines"] == m["lines"] == 20
    assert c["good_lines"] == 20 and c["bad_lines"] == {} and c["duplicate_lines"] == m["duplicate_lines"] == 0
    assert c["unique_pairs"] == m["unique_pairs"]


def test_cli_writes_manifest_and_rejects_bad_arguments(tmp_path, capsys):
    assert gr.main(["--rows", "100", "--out", str(tmp_path), "--format", "2023", "--bad-fraction", "0.1"]) == 0
    printed = capsys.readouterr().out
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["lines"] == 100 and m["bad_lines_total"] == 10 and "bad lines" in printed
    with pytest.raises(SystemExit) as exc:
        gr.main(["--rows", "100", "--out", str(tmp_path), "--bad-fraction", "1.5"])
    assert exc.value.code == 2
    with pytest.raises(ValueError):
        gr.generate(10, tmp_path, "2019")


def test_split_counts_is_exact_and_proportional():
    assert gr.split_counts(10, [1, 1, 1]) == [4, 3, 3]
    assert gr.split_counts(7, [0, 5, 0, 2]) == [0, 5, 0, 2]
    assert gr.split_counts(3, [0, 10, 10]) in ([0, 2, 1], [0, 1, 2])
    assert gr.split_counts(0, [3, 4]) == [0, 0]
