"""The explicit Spark schema load reads the Amazon review and metadata files with.

Raw fields are read as strings on purpose: Spark's JSON reader turns a whole record into nulls when
one field does not fit its declared type, which is how a public attempt silently lost 32.6M rows
(an IntegerType ``vote`` meeting "1,234"). Reading strings and casting ourselves lets every bad
value be quarantined with its own reason instead. Only the fields the pipeline uses are declared.
"""
from __future__ import annotations

from pyspark.sql.types import (
    ArrayType, BooleanType, DoubleType, LongType, MapType, StringType, StructField, StructType,
)

S = StringType()

# One schema covering the 2014, 2018 and 2023 review formats (their field names do not collide in
# meaning) and the 2014/2018/2023 metadata formats; which format a line is comes from its keys.
RAW_LINE = StructType([
    # 2014 / 2018 reviews
    StructField("reviewerID", S), StructField("asin", S), StructField("reviewerName", S),
    StructField("helpful", ArrayType(S)), StructField("reviewText", S), StructField("overall", S),
    StructField("summary", S), StructField("unixReviewTime", S), StructField("reviewTime", S),
    StructField("verified", S), StructField("vote", S), StructField("style", MapType(S, S)),
    # 2023 reviews
    StructField("user_id", S), StructField("parent_asin", S), StructField("rating", S),
    StructField("title", S), StructField("text", S), StructField("timestamp", S),
    StructField("helpful_vote", S), StructField("verified_purchase", S),
    # metadata (2014: categories [[..]], imUrl, related {also_bought, ..}; 2018: category [..],
    # main_cat, image [..], also_buy; 2023: main_category, store, categories [..], images [{..}],
    # bought_together). Lists whose shape differs between releases are read as their JSON text.
    StructField("brand", S), StructField("price", S), StructField("main_cat", S),
    StructField("main_category", S), StructField("store", S),
    StructField("category", ArrayType(S)), StructField("categories", S),
    StructField("description", S), StructField("imUrl", S), StructField("image", S),
    StructField("imageURL", S), StructField("imageURLHighRes", S),
    StructField("images", S), StructField("also_buy", ArrayType(S)), StructField("related", S),
    StructField("bought_together", S),
])

# What load writes: one typed row per usable review line, and one per product metadata line
# (tests build clean-stage inputs of exactly this shape).
REVIEW = StructType([
    StructField("user_id", S, False), StructField("product_id", S, False),
    StructField("rating", DoubleType(), False), StructField("ts", LongType(), False),
    StructField("review_text", S, False), StructField("summary", S, False),
    StructField("helpful_votes", LongType(), False), StructField("total_votes", LongType(), False),
    StructField("verified", BooleanType(), False), StructField("reviewer_name", S, False),
    StructField("category", S, False), StructField("source_format", S, False),
    StructField("source_file", S, False), StructField("line_hash", S, False),
])

PRODUCT = StructType([
    StructField("product_id", S, False), StructField("title", S, False), StructField("brand", S, False),
    StructField("price", DoubleType(), False), StructField("category", S, False),
    StructField("categories", ArrayType(S), False), StructField("description", S, False),
    StructField("image", S, False), StructField("also_buy", ArrayType(S), False),
    StructField("source_file", S, False),
])
