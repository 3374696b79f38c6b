"""Login throttling: after N failed attempts for a username from one address, refuse for a while.

Counting in the shared cache (Redis) makes the limit hold across gunicorn workers. Both the
username and the client address are part of the key, so one attacker cannot lock every user out
from one address, nor a user be locked out by someone elsewhere.
"""
from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache


def _key(username: str, address: str) -> str:
    digest = hashlib.sha256(f"{username.lower()}|{address}".encode()).hexdigest()[:32]
    return f"login-fail:{digest}"


def is_locked(username: str, address: str) -> bool:
    return int(cache.get(_key(username, address)) or 0) >= settings.LOGIN_THROTTLE_ATTEMPTS


def record_failure(username: str, address: str) -> None:
    key = _key(username, address)
    if cache.add(key, 1, settings.LOGIN_THROTTLE_WINDOW):
        return
    try:
        cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, settings.LOGIN_THROTTLE_WINDOW)


def reset(username: str, address: str) -> None:
    cache.delete(_key(username, address))
