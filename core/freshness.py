"""Live freshness for the dashboard: rating -> new list p50/p99, from the workers' /metrics.

One source for the figure: each worker observes every processed rating's latency in the Prometheus
histogram ``recommender_rating_to_list_seconds`` (kafka_workers/metrics.py) and serves it on its
/metrics. The dashboard scrapes the workers, adds up their buckets and reads p50 and p99 the way
Prometheus' ``histogram_quantile`` does (linear inside the bucket the rank falls in).

Why not "the last hour" any more: a histogram's counts are cumulative since the worker started, and
a windowed quantile is a rate over stored time series, which is a Prometheus server's job
(``histogram_quantile(0.99, sum by (le) (rate(recommender_rating_to_list_seconds_bucket[1h])))``).
Keeping our own per-minute series in Redis to imitate it is what this module replaced. So the
dashboard says "since <the oldest worker's start>" (``process_start_time_seconds``), and a worker
that does not answer is named there rather than silently left out.

Which workers: ``WORKER_METRICS_URLS`` (comma-separated /metrics URLs), by default the ports
``bin/services`` gives them (``WORKER_METRICS_PORT`` + 0 .. ``WORKERS``-1 on 127.0.0.1; none when
that is unset, as no worker then serves one: :func:`metrics_port`). Every
address a URL's host name resolves to is scraped, so under docker compose ``http://worker:9410/metrics``
covers all the replicas of the ``worker`` service (its DNS answers with each of them).
"""
from __future__ import annotations

import math
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families

from core.env import env_int, env_str

HISTOGRAM = "recommender_rating_to_list_seconds"
SCRAPE_TIMEOUT_S = 2.0


def metrics_port() -> int:
    """``WORKER_METRICS_PORT``: the rating workers' base port for /metrics, /healthz and /readyz
    (process n serves on it + n); 0, the default, is off (a worker started by hand, or in a test,
    beside the running ones would take their port).

    The one reader of the variable, for the workers (kafka_workers.metrics) and the dashboard
    (:func:`worker_urls`): each had its own default, off for the workers and 9410 for the dashboard.
    bin/services sets 9410 for both."""
    return env_int("WORKER_METRICS_PORT", 0, minimum=0)


def worker_urls() -> list[str]:
    """The workers' /metrics: ``WORKER_METRICS_URLS``, else those ``metrics_port`` and ``WORKERS``
    make, else none."""
    configured = env_str("WORKER_METRICS_URLS", "")
    if configured:
        return [u.strip() for u in configured.split(",") if u.strip()]
    base = metrics_port()
    if not base:
        return []
    n = env_int("WORKERS", 1, minimum=1)
    return [f"http://127.0.0.1:{base + i}/metrics" for i in range(n)]


def _targets(url: str) -> list[str]:
    """The URL once per address its host resolves to (all replicas behind one compose name)."""
    parts = urlsplit(url)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return [url]
    addrs = sorted({i[4][0] for i in infos if i[0] == socket.AF_INET}) or sorted({i[4][0] for i in infos})
    if len(addrs) <= 1:
        return [url]
    port = f":{parts.port}" if parts.port else ""
    return [urlunsplit(parts._replace(netloc=f"[{a}]{port}" if ":" in a else f"{a}{port}")) for a in addrs]


def scrape(url: str) -> tuple[dict[float, float], float | None]:
    """({bucket upper bound: cumulative count}, process start time) of one worker."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as r:
        text = r.read().decode("utf-8", "replace")
    buckets: dict[float, float] = {}
    started = None
    for family in text_string_to_metric_families(text):
        if family.name == HISTOGRAM:
            for s in family.samples:
                if s.name == HISTOGRAM + "_bucket":
                    buckets[float(s.labels["le"])] = s.value
        elif family.name == "process_start_time_seconds" and family.samples:
            started = family.samples[0].value
    return buckets, started


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile``: the bucket holding rank q * n, linear inside it (from 0
    for the first bucket); a rank in the +Inf bucket reports the largest finite bound."""
    ordered = sorted(buckets.items())
    if not ordered or not ordered[-1][1]:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def summary(urls: list[str] | None = None) -> dict:
    """{n, p50_ms, p99_ms, since, workers, unreachable}: all answering workers together.

    ``since`` is the epoch second the oldest answering worker started (its counts begin there);
    p50/p99 are None without events; ``unreachable`` lists the URLs that did not answer."""
    targets = [t for u in (urls if urls is not None else worker_urls()) for t in _targets(u)]
    total: dict[float, float] = {}
    starts: list[float] = []
    unreachable: list[str] = []

    def one(url: str):
        try:
            return url, scrape(url)
        except (OSError, ValueError) as exc:
            return url, exc

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(targets)))) as pool:
        for url, result in pool.map(one, targets):
            if isinstance(result, Exception):
                unreachable.append(url)
                continue
            buckets, started = result
            for le, count in buckets.items():
                total[le] = total.get(le, 0.0) + count
            if started:
                starts.append(started)
    n = int(total.get(math.inf, 0))

    def ms(q: float) -> float | None:
        value = quantile(q, total) if n else None
        return None if value is None else round(value * 1000, 1)

    return {"n": n, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "since": min(starts) if starts else None,
            "workers": len(targets) - len(unreachable), "unreachable": unreachable}
