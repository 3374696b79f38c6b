"""DATABASE_URL as recsite/settings.py reads it: the dj-database-url conventions.

``sqlite:///name`` is a path relative to the working directory and ``sqlite:////abs/name`` an
absolute one; a PostgreSQL URL keeps its connections for a minute. The settings module is executed
afresh for each URL (it reads the environment when it is imported).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SETTINGS = Path(__file__).resolve().parents[2] / "recsite" / "recsite" / "settings.py"


def _databases(monkeypatch, url: str | None) -> dict:
    if url is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", url)
    spec = importlib.util.spec_from_file_location("settings_under_test", SETTINGS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.DATABASES["default"]


def test_relative_sqlite_path_stays_relative(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    db = _databases(monkeypatch, "sqlite:///state/site.sqlite3")
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == "state/site.sqlite3"
    assert (tmp_path / "state").is_dir()  # the folder is made where the file will be


def test_absolute_sqlite_path(monkeypatch, tmp_path):
    db = _databases(monkeypatch, f"sqlite:///{tmp_path / 'abs.sqlite3'}")
    assert db["NAME"] == str(tmp_path / "abs.sqlite3")
    assert db.get("CONN_MAX_AGE", 0) == 0


def test_default_is_the_sqlite_file_in_local_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCAL_DIR", str(tmp_path / "local"))
    from core.settings import get_settings

    get_settings.cache_clear()
    try:
        db = _databases(monkeypatch, None)
    finally:
        get_settings.cache_clear()
    assert db["NAME"] == str(tmp_path / "local" / "recsite.sqlite3")


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_postgres_url(monkeypatch, scheme):
    db = _databases(monkeypatch, f"{scheme}://recsite:p%40ss@db.example:5433/recsite")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], str(db["PORT"])) == (
        "recsite", "recsite", "p@ss", "db.example", "5433")
    assert db["CONN_MAX_AGE"] == 60


def _sqlite_connections(monkeypatch, tmp_path):
    """Django connections (one per thread) to a SQLite file as the settings configure them."""
    from django.db.utils import ConnectionHandler

    return ConnectionHandler({"default": _databases(monkeypatch, f"sqlite:///{tmp_path / 'site.sqlite3'}")})


def test_sqlite_commits_without_a_sync_each(monkeypatch, tmp_path, django_db_blocker):
    """Each rating's submission record is one commit: in SQLite's rollback journal with
    synchronous=FULL that costs several fsyncs, and it waits for every reader."""
    connection = _sqlite_connections(monkeypatch, tmp_path)["default"]
    with django_db_blocker.unblock():
        try:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA journal_mode")
                journal = cursor.fetchone()[0]
                cursor.execute("PRAGMA synchronous")
                synchronous = cursor.fetchone()[0]
        finally:
            connection.close()
    assert (journal, synchronous) == ("wal", 1)  # WAL, NORMAL: synced at checkpoints


def test_sqlite_read_then_write_survives_a_concurrent_commit(monkeypatch, tmp_path, django_db_blocker):
    """``update_or_create`` reads, then writes, in one transaction. Begun deferred, that write fails
    at once ("database is locked", no waiting) if another connection wrote meanwhile, in WAL and in
    the rollback journal alike; begun IMMEDIATE, the other connection waits its turn instead."""
    import threading

    from django.db import transaction

    connections = _sqlite_connections(monkeypatch, tmp_path)
    monkeypatch.setattr("django.db.transaction.connections", connections)  # atomic() on this database
    read, errors = threading.Event(), []

    def other_writer() -> None:
        read.wait(5)
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("INSERT INTO t VALUES ('other')")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connections["default"].close()

    with django_db_blocker.unblock():
        connection = connections["default"]
        try:
            with connection.cursor() as cursor:
                cursor.execute("CREATE TABLE t (name TEXT)")
            other = threading.Thread(target=other_writer)
            other.start()
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM t")
                read.set()
                other.join(0.3)  # the other commits now, unless it must wait for this transaction
                cursor.execute("INSERT INTO t VALUES ('this')")
            other.join(5)
            with connection.cursor() as cursor:
                cursor.execute("SELECT name FROM t ORDER BY name")
                names = [row[0] for row in cursor.fetchall()]
        finally:
            connection.close()
    assert errors == [] and names == ["other", "this"]
