"""A small circuit breaker for the site's calls to Kafka and MongoDB.

While a server is down, every request that needs it would wait for its own timeout, holding a
gunicorn thread: a handful of ratings could stall the whole site. After one failure the breaker
answers "unavailable" at once for ``cooldown_s``; then one caller probes (the others still fail
fast) and a success closes it again.
"""
from __future__ import annotations

import threading
import time


class Unavailable(RuntimeError):
    """A server the request needs is down (or was, moments ago); the site answers 503."""


class CircuitBreaker:
    """State is real: when the breaker opened, shared by the threads of one process."""

    def __init__(self, name: str, cooldown_s: float = 2.0) -> None:
        self.name = name
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._failing = False
        self._retry_at = 0.0

    def allow(self) -> bool:
        """May this call go to the server? While failing, one caller per cooldown probes."""
        with self._lock:
            if not self._failing:
                return True
            now = time.monotonic()
            if now < self._retry_at:
                return False
            self._retry_at = now + self.cooldown_s  # this caller probes; the others keep failing fast
            return True

    def failure(self) -> None:
        with self._lock:
            self._failing = True
            self._retry_at = time.monotonic() + self.cooldown_s

    def success(self) -> None:
        with self._lock:
            self._failing = False

    def failed_within(self, seconds: float) -> bool:
        """The last call through this breaker failed, less than ``seconds`` ago."""
        with self._lock:
            return self._failing and time.monotonic() - (self._retry_at - self.cooldown_s) < seconds

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._failing and time.monotonic() < self._retry_at
