"""A login refused by the lockout says when to try again: the end of the current count window
(windows are fixed, one starting every ``LOGIN_THROTTLE_WINDOW`` seconds), not a whole window on."""
from __future__ import annotations

import time

from django.test import RequestFactory, override_settings

from accounts import throttle
from accounts.middleware import refusal_response


@override_settings(LOGIN_THROTTLE_WINDOW=300)
def test_the_seconds_left_are_those_to_the_current_windows_end():
    assert throttle.window_left(now=1000.0) == 200  # the window 900-1200
    assert throttle.window_left(now=1199.5) == 1
    assert throttle.window_left(now=1200.0) == 300


@override_settings(LOGIN_THROTTLE_WINDOW=300)
def test_a_refused_login_is_told_to_retry_when_its_window_ends(monkeypatch):
    monkeypatch.setattr(time, "time", lambda: 1000.0)
    request = RequestFactory().post("/accounts/login/")
    assert refusal_response(request, throttle.Locked())["Retry-After"] == "200"
    assert refusal_response(request, throttle.LockoutUnavailable())["Retry-After"] == "5"
