"""pytest plugin (``-p tests.sqlite_file_db``): Django's test database on SQLite in a file, as the
site's own, instead of pytest-django's in-memory one.

In memory (a shared cache), a connection that meets another's write transaction fails at once
("database table is locked"), where a file makes it wait its turn (the busy timeout; the site begins
its transactions IMMEDIATE, recsite.settings). Tests of requests at once need the file. Nothing on
PostgreSQL: its test database is a server's.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_folder: Path | None = None


def pytest_sessionstart(session) -> None:
    """Before any test makes the test database: name its file (Django deletes it at the end)."""
    global _folder
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        _folder = Path(tempfile.mkdtemp(prefix="site-test-db-"))
        database.setdefault("TEST", {})["NAME"] = str(_folder / "test.sqlite3")


def pytest_sessionfinish(session, exitstatus) -> None:
    if _folder is not None:
        shutil.rmtree(_folder, ignore_errors=True)  # the WAL's side files, if any are left
