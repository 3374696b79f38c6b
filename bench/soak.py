"""Soak benchmark: logged-in clients rating and browsing for minutes while the servers fail.

    .local/venv/bin/python bench/soak.py [--clients 50] [--minutes 5] [--think 1.0]

Everything runs on a PRIVATE server set (``SERVICES_STATE_DIR`` in a temporary folder, free ports):
FerretDB and Kafka through ``bin/services start mongo kafka``, then the demo file through
``bin/pipeline --force-publish`` into that MongoDB, then the site (gunicorn, bench/site_server.py),
the supervised Kafka workers and Celery through ``bin/services start web worker celery``; the
shared servers on the usual ports are never touched (Redis is the shared one, under this run's
own cache prefix). Each client is a demo account with an API token: it opens a product page,
rates a random product through ``POST /api/ratings/`` and reads its recommendations, then waits
``--think`` seconds. Inside the run, at fixed fractions of the duration:

* 20 %: the Kafka broker is restarted (``bin/services restart kafka``);
* 45 %: one worker process is killed with SIGKILL (supervisord starts a new one);
* 70 %: MongoDB is stopped for 30 s, then started again.

Afterwards it waits for the workers to drain and counts, per accepted rating (HTTP 202 with an
event id), whether MongoDB stored it: ``lost`` = accepted but not stored, ``extra`` = stored for
the soak's users without having been accepted (one reported as failed, or never answered, that
arrived anyway; a redelivery cannot double a rating, which is stored by its event id). Every rating carries its own ``Idempotency-Key``, so a rating answered 503 is
known by id too (the site derives it from the account and the key, ``shop.ratings.keyed_event_id``):
``ghost`` = answered 503 but stored (``core.cancellation`` makes it 0), and
``cancelled`` = how many of those the site recorded as cancelled (its ack timed out). Responses are
tallied by status: 503 is the documented answer while Kafka or MongoDB is down; any other 5xx, a
request with no answer at all, and a stored rating still unprocessed when the drain's wait ends
are failures. Not run in CI (it takes minutes and kills servers).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
import aiohttp

from bench.site_load import PASSWORD, catalog_ids, ensure_data, login
from bench.site_server import SERVICES, free_port, running_site

FAULTS = ((0.20, "broker restart"), (0.45, "worker kill -9"), (0.70, "MongoDB stopped 30 s"))
DOCUMENTED_5XX = {503}


class Tally:
    """What the clients saw: statuses per endpoint, and every accepted rating."""

    def __init__(self) -> None:
        self.status: Counter = Counter()
        self.accepted: dict[str, tuple[str, str, int]] = {}  # event id -> (account, product, rating)
        self.refused = 0  # 503 on a rating: the user was told to try again
        self.refused_keys: set[tuple[str, str]] = set()  # their (account, Idempotency-Key)
        self.failures: Counter = Counter()  # exceptions (timeouts, refused connections)


def services(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(SERVICES), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"bin/services {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


async def get_token(url: str, username: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.post(f"{url}/api/token/", json={"username": username, "password": PASSWORD}) as r:
            if r.status != 200:
                raise RuntimeError(f"no API token for {username}: HTTP {r.status}")
            return (await r.json())["token"]


async def client(url: str, username: str, token: str, session: str, products: list[str], think: float,
                 end: float, tally: Tally, rng: random.Random) -> None:
    """One user: a product page (session cookie), a rating and the recommendations (API token)."""
    api = {"Authorization": f"Token {token}", "Accept": "application/json"}
    async with aiohttp.ClientSession(base_url=url, timeout=aiohttp.ClientTimeout(total=30),
                                     cookie_jar=aiohttp.DummyCookieJar()) as http:
        await asyncio.sleep(rng.uniform(0, think))
        while time.monotonic() < end:
            product = rng.choice(products)
            rating = rng.randint(1, 5)
            key = secrets.token_hex(12)
            for name, method, path, kwargs in (
                ("product page", "GET", f"/p/{product}/", {"headers": {"Cookie": f"sessionid={session}"}}),
                ("rate", "POST", "/api/ratings/", {"headers": {**api, "Idempotency-Key": key},
                                                   "json": {"product_id": product, "rating": rating}}),
                ("recommendations", "GET", "/api/recommendations/", {"headers": api}),
            ):
                try:
                    async with http.request(method, path, allow_redirects=False, **kwargs) as response:
                        body = await response.read()
                    tally.status[(name, response.status)] += 1
                    if name == "rate" and response.status == 202:
                        tally.accepted[json.loads(body)["event_id"]] = (username, product, rating)
                    elif name == "rate" and response.status == 503:
                        tally.refused += 1
                        tally.refused_keys.add((username, key))
                except Exception as exc:  # a timeout or refused connection is counted, not fatal
                    tally.failures[(name, exc.__class__.__name__)] += 1
            await asyncio.sleep(think)


async def faults(env: dict[str, str], start: float, seconds: float, log: list[str]) -> None:
    """The three faults, at their fractions of the run, on the private servers only."""
    for fraction, what in FAULTS:
        await asyncio.sleep(max(0.0, start + fraction * seconds - time.monotonic()))
        t0 = time.monotonic()
        if what == "broker restart":
            await asyncio.to_thread(services, env, "restart", "kafka")
        elif what == "worker kill -9":
            victim = int(services(env, "status", "worker").split()[2].split(",")[0])  # supervisord restarts it
            os.kill(victim, signal.SIGKILL)
        else:
            await asyncio.to_thread(services, env, "stop", "mongo")
            await asyncio.sleep(30)
            await asyncio.to_thread(services, env, "start", "mongo")
        log.append(f"{time.monotonic() - start:6.1f} s  {what} ({time.monotonic() - t0:.1f} s)")


def stored_counts(env: dict[str, str], tally: Tally, users: list[str]) -> tuple[int, int, int]:
    """(accepted ratings stored, ratings stored for these users in all, of them processed)."""
    from core import mongo

    db = mongo.get_db(name=env["MONGO_DB"])
    found = sum(1 for eid in tally.accepted if db[mongo.RATINGS].find_one({"_id": eid}, {"_id": 1}))
    mine = list(db[mongo.RATINGS].find({"user_id": {"$in": users}}, {"state": 1}))
    return found, len(mine), sum(1 for d in mine if d.get("state") == "processed")


def refused_counts(env: dict[str, str], refused_ids: list[str]) -> tuple[int, int]:
    """(ratings answered 503 that were stored anyway: ghosts, of them cancelled by the site)."""
    from core import cancellation, mongo

    db = mongo.get_db(name=env["MONGO_DB"])
    ghosts = sum(1 for eid in refused_ids if db[mongo.RATINGS].find_one({"_id": eid}, {"_id": 1}))
    cancelled = sum(1 for eid in refused_ids if cancellation.state(eid, db=db) == cancellation.CANCELLED)
    return ghosts, cancelled


async def run(args) -> int:
    state = Path(tempfile.mkdtemp(prefix="soak-"))
    ports = {"MONGO_PORT": free_port(), "KAFKA_PORT": free_port(), "KAFKA_CONTROLLER_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in {"MONGO_URI", "KAFKA_BOOTSTRAP_SERVERS"}}
    run_tag = secrets.token_hex(4)
    env.update({"SERVICES_STATE_DIR": str(state), **{k: str(v) for k, v in ports.items()},
                "MONGO_URI": f"mongodb://127.0.0.1:{ports['MONGO_PORT']}/", "MONGO_DB": "soak",
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{ports['KAFKA_PORT']}",
                "DATA_DIR": str(state / "data"), "ARTIFACTS_DIR": str(state / "artifacts"),
                "KAFKA_RATINGS_TOPIC": f"soak-{run_tag}.ratings", "KAFKA_DEAD_LETTER_TOPIC": f"soak-{run_tag}.dead",
                "KAFKA_WORKER_GROUP": f"soak-{run_tag}",
                "WORKERS": str(args.workers), "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1", "DJANGO_SECURE_SSL_REDIRECT": "0",
                "DJANGO_CACHE_PREFIX": f"soak-{run_tag}", "DJANGO_LOG_LEVEL": "WARNING",
                "DJANGO_EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
                # the soak measures faults, not the flood limit (30/min per user by default): one
                # rating per round and client would hit it, and 429s would hide what is measured
                "RATING_RATE": os.environ.get("RATING_RATE", "600/min"),
                "DEMO_INPUT": os.environ.get("DEMO_INPUT", str(ROOT / "data/demo/amazon2014_musical_instruments_5.jsonl.gz"))})
    os.environ.update({k: env[k] for k in ("MONGO_URI", "MONGO_DB", "KAFKA_BOOTSTRAP_SERVERS", "DATA_DIR",
                                           "ARTIFACTS_DIR")})
    tally, log = Tally(), []
    try:
        print(f"soak: private servers in {state} ({ports})", flush=True)
        services(env, "start", "mongo", "kafka")
        ensure_data(env, load=True)  # bin/pipeline on the bundled demo file, into the private MongoDB
        products = catalog_ids(env)
        with running_site(env) as site:
            site.manage("create_demo_accounts", "--count", str(args.clients), "--password", PASSWORD)
            services(env, "start", "worker", "celery")
            names = [f"demo{i}" for i in range(1, args.clients + 1)]
            sem = asyncio.Semaphore(4)

            async def sign_in(name: str) -> tuple[str, str]:
                async with sem, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60),
                                                      cookie_jar=aiohttp.DummyCookieJar()) as c:
                    return await get_token(site.url, name), await login(c, site.url, name)

            creds = await asyncio.gather(*(sign_in(n) for n in names))
            from core import mongo

            before = mongo.get_db(name=env["MONGO_DB"])[mongo.RATINGS].count_documents({})
            seconds = args.minutes * 60
            start = time.monotonic()
            rng = random.Random(11)
            await asyncio.gather(faults(env, start, seconds, log), *(
                client(site.url, n, tok, ses, products, args.think, start + seconds, tally, random.Random(rng.random()))
                for n, (tok, ses) in zip(names, creds)))
            # Drain: the workers catch up with what the site accepted (bounded wait).
            recommender_ids = _recommender_ids(site, names)
            deadline = time.monotonic() + args.drain_s
            while True:
                found, stored, processed = stored_counts(env, tally, recommender_ids)
                if (found == len(tally.accepted) and processed == stored) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(2)
            web_log = site.log()
            ghosts, cancelled = refused_counts(env, _keyed_event_ids(site, tally.refused_keys))
        _report(args, tally, log, found, stored, processed, before, web_log, ghosts, cancelled)
        lost, extra = len(tally.accepted) - found, stored - found
        bad_5xx = sum(n for (_, status), n in tally.status.items() if status >= 500 and status not in DOCUMENTED_5XX)
        # also failed: a request with no HTTP answer (the site must answer, 503 at worst), and a
        # drain that ended at its deadline with stored ratings not processed
        unanswered, unprocessed = sum(tally.failures.values()), stored - processed
        print(f"verdict: lost {lost}, extra {extra}, ghosts {ghosts}, other 5xx {bad_5xx}, "
              f"no answer {unanswered}, stored but not processed {unprocessed}")
        return 0 if not (lost or extra or ghosts or bad_5xx or unanswered or unprocessed) else 1
    finally:
        try:
            services(env, "stop", "celery", "worker", "kafka", "mongo")
        finally:
            if not args.keep:
                shutil.rmtree(state, ignore_errors=True)


def _recommender_ids(site, names: list[str]) -> list[str]:
    """The ids the site rates under for these accounts (the profile's reviewer id, else its own)."""
    code = ("import json; from django.contrib.auth.models import User; from accounts.models import recommender_id; "
            f"print(json.dumps([recommender_id(User.objects.get(username=n)) for n in {names!r}]))")
    return json.loads(site.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def _keyed_event_ids(site, keys: set[tuple[str, str]]) -> list[str]:
    """The event ids of these (account, Idempotency-Key) pairs: a key is not its event id (keys are
    per user), and a 503 answer names none."""
    if not keys:
        return []
    code = ("import json; from django.contrib.auth.models import User; from shop.ratings import keyed_event_id; "
            "pks = dict(User.objects.values_list('username', 'pk')); "
            f"print(json.dumps([keyed_event_id(pks[n], k) for n, k in {sorted(keys)!r}]))")
    return json.loads(site.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def _report(args, tally: Tally, log: list[str], found: int, stored: int, processed: int, before: int,
            web_log: str, ghosts: int, cancelled: int) -> None:
    print(f"\nsoak: {args.clients} clients, {args.minutes:g} min, think {args.think:g} s, {args.workers} worker(s); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("faults:\n  " + "\n  ".join(log))
    print(f"{'endpoint':<18}{'status':>8}{'count':>9}")
    for (name, status), n in sorted(tally.status.items()):
        print(f"{name:<18}{status:>8}{n:>9}")
    for (name, kind), n in sorted(tally.failures.items()):
        print(f"{name:<18}{kind:>8}{n:>9}  (no HTTP answer)")
    accepted = len(tally.accepted)
    print(f"ratings: accepted {accepted}, refused with 503 {tally.refused}; stored {found} of the accepted "
          f"(lost {accepted - found}), stored for these users in all {stored} (extra, stored without a 202: "
          f"{stored - found}), processed {processed}; {before} ratings were in MongoDB before")
    print(f"answered 503: {tally.refused}, of them stored anyway (ghosts) {ghosts}; cancelled by the site after an "
          f"ack timeout {cancelled}")
    bad = {k: n for k, n in tally.status.items() if k[1] >= 500 and k[1] not in DOCUMENTED_5XX}
    print(f"5xx other than 503: {sum(bad.values())} {bad if bad else ''}")
    tracebacks = web_log.count("Traceback")
    print(f"tracebacks in the site's log: {tracebacks}")
    for block in web_log.split("Traceback")[1:6]:  # what they were: each one's last line
        lines = [line for line in block.splitlines() if line.strip()]
        print("  ", next((line for line in lines if not line.startswith((" ", "(most recent"))), lines[-1:])[:300])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--think", type=float, default=1.0, help="seconds each client waits between rounds")
    parser.add_argument("--workers", type=int, default=2, help="Kafka worker processes")
    parser.add_argument("--drain-s", type=float, default=300.0, help="how long to wait for the backlog at the end")
    parser.add_argument("--keep", action="store_true", help="keep the private servers' folder (logs) afterwards")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
