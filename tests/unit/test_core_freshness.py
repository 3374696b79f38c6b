"""core.freshness: percentiles read from the workers' Prometheus histograms, as Prometheus reads them."""
from __future__ import annotations

import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from core import freshness

INF = math.inf


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile():
    buckets = {0.01: 10, 0.02: 30, 0.05: 40, INF: 40}
    assert freshness.quantile(0.5, buckets) == pytest.approx(0.015)  # rank 20: half-way through (0.01, 0.02]
    assert freshness.quantile(0.99, buckets) == pytest.approx(0.02 + 0.03 * 9.6 / 10)
    assert freshness.quantile(0.05, buckets) == pytest.approx(0.002)  # rank 2 of the first 10, from 0


def test_quantile_in_the_inf_bucket_reports_the_largest_bound_and_nothing_without_events():
    assert freshness.quantile(0.99, {0.01: 1, 0.1: 1, INF: 2}) == 0.1
    assert freshness.quantile(0.5, {0.01: 0, INF: 0}) is None
    assert freshness.quantile(0.5, {}) is None


def _histogram_text(values: list[float]) -> bytes:
    registry = CollectorRegistry()
    h = Histogram("recommender_rating_to_list_seconds", "test", buckets=(0.01, 0.02, 0.03, 0.05, 0.1),
                  registry=registry)
    for v in values:
        h.observe(v)
    return generate_latest(registry)


@pytest.fixture
def workers():
    """Two fake worker /metrics endpoints (plain HTTP on loopback) serving fixed histograms."""
    bodies = {"/a/metrics": _histogram_text([0.012] * 50 + [0.045] * 50),
              "/b/metrics": _histogram_text([0.025] * 100)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = bodies.get(self.path)
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_summary_adds_up_every_answering_worker_and_names_the_others(workers):
    gone = "http://127.0.0.1:9/metrics"  # discard port: nothing listens
    s = freshness.summary([f"{workers}/a/metrics", f"{workers}/b/metrics", gone])
    assert s["n"] == 200 and s["workers"] == 2 and s["unreachable"] == [gone]
    # 50 in (0.01, 0.02], 100 in (0.02, 0.03], 50 in (0.03, 0.05]: rank 100 is half-way through the 100
    assert s["p50_ms"] == pytest.approx(25.0)
    assert 30.0 < s["p99_ms"] <= 50.0


def test_summary_without_workers_says_so():
    s = freshness.summary(["http://127.0.0.1:9/metrics"])
    assert s["n"] == 0 and s["p50_ms"] is None and s["workers"] == 0


def test_the_workers_and_the_dashboard_read_one_metrics_port(monkeypatch):
    """Unset, WORKER_METRICS_PORT was off for the workers (kafka_workers.metrics) but 9410 for the
    dashboard, which then scraped a port no worker served. Now both read core.freshness.metrics_port."""
    from django.template.loader import render_to_string

    from kafka_workers import metrics

    for name in ("WORKER_METRICS_PORT", "WORKER_METRICS_URLS", "WORKERS"):
        monkeypatch.delenv(name, raising=False)
    assert metrics.serve_from_env() is None and freshness.worker_urls() == []
    page = render_to_string("shop/dashboard.html", {"freshness": {**freshness.summary([]), "n_unreachable": 0}})
    assert "No workers to read" in page
    monkeypatch.setenv("WORKER_METRICS_PORT", "19410")
    monkeypatch.setenv("WORKERS", "2")
    assert freshness.worker_urls() == ["http://127.0.0.1:19410/metrics", "http://127.0.0.1:19411/metrics"]
