"""One lockout policy for every endpoint that checks a password or sends account mail.

Password checks count failures under three keys within ``LOGIN_THROTTLE_WINDOW`` seconds. Site
login, admin login and ``/api/token/`` go through ``accounts.backends.ProfileBackend``; the old
password on password change and the password of the account deletion page call ``take_attempt``
before their own check, then ``attempt_succeeded`` after a right password or ``attempt_failed``
after a wrong one, as does the API's account deletion (``shop.api``; a new password check must do
the same). An attempt is counted as failed before its password is checked, each count one Redis
INCR compared with its limit, and given back when the password was right: checked first and
counted after the (slow) hashing, concurrent guesses all passed the check.

Counted first, attempts still being hashed counted against a right one: six right logins at once
for one user from one address got a 429, as could 51 from one NAT address or 21 sharing a
password. So each attempt is also marked in flight (a second count per key, expiring after
``IN_FLIGHT_TTL`` seconds so a crash mid-check cannot leave it), and ``attempt_succeeded`` /
``attempt_failed`` clear the mark. Past a limit, an attempt gives its counts back; if the finished
failures (the count less the attempts in flight) reach the limit it is refused at once, otherwise
it waits, polling, for the attempts in flight to turn out right or wrong (at most
``LOGIN_THROTTLE_WAIT`` seconds, about one password hash on a loaded site), then counts again. The
admission stays the one INCR compared with the limit, so N concurrent guesses still get at most
the limit of password checks; the in-flight marks only decide between refusing now and waiting,
so one wrong (a lost or a leaked mark) costs a 429 or a wait, never a guess. This rather than
waiting on the one count alone: that count cannot tell finished failures from attempts in flight,
so an attacker already at the limit would hold a worker for the whole wait with every request,
and the login page's early check (``check_login``) could not let a burst of right logins through.
An attacker can make others wait only while their own guesses are in flight and within budget:
once they fail, the finished failures reach the limit and every waiter is refused.

The three keys:

- (username, client address): ``LOGIN_THROTTLE_ATTEMPTS``; one attacker cannot lock a user out
  elsewhere, because the address is the real client's (``client_address``), not a shared proxy's,
  and an IPv6 one counts as its /64 (``address_key``);
- client address over all usernames: ``LOGIN_THROTTLE_ADDRESS_ATTEMPTS``;
- the password over all usernames and addresses: ``LOGIN_THROTTLE_PASSWORD_ATTEMPTS``, so one
  password sprayed over many accounts is limited even from many addresses. The key is an HMAC
  under the secret key, never the password.

Sign-ups and password-reset requests count actions (``account_action``) per client address and
are refused (429) past ``ACCOUNT_THROTTLE_ATTEMPTS``, likewise counted first (a sign-up that made
no account gives its count back, ``give_back_account_action``). A reset request is never refused
because of the e-mail address it names: that count would be anyone's to use up, locking the
owner out of their own reset. Mails to one mailbox are capped instead (``reset_mail_allowed``,
``PASSWORD_RESET_MAILS_PER_EMAIL``): past the cap the page answers as usual and sends nothing.

Counting lives in Redis (the ``throttle`` cache: shared by every gunicorn worker), whose errors
raise instead of being ignored: with Redis down no failure could be counted, so a credential
check is refused (``Unavailable``, HTTP 503) rather than allowed without limit.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import caches

log = logging.getLogger(__name__)


class Refused(Exception):
    """The request is refused before any password check; ``status`` is the HTTP answer."""

    status = 429
    message = "Too many failed attempts. Please wait a few minutes and try again."


class Locked(Refused):
    pass


class Unavailable(Refused):
    status = 503
    message = "Signing in is unavailable for a moment. Please try again shortly."


def from_trusted_proxy(request) -> bool:
    """Whether this connection may carry X-Forwarded-* headers: ``TRUSTED_PROXIES`` is set and the
    peer (REMOTE_ADDR) lies in ``TRUSTED_PROXY_NETS`` (a Unix socket's empty one counts as loopback).

    The proxy count alone trusted whoever connected: a client reaching gunicorn directly (a
    published port, a proxy bypassed) wrote the rightmost X-Forwarded-For itself, escaping every
    limit, locking others out and reading /metrics as 127.0.0.1."""
    if getattr(settings, "TRUSTED_PROXIES", 0) <= 0:
        return False
    remote = request.META.get("REMOTE_ADDR", "")
    if remote == "":  # gunicorn on a Unix socket: only local processes connect, trusted as loopback is
        remote = "127.0.0.1"
    try:
        peer = ipaddress.ip_address(remote)
    except ValueError:
        return False
    peer = getattr(peer, "ipv4_mapped", None) or peer  # an IPv4 proxy seen through an IPv6 socket
    return any(peer in net for net in settings.TRUSTED_PROXY_NETS)


# Set on the request by ``forwarded_headers_middleware``: its ``from_trusted_proxy`` answer.
TRUSTED_PROXY_DECIDED = "recsite_from_trusted_proxy"


def client_address(request) -> str:
    """The client's address: REMOTE_ADDR, or from a trusted proxy (``from_trusted_proxy``) with
    ``TRUSTED_PROXIES`` = n the n-th address from the right of X-Forwarded-For (what the outermost
    trusted proxy saw). Entries further left are written by the client and ignored. The same rule
    as DRF's ``NUM_PROXIES`` (whose headers ``forwarded_headers_middleware`` drops likewise).

    Whether the peer is a trusted proxy is what the middleware decided for the request (a request
    called several times per request: the lockout, the throttles); decided here only for a request
    that did not pass through it."""
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = getattr(request, TRUSTED_PROXY_DECIDED, None)
    if not (from_trusted_proxy(request) if trusted is None else trusted):
        return remote
    proxies = settings.TRUSTED_PROXIES
    forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
    return forwarded[-min(proxies, len(forwarded))] if forwarded else remote


def from_this_host(request) -> bool:
    """Whether the client (after trusted proxies, :func:`client_address`) is on this host: who may
    read /metrics without a token and poll /healthz past the host check."""
    try:
        return ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


def address_key(address: str) -> str:
    """What the limits count as one client: an IPv4 address as it is, an IPv6 address as its /64.

    An IPv6 host is given a whole /64 and may use any address in it, so counted per address one
    host would have 2**64 budgets. An IPv4 address seen through an IPv6 socket counts as itself;
    anything that does not parse is counted as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def _cache():
    return caches["throttle"]


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _login_keys(username: str, password: str | None, address: str) -> dict[str, int]:
    address = address_key(address)
    keys = {f"cred-ua:{_digest(username.lower(), address)}": settings.LOGIN_THROTTLE_ATTEMPTS,
            f"cred-a:{_digest(address)}": settings.LOGIN_THROTTLE_ADDRESS_ATTEMPTS}
    if password:
        mac = hmac.new(settings.SECRET_KEY.encode(), password.encode("utf-8", "replace"), hashlib.sha256)
        keys[f"cred-p:{mac.hexdigest()[:32]}"] = settings.LOGIN_THROTTLE_PASSWORD_ATTEMPTS
    return keys


def _counts(keys: list[str]) -> dict[str, int]:
    """The counts of ``keys`` (0 for a missing one); ``Unavailable`` with Redis failing (fail closed)."""
    try:
        counts = _cache().get_many(keys)
    except Exception as exc:  # noqa: BLE001 - any cache failure: refuse (fail closed)
        log.warning("throttle cache unavailable, refusing a credential check: %s", exc)
        raise Unavailable() from None
    return {key: int(counts.get(key) or 0) for key in keys}


IN_FLIGHT_TTL = 60  # seconds a mark of an attempt in flight outlives a check that crashed (a hash takes < 1)
POLL_S = 0.05  # how often a waiting attempt reads the counts


def _in_flight(key: str) -> str:
    return f"inflight:{key}"


def _finished_at_limit(limits: dict[str, int], counts: dict[str, int]) -> bool:
    """Whether the failures already known (a key's count less its attempts in flight) reach a limit."""
    return any(counts[key] - max(counts[_in_flight(key)], 0) >= limit for key, limit in limits.items())


def _login_counts(limits: dict[str, int]) -> dict[str, int]:
    return _counts([*limits, *map(_in_flight, limits)])


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
    """Count one under every key; past any limit, give them back and raise ``Locked``.

    Each count is one atomic INCR and its result is compared, so of N concurrent requests at most
    the limit get through, where a check first and a count after let all N pass. A request refused
    here counts nothing (it may have inflated the keys it took for a moment: refusals come only
    earlier). With Redis failing: ``Unavailable`` (fail closed)."""
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
        log.warning("throttle cache unavailable, refusing a credential check or account action: %s", exc)
        _give_back(taken)
        raise Unavailable() from None
    _give_back(taken)
    raise Locked()


def _give_back(keys) -> None:
    cache = _cache()
    for key in keys:
        try:
            cache.decr(key)
        except ValueError:  # expired meanwhile: nothing left to give back
            pass
        except Exception as exc:  # noqa: BLE001 - the count stays: only ever stricter
            log.warning("throttle cache unavailable, a count was not given back: %s", exc)
            return


def check_login(username: str, password: str | None, address: str) -> None:
    """Raise ``Locked`` or ``Unavailable`` if this attempt must not reach the password check.

    A read only, to refuse early (the login page, before its form), and only on finished failures
    (attempts in flight may yet turn out right); ``take_attempt`` decides."""
    limits = _login_keys(username, password, address)
    if _finished_at_limit(limits, _login_counts(limits)):
        raise Locked()


def take_attempt(username: str, password: str | None, address: str) -> None:
    """Count this attempt as failed (and in flight) before its password is checked; ``Locked``
    past a limit, after waiting up to ``LOGIN_THROTTLE_WAIT`` seconds while only attempts in flight
    put it there; ``Unavailable`` with Redis down. The check then calls ``attempt_succeeded`` or
    ``attempt_failed``."""
    limits = _login_keys(username, password, address)
    in_flight = [_in_flight(key) for key in limits]
    deadline = time.monotonic() + settings.LOGIN_THROTTLE_WAIT
    while True:
        # Marked in flight before counted, given back after: a count never holds an attempt its
        # mark does not, so the finished failures are never overstated (only a wait, not a 429).
        _take(dict.fromkeys(in_flight, sys.maxsize), IN_FLIGHT_TTL)
        try:
            _take(limits, settings.LOGIN_THROTTLE_WINDOW)
            return
        except Refused as refusal:
            _give_back(in_flight)
            if not isinstance(refusal, Locked) or not _room_after_waiting(limits, deadline):
                raise


def _room_after_waiting(limits: dict[str, int], deadline: float) -> bool:
    """Wait until every count is below its limit (True: count again), or refuse (False): at once
    when the finished failures reach a limit, else at ``deadline``."""
    while True:
        counts = _login_counts(limits)
        if _finished_at_limit(limits, counts):
            return False
        if all(counts[key] < limit for key, limit in limits.items()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


@dataclass
class Attempt:
    """A password check let through by :func:`attempt`; its caller sets ``right`` once the password
    proved right (anything else resolves it as a failure)."""

    right: bool = False


@contextmanager
def attempt(username: str, password: str | None, address: str) -> Iterator[Attempt]:
    """Take a password check (``take_attempt``: ``Locked`` or ``Unavailable`` before any check),
    yield it to the check, and resolve it however the check ends, an exception included: right
    only if the check set ``right``, else failed. A check that raised (a corrupt hash, the database
    failing) used to leave its in-flight mark behind, making refusals wait for up to a minute."""
    taken = Attempt()
    take_attempt(username, password, address)
    try:
        yield taken
    finally:
        (attempt_succeeded if taken.right else attempt_failed)(username, password, address)


def attempt_succeeded(username: str, password: str | None, address: str) -> None:
    """The password was right: clear the (username, address) count and give back the wider ones
    this attempt took (a success never counts against the address or the password); no longer in
    flight."""
    keys = list(_login_keys(username, password, address))
    try:
        _cache().delete(keys[0])
    except Exception as exc:  # noqa: BLE001
        log.warning("throttle cache unavailable: %s", exc)
    _give_back(keys[1:])
    _give_back([_in_flight(key) for key in keys])


def attempt_failed(username: str, password: str | None, address: str) -> None:
    """The password was wrong: the attempt stays counted, and is no longer in flight."""
    _give_back([_in_flight(key) for key in _login_keys(username, password, address)])


def _action_keys(kind: str, subjects: tuple[str, ...]) -> list[str]:
    return [f"acct-{kind}:{_digest(address_key(s).lower())}" for s in subjects if s]


def account_action(kind: str, *subjects: str) -> None:
    """Count one action of this kind (``signup``, ``reset``) for every subject (a client address);
    ``Locked`` if that went past ``ACCOUNT_THROTTLE_ATTEMPTS`` (nothing counted), ``Unavailable``."""
    _take(dict.fromkeys(_action_keys(kind, subjects), settings.ACCOUNT_THROTTLE_ATTEMPTS),
          settings.ACCOUNT_THROTTLE_WINDOW)


def give_back_account_action(kind: str, *subjects: str) -> None:
    """The action counted by ``account_action`` did not happen (a sign-up that made no account)."""
    _give_back(_action_keys(kind, subjects))


def reset_mail_allowed(email: str) -> bool:
    """Count one password-reset mail to this mailbox: False (send nothing) past
    ``PASSWORD_RESET_MAILS_PER_EMAIL`` within ``ACCOUNT_THROTTLE_WINDOW``, or while Redis fails.

    Counted per mailbox whoever asks, but only ever drops the mail, never refuses the request: so
    many addresses cannot flood one mailbox, and none can lock its owner out of the form. The
    count is Redis's INCR, so concurrent requests cannot both take the last mail.
    """
    try:
        sent = _incr(_cache(), f"acct-reset-mail:{_digest(email.lower())}", settings.ACCOUNT_THROTTLE_WINDOW)
    except Exception as exc:  # noqa: BLE001 - uncounted, the cap would be gone: send nothing
        log.warning("throttle cache unavailable, a password-reset mail was not sent: %s", exc)
        return False
    return sent <= settings.PASSWORD_RESET_MAILS_PER_EMAIL


def mark_refused(request, refusal: Refused) -> None:
    """Remember on the request that a credential check was refused, for the view or the
    middleware (``accounts.middleware``) to answer 429/503 instead of "wrong password"."""
    getattr(request, "_request", request).credential_refused = refusal


def refusal_of(request) -> Refused | None:
    return getattr(getattr(request, "_request", request), "credential_refused", None)
