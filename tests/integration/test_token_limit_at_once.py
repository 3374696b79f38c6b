"""``API_TOKEN_LIMIT`` holds for sign-ins at once (``accounts.api``): real concurrent requests to
``/api/token/``, one thread each, with the site's database behind them.

The limit was counted before knox made the token, outside any transaction: sign-ins at once all
counted the same tokens and all made one, past the limit. To make "at once" certain, not likely,
every sign-in waits for the others just before its token is made (``create_token``, knox's step
after the password check), then they all go on together.

On SQLite the test needs its database in a file (pytest-django's in-memory one fails a connection
that meets another's transaction instead of making it wait), so a session on SQLite runs this file
once more in a pytest of its own on a file (``tests/sqlite_file_db.py``); test_site_on_postgresql
runs it on PostgreSQL.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import override_settings

from tests.site_catalog import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
SESSION_NAMES = ("MONGO_DB", "KAFKA_RATINGS_TOPIC", "KAFKA_DEAD_LETTER_TOPIC")  # tests/conftest.py's
SIGN_INS, LIMIT = 4, 2


def _on_a_sqlite_file() -> None:
    """This file's test in a pytest of its own whose test database is a SQLite file, with its own
    MongoDB database and topics (this session's would be dropped when it ends)."""
    env = {k: v for k, v in os.environ.items() if k not in SESSION_NAMES}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.sqlite_file_db",
                          __file__], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr[-2000:]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "1 passed" in summary and "skipped" not in summary, summary


def test_sign_ins_at_once_never_pass_the_token_limit(site_cache, make_user, monkeypatch):
    """``SIGN_INS`` sign-ins of one account at once, with room for ``LIMIT`` tokens: ``LIMIT`` get a
    token, the others the 403 ``token_limit``, and the account holds ``LIMIT`` tokens, not more."""
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        _on_a_sqlite_file()
        return
    from knox.models import AuthToken

    from accounts.api import ObtainExpiringToken

    user = make_user()
    make_token, together = ObtainExpiringToken.create_token, threading.Barrier(SIGN_INS, timeout=120)

    def all_together(view):
        together.wait()  # every sign-in is past its password check
        return make_token(view)

    monkeypatch.setattr(ObtainExpiringToken, "create_token", all_together)
    answers: dict[int, int] = {}

    def sign_in(n: int) -> None:
        try:
            answer = Client().post("/api/token/", {"username": user.username, "password": PASSWORD},
                                   REMOTE_ADDR=f"198.51.100.{n + 1}")
            answers[n] = answer.status_code if answer.status_code != 403 else answer.json()["code"]
        finally:
            connection.close()  # this thread's own connection

    with override_settings(API_TOKEN_LIMIT=LIMIT):
        threads = [threading.Thread(target=sign_in, args=(n,)) for n in range(SIGN_INS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(map(str, answers.values())) == ["200"] * LIMIT + ["token_limit"] * (SIGN_INS - LIMIT), answers
    assert AuthToken.objects.filter(user=user).count() == LIMIT
