"""Load benchmark of the website: N concurrent logged-in clients against a real gunicorn.

    .local/venv/bin/python bench/site_load.py [--clients 50] [--duration 60] [--think 0.5] [--load]

Each client is a browser tab of a different demo account (linked to a real reviewer, so it has a
personal list): it opens a product page, then fetches its recommendations from the JSON API
(unconditionally: the full list with titles, not the cheap 304 of a poll), waits ``--think``
seconds (the page polls every 0.5 s) and repeats, on its own keep-alive connection. The server
is started the production way: ``bin/services start web`` (gunicorn, WEB_WORKERS x WEB_THREADS as
bin/services defaults them), DEBUG off, with a private SERVICES_STATE_DIR (bench/site_server.py).
``--think 0`` sends back to back: a saturation run that shows capacity, where latency is
concurrency / throughput (Little's law) rather than the cost of one request.

Data: the MongoDB database named by MONGO_DB (default ``amazon_recommender``, what bin/demo
loads); ``--load`` first runs bin/pipeline on the bundled demo file into ``bench_site`` with its
own data and artifact folders, so the demo's model is left alone.

Prints p50/p95/p99 latency, requests/s and errors for each endpoint, measured in one run after a
warm-up, against the targets (recommendations API p99 <= 50 ms, product page p99 <= 100 ms,
0 errors), plus the conditions (load average, CPU used by the server and by this client).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import psutil

from bench.site_server import running_site

ROOT = Path(__file__).resolve().parent.parent

TARGETS_MS = {"recommendations API": 50.0, "product page": 100.0}
ACCESS_FORMAT = "bench|%(m)s|%(U)s|%(s)s|%(D)s"  # method, path, status, microseconds in the worker


def endpoint_of(path: str) -> str | None:
    if path == "/api/recommendations/":
        return "recommendations API"
    return "product page" if path.startswith("/p/") else None


def server_times(log_text: str) -> dict[str, list[float]]:
    """Per endpoint, the milliseconds gunicorn's worker spent on each request (its access log)."""
    out: dict[str, list[float]] = {name: [] for name in TARGETS_MS}
    for line in log_text.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5 and parts[0] == "bench" and endpoint_of(parts[2]):
            out[endpoint_of(parts[2])].append(int(parts[4]) / 1000)
    return out
PASSWORD = "Bench-Passphrase-" + secrets.token_hex(4)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: p99 is a latency some request really had)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def ensure_data(env: dict[str, str], load: bool) -> None:
    from core import mongo

    db = mongo.get_db(name=env["MONGO_DB"])
    if db["catalog_index"].find_one({"_id": "all:count"}) and db["model_versions"].find_one({"published": True}):
        return
    if not load:
        sys.exit(f"site_load: MongoDB database {env['MONGO_DB']!r} has no catalog or model; run bin/demo, "
                 "or pass --load to load the demo file into 'bench_site'")
    print(f"site_load: loading the demo file into {env['MONGO_DB']} with bin/pipeline (a few minutes)", flush=True)
    # bin/pipeline ends by mirroring its run into Django's database: keep the demo's out of it
    pipeline_env = {**env, "DATABASE_URL": f"sqlite:///{Path(env['DATA_DIR']).parent / 'pipeline-mirror.sqlite3'}"}
    subprocess.run([str(ROOT / "bin" / "pipeline"), "--run-id", f"bench-{int(time.time())}", "--force-publish"],
                   env=pipeline_env, cwd=ROOT, check=True)


def catalog_ids(env: dict[str, str]) -> list[str]:
    from core import mongo

    doc = mongo.get_db(name=env["MONGO_DB"])["catalog_index"].find_one({"_id": "all:0"})
    return list(doc["ids"])


def _cookie(headers, name: str) -> str | None:
    """A cookie's value from Set-Cookie, by hand: with DEBUG off cookies are marked Secure, and a
    client (rightly) would not send those back over plain HTTP on loopback."""
    for header in headers.getall("Set-Cookie", []):
        m = re.match(rf"{name}=([^;]*)", header)
        if m:
            return m.group(1)
    return None


async def login(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.get(f"{url}/accounts/login/") as form:
        csrf_cookie = _cookie(form.headers, "csrftoken")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', await form.text()).group(1)
    async with http.post(f"{url}/accounts/login/", allow_redirects=False,
                         data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token},
                         headers={"Cookie": f"csrftoken={csrf_cookie}"}) as done:
        session = _cookie(done.headers, "sessionid")
        if done.status != 302 or not session:
            raise RuntimeError(f"login of {username} failed: {done.status}")
    return session


def _is_product_page(body: bytes) -> bool:
    return b'id="rate"' in body


def _has_items(body: bytes) -> bool:
    return bool(json.loads(body)["items"])


async def client_loop(url: str, session: str, products: list[str], think: float, start: float, warmup: float,
                      end: float, stats: dict[str, Stats], rng: random.Random) -> None:
    """One browser tab: aiohttp (a third of httpx's CPU per request here), one keep-alive connection."""
    headers = {"Cookie": f"sessionid={session}", "Accept": "text/html,application/json"}
    async with aiohttp.ClientSession(base_url=url, headers=headers, timeout=aiohttp.ClientTimeout(total=30),
                                     connector=aiohttp.TCPConnector(limit=1),
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        await asyncio.sleep(rng.uniform(0, max(think, 0.05)))  # tabs do not open in lockstep
        while time.monotonic() < end:
            for name, path, check in (
                ("product page", f"/p/{rng.choice(products)}/", _is_product_page),
                ("recommendations API", "/api/recommendations/", _has_items),
            ):
                t0 = time.monotonic()
                try:
                    async with http.get(path, allow_redirects=False) as response:
                        body = await response.read()
                    elapsed = time.monotonic() - t0
                    ok = response.status == 200 and check(body)
                    kind = None if ok else f"HTTP {response.status}"
                except Exception as exc:  # a refused or timed-out request is an error, not a crash
                    elapsed, ok, kind = time.monotonic() - t0, False, exc.__class__.__name__
                if t0 >= start + warmup:
                    stats[name].latencies.append(elapsed * 1000)
                    if not ok:
                        stats[name].error(kind)
            if think:
                await asyncio.sleep(think)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def server_processes(pid: int) -> list[psutil.Process]:
    master = psutil.Process(pid)
    return [master, *master.children(recursive=True)]


def backing_processes() -> dict[str, list[psutil.Process]]:
    """FerretDB and Redis share the 2 cores with the site: their CPU is part of a request's cost."""
    found: dict[str, list[psutil.Process]] = {"FerretDB": [], "Redis": []}
    for p in psutil.process_iter(["name"]):
        name = (p.info["name"] or "").lower()
        if "ferretdb" in name:
            found["FerretDB"].append(p)
        elif "redis-server" in name:
            found["Redis"].append(p)
    return found


async def run(args) -> int:
    env = {**os.environ}
    if args.load:
        env.setdefault("MONGO_DB", "bench_site")
        bench_dir = ROOT / ".local" / "bench-site"
        env.setdefault("DATA_DIR", str(bench_dir / "data"))
        env.setdefault("ARTIFACTS_DIR", str(bench_dir / "artifacts"))
    env.setdefault("MONGO_DB", "amazon_recommender")
    ensure_data(env, args.load)
    products = catalog_ids(env)
    env.update(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_ALLOWED_HOSTS="127.0.0.1",
               DJANGO_SECURE_SSL_REDIRECT="0", DJANGO_CACHE_PREFIX=f"bench-{secrets.token_hex(4)}",
               DJANGO_LOG_LEVEL="WARNING", DJANGO_EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
               # gunicorn reads extra options from here: log each request's time in the worker (µs)
               GUNICORN_CMD_ARGS="--access-logformat=" + ACCESS_FORMAT)
    with running_site(env, workers=args.workers, threads=args.threads) as site:
        site.manage("create_demo_accounts", "--count", str(args.clients), "--password", PASSWORD)
        sem = asyncio.Semaphore(4)

        async def one_login(i: int) -> str:
            async with sem, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                                  cookie_jar=aiohttp.DummyCookieJar()) as c:
                return await login(c, site.url, f"demo{i}")

        sessions = await asyncio.gather(*(one_login(i) for i in range(1, args.clients + 1)))
        server = server_processes(site.pid)
        workers = len(server) - 1
        stats = {name: Stats() for name in TARGETS_MS}
        me = psutil.Process()
        load_before = os.getloadavg()
        log_path = site.log_path
        start = time.monotonic()
        backing = backing_processes()
        cpu_server0, cpu_me0 = cpu_seconds(server), cpu_seconds([me])
        cpu_backing0 = {k: cpu_seconds(v) for k, v in backing.items()}
        end = start + args.warmup + args.duration
        rng = random.Random(7)

        async def mark_measuring() -> int:
            await asyncio.sleep(args.warmup)
            return log_path.stat().st_size

        offset, *_ = await asyncio.gather(mark_measuring(), *(
            client_loop(site.url, s, products, args.think, start, args.warmup, end, stats,
                        random.Random(rng.random())) for s in sessions))
        with open(log_path, "rb") as f:
            f.seek(offset)
            in_server = server_times(f.read().decode("utf-8", "replace"))
        measured = time.monotonic() - start - args.warmup
        cpu_server, cpu_me = cpu_seconds(server) - cpu_server0, cpu_seconds([me]) - cpu_me0
        cpu_backing = {k: cpu_seconds(v) - cpu_backing0[k] for k, v in backing.items()}
        load_after = os.getloadavg()

    wall = time.monotonic() - start
    print(f"\nsite_load: {args.clients} clients, think {args.think:g} s, {args.duration:g} s measured after "
          f"{args.warmup:g} s warm-up; gunicorn {workers} workers x {args.threads or 4} threads, DEBUG off; "
          f"MongoDB {env['MONGO_DB']} ({len(products)} products)")
    print(f"conditions: {os.cpu_count()} CPUs, load average {load_before[0]:.1f} before / {load_after[0]:.1f} after; "
          f"CPU used: server {cpu_server / wall * 100:.0f}%, this client {cpu_me / wall * 100:.0f}%, "
          + ", ".join(f"{k} {v / wall * 100:.0f}%" for k, v in cpu_backing.items()) + " (of one core)")
    print(f"{'endpoint':<22}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
          f"   target")
    failed = False
    for name, target in TARGETS_MS.items():
        s = stats[name]
        p99 = pct(s.latencies, 99)
        ok = p99 <= target and s.errors == 0 and s.latencies
        failed |= not ok
        print(f"{name:<22}{len(s.latencies):>9}{len(s.latencies) / measured:>8.1f}{pct(s.latencies, 50):>9.1f}"
              f"{pct(s.latencies, 95):>9.1f}{p99:>9.1f}{s.errors:>8}   p99 <= {target:g} ms, 0 errors: "
              f"{'PASS' if ok else 'FAIL'}" + (f"  {s.error_kinds}" if s.errors else ""))
    print("time inside gunicorn's worker (its access log; excludes waiting for a free thread and the network):")
    for name in TARGETS_MS:
        t = in_server[name]
        print(f"{name:<22}{len(t):>9}{'':>8}{pct(t, 50):>9.1f}{pct(t, 95):>9.1f}{pct(t, 99):>9.1f}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured (p99 of 30 s runs varied 1.5x)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds not measured (caches fill)")
    parser.add_argument("--think", type=float, default=0.5, help="seconds between a client's rounds; 0 = saturate")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default: bin/services')")
    parser.add_argument("--threads", type=int, default=None, help="threads per worker (default: bin/services')")
    parser.add_argument("--load", action="store_true", help="load the demo data into 'bench_site' if missing")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
