"""Confirming the e-mail address given at sign-up: the link mailed to it, and what opening it does.

Why. ``User.email`` is the address password resets go to and the one the unique index on
``lower(email)`` keeps to one account. Taken as typed at sign-up, anyone could register someone
else's address: its owner could then not sign up with it, and a reset to it handed them the
squatter's account. So a sign-up's address waits as a :class:`~accounts.models.PendingEmail`, and
only its owner's click on the mailed link moves it into ``User.email``.

An address another account has confirmed is taken as any other (sign-up, the e-mail page): the
answer must not tell whether an address has an account. Its claim never gets a link and can never
be confirmed; :func:`send_link` mails the address's owner that someone tried instead.

The link holds a token of Django's ``signing`` (a ``TimestampSigner`` under ``SECRET_KEY``): the
account, the claim's row and the claim's creation time (so a row that came back with the same key,
after a restore, is not the one the link was made for), and when it was made. No address: the
token's payload is only base64, readable in the link and in every access log it passes through;
the page reads the address from the row. It works ``EMAIL_CONFIRM_TTL`` seconds, for the signed-in
account it was made for only (the owner of a mailbox who opens a link for a stranger's account
must not attach their address to it), and once: confirming drops the account's claim, and another
link sent meanwhile replaced it (:func:`new_claim`). Other accounts' claims on the address stay
until they expire: they cannot be confirmed any more, and their links say why.

Two accounts confirming one address at once: the unique index decides, the loser is told.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from enum import Enum

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts import throttle
from accounts.email_index import EMAIL_INDEX
from accounts.forms import email_in_use, holder_address
from accounts.models import ONE_CLAIM_ERRORS, PendingEmail

log = logging.getLogger(__name__)

# Keeps these tokens apart from any other signed value of the site. "v2": the tokens made before
# held the address (and no creation time); they are refused as any unknown token.
SALT = "accounts.confirmation.v2"


class Outcome(Enum):
    """What opening a link did; the value is the page's HTTP status."""

    CONFIRMED = 200
    INVALID = 400  # not one of ours, tampered with, used already, or its claim was replaced
    EXPIRED = 410
    OTHER_ACCOUNT = 403  # made for another account than the one signed in
    TAKEN = 409  # another account confirmed the address first


def _stamp(pending: PendingEmail) -> int:
    """The claim's creation time in whole microseconds since the epoch: exact, unlike a float."""
    return (pending.created - datetime(1970, 1, 1, tzinfo=dt_timezone.utc)) // timedelta(microseconds=1)


def make_token(pending: PendingEmail) -> str:
    """The token of ``pending``'s link: its account, its row and its creation time, signed and timed."""
    return signing.dumps({"u": pending.user_id, "p": pending.pk, "c": _stamp(pending)}, salt=SALT)


def send_link(request: HttpRequest, pending: PendingEmail, *, again: bool) -> bool:
    """Mail ``pending``'s address the link that confirms it; False if no mail went: sent ``again``
    (not a sign-up's first mail) past the mailbox's cap (``throttle.confirm_mail_allowed``), or the
    mail server failed (logged). The account works either way, and its owner can ask for the link
    again. A first mail is never capped per mailbox: accounts squatting an address would use up
    the cap, and its owner's own sign-up would get no link (sign-ups are counted per client
    address, ``views.signup``).

    An address another account has gets no link but a notice for its owner (:func:`_mail_notice`),
    answered as a link would be: the same cap when sent again, and True at a first one unless the
    mail server failed (a link would have gone), so no caller can tell the two apart."""
    if again and not throttle.confirm_mail_allowed(pending.email):
        log.info("e-mail confirmation: mail cap reached for a mailbox, no mail sent")
        return False
    holder = holder_address(pending.email, exclude_pk=pending.user_id)
    if holder is not None:
        return _mail_notice(request, holder, again=again)
    link = request.build_absolute_uri(reverse("email_confirm", args=[make_token(pending)]))
    context = {"user": pending.user, "email": pending.email, "link": link, "valid_for": _valid_for()}
    return _mail(pending.email, "email_confirm", context, pending.user_id)


def _mail_notice(request: HttpRequest, address: str, *, again: bool) -> bool:
    """Tell the owner of ``address`` (as their account has it) that someone gave it at sign-up or on
    the e-mail page, with the way in if it was them (sign in, or reset the password). A sign-up's
    notices to one mailbox have a cap of their own (``throttle.taken_notice_allowed``), which only
    drops the mail: counted with the links sent again, they would make that cap run out sooner for
    a taken address than a free one, and the page tell them apart."""
    if not again and not throttle.taken_notice_allowed(address):
        log.info("e-mail confirmation: notice cap reached for a mailbox, no mail sent")
        return True
    context = {"email": address, "login": request.build_absolute_uri(reverse("login")),
               "reset": request.build_absolute_uri(reverse("password_reset"))}
    return _mail(address, "email_in_use", context, None)


def tell_replaced_address(request: HttpRequest, address: str) -> bool:
    """Tell ``address``, the confirmed address a change just replaced, that it did: a change made
    with a stolen password would otherwise go unnoticed while resets reach only the new mailbox.
    Not capped: a change needs the password, and each one mails once."""
    context = {"username": request.user.get_username(), "email": address,
               "login": request.build_absolute_uri(reverse("login"))}
    return _mail(address, "email_replaced", context, request.user.pk)


def _mail(to: str, template: str, context: dict, user_id: int | None) -> bool:
    """Send ``registration/<template>_subject.txt`` and ``_email.txt`` to ``to``; False, logged, if
    the mail server failed."""
    subject = "".join(render_to_string(f"registration/{template}_subject.txt", context).splitlines())
    try:
        send_mail(subject, render_to_string(f"registration/{template}_email.txt", context), None, [to])
    except Exception:  # noqa: BLE001 - as Django's reset form: the page must not fail for the mail server
        log.exception("e-mail confirmation: a %s mail (user %s) could not be sent", template, user_id)
        return False
    return True


def _valid_for() -> str:
    """``EMAIL_CONFIRM_TTL`` in words, for the mail: "3 days", "12 hours", "90 minutes"."""
    seconds = settings.EMAIL_CONFIRM_TTL
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"


def _opened(user: User, token: str) -> tuple[Outcome, PendingEmail | None]:
    """What ``token`` opened as ``user`` is now, and its claim when it still has one."""
    try:
        claim = signing.loads(token, salt=SALT, max_age=settings.EMAIL_CONFIRM_TTL)
    except signing.SignatureExpired:
        return Outcome.EXPIRED, None
    except signing.BadSignature:
        return Outcome.INVALID, None
    if claim["u"] != user.pk:
        return Outcome.OTHER_ACCOUNT, None
    pending = PendingEmail.objects.filter(pk=claim["p"], user=user).first()
    if pending is None or _stamp(pending) != claim["c"]:  # used, replaced, swept, or not this row
        return Outcome.INVALID, None
    if email_in_use(pending.email, exclude_pk=user.pk):
        return Outcome.TAKEN, pending
    return Outcome.CONFIRMED, pending


def check(user: User, token: str) -> tuple[Outcome, str | None]:
    """What confirming ``token`` as ``user`` would do now, without doing it: ``CONFIRMED`` means the
    link is good and the page may ask "confirm?"; any other outcome is already final. The address
    is returned when the link's claim is still there."""
    outcome, pending = _opened(user, token)
    return outcome, pending.email if pending else None


def confirm(user: User, token: str) -> tuple[Outcome, str | None]:
    """Confirm the address of ``token`` for ``user`` (the POST of the link's page: a GET only
    asks, so a page of another site cannot confirm a mailbox it owns on a signed-in visitor's
    account): the outcome, and the address when the link's claim was still there.

    Confirmed, the address becomes ``user``'s ``User.email`` and the claim is dropped, in one
    transaction; a claim replaced since the check (a link sent again at that moment) confirms
    nothing."""
    outcome, pending = _opened(user, token)
    if outcome is not Outcome.CONFIRMED:
        return outcome, pending.email if pending else None
    try:
        with transaction.atomic():
            if not PendingEmail.objects.filter(pk=pending.pk).delete()[0]:  # replaced since the check
                return Outcome.INVALID, None
            user.email = pending.email
            user.save(update_fields=["email"])
    except IntegrityError as exc:  # another account confirmed it after the check above
        if not EMAIL_INDEX.lost_race(exc):
            raise
        user.refresh_from_db(fields=["email"])
        return Outcome.TAKEN, pending.email
    return Outcome.CONFIRMED, pending.email


def pending_of(user: User) -> PendingEmail | None:
    """The address ``user`` waits to confirm, if any (one claim per account: a constraint)."""
    return PendingEmail.objects.filter(user=user).first()


# Each lost race means another post's claim was committed meanwhile, and posts per account are
# limited (``EMAIL_CONFIRM_RESENDS_PER_ACCOUNT``): a few tries always end with this post's claim.
CLAIM_TRIES = 5


def new_claim(user: User, email: str, *, tries: int = CLAIM_TRIES) -> PendingEmail:
    """``user``'s claim on ``email``, in place of any claim it had: for another address (a typo
    corrected) or the same one mailed again. A new row, so only the newest link works and the
    sweep (:func:`delete_expired_claims`) never drops a claim whose link still works.

    Two posts at once (a double click, two tabs) both delete the old claim, then insert; the
    constraint of one claim per account refuses the second insert, which then deletes the first's
    claim and inserts again: the later post's claim stays, as if they had come one after the other."""
    try:
        with transaction.atomic():
            PendingEmail.objects.filter(user=user).delete()
            return PendingEmail.objects.create(user=user, email=email)
    except IntegrityError as exc:
        if tries <= 1 or not lost_claim_race(exc):
            raise
        log.info("e-mail confirmation: another claim of user %s came first, replacing it", user.pk)
        return new_claim(user, email, tries=tries - 1)


def lost_claim_race(error: IntegrityError) -> bool:
    """Whether ``error`` is the constraint of one claim per account refusing an insert, told by the
    first line (PostgreSQL names the constraint, SQLite the column it covers)."""
    first_line = str(error).partition("\n")[0]
    return any(name in first_line for name in ONE_CLAIM_ERRORS)


def delete_expired_claims() -> int:
    """Delete every claim older than ``EMAIL_CONFIRM_TTL``: its link has expired, and the account
    can give the address again. Run by Celery's sweep (``kafka_workers.tasks.delete_expired_tokens``)."""
    cutoff = timezone.now() - timedelta(seconds=settings.EMAIL_CONFIRM_TTL)
    return PendingEmail.objects.filter(created__lt=cutoff).delete()[0]
