"""core.search: how a query is split into index keys and how postings are intersected and ranked."""
from __future__ import annotations

from core import search


def _doc(ids: list[str], tiers: str, ranks: list[int], cats: list[str], cat: list[int]) -> dict:
    return {"ids": " ".join(ids), "tiers": tiers, "ranks": " ".join(map(str, ranks)), "cats": cats,
            "cat": " ".join(map(str, cat))}


def test_words_are_lower_case_letters_and_digits_in_any_script():
    assert search.words("Café Über-Cool 2-Pack_x! $where") == ["café", "über", "cool", "2", "pack", "x", "where"]
    assert search.words("a" * (search.MAX_WORD + 1)) == []
    assert search.query_keys("Guitar guitar STRINGS " + " ".join(f"w{i}" for i in range(20))) == \
        ["guitar", "strings", *[f"w{i}" for i in range(search.MAX_QUERY_WORDS - 2)]]
    assert search.query_keys(".*|()") == []


def test_a_query_keeps_its_over_long_words_and_names_the_ones_past_the_limit():
    serial = "X" * (search.MAX_WORD + 1)
    assert search.query_keys(f"guitar {serial}") == ["guitar", serial.lower()]  # read, not dropped
    assert not search.indexed(serial.lower()) and search.indexed("a" * search.MAX_WORD)
    many = " ".join(f"w{i}" for i in range(search.MAX_QUERY_WORDS + 2))
    assert search.unused_words(f"{many} w0 W9") == [f"w{search.MAX_QUERY_WORDS}", f"w{search.MAX_QUERY_WORDS + 1}"]
    assert search.unused_words("guitar strings guitar") == []


class _Index:
    """A search_index collection: ``find_one`` by ``_id``, each read recorded."""

    def __init__(self, docs: dict[str, dict]) -> None:
        self.docs, self.read = docs, []

    def __getitem__(self, name: str) -> "_Index":
        return self

    def find_one(self, query: dict) -> dict | None:
        self.read.append(query["_id"])
        return self.docs.get(query["_id"])


def test_a_word_too_long_to_be_indexed_makes_the_search_match_nothing():
    from core import catalog

    index = _Index({"guitar": _doc(["G1", "G2"], "11", [0, 1], ["M"], [0, 0])})
    assert catalog.search_ids("guitar", db=index) == ["G1", "G2"]
    index.read.clear()
    assert catalog.search_ids("guitar " + "x" * (search.MAX_WORD + 1), db=index) == []
    assert index.read == []  # nothing is listed under it, not even its prefixes: nothing to read


def test_one_word_keeps_the_index_order_and_filters_by_category():
    p = search.Postings(_doc(["B", "A", "C"], "100", [5, 0, 9], ["Music", "Cards"], [0, 1, 0]))
    assert search.rank([p]) == ["B", "A", "C"]
    assert search.rank([p], "Music") == ["B", "C"] and search.rank([p], "Toys") == []


def test_several_words_need_all_and_rank_title_brand_category_matches_first():
    guitar = search.Postings(_doc(["G1", "G2", "X", "R1"], "1100", [3, 7, 1, 2], ["M"], [0, 0, 0, 0]))
    strap = search.Postings(_doc(["G2", "R1", "G1", "Y"], "1100", [7, 2, 3, 4], ["M"], [0, 0, 0, 0]))
    # G2: both words by title (2); R1 (strap) and G1 (guitar) one each: popularity rank decides
    assert search.rank([guitar, strap]) == ["G2", "R1", "G1"]
    assert search.rank([guitar, search.Postings({"ids": "", "tiers": "", "ranks": "", "cats": [], "cat": ""})]) == []
    assert search.rank([]) == []


def test_the_ranking_does_not_depend_on_the_order_the_words_were_typed_in():
    """What lets the site keep one cached search for every order of the same words (here every key
    lists as many products, so which one the intersection starts from is the order typed)."""
    from itertools import permutations

    guitar = _doc(["G1", "G2", "X", "R1", "Z"], "11001", [3, 7, 1, 2, 0], ["M", "C"], [0, 0, 1, 0, 1])
    strap = _doc(["G2", "R1", "G1", "Z", "Y"], "11000", [7, 2, 3, 0, 4], ["M", "C"], [0, 0, 0, 1, 0])
    black = _doc(["Z", "G1", "R1", "G2", "W"], "01010", [0, 3, 2, 7, 9], ["C", "M"], [0, 1, 1, 1, 1])
    for category in (None, "M", "C"):
        answers = {tuple(search.rank([search.Postings(d) for d in order], category))
                   for order in permutations([guitar, strap, black])}
        assert len(answers) == 1, (category, answers)


def test_a_deleted_reviewers_words_take_only_review_postings_off_a_key():
    doc = {"_id": "zebra", "n": 4, **_doc(["A", "B", "C", "D"], "1000", [0, 3, 5, 8], ["Music", "Cards"], [0, 1, 0, 1])}
    new, n = search.without_review_postings(doc, {"A", "C", "X"})  # A: by its title; X: not listed
    assert n == 1 and new == {"_id": "zebra", "n": 3, **_doc(["A", "B", "D"], "100", [0, 3, 8], ["Music", "Cards"],
                                                              [0, 1, 1])}
    assert search.rank([search.Postings(new)], "Cards") == ["B", "D"]
    assert search.without_review_postings(doc, {"X"}) == (doc, 0)
    assert search.without_review_postings(new, {"B", "D"})[0]["ids"] == "A"
    only = {"_id": "w", "n": 1, **_doc(["C"], "0", [5], ["Music"], [0])}
    assert search.without_review_postings(only, {"C"}) == (None, 1)  # no product left: the key goes
