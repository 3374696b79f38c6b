"""Celery's sweep of expired API tokens (``kafka_workers.tasks.delete_expired_tokens``, every
``API_TOKEN_SWEEP_S``): an expired token was deleted only by its account's next sign-in, so a
device that never came back left it in the table for good.
"""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db(transaction=True)  # the task closes its connections, as after a request
def test_the_sweep_deletes_every_accounts_expired_tokens_and_only_those(make_user):
    from knox.models import AuthToken

    from kafka_workers import tasks

    gone, back = make_user(), make_user()
    AuthToken.objects.create(gone, expiry=timedelta(seconds=-1))  # never signed in again
    AuthToken.objects.create(back, expiry=timedelta(seconds=-60))
    live, _ = AuthToken.objects.create(back, expiry=timedelta(hours=1))
    assert tasks.delete_expired_tokens() == 2
    assert not AuthToken.objects.filter(user=gone).exists()
    assert list(AuthToken.objects.filter(user=back)) == [live]
    assert tasks.delete_expired_tokens() == 0


@pytest.mark.django_db(transaction=True)
def test_the_sweep_deletes_email_claims_older_than_their_links(make_user):
    """A claim on an address whose link has expired (``EMAIL_CONFIRM_TTL``) goes; a newer one stays."""
    from django.conf import settings
    from django.utils import timezone

    from accounts.models import PendingEmail
    from kafka_workers import tasks

    old = PendingEmail.objects.create(user=make_user(), email="old@example.com")
    PendingEmail.objects.filter(pk=old.pk).update(
        created=timezone.now() - timedelta(seconds=settings.EMAIL_CONFIRM_TTL + 60))
    fresh = PendingEmail.objects.create(user=make_user(), email="fresh@example.com")
    tasks.delete_expired_tokens()
    assert list(PendingEmail.objects.all()) == [fresh]


def test_a_celery_worker_without_django_runs_the_sweep(tmp_path):
    """Celery's worker imports kafka_workers alone (``-A kafka_workers.celery_app``), with no Django
    set up: the task sets it up for the site's database (``DATABASE_URL``) on its own."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")},
           "PYTHONPATH": str(ROOT), "DJANGO_DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'site.sqlite3'}"}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    run("recsite/manage.py", "migrate", "--verbosity", "0")
    run("recsite/manage.py", "shell", "-c",
        "from datetime import timedelta; from django.contrib.auth.models import User; from knox.models import AuthToken; "
        "u = User.objects.create(username='away'); AuthToken.objects.create(u, expiry=timedelta(seconds=-1)); "
        "AuthToken.objects.create(u, expiry=timedelta(hours=1))")
    assert run("-c", "from kafka_workers import tasks; print(tasks.delete_expired_tokens())").split()[-1] == "1"


def test_setting_up_django_for_the_sweep_keeps_celerys_logging(tmp_path):
    """The sweep sets Django up inside a Celery worker whose logging Celery configured: the site's
    ``LOGGING`` must not replace the root logger's handlers (the worker's log file and format)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH")},
           "PYTHONPATH": str(ROOT), "DJANGO_DEBUG": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'site.sqlite3'}"}
    script = ("import logging; celerys = logging.FileHandler(%r); logging.getLogger().addHandler(celerys); "
              "from kafka_workers import tasks; tasks._site_database(); "
              "print(logging.getLogger().handlers == [celerys])" % str(tmp_path / "worker.log"))
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "True"
