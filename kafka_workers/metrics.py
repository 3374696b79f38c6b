"""Prometheus metrics and health of one rating worker, served on its own port (/metrics, /healthz, /readyz).

The worker loop calls the small functions below where it learns something (an outcome, a retry, a
turn of the loop), so the loop can be reorganised (batches) without touching what is exported:

    recommender_worker_events_total{outcome}  processed | duplicate | dead-letter | cancelled | dropped
    recommender_worker_retries_total{reason}  error (a message that raised, tried again) | outage | lock-lost
    recommender_rating_to_list_seconds        histogram: rating submitted (event ts) -> new list written
    recommender_worker_lag                    events in its partitions not yet handed to it (NaN: not known)
    recommender_worker_model_info{version}    the model version it scores with ("none": no model)

plus prometheus_client's own ``process_*`` series (start time, CPU, memory). The histogram is the
only place the rating -> list latency is kept: the staff dashboard reads it from here
(``core/freshness.py``), and so can a Prometheus server.

``/healthz`` answers 200 while the consume loop turns: it has turned within
``WORKER_MAX_POLL_INTERVAL_MS`` (Kafka's own limit for a live group member), else 503. It stays
200 while Kafka is down (poll() returns nothing, the loop turns): restarting the worker would not
help. ``/readyz`` says whether the worker consumes: 200 while the loop turns and the broker
answered the consumer within ``WORKER_READY_BROKER_S`` (its last heartbeat answer) and the topic it
subscribes to exists, else 503 (``status`` says which: ``no-broker``, ``no-topic``); the gauge
``recommender_worker_broker_connected`` is 1 or 0 like the broker's part. A worker subscribed to a
topic that does not exist joins its group and heartbeats, and consumes nothing.

    WORKER_METRICS_PORT   base port; unset or 0: no endpoint (a worker started by hand, the tests).
                          bin/services sets 9410 and runs process n of ``numprocs`` on base + n
                          (read by core.freshness.metrics_port, for the dashboard too)
    WORKER_PROCESS_NUM    n (supervisord's %(process_num)d; 0 otherwise)
    WORKER_METRICS_ADDR   address to listen on: 127.0.0.1 (0.0.0.0 in a container)
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from typing import Callable

from prometheus_client import Counter, Gauge, Histogram, Info, make_wsgi_app

from core import freshness
from core.env import env_int, env_str
from kafka_workers import config

log = logging.getLogger("kafka_workers.metrics")

# Fine where the figures live (tens of ms on this machine), coarse up to a minute-long outage.
LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15,
                   0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

EVENTS = Counter("recommender_worker_events", "Rating events handled, by outcome", ["outcome"])
RETRIES = Counter("recommender_worker_retries", "Tries of a message repeated, by reason", ["reason"])
LATENCY = Histogram("recommender_rating_to_list_seconds",
                    "From a rating's submission (event ts) until the worker wrote the user's new list",
                    buckets=LATENCY_BUCKETS)
LAG = Gauge("recommender_worker_lag", "Events in the assigned partitions not yet handed to this worker")
MODEL = Info("recommender_worker_model", "The model version this worker scores with")

_last_turn = 0.0  # monotonic time the consume loop last turned; 0: not yet
_broker_contact: Callable[[], float | None] = lambda: None  # wall time the broker last answered; None: never
_topic: tuple[str | None, bool | None] = (None, None)  # the topic consumed, and whether it exists (None: not known)


def event_handled(outcome: str, latency_s: float = 0.0) -> None:
    """One message done with ``outcome`` (a ``kafka_workers.outcomes.Outcome.status``); a processed rating's
    latency goes into the histogram."""
    EVENTS.labels(outcome).inc()
    if outcome == "processed":
        LATENCY.observe(max(0.0, latency_s))


def retried(reason: str) -> None:
    """A message is tried again: ``error`` (it raised), ``outage`` (MongoDB or Kafka down) or
    ``lock-lost`` (its user's lock was taken over while the worker stalled)."""
    RETRIES.labels(reason).inc()


def stats_seen(lag: int | None, model_version: str | None) -> None:
    """The loop's periodic look at its lag (None: not known yet) and model (None: none loaded)."""
    LAG.set(float("nan") if lag is None else lag)
    MODEL.info({"version": model_version or "none"})


def loop_turned() -> None:
    """The consume loop came round (what /healthz checks)."""
    global _last_turn
    _last_turn = time.monotonic()


def healthy() -> tuple[bool, dict]:
    limit_s = config.max_poll_interval_ms() / 1000
    ago = time.monotonic() - _last_turn if _last_turn else None
    ok = ago is not None and ago <= limit_s
    return ok, {"status": "ok" if ok else "stalled" if ago is not None else "starting", "pid": os.getpid(),
                "loop_turned_s_ago": None if ago is None else round(ago, 3)}


def watch_broker(last_contact: Callable[[], float | None]) -> None:
    """Where /readyz learns when the broker last answered (the worker's consumer: consumer.last_broker_contact)."""
    global _broker_contact
    _broker_contact = last_contact


def topic_checked(topic: str, exists: bool | None) -> bool | None:
    """What the consume loop learnt of its topic (``topic_check.topic_exists``; None: not known yet);
    returns what was known before."""
    global _topic
    was = _topic[1] if _topic[0] == topic else None
    _topic = (topic, exists)
    return was


def _broker_contact_s_ago() -> float | None:
    last = _broker_contact()
    return None if last is None else max(0.0, time.time() - last)


def _broker_connected(ago: float | None) -> bool:
    """Whether the broker's last answer (``ago`` seconds since, :func:`_broker_contact_s_ago`) is
    recent enough (``WORKER_READY_BROKER_S``)."""
    return ago is not None and ago <= config.ready_broker_s()


BROKER_CONNECTED = Gauge("recommender_worker_broker_connected",
                         "1 while Kafka answered the consumer within WORKER_READY_BROKER_S, else 0")
BROKER_CONNECTED.set_function(lambda: float(_broker_connected(_broker_contact_s_ago())))


def ready() -> tuple[bool, dict]:
    """The loop turns (``healthy``), the broker answers and the topic exists: the worker consumes."""
    alive, body = healthy()
    ago = _broker_contact_s_ago()
    connected = _broker_connected(ago)  # one reading, the one the body reports
    topic, exists = _topic
    ok = alive and connected and exists is True
    status = ("ready" if ok else body["status"] if not alive else "no-broker" if not connected
              else "no-topic" if exists is False else "starting")
    return ok, {**body, "status": status, "broker_answered_s_ago": None if ago is None else round(ago, 3),
                "topic": topic, "topic_exists": exists}


_metrics_app = make_wsgi_app()


def app(environ, start_response):
    """/metrics (Prometheus text format), /healthz and /readyz (JSON); 404 otherwise."""
    path = environ.get("PATH_INFO", "")
    if path == "/metrics":
        return _metrics_app(environ, start_response)
    if path in ("/healthz", "/readyz"):
        ok, body = healthy() if path == "/healthz" else ready()
        start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # one line per scrape would drown the worker's log
        pass


def serve(port: int, addr: str = "127.0.0.1") -> WSGIServer:
    """Serve /metrics and /healthz on ``addr:port`` from a daemon thread (port 0: any free one)."""
    server = make_server(addr, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def serve_from_env() -> WSGIServer | None:
    """The endpoint ``WORKER_METRICS_PORT`` + ``WORKER_PROCESS_NUM`` asks for, or None when unset.

    A port that is taken is a configuration error and ends the worker with the reason (under
    bin/services, two programs were given the same ports)."""
    base = freshness.metrics_port()
    if not base:
        return None
    port = base + env_int("WORKER_PROCESS_NUM", 0)
    addr = env_str("WORKER_METRICS_ADDR", "127.0.0.1")
    try:
        server = serve(port, addr)
    except OSError as exc:
        raise SystemExit(f"worker: cannot serve /metrics on {addr}:{port}: {exc}") from None
    log.info("metrics and health on http://%s:%d/metrics, /healthz, /readyz", addr, port)
    return server
