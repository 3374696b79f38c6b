"""One lockout policy for every endpoint that checks a password or sends account mail.

What is counted. Every password check (site login, admin login and ``/api/token/`` through
``accounts.backends.ProfileBackend``; the old password on password change; the password of the
account deletion page and of the API's deletion) counts as a failure under three keys, each within
fixed windows of ``LOGIN_THROTTLE_WINDOW`` seconds:

- (username, client address): ``LOGIN_THROTTLE_ATTEMPTS``; one attacker cannot lock a user out
  elsewhere, because the address is the real client's (``recsite.client_address``), not a shared
  proxy's, and an IPv6 one counts as its /64 (``address_key``);
- client address over all usernames: ``LOGIN_THROTTLE_ADDRESS_ATTEMPTS``;
- the password over all usernames and addresses: ``LOGIN_THROTTLE_PASSWORD_ATTEMPTS``, so one
  password sprayed over many accounts is limited even from many addresses. The key is an HMAC
  under the secret key, never the password.

How an attempt gets in. A check runs inside :func:`attempt`, which counts it as failed before the
password is checked and marks it in flight under the same keys, both in one Lua script: it gets
in only if every count is below its limit, so of N concurrent guesses at most the limit reach the
password hasher (checked first and counted after the slow hash, all N passed). Leaving the block
resolves it, in one script too: a right password (the check set ``right``) gives its counts back
(and clears the (username, address) one); anything else, an exception included, leaves it
counted. Either way it is no longer in flight. The attempt remembers the keys it took, window
included, so a late resolution never touches a newer window's counts.

When it waits. Counted first, attempts still being hashed would count against a right one (six
right logins at once from one user's tabs, a NAT address's users, a shared password). An attempt
past a limit only because of attempts in flight (the finished failures, the count less the
attempts in flight, are below the limit) waits for them to turn out right or wrong, polling, at
most ``LOGIN_THROTTLE_WAIT`` seconds, then counts again. Only as many requests wait on a key as
there are attempts in flight on it (no more could get in when those turn out right); the rest are
refused at once, so one guess in flight cannot hold a dozen workers.

How it fails. Past the finished failures of any limit an attempt is refused at once (``Locked``,
HTTP 429), as is one that found no room to wait or waited in vain. The login page refuses before
its form on finished failures alone (``check_login``, a read). Counting lives in Redis (the
``throttle`` cache: shared by every gunicorn worker), whose errors refuse (``LockoutUnavailable``,
HTTP 503) rather than allow without limit. An attempt a killed worker left in flight expires
``IN_FLIGHT_TTL`` seconds after it got in, and its waits ``WAITER_TTL`` after its last poll, however
busy the key (times by Redis's clock); meanwhile it costs a wait, never a guess.

Sign-ups and password-reset requests count actions (``account_action``) per client address and
are refused (429) past ``ACCOUNT_THROTTLE_ATTEMPTS``, likewise counted first (a sign-up that made
no account gives its count back, ``give_back_account_action``). A reset request is never refused
because of the e-mail address it names: that count would be anyone's to use up, locking the
owner out of their own reset. Mails to one mailbox are capped instead (``reset_mail_allowed``,
``PASSWORD_RESET_MAILS_PER_EMAIL``): past the cap the page answers as usual and sends nothing. The
mails confirming an address again ("send the link again") are capped alike, with a count of
their own (``confirm_mail_allowed``, ``EMAIL_CONFIRM_MAILS_PER_EMAIL``); a sign-up's first mail is
not (the sign-up was counted per client address already), so accounts squatting an address cannot
use up its owner's. Those resends are counted per account and per client address
(``confirm_resend``) and refused (429) past their limits, as sign-ups are. The mails telling an
address's owner that a sign-up gave it (another account has it) are capped with a count of their
own (``taken_notice_allowed``), which only ever drops the mail.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches

from recsite.client_address import address_key, client_address

log = logging.getLogger(__name__)

IN_FLIGHT_TTL = 60  # seconds an attempt stays in flight unless resolved (a worker killed mid-check)
POLL_S = 0.05  # how often a waiting attempt tries again
WAITER_TTL = 2  # seconds a waiter stays one after its last poll (a worker killed mid-wait)


class Refused(Exception):
    """The request is refused before any password check; ``status`` is the HTTP answer."""

    status = 429
    message = "Too many failed attempts. Please wait a few minutes and try again."


class Locked(Refused):
    pass


TOO_MANY = "Too many requests from here. Please wait a while and try again."


class TooManyRequests(Locked):
    """Past an account action's limit (``account_action``, ``confirm_resend``), not a password
    lockout: its own message, whoever answers it."""

    message = TOO_MANY


class LockoutUnavailable(Refused):
    """The lockout's Redis failed, so the attempt cannot be counted: refused (fail closed).

    Not ``core.breaker.Unavailable`` (MongoDB or Kafka down for the shop, answered by
    ``shop.middleware``): this one is a refusal of a credential check, answered where it is made."""

    status = 503
    message = "Signing in is unavailable for a moment. Please try again shortly."


def _cache():
    return caches["throttle"]


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


_USER_ADDRESS = "cred-ua:"  # the (username, address) key's prefix: the count a right password clears


def _login_keys(username: str, password: str | None, address: str) -> dict[str, int]:
    address = address_key(address)
    keys = {f"{_USER_ADDRESS}{_digest(username.lower(), address)}": settings.LOGIN_THROTTLE_ATTEMPTS,
            f"cred-a:{_digest(address)}": settings.LOGIN_THROTTLE_ADDRESS_ATTEMPTS}
    if password:
        mac = hmac.new(settings.SECRET_KEY.encode(), password.encode("utf-8", "replace"), hashlib.sha256)
        keys[f"cred-p:{mac.hexdigest()[:32]}"] = settings.LOGIN_THROTTLE_PASSWORD_ATTEMPTS
    return keys


def _window_id(window: int) -> int:
    """The current count window: its keys' names end with it."""
    return int(time.time() // window)


def window_left(now: float | None = None) -> int:
    """Whole seconds (at least 1) until the current login count window ends: when a refused
    client may try again (``Retry-After``), not a whole window from now."""
    window = settings.LOGIN_THROTTLE_WINDOW
    now = time.time() if now is None else now
    return max(1, math.ceil((now // window + 1) * window - now))


def _window_keys(limits: dict[str, int]) -> list[tuple[str, str, str]]:
    """Per limit, the Redis names of its count, its attempts in flight and its waiters in the current
    window. All share one hash tag, ``{login}``: a script touches every limit's keys, and on Redis
    Cluster keys of different slots in one script are refused (CROSSSLOT)."""
    cache, window = _cache(), _window_id(settings.LOGIN_THROTTLE_WINDOW)
    return [tuple(cache.make_key(f"{{login}}{kind}{key}:{window}") for kind in ("", "flight:", "waiters:"))
            for key in limits]


# The attempts in flight and the waiters of a limit are sorted sets: an attempt's token scored with
# the Redis time it expires at (``IN_FLIGHT_TTL`` after it got in; ``WAITER_TTL`` after its last
# poll), so what a killed request leaves expires on its own, however busy the key: counters renewed
# by every attempt on the key had outlived it there. Times come from Redis (``TIME``), not from the
# web hosts' clocks. Read with ``_LIVE`` first, which drops what has expired.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local function live(key) redis.call('ZREMRANGEBYSCORE', key, '-inf', now) return redis.call('ZCARD', key) end
"""

# Per limit i, KEYS[3i-2..3i] are its count, attempts in flight and waiters, ARGV[4+i] its limit;
# ARGV[1..3] the seconds a count (from its first attempt), an attempt in flight and a waiter (from
# its last poll) live; ARGV[4] the attempt's token. Answers "in" (counted and in flight),
# "refused" (or no room to wait: nothing counted) or "wait". Past a limit of finished failures:
# refused. Past a limit only because of attempts in flight: a wait, if fewer others wait on that
# key than are in flight on it. In or refused, its waits are given up.
_TAKE = _LIVE + """
local n, token = #KEYS / 3, ARGV[4]
local function num(key) return tonumber(redis.call('GET', key) or '0') end
local function give_up_waits() for i = 1, n do redis.call('ZREM', KEYS[3 * i], token) end end
local full = {}
for i = 1, n do
  local count, limit = num(KEYS[3 * i - 2]), tonumber(ARGV[4 + i])
  if count - live(KEYS[3 * i - 1]) >= limit then give_up_waits() return 'refused' end
  if count >= limit then full[i] = true end
end
if next(full) == nil then
  give_up_waits()
  for i = 1, n do
    redis.call('INCR', KEYS[3 * i - 2])
    if redis.call('TTL', KEYS[3 * i - 2]) < 0 then redis.call('EXPIRE', KEYS[3 * i - 2], ARGV[1]) end
    redis.call('ZADD', KEYS[3 * i - 1], now + tonumber(ARGV[2]), token)
    redis.call('EXPIRE', KEYS[3 * i - 1], ARGV[2])
  end
  return 'in'
end
for i in pairs(full) do
  if not redis.call('ZSCORE', KEYS[3 * i], token) and live(KEYS[3 * i]) >= live(KEYS[3 * i - 1]) then
    give_up_waits() return 'refused'
  end
end
for i = 1, n do
  if full[i] or redis.call('ZSCORE', KEYS[3 * i], token) then
    redis.call('ZADD', KEYS[3 * i], now + tonumber(ARGV[3]), token)
    redis.call('EXPIRE', KEYS[3 * i], ARGV[3])
  end
end
return 'wait'
"""

# KEYS: an attempt's counts and attempts in flight, in pairs; ARGV[1] "1" if its password was
# right, ARGV[2] the index in KEYS of its (username, address) count, ARGV[3] its token. No longer
# in flight; a right one's counts given back, the (username, address) one cleared.
_RESOLVE = """
local function num(key) return tonumber(redis.call('GET', key) or '0') end
for i = 1, #KEYS, 2 do
  redis.call('ZREM', KEYS[i + 1], ARGV[3])
  if ARGV[1] == '1' then
    if i == tonumber(ARGV[2]) then redis.call('DEL', KEYS[i])
    elseif num(KEYS[i]) > 0 then redis.call('DECR', KEYS[i]) end
  end
end
return 0
"""

# KEYS: waiters; ARGV[1]: the token of an attempt that no longer waits.
_GIVE_UP = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 0
"""

# KEYS: counts and attempts in flight, in pairs; the finished failures (count less live attempts) of each.
_FINISHED = _LIVE + """
local out = {}
for i = 1, #KEYS, 2 do out[#out + 1] = tonumber(redis.call('GET', KEYS[i]) or '0') - live(KEYS[i + 1]) end
return out
"""


def _run(script: str, keys: list[str], args: list):
    """Run a Lua ``script`` in the throttle cache's Redis; its answer, text as text."""
    answer = _cache().client.get_client(write=True).register_script(script)(keys=keys, args=args)
    return answer.decode() if isinstance(answer, bytes) else answer


@dataclass
class Attempt:
    """A password check let in by :func:`attempt`: the counts and attempts-in-flight sets it took
    (Redis names, in pairs, window included) and its token in them; its caller sets ``right`` once
    the password proved right."""

    keys: tuple[str, ...]
    cleared: int  # the index (from 1, as Lua counts) in ``keys`` of the count a right password clears
    token: str
    right: bool = False


@contextmanager
def attempt(username: str, password: str | None, address: str) -> Iterator[Attempt]:
    """Let one password check in (``Locked`` or ``LockoutUnavailable`` before any check; see the
    module's docstring), yield it, and resolve it however the check ends: right only if the check set
    ``right``, else failed, an exception included (a check that raised left its mark behind)."""
    taken = _take_attempt(_login_keys(username, password, address))
    try:
        yield taken
    finally:
        try:
            _run(_RESOLVE, list(taken.keys), [int(taken.right), taken.cleared, taken.token])
        except Exception as exc:  # noqa: BLE001 - the counts stay (stricter); the marks expire (a wait meanwhile)
            log.warning("throttle cache unavailable, a password check was not resolved: %s", exc)


@contextmanager
def own_password_attempt(request, password: str) -> Iterator[Attempt]:
    """:func:`attempt` for the signed-in user giving their own password again (the password change,
    the account deletion's page and API): counted under their username and the client's address.

    Those callers each spelled out the same keys; they keep their own answers to ``Refused`` (a
    page, an API error) and their own check, which sets ``right``."""
    with attempt(request.user.get_username(), password, client_address(request)) as checked:
        yield checked


def _take_attempt(limits: dict[str, int]) -> Attempt:
    """Count and mark one attempt (the ``_TAKE`` script), waiting while it is told to, until
    ``LOGIN_THROTTLE_WAIT``; ``Locked`` or ``LockoutUnavailable``."""
    keys = _window_keys(limits)
    # A count outlives its window by the longest wait: a waiter polls its window's keys until its
    # deadline, and a count expired under it (its window's length after its first attempt) let
    # every waiter in, twice the limit in one window.
    wait_s = math.ceil(settings.LOGIN_THROTTLE_WAIT) + 1
    token = secrets.token_hex(8)
    args = [settings.LOGIN_THROTTLE_WINDOW + wait_s, IN_FLIGHT_TTL, WAITER_TTL, token, *limits.values()]
    cleared = 1 + 2 * next(i for i, key in enumerate(limits) if key.startswith(_USER_ADDRESS))
    deadline, waited = time.monotonic() + settings.LOGIN_THROTTLE_WAIT, False
    try:
        while True:
            answer = _run(_TAKE, [name for triple in keys for name in triple], args)
            waited = answer == "wait"  # in or refused, the script gave its waits up
            if answer == "in":
                return Attempt(tuple(name for count, mark, _ in keys for name in (count, mark)), cleared, token)
            if answer == "refused":
                raise Locked()
            if time.monotonic() >= deadline:
                raise Locked()
            time.sleep(POLL_S)
    except Locked:
        raise
    except Exception as exc:  # noqa: BLE001 - any cache failure: refuse (fail closed)
        log.warning("throttle cache unavailable, refusing a credential check: %s", exc)
        raise LockoutUnavailable() from None
    finally:
        if waited:  # waited in vain, or Redis failed
            try:
                _run(_GIVE_UP, [waiters for _, _, waiters in keys], [token])
            except Exception as exc:  # noqa: BLE001 - they expire after WAITER_TTL
                log.warning("throttle cache unavailable, a wait was not given up: %s", exc)


def check_login(username: str, password: str | None, address: str) -> None:
    """Raise ``Locked`` if the finished failures of this attempt's keys reach a limit (a read, for
    the login page to refuse before its form; attempts in flight may yet turn out right, and
    :func:`attempt` decides), ``LockoutUnavailable`` with Redis failing."""
    limits = _login_keys(username, password, address)
    keys = _window_keys(limits)
    try:
        finished = _run(_FINISHED, [name for count, mark, _ in keys for name in (count, mark)], [])
    except Exception as exc:  # noqa: BLE001 - any cache failure: refuse (fail closed)
        log.warning("throttle cache unavailable, refusing a credential check: %s", exc)
        raise LockoutUnavailable() from None
    if any(int(n) >= limit for n, limit in zip(finished, limits.values())):
        raise Locked()


def _incr(cache, key: str, window: int) -> int:
    """Add one to ``key`` (made with a ``window``-second expiry on its first count); the new count."""
    if cache.add(key, 1, window):
        return 1
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, window)
        return 1


def _take(limits: dict[str, int], window: int) -> None:
    """Count one under every key; past any limit, give them back and raise ``TooManyRequests``.

    Each count is one atomic INCR and its result is compared, so of N concurrent requests at most
    the limit get through, where a check first and a count after let all N pass. A request refused
    here counts nothing (it may have inflated the keys it took for a moment: refusals come only
    earlier). With Redis failing: ``LockoutUnavailable`` (fail closed)."""
    cache, taken = _cache(), []
    try:
        for key, limit in limits.items():
            count = _incr(cache, key, window)
            taken.append(key)
            if count > limit:
                break
        else:
            return
    except Exception as exc:  # noqa: BLE001 - any cache failure: refuse (fail closed)
        log.warning("throttle cache unavailable, refusing an account action: %s", exc)
        _give_back(taken)
        raise LockoutUnavailable() from None
    _give_back(taken)
    raise TooManyRequests()


def _give_back(keys) -> None:
    cache = _cache()
    for key in keys:
        try:
            cache.decr(key)
        except ValueError:  # expired meanwhile: nothing left to give back
            pass
        except Exception as exc:  # noqa: BLE001 - the count stays: stricter, never laxer
            log.warning("throttle cache unavailable, a count was not given back: %s", exc)
            return


def _action_keys(kind: str, subjects: tuple[str, ...]) -> list[str]:
    return [f"acct-{kind}:{_digest(address_key(s).lower())}" for s in subjects if s]


def account_action(kind: str, *subjects: str) -> None:
    """Count one action of this kind (``signup``, ``reset``) for every subject (a client address);
    ``TooManyRequests`` if that went past ``ACCOUNT_THROTTLE_ATTEMPTS`` (nothing counted), ``LockoutUnavailable``."""
    _take(dict.fromkeys(_action_keys(kind, subjects), settings.ACCOUNT_THROTTLE_ATTEMPTS),
          settings.ACCOUNT_THROTTLE_WINDOW)


def give_back_account_action(kind: str, *subjects: str) -> None:
    """The action counted by ``account_action`` did not happen (a sign-up that made no account)."""
    _give_back(_action_keys(kind, subjects))


def confirm_resend(account: str, address: str) -> None:
    """Count one "send the link again" for the account (``EMAIL_CONFIRM_RESENDS_PER_ACCOUNT``; named
    by its random recommender id, not its primary key, which SQLite gives a deleted account's
    successor, and a rolled-back test's) and the client address (``ACCOUNT_THROTTLE_ATTEMPTS``, the
    sign-ups' limit) within ``ACCOUNT_THROTTLE_WINDOW``; ``TooManyRequests`` past either (nothing counted),
    ``LockoutUnavailable``.
    The mailbox's own cap (``confirm_mail_allowed``) alone would let one squatting account use up
    every mail its address may get, hour after hour."""
    by_address, by_account = _confirm_keys(account, address)
    limits = dict.fromkeys(by_address, settings.ACCOUNT_THROTTLE_ATTEMPTS)
    limits[by_account] = settings.EMAIL_CONFIRM_RESENDS_PER_ACCOUNT
    _take(limits, settings.ACCOUNT_THROTTLE_WINDOW)


def give_back_confirm_resend(account: str, address: str) -> None:
    """The post counted by ``confirm_resend`` mailed nothing (a wrong password, a malformed address).
    Kept, three typos on the e-mail page made its owner wait out the window; the password guesses
    among them are limited by the login lockout they went through."""
    by_address, by_account = _confirm_keys(account, address)
    _give_back([*by_address, by_account])


def _confirm_keys(account: str, address: str) -> tuple[list[str], str]:
    return _action_keys("confirm", (address,)), f"acct-confirm-account:{_digest(account)}"


def account_mail_allowed(kind: str, email: str, limit: int) -> bool:
    """Count one account mail of this kind (``reset``, ``confirm``, ``taken-notice``) to this
    mailbox: False (send nothing) past ``limit`` within ``ACCOUNT_THROTTLE_WINDOW``, or while Redis
    fails.

    Counted per mailbox whoever asks, but only ever drops the mail, never refuses the request: so
    many addresses cannot flood one mailbox, and none can lock its owner out of the form. The
    count is Redis's INCR, so concurrent requests cannot both take the last mail. Each kind has its
    own count: confirmation mails a stranger's sign-ups trigger cannot use up the owner's resets.
    """
    try:
        sent = _incr(_cache(), f"acct-{kind}-mail:{_digest(email.lower())}", settings.ACCOUNT_THROTTLE_WINDOW)
    except Exception as exc:  # noqa: BLE001 - uncounted, the cap would be gone: send nothing
        log.warning("throttle cache unavailable, a %s mail was not sent: %s", kind, exc)
        return False
    return sent <= limit


def reset_mail_allowed(email: str) -> bool:
    """One password-reset mail to this mailbox, within ``PASSWORD_RESET_MAILS_PER_EMAIL``."""
    return account_mail_allowed("reset", email, settings.PASSWORD_RESET_MAILS_PER_EMAIL)


def confirm_mail_allowed(email: str) -> bool:
    """One address-confirmation mail sent again to this mailbox (``accounts.confirmation``), within
    ``EMAIL_CONFIRM_MAILS_PER_EMAIL``; a sign-up's first mail is not counted here."""
    return account_mail_allowed("confirm", email, settings.EMAIL_CONFIRM_MAILS_PER_EMAIL)


def taken_notice_allowed(email: str) -> bool:
    """One mail telling the owner of this address that a sign-up gave it (``accounts.confirmation``),
    within ``EMAIL_CONFIRM_MAILS_PER_EMAIL``: a count of its own, apart from the links sent again."""
    return account_mail_allowed("taken-notice", email, settings.EMAIL_CONFIRM_MAILS_PER_EMAIL)


def mark_refused(request, refusal: Refused) -> None:
    """Remember on the request that a credential check was refused, for the view or the
    middleware (``accounts.middleware``) to answer 429/503 instead of "wrong password"."""
    getattr(request, "_request", request).credential_refused = refusal


def refusal_of(request) -> Refused | None:
    return getattr(getattr(request, "_request", request), "credential_refused", None)
