"""The category a data file's name carries (spark_jobs.units.category_of), on the names Amazon
published its files under and the names this repository ships them as.

load accepts JSON lines, gzipped or not (.json, .jsonl, .json.gz, .jsonl.gz), from a local path;
the lines it writes keep their source as a file:// URI, and clean reads raw data that may sit in a
bucket (s3a://). The Spark column load and clean use (units.category_from_path) is built from the
same patterns; tests/integration/test_file_category_spark.py checks it gives these same names.
"""
from __future__ import annotations

import pytest

from spark_jobs import units

# (file name or path, the category it carries)
NAMES = [
    # 2014 (jmcauley.ucsd.edu/data/amazon): 5-core and full reviews, metadata
    ("reviews_Books_5.json.gz", "Books"),
    ("reviews_Books.json.gz", "Books"),
    ("meta_Books.json.gz", "Books"),
    ("reviews_Cell_Phones_and_Accessories_5.json.gz", "Cell Phones And Accessories"),
    # 2018 (nijianmo.github.io/amazon): full and 5-core reviews, metadata; some names upper case
    ("Books.json.gz", "Books"),
    ("Books_5.json", "Books"),
    ("meta_Books.json", "Books"),
    ("Clothing_Shoes_and_Jewelry.json.gz", "Clothing Shoes And Jewelry"),
    ("AMAZON_FASHION_5.json.gz", "Amazon Fashion"),
    # 2023 (amazon-reviews-2023.github.io): reviews and metadata, JSON lines
    ("Books.jsonl", "Books"),
    ("meta_Books.jsonl.gz", "Books"),
    ("Health_and_Personal_Care.jsonl", "Health And Personal Care"),
    # this repository's names (data/demo, data/samples)
    ("amazon2014_musical_instruments_5.jsonl.gz", "Musical Instruments"),
    ("amazon2014_meta_musical_instruments_FIRST100_raw.json", "Musical Instruments"),
    ("amazon2014_digital_music_5_PARTIAL.jsonl.gz", "Digital Music"),
    ("amazon2018_meta_gift_cards.jsonl.gz", "Gift Cards"),
    ("amazon2023_subscription_boxes.jsonl.gz", "Subscription Boxes"),
    # in folders, as a file:// URI (what load records as a line's source) and in a bucket
    ("data/amazon/2018/Books_5.json.gz", "Books"),
    ("/srv/data/meta_Clothing_Shoes_and_Jewelry.jsonl", "Clothing Shoes And Jewelry"),
    ("file:///work/data/demo/amazon2018_gift_cards_5.jsonl.gz", "Gift Cards"),
    ("s3a://reviews-bucket/raw/2023/meta_Books.jsonl.gz", "Books"),
    ("s3a://reviews-bucket/2014/reviews_Clothing_Shoes_and_Jewelry_5.json.gz", "Clothing Shoes And Jewelry"),
]


@pytest.mark.parametrize("name, category", NAMES)
def test_a_file_name_carries_its_category(name: str, category: str):
    assert units.category_of(name) == category


def test_initcap_capitalises_each_word_as_spark_does():
    assert units.initcap("clothing shoes and JEWELRY") == "Clothing Shoes And Jewelry"
    assert units.initcap("") == "" and units.initcap(" a  b") == " A  B"
