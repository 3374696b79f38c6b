"""gunicorn is configured in one place, recsite/gunicorn.conf.py: bin/services (services/programs.py),
the compose file's web service and the image's CMD (docker/Dockerfile) give it that file and the
address to bind, nothing else. Written out three times, the command lines had drifted: compose ran
single-thread workers (the measured local setup runs 3 x 4), and the image run alone trusted
127.0.0.1's X-Forwarded-Proto."""
from __future__ import annotations

import importlib.util
import json
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from gunicorn.config import Config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "recsite" / "gunicorn.conf.py"


def local_words(monkeypatch, tmp_path) -> list[str]:
    """gunicorn's arguments in ``bin/services start web``."""
    monkeypatch.setenv("SERVICES_STATE_DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("programs", ROOT / "services" / "programs.py")
    programs = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "programs", programs)  # dataclasses look their module up there
    spec.loader.exec_module(programs)
    return programs.program("web").command[1:]


def compose_words() -> list[str]:
    """gunicorn's arguments in the compose file's web service (after its migrate, in /app)."""
    command = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())["services"]["web"]["command"]
    return shlex.split(command[-1].split("exec gunicorn", 1)[1])


def image_words() -> list[str]:
    """gunicorn's arguments in the image's CMD (run from its WORKDIR, /app: the repository's root)."""
    cmd = next(line for line in (ROOT / "docker" / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    words = json.loads(cmd.removeprefix("CMD "))
    assert words[0] == "gunicorn"
    return words[1:]


def gunicorn_config(words: list[str]) -> Config:
    """The settings gunicorn runs with for these arguments: its config file first, then the command
    line over it (gunicorn.app.base.Application.load_config), the file's path taken from the repository."""
    cfg = Config()
    args = cfg.parser().parse_args(words)
    if args.config:
        for name, value in runpy.run_path(str(ROOT / args.config)).items():
            if name in cfg.settings:
                cfg.set(name, value)
    for name, value in vars(args).items():
        if value is not None and name != "args":
            cfg.set(name.lower(), value)
    return cfg


def all_words(monkeypatch, tmp_path) -> dict[str, list[str]]:
    return {"bin/services": local_words(monkeypatch, tmp_path), "compose": compose_words(), "image": image_words()}


def test_every_place_that_starts_gunicorn_gives_it_the_config_file_and_an_address_only(monkeypatch, tmp_path):
    for where, words in all_words(monkeypatch, tmp_path).items():
        args = Config().parser().parse_args(words)
        given = {name for name, value in vars(args).items() if value is not None and name != "args"}
        assert (given, args.args) == ({"config", "bind"}, []), f"{where} repeats gunicorn's settings: {words}"
        assert (ROOT / args.config).resolve() == CONFIG, where


@pytest.mark.parametrize("where", ["bin/services", "compose", "image"])
def test_gunicorn_runs_the_site_alike_everywhere(monkeypatch, tmp_path, where):
    for name in ("WEB_WORKERS", "WEB_THREADS"):
        monkeypatch.delenv(name, raising=False)
    cfg = gunicorn_config(all_words(monkeypatch, tmp_path)[where])
    assert (cfg.wsgi_app, Path(cfg.chdir), cfg.workers, cfg.threads) == ("recsite.wsgi", ROOT / "recsite", 3, 4)
    assert (cfg.graceful_timeout, cfg.accesslog, cfg.forwarded_allow_ips) == (10, "-", [])
    assert (cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size) == (4094, 100, 8190)


def test_workers_and_threads_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEB_WORKERS", "2")
    monkeypatch.setenv("WEB_THREADS", "8")
    cfg = gunicorn_config(compose_words())
    assert (cfg.workers, cfg.threads) == (2, 8)
    monkeypatch.setenv("WEB_THREADS", "0")
    with pytest.raises(ValueError, match="WEB_THREADS must be at least 1"):
        gunicorn_config(compose_words())
