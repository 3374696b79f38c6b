"""Run the real site (gunicorn, started by ``bin/services start web``) on a free port for the
browser tests and the benchmarks.

Each run gets a private ``SERVICES_STATE_DIR`` (its own supervisord, socket and log), a
fresh SQLite database and its own collected static files, so starting and stopping it never
touches a demo that may already be serving on port 8000. The caller's environment decides
everything else (MongoDB database, Kafka topics, data and artifact folders, Django cache prefix,
DEBUG), exactly as for a deployment.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "bin" / "services"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Site:
    url: str  # "http://127.0.0.1:<port>"
    state_dir: Path  # bin/services' run/ (supervisord) and log/ for this server
    env: dict[str, str]

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """``manage.py`` against this server's database and settings."""
        return subprocess.run([sys.executable, str(ROOT / "recsite" / "manage.py"), *args], env=self.env,
                              cwd=ROOT, check=True, capture_output=True, text=True)

    @property
    def pid(self) -> int:
        """gunicorn's master process (``bin/services status web``: name, state, pid, address)."""
        out = subprocess.run([str(SERVICES), "status", "web"], env=self.env, cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
        return int(out[2])

    @property
    def log_path(self) -> Path:
        return self.state_dir / "log" / "web.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def running_site(env: dict[str, str] | None = None, workers: int | None = None,
                 threads: int | None = None) -> Iterator[Site]:
    """Migrate a fresh SQLite database, collect static files, start gunicorn, stop it at the end."""
    state_dir = Path(tempfile.mkdtemp(prefix="site-"))
    port = free_port()
    env = {**(env if env is not None else os.environ), "SERVICES_STATE_DIR": str(state_dir),
           "WEB_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    env.setdefault("DJANGO_DEBUG", "1")  # a loopback server over plain HTTP unless the caller says otherwise
    env.setdefault("DATABASE_URL", f"sqlite:///{state_dir / 'site.sqlite3'}")
    env.setdefault("DJANGO_STATIC_ROOT", str(state_dir / "static"))
    if workers:
        env["WEB_WORKERS"] = str(workers)
    if threads:
        env["WEB_THREADS"] = str(threads)
    site = Site(f"http://127.0.0.1:{port}", state_dir, env)
    started = False
    try:
        site.manage("migrate", "--noinput")
        site.manage("collectstatic", "--noinput")
        subprocess.run([str(SERVICES), "start", "web"], env=env, cwd=ROOT, check=True, capture_output=True,
                       text=True)
        started = True
        yield site
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"{' '.join(map(str, exc.cmd))} failed:\n{exc.stdout}\n{exc.stderr}\n"
                           f"{site.log()[-3000:]}") from None
    finally:
        if started:
            subprocess.run([str(SERVICES), "stop", "web"], env=env, cwd=ROOT, capture_output=True, text=True)
        shutil.rmtree(state_dir, ignore_errors=True)
