"""2014 metadata lines (Python dict literals) to JSON, and HTML unescaping, on real shipped lines.

The raw lines are the first 100 of Amazon's 2014 Musical Instruments metadata exactly as published
(data/demo/amazon2014_meta_musical_instruments_FIRST100_raw.json); expected values are written
out by hand from those lines, not recomputed with the code under test.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from core import py_literal
from spark_jobs.text_clean import unescape_html

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
RAW_META = DEMO / "amazon2014_meta_musical_instruments_FIRST100_raw.json"


def _raw_lines() -> list[str]:
    return RAW_META.read_text(encoding="utf-8").splitlines()


def test_every_raw_line_is_a_python_dict_not_json():
    lines = _raw_lines()
    assert len(lines) == 100
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
        assert py_literal.looks_like_python_dict(line)
    assert not py_literal.looks_like_python_dict('{"asin": "X"}')


def test_real_lines_convert_to_json_with_nested_values_and_numbers():
    converted = [py_literal.python_dict_to_json(line) for line in _raw_lines()]
    assert all(err is None for _, err in converted), [e for _, e in converted if e]
    first = json.loads(converted[0][0])
    assert first == {
        "asin": "0006428320", "title": "Six Sonatas For Two Flutes Or Violins, Volume 2 (#4-6)", "price": 17.95,
        "imUrl": "http://ecx.images-amazon.com/images/I/41EpRmh8MEL._SY300_.jpg",
        "salesRank": {"Musical Instruments": 207315},
        "categories": [["Musical Instruments", "Instrument Accessories", "General Accessories",
                        "Sheet Music Folders"]],
    }
    item = json.loads(converted[24][0])  # the one item of the 5-core review file
    assert item["asin"] == "1384719342" and item["brand"] == "niceEshop" and item["price"] == 7.09
    assert len(item["related"]["also_bought"]) == 99 and item["related"]["also_bought"][0] == "B009D015TI"
    assert item["description"].startswith("New generic Studio Microphone")
    assert '"s"' in item["description"]  # double quotes inside a single-quoted Python string survive


def test_broken_lines_get_a_reason_and_nothing_runs(tmp_path):
    real = _raw_lines()[0]
    marker = tmp_path / "pwned"
    injected = real.replace("'price': 17.95", f"'price': __import__('os').system('touch {marker}')")
    assert injected != real
    cases = {
        real[: len(real) // 2]: py_literal.BAD_LITERAL,  # a cut-off line
        injected: py_literal.BAD_LITERAL,  # a call is not a literal: refused, never evaluated
        "{'0006428320', 'B00000IS02'}": py_literal.NOT_A_DICT,  # a set
        real.replace("'price': 17.95", "'price': {1, 2}"): py_literal.NOT_JSON_VALUES,
        real.replace("'price': 17.95", "'price': 1e999"): py_literal.NOT_JSON_VALUES,  # infinity
        "{'asin': 'X', 'title': 'x' * 10}": py_literal.BAD_LITERAL,
        "{'a': " * 200_000: py_literal.TOO_LONG,
    }
    for line, reason in cases.items():
        assert py_literal.python_dict_to_json(line) == (None, reason), line[:80]
    assert not marker.exists()


@pytest.mark.parametrize("raw, expected", [
    # data/demo/amazon2014_musical_instruments_5.jsonl.gz, A202CZ4PJH83G4 on B0002E1G5C
    ("a serious two-star &#34;meh&#34;.", 'a serious two-star "meh".'),
    # data/demo/amazon2014_meta_musical_instruments_FIRST100_raw.json, B00000IS02
    ("Remo Kids Gathering Drum, 22&quot; x 8&quot; (KD-5822-01)", 'Remo Kids Gathering Drum, 22" x 8" (KD-5822-01)'),
    # data/demo/amazon2018_meta_gift_cards.jsonl.gz, B002VFYGC0
    (" Maggiano&#39;s Gift Card", " Maggiano's Gift Card"),
    # data/demo/amazon2014_meta_digital_music_PARTIAL.jsonl.gz, B0000002YU
    ("Rhythm, Blues, Soul &amp; Grooves", "Rhythm, Blues, Soul & Grooves"),
    ("&amp;quot;twice&amp;quot;", '"twice"'),  # twice escaped, as in All Beauty reviewer names
    ("Don&#x92;t", "Don\u2019t"),  # a Windows-1252 code point, as browsers read it
    ("R&B and AT&T; &nothing", "R&B and AT&T; &nothing"),  # not references: left alone
])
def test_unescape_html_cases_from_real_lines(raw, expected):
    assert unescape_html(raw) == expected


def test_real_review_lines_with_entities_unescape():
    """The real review the issue quotes, and every escaped Digital Music review text, twice-escaped All Beauty names."""
    with gzip.open(DEMO / "amazon2014_musical_instruments_5.jsonl.gz", "rt", encoding="utf-8") as f:
        review = next(d for d in map(json.loads, f)
                      if (d["reviewerID"], d["asin"]) == ("A202CZ4PJH83G4", "B0002E1G5C"))
    assert "&#34;meh&#34;" in review["reviewText"]
    text = unescape_html(review["reviewText"])
    assert 'a serious two-star "meh".' in text and "&#34;" not in text
    escaped = twice = 0
    with gzip.open(DEMO / "amazon2014_digital_music_5_PARTIAL.jsonl.gz", "rt", encoding="utf-8") as f:
        for d in map(json.loads, f):
            if "&quot;" in d["reviewText"]:
                escaped += 1
                out = unescape_html(d["reviewText"])
                assert "&quot;" not in out and out.count('"') >= d["reviewText"].count("&quot;")
    with gzip.open(DEMO.parent / "samples" / "amazon2018_all_beauty_5.jsonl.gz", "rt", encoding="utf-8") as f:
        for d in map(json.loads, f):
            if "&amp;quot;" in d.get("reviewerName", ""):  # twice escaped
                twice += 1
                out = unescape_html(d["reviewerName"])
                assert "&amp;" not in out and "&quot;" not in out and out.count('"') == d["reviewerName"].count("&amp;quot;")
    assert escaped > 1000 and twice > 0
