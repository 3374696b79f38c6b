"""The website's test catalog: real review files through the real batch jobs, and the facts the
site tests check its pages against, computed here from the raw files with plain Python.

Two categories are loaded so the category filter means something: the bundled Musical Instruments
file (2014 format, no titles) and the 2018 Gift Cards reviews with their metadata (titles, for
title search). The jobs run in-process on the session's Spark, like tests/integration/
test_pipeline.py does, into the session's own MongoDB database, data and artifact folders:
load -> clean -> mongo_load -> eda -> train -> publish (forced: the test decides what is served;
publish also writes the popular and trending lists, so no Celery task runs here). Each job's
record is written the way its ``main()`` writes it, so the admin's pipeline runs are real too.

Nothing here reads MongoDB or calls the site: expected catalog order, histograms, review pages and
reviewer counts come from the JSON lines themselves, de-duplicated the way the data contract says
(one review per user and product, the latest), with HTML character references decoded as the
clean job decodes them (``unescape_html``, the Python twin of its Spark expression).
"""
from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_jobs.text_clean import unescape_html
from tests.conftest import DEMO_FILE, real_file

REVIEW_FILES = [DEMO_FILE, real_file("amazon2018_gift_cards_5.jsonl.gz")]
META_FILES = [real_file("amazon2018_meta_gift_cards.jsonl.gz")]
CATEGORY_OF_FILE = {DEMO_FILE.name: "Musical Instruments", "amazon2018_gift_cards_5.jsonl.gz": "Gift Cards",
                    "amazon2018_meta_gift_cards.jsonl.gz": "Gift Cards"}
REVIEWS_PER_PAGE = 10
MAX_REVIEW_PAGES = 50
PASSWORD = "Correct-Horse-Battery-9"  # of the accounts the site tests create


@dataclass(frozen=True)
class Review:
    user_id: str
    product_id: str
    rating: int
    ts: int
    helpful: int
    text: str
    summary: str


@dataclass
class Catalog:
    """What the raw files say, plus where the session's pipeline put its outputs."""

    reviews: dict[str, list[Review]]  # product id -> its reviews (one per user, the latest)
    category: dict[str, str]  # reviewed product id -> category (of its review file)
    titles: dict[str, str]  # product id -> title, for every product with metadata
    meta_category: dict[str, str]  # product id -> category of its metadata record
    brands: dict[str, str] = field(default_factory=dict)  # product id -> brand (or store), with metadata
    paths: dict[str, list[str]] = field(default_factory=dict)  # product id -> its metadata's category path
    model_version: str = ""
    eda_dir: Path | None = None
    run_id: str = ""
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def order(self, category: str | None = None) -> list[str]:
        """Catalog order as a shopper sees it: most reviewed first, then by id."""
        ids = [p for p in self.reviews if category is None or self.category[p] == category]
        return sorted(ids, key=lambda p: (-len(self.reviews[p]), p))

    def category_of(self, product_id: str) -> str | None:
        """A product's category in the catalog: its reviews' file, else its metadata's main category."""
        return self.category.get(product_id) or self.meta_category.get(product_id)

    def histogram(self, product_id: str) -> dict[int, int]:
        counts = Counter(r.rating for r in self.reviews[product_id])
        return {star: counts.get(star, 0) for star in range(1, 6)}

    def review_pages(self, product_id: str) -> list[list[Review]]:
        """Pages of 10, most helpful first, then newest, then by user id (at most 50 pages)."""
        ranked = sorted(self.reviews[product_id], key=lambda r: (-r.helpful, -r.ts, r.user_id))
        ranked = ranked[: MAX_REVIEW_PAGES * REVIEWS_PER_PAGE]
        return [ranked[i:i + REVIEWS_PER_PAGE] for i in range(0, len(ranked), REVIEWS_PER_PAGE)]

    def reviewer_counts(self) -> Counter:
        return Counter(r.user_id for rs in self.reviews.values() for r in rs)

    def primary_words(self, product_id: str) -> set[str]:
        """Words of a product's title, brand and category (its catalog category and metadata path)."""
        text = " ".join([self.titles.get(product_id, ""), self.brands.get(product_id, ""),
                         self.category_of(product_id) or "", *self.paths.get(product_id, [])])
        return set(_WORD.findall(text.lower()))

    def review_words(self, product_id: str) -> set[str]:
        """Words of a product's review summaries, cleaned as the pipeline cleans them."""
        from spark_jobs.text_clean import clean_text

        return {w for r in self.reviews.get(product_id, []) for w in _WORD.findall(clean_text(r.summary))}

    def search(self, term: str) -> tuple[list[str], list[str]]:
        """What a one-word search should answer, in order: (title/brand/category matches, review-only
        matches), each most reviewed first, then by id.

        A title, brand or category word matches when it starts with the term; a review word only
        when it is the term (what the search index promises, core/search.py).
        """
        term = term.lower()
        everything = set(self.reviews) | set(self.titles)
        primary = {p for p in everything if any(w.startswith(term) for w in self.primary_words(p))}
        review = {p for p in everything - primary if term in self.review_words(p)}
        key = lambda p: (-len(self.reviews.get(p, [])), p)  # noqa: E731
        return sorted(primary, key=key), sorted(review, key=key)


_WORD = re.compile(r"[^\W_]+")  # letters and digits: a word, as a shopper would type it


def _helpful(d: dict) -> int:
    if isinstance(d.get("helpful"), list) and d["helpful"]:
        return int(d["helpful"][0])
    vote = str(d.get("vote") or "0").replace(",", "")
    return int(float(vote)) if vote.replace(".", "", 1).isdigit() else 0


def read_raw() -> Catalog:
    latest: dict[tuple[str, str], Review] = {}
    category: dict[str, str] = {}
    seen_lines: set[str] = set()
    for path in REVIEW_FILES:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line in seen_lines:  # exact duplicate lines count once
                    continue
                seen_lines.add(line)
                d = json.loads(line)
                r = Review(d["reviewerID"].strip(), d["asin"].strip(), int(round(float(d["overall"]))),
                           int(d.get("unixReviewTime") or 0), _helpful(d), unescape_html(d.get("reviewText")),
                           unescape_html(d.get("summary")))
                key = (r.user_id, r.product_id)
                if key not in latest or r.ts > latest[key].ts:
                    latest[key] = r
                category[r.product_id] = CATEGORY_OF_FILE[path.name]
    reviews: dict[str, list[Review]] = defaultdict(list)
    for r in latest.values():
        reviews[r.product_id].append(r)
    titles, meta_category, brands, paths = {}, {}, {}, {}
    for path in META_FILES:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                titles[d["asin"].strip()] = unescape_html(d.get("title")).strip()
                brands[d["asin"].strip()] = d.get("brand") or d.get("store") or ""
                paths[d["asin"].strip()] = [c for c in d.get("category") or [] if isinstance(c, str)]
                main = d.get("main_cat") or ""  # as load reads it: HTML or blank -> the file's category
                meta_category[d["asin"].strip()] = main if main.strip() and "<" not in main \
                    else CATEGORY_OF_FILE[path.name]
    return Catalog(reviews=dict(reviews), category=category, titles=titles, meta_category=meta_category,
                   brands=brands, paths=paths)


def load_into_session(spark, settings, work: Path) -> Catalog:
    """Run the batch pipeline on the files above into the session's database and folders."""
    from spark_jobs.clean import clean
    from spark_jobs.eda import run_eda
    from spark_jobs.load import load
    from spark_jobs.mongo_load import mongo_load
    from spark_jobs.publish import publish
    from spark_jobs.reconcile import write_record
    from spark_jobs.train import train

    catalog = read_raw()
    run_id = f"it-site-{uuid.uuid4().hex[:6]}"
    raw, clean_dir = work / "raw", work / "clean"
    steps = [
        ("load", lambda: load(spark, [str(p) for p in REVIEW_FILES + META_FILES], str(raw), run_id)),
        ("clean", lambda: clean(spark, str(raw), str(clean_dir), run_id)),
        ("mongo_load", lambda: mongo_load(spark, str(clean_dir), run_id)),
        ("eda", lambda: run_eda(spark, clean_dir, settings.eda_dir, run_id)),
        ("train", lambda: train(spark, str(clean_dir), run_id)),
    ]
    for job, run in steps:
        started = time.time()
        record = run()
        write_record(run_id, job, record)
        catalog.records[job] = record
        print(f"site catalog: {job} in {time.time() - started:.1f} s")
    version = catalog.records["train"]["version"]
    catalog.records["publish"] = publish(version, force=True)
    write_record(run_id, "publish", catalog.records["publish"])
    assert catalog.records["publish"]["status"] in {"published", "unchanged"}, catalog.records["publish"]
    catalog.model_version, catalog.eda_dir, catalog.run_id = version, settings.eda_dir / "latest", run_id
    return catalog


def admin_user_form(page: str, shopper, name: str) -> tuple[str, dict[str, str]]:
    """URL and POST data of the admin's "add user" (``page`` "add") for ``name``, or of ``shopper``'s
    user page renamed to ``name`` ("change"): the admin race tests' two saves."""
    if page == "add":
        return "/admin/auth/user/add/", {"username": name, "usable_password": "true", "password1": PASSWORD,
                                         "password2": PASSWORD}
    joined = shopper.date_joined
    return f"/admin/auth/user/{shopper.pk}/change/", {
        "username": name, "email": shopper.email, "first_name": "", "last_name": "", "is_active": "on",
        "date_joined_0": f"{joined:%Y-%m-%d}", "date_joined_1": f"{joined:%H:%M:%S}"}


def ids_in(html: str, element_id: str) -> list[str]:
    """Product ids linked inside the element with this id (``<ul id="products">`` and the like)."""
    match = re.search(rf'<(ul|ol) [^>]*id="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    assert match, f'no element id="{element_id}" in the page'
    return re.findall(r'<li [^>]*>\s*<a href="/p/([^/"]+)/"', match.group(2))


def own_address() -> str:
    """A client address of its own (random, in 10/8): its sign-up, resend and lockout counts are
    nobody else's."""
    n = uuid.uuid4().int
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
