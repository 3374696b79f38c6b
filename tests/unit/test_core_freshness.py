"""core.freshness: latency buckets are at most 5 % wide, and percentiles read from them."""
from __future__ import annotations

import pytest

from core import freshness


@pytest.mark.parametrize("ms", [0.05, 0.1, 0.11, 1.0, 7.3, 22.0, 48.9, 250.0, 12_345.0])
def test_a_latency_is_reported_by_a_bucket_at_most_5_percent_above_it(ms):
    upper = freshness.bucket_upper_ms(freshness.bucket(ms))
    assert ms <= upper * (1 + 1e-9) and upper <= max(ms, freshness.MIN_MS) * freshness.BUCKET_RATIO * (1 + 1e-9)


def test_buckets_keep_order():
    values = [0.2, 0.9, 3.0, 3.1, 40.0, 41.0, 900.0]
    buckets = [freshness.bucket(v) for v in values]
    assert buckets == sorted(buckets)
