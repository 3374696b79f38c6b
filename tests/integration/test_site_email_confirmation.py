"""Confirming the e-mail address given at sign-up (``accounts.confirmation``).

An address typed at sign-up is only a pending claim until the signed-in owner of the account opens
the link mailed to it; only then is it ``User.email``, the address sign-ups are refused for and
password resets go to. Before, the address was the account's at once: anyone could sign up with
someone else's, lock its owner out of signing up and, through a password reset, hand the owner
the squatter's account.

Requests go through Django's test client into the real views, with the session's Redis behind the
mail caps (the cache under the session's own prefix, see conftest.site_cache).
"""
from __future__ import annotations

import re
import uuid
import zlib
from urllib.parse import unquote

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.db import IntegrityError, transaction
from django.test import Client
from django.test.utils import override_settings

from accounts.models import PendingEmail
from tests.site_catalog import PASSWORD, own_address

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

LINK = re.compile(r"http://testserver(/accounts/email/confirm/[^/\s]+/)")


def _name() -> str:
    return f"shopper{uuid.uuid4().hex[:8]}"


def _signup(client: Client, username: str, email: str):
    return client.post("/accounts/signup/", {"username": username, "email": email, "password1": PASSWORD,
                                              "password2": PASSWORD}, REMOTE_ADDR=own_address())


def _change(client: Client, email: str, password: str = PASSWORD, address: str | None = None):
    """ "Send the link to this address" on the e-mail page, with the account's password."""
    return client.post("/accounts/email/", {"email": email, "password": password},
                       REMOTE_ADDR=address or own_address())


def _resend(client: Client, address: str | None = None):
    """ "Send the link again", from a client address of its own unless ``address`` is given."""
    return client.post("/accounts/email/", REMOTE_ADDR=address or own_address())


def _link(mail) -> str:
    """The confirmation link's path in a mail."""
    found = LINK.search(mail.body)
    assert found, mail.body
    return found.group(1)


def _signed_up(email: str, mailoutbox) -> tuple[Client, User, str]:
    """A new account signed up with ``email`` (its client signed in) and the path of the link mailed."""
    client, name = Client(), _name()
    assert _signup(client, name, email).status_code == 302
    assert mailoutbox[-1].to == [email]
    return client, User.objects.get(username=name), _link(mailoutbox[-1])


def _seen(response, *private: str) -> tuple:
    """A response as its client sees it (status, redirect, page), with what differs between any two
    accounts anyway blanked: their usernames and addresses (in any case), the forms' CSRF tokens.
    Two answers equal here tell nothing apart."""
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', 'name="csrfmiddlewaretoken"',
                  response.content.decode())
    for word in private:
        body = re.sub(re.escape(word), "...", body, flags=re.IGNORECASE)
    return response.status_code, response.get("Location"), body


def _notices(email: str, mailoutbox) -> list:
    """The mails telling ``email``'s owner that someone gave their address: to it, with no link."""
    return [m for m in mailoutbox if m.to == [email] and not LINK.search(m.body)]


def _reset_mails(email: str, mailoutbox) -> list:
    """The mails a password reset request for ``email`` sends."""
    before = len(mailoutbox)
    answer = Client().post("/accounts/password_reset/", {"email": email}, REMOTE_ADDR=own_address())
    assert answer.status_code == 302 and answer["Location"] == "/accounts/password_reset/done/"
    return mailoutbox[before:]


def test_a_squatter_cannot_take_someone_elses_address(site_cache, mailoutbox):
    """The hole end to end: a squatter signs up with the victim's address; the victim can still sign
    up with it and confirm it, and password resets for it go to the victim's account only."""
    address = f"victim.{uuid.uuid4().hex[:8]}@example.com"
    squatter_client, squatter, squatter_link = _signed_up(address, mailoutbox)
    assert squatter.email == "" and PendingEmail.objects.filter(user=squatter, email=address).exists()
    assert f'as "{squatter.username}"' in mailoutbox[-1].body  # the victim can tell it is not theirs
    assert _reset_mails(address, mailoutbox) == []  # a pending address gets no resets

    victim_client, victim, victim_link = _signed_up(address, mailoutbox)  # not "already in use"
    confirmed = victim_client.post(victim_link)
    assert confirmed.status_code == 302 and confirmed["Location"] == "/accounts/email/"
    page = victim_client.get("/accounts/email/").content.decode()
    assert f"Your e-mail address {address} is confirmed." in page and f"<strong>{address}</strong>" in page
    victim.refresh_from_db()
    assert victim.email == address
    assert not PendingEmail.objects.filter(user=victim).exists()

    (reset,) = _reset_mails(address.upper(), mailoutbox)
    assert reset.to == [address] and victim.username in reset.body and squatter.username not in reset.body

    late = squatter_client.get(squatter_link)  # the victim clicked nothing of the squatter's
    assert late.status_code == 409 and f"Another account confirmed {address} first" in late.content.decode()
    assert squatter_client.post(squatter_link).status_code == 409
    squatter.refresh_from_db()
    assert squatter.email == ""
    latecomer = _name()  # a confirmed address is one account's; the sign-up is answered as for a free one
    assert _signup(Client(), latecomer, address).status_code == 302
    assert User.objects.get(username=latecomer).email == "" and mailoutbox[-1].to == [address]
    assert not LINK.search(mailoutbox[-1].body)  # its owner is told, and gets no link to confirm


def test_opening_the_link_only_asks_and_the_confirmation_is_a_csrf_checked_post(site_cache, mailoutbox):
    """The owner of a mistyped address must not get it confirmed on the account by luring its
    signed-in owner's browser to the link (a top-level cross-site GET carries the session cookie):
    a GET only asks, naming the address and the account; a POST without the page's CSRF token (a
    cross-site form) is refused; the page's own form confirms."""
    address = f"typo.{uuid.uuid4().hex[:8]}@example.com"
    client, user, link = _signed_up(address, mailoutbox)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    asked = browser.get(link)
    body = asked.content.decode()
    assert asked.status_code == 200
    assert f"Confirm <strong>{address}</strong> for account <strong>{user.username}</strong>?" in body
    user.refresh_from_db()
    assert user.email == "" and PendingEmail.objects.filter(user=user).exists()

    forged = browser.post(link)  # a form on another site: no CSRF token
    assert forged.status_code == 403
    user.refresh_from_db()
    assert user.email == ""

    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
    confirmed = browser.post(link, {"csrfmiddlewaretoken": token})
    assert confirmed.status_code == 302 and confirmed["Location"] == "/accounts/email/"
    user.refresh_from_db()
    assert user.email == address


def test_the_link_signs_in_first_when_signed_out(site_cache, mailoutbox):
    """Opened in another browser, the link asks for the account's login, then confirms."""
    address = f"{_name()}@example.com"
    client, user, link = _signed_up(address, mailoutbox)
    client.logout()
    asked = client.get(link)
    assert asked.status_code == 302 and unquote(asked["Location"]) == f"/accounts/login/?next={link}"
    signed_in = client.post(asked["Location"], {"username": user.username, "password": PASSWORD})
    assert signed_in.status_code == 302 and signed_in["Location"] == link
    assert client.post(link).status_code == 302
    user.refresh_from_db()
    assert user.email == address


def test_an_expired_link_confirms_nothing(site_cache, mailoutbox, monkeypatch):
    """A link works ``EMAIL_CONFIRM_TTL`` seconds: one made longer ago is refused, one made just
    within it still works. Its age is set by the time signed into it, not by waiting."""
    import time

    from django.conf import settings

    def made_ago(seconds: int):
        monkeypatch.setattr(signing.TimestampSigner, "timestamp",
                            lambda self: signing.b62_encode(int(time.time()) - seconds))

    address = f"{_name()}@example.com"
    made_ago(settings.EMAIL_CONFIRM_TTL + 60)
    client, user, old_link = _signed_up(address, mailoutbox)
    expired = client.get(old_link)
    assert expired.status_code == 410 and "This link has expired" in expired.content.decode()
    user.refresh_from_db()
    assert user.email == "" and PendingEmail.objects.filter(user=user).exists()

    made_ago(settings.EMAIL_CONFIRM_TTL - 60)
    assert _resend(client).status_code == 302  # "send the link again"
    assert client.post(_link(mailoutbox[-1])).status_code == 302
    user.refresh_from_db()
    assert user.email == address


def test_a_link_works_once(site_cache, mailoutbox):
    address = f"{_name()}@example.com"
    client, user, link = _signed_up(address, mailoutbox)
    assert client.post(link).status_code == 302
    again = client.get(link)
    assert again.status_code == 400 and "This link is invalid or was used already." in again.content.decode()


def test_a_link_confirms_only_for_the_account_it_was_made_for(site_cache, mailoutbox):
    """The owner of a mailbox, signed in as themselves, opening a link a stranger's sign-up sent
    them must not attach their address to the stranger's account (nor to their own: the link is
    the stranger's). A link altered by hand is refused too."""
    address = f"{_name()}@example.com"
    _, stranger, strangers_link = _signed_up(address, mailoutbox)
    owner_client, owner, _ = _signed_up(f"{_name()}@example.com", mailoutbox)
    refused = owner_client.get(strangers_link)
    assert refused.status_code == 403 and "made for another account" in refused.content.decode()
    stranger.refresh_from_db()
    owner.refresh_from_db()
    assert stranger.email == "" and owner.email == ""
    token = strangers_link.rstrip("/").rsplit("/", 1)[1]
    forged = owner_client.get(f"/accounts/email/confirm/{token[:-2]}xx/")
    assert forged.status_code == 400 and owner.email == ""


def test_two_accounts_confirming_one_address_at_once(site_cache, mailoutbox):
    """Both links are checked while the address is free; the unique index on lower(email) decides,
    and the account that loses is told so (not a 500) and gets no address.

    The race is made real without threads: the other account's confirmation is written just before
    this one's own (a pre_save receiver), after its check."""
    from django.db.models.signals import pre_save

    address = f"{_name()}@example.com"
    _, first, _ = _signed_up(address, mailoutbox)
    client, second, link = _signed_up(address, mailoutbox)

    def the_other_confirms_first(sender, instance, **kwargs):
        if instance.pk == second.pk:
            User.objects.filter(pk=first.pk).update(email=address.upper())

    pre_save.connect(the_other_confirms_first, sender=User)
    try:
        lost = client.post(link)
    finally:
        pre_save.disconnect(the_other_confirms_first, sender=User)
    assert lost.status_code == 409 and f"Another account confirmed {address} first" in lost.content.decode()
    second.refresh_from_db()
    assert second.email == ""


def test_confirmation_mails_sent_again_to_one_mailbox_are_capped(site_cache, mailoutbox):
    """Every sign-up's first mail goes; "send the link again" mails one mailbox at most
    ``EMAIL_CONFIRM_MAILS_PER_EMAIL`` times per window, and past it the page says the link did not
    go. The cap has its own count: the mails a stranger's resends sent do not use up the owner's
    password resets."""
    address = f"{_name()}@example.com"
    with override_settings(EMAIL_CONFIRM_MAILS_PER_EMAIL=2, PASSWORD_RESET_MAILS_PER_EMAIL=1):
        clients = [Client() for _ in range(3)]
        answers = [_signup(c, _name(), address) for c in clients]
        assert [a.status_code for a in answers] == [302, 302, 302]
        assert len(mailoutbox) == 3 and all(m.to == [address] for m in mailoutbox)
        assert PendingEmail.objects.filter(email=address).count() == 3

        assert [_resend(c).status_code for c in clients] == [302, 302, 302]
        assert len(mailoutbox) == 5
        assert "We could not mail the confirmation link" in clients[2].get("/accounts/email/").content.decode()

        assert clients[0].post(_link(mailoutbox[3])).status_code == 302  # its link sent again works
        assert len(_reset_mails(address, mailoutbox)) == 1


def test_a_squatter_cannot_use_up_the_owners_sign_up_mail(site_cache, mailoutbox):
    """A squatting account that sends its link again until the mailbox's cap is reached must not
    keep the address's owner from getting the link of their own sign-up."""
    address = f"owner.{uuid.uuid4().hex[:8]}@example.com"
    with override_settings(EMAIL_CONFIRM_MAILS_PER_EMAIL=2, EMAIL_CONFIRM_RESENDS_PER_ACCOUNT=5):
        squatter_client, _, _ = _signed_up(address, mailoutbox)
        for _ in range(3):
            _resend(squatter_client)
        assert "We could not mail the confirmation link" in squatter_client.get("/accounts/email/").content.decode()
        before = len(mailoutbox)
        owner_client, owner, link = _signed_up(address, mailoutbox)
        assert len(mailoutbox) == before + 1  # the owner's sign-up mailed all the same
        assert f'as "{owner.username}"' in mailoutbox[-1].body
        assert owner_client.post(link).status_code == 302
        owner.refresh_from_db()
        assert owner.email == address


def test_sending_the_link_again_is_limited_per_account_and_per_client_address(site_cache, mailoutbox):
    """Past ``EMAIL_CONFIRM_RESENDS_PER_ACCOUNT`` resends, from any client address, or
    ``ACCOUNT_THROTTLE_ATTEMPTS`` from one client address, by any accounts, the button answers 429
    and mails nothing."""
    with override_settings(EMAIL_CONFIRM_RESENDS_PER_ACCOUNT=2, ACCOUNT_THROTTLE_ATTEMPTS=3,
                           EMAIL_CONFIRM_MAILS_PER_EMAIL=100):
        client, _, _ = _signed_up(f"{_name()}@example.com", mailoutbox)
        assert [_resend(client).status_code for _ in range(3)] == [302, 302, 429]
        assert len(mailoutbox) == 3
        refused = _resend(client)
        assert refused.status_code == 429 and "Too many requests" in refused.content.decode()

        shared = own_address()
        others = [_signed_up(f"{_name()}@example.com", mailoutbox)[0] for _ in range(4)]
        before = len(mailoutbox)
        assert [_resend(c, shared).status_code for c in others] == [302, 302, 302, 429]
        assert len(mailoutbox) == before + 3


def test_the_account_page_shows_the_addresses_and_sends_the_link_again(site_cache, mailoutbox, make_user):
    """The link goes again only on the button's POST (a GET mails nothing); an account from before
    confirmation keeps its address as confirmed, with nothing to send."""
    address = f"{_name()}@example.com"
    client, _, _ = _signed_up(address, mailoutbox)
    page = client.get("/accounts/email/")
    body = page.content.decode()
    assert page.status_code == 200 and f"Waiting for confirmation: <strong>{address}</strong>" in body
    assert "No confirmed address" in body and 'id="resend-confirmation"' in body and len(mailoutbox) == 1
    assert _resend(client).status_code == 302
    assert len(mailoutbox) == 2 and mailoutbox[1].to == [address]

    older = make_user()  # as sign-up made accounts before: the address in User.email
    client.force_login(older)
    body = client.get("/accounts/email/").content.decode()
    assert f"Confirmed: <strong>{older.email}</strong>" in body and 'id="resend-confirmation"' not in body
    assert _resend(client).status_code == 302 and len(mailoutbox) == 2


def test_a_mistyped_pending_address_can_be_replaced(site_cache, mailoutbox):
    """A typo at sign-up sent every "send again" to a stranger: the account page takes another
    address instead, mails it, and the mistyped one's link no longer confirms anything."""
    right = f"{_name()}@example.com"
    client, user, typo_link = _signed_up(right.replace("@example.com", "@exmaple.com"), mailoutbox)
    answer = _change(client, right)
    assert answer.status_code == 302 and mailoutbox[-1].to == [right]
    assert list(PendingEmail.objects.filter(user=user).values_list("email", flat=True)) == [right]
    assert client.post(typo_link).status_code == 400
    assert client.post(_link(mailoutbox[-1])).status_code == 302
    user.refresh_from_db()
    assert user.email == right


def test_signing_up_answers_alike_whether_the_address_has_an_account_or_not(site_cache, mailoutbox, make_user):
    """Sign-up answered "already in use" for an address another account had confirmed: anyone could
    test addresses for accounts, one sign-up each. A taken address is now taken as a free one is:
    the same redirect and the same pages after it (the new account waits for the address, which
    it can never confirm); the address's owner gets a mail saying someone tried, with no link, where
    a free address gets its link."""
    owner = make_user()
    taken, free = owner.email.upper(), f"{_name()}@example.com"
    seen, users = {}, {}
    for address in (taken, free):
        client, name = Client(), _name()
        answer = _signup(client, name, address)
        seen[address] = [_seen(answer, name, address), _seen(client.get("/accounts/email/"), name, address)]
        users[address] = (client, User.objects.get(username=name))
    assert seen[taken] == seen[free] and seen[free][0][:2] == (302, "/welcome/")
    assert "We mailed a link to" in seen[taken][1][2]

    (notice,) = _notices(owner.email, mailoutbox)  # to the address as its owner confirmed it
    assert "/accounts/password_reset/" in notice.body and "/accounts/login/" in notice.body
    assert [m.to for m in mailoutbox] == [[owner.email], [free]] and LINK.search(mailoutbox[1].body)

    from accounts.confirmation import make_token

    client, user = users[taken]  # its claim cannot be confirmed, were a link ever made for it
    claim = PendingEmail.objects.get(user=user)
    assert claim.email.lower() == owner.email.lower()
    link = f"/accounts/email/confirm/{make_token(claim)}/"
    for answer in (client.get(link), client.post(link)):
        assert answer.status_code == 409 and "Another account confirmed" in answer.content.decode()
    user.refresh_from_db()
    owner.refresh_from_db()
    assert user.email == "" and owner.email.upper() == taken


def test_sign_up_notices_to_one_mailbox_are_capped(site_cache, mailoutbox, make_user):
    """Each sign-up with a taken address mails its owner, at most ``EMAIL_CONFIRM_MAILS_PER_EMAIL``
    times per window; past that the sign-up still answers (and says) what a free address's would."""
    owner = make_user()
    with override_settings(EMAIL_CONFIRM_MAILS_PER_EMAIL=1):
        clients = [Client() for _ in range(3)]
        assert [_signup(c, _name(), owner.email).status_code for c in clients] == [302, 302, 302]
        assert len(_notices(owner.email, mailoutbox)) == 1 and len(mailoutbox) == 1
        assert "We mailed a link to" in clients[2].get("/accounts/email/").content.decode()


def test_the_account_page_answers_alike_whether_the_address_has_an_account_or_not(site_cache, mailoutbox,
                                                                                  make_user):
    """The e-mail page had the same oracle: an address another account has was refused ("Another
    account already uses ..."), and "send again" for one dropped the claim and said so. Both now
    answer as for a free address, up to the mailbox's cap and past it, and the owner gets the
    notice instead of a link."""
    owner = make_user()
    taken, free = owner.email.upper(), f"{_name()}@example.com"
    seen = {}
    with override_settings(EMAIL_CONFIRM_MAILS_PER_EMAIL=1):  # the change is mailed, the resend not
        for address in (taken, free):
            client, user, _ = _signed_up(f"{_name()}@example.com", mailoutbox)
            private = (user.username, address, PendingEmail.objects.get(user=user).email)
            changed = _change(client, address)
            after_change = client.get("/accounts/email/")
            again = _resend(client)
            seen[address] = [_seen(r, *private) for r in (changed, after_change, again, client.get("/accounts/email/"))]
            assert PendingEmail.objects.get(user=user).email.lower() == address.lower()
    assert seen[taken] == seen[free]
    assert "We mailed a link to" in seen[free][1][2] and "We could not mail" in seen[free][3][2]
    assert len(_notices(owner.email, mailoutbox)) == 1 and [m.to for m in mailoutbox].count([free]) == 1


def test_a_claim_another_account_confirmed_meanwhile_is_not_mailed_its_link(site_cache, mailoutbox, make_user):
    """An address another account got meanwhile (the admin, a sign-up answered by an old web
    process): "send again" mails its owner the notice, not a link, and the page answers as usual;
    the link mailed before it was taken confirms nothing."""
    address = f"{_name()}@example.com"
    client, user, link = _signed_up(address, mailoutbox)
    User.objects.filter(pk=make_user().pk).update(email=address)  # as the admin's user page would
    late = client.post(link)
    assert late.status_code == 409 and f"Another account confirmed {address} first" in late.content.decode()
    assert _resend(client).status_code == 302
    assert len(_notices(address, mailoutbox)) == 1 and len(mailoutbox) == 2
    page = client.get("/accounts/email/").content.decode()
    assert f"We mailed a link to {address}" in page and f"Waiting for confirmation: <strong>{address}</strong>" in page
    user.refresh_from_db()
    assert user.email == "" and PendingEmail.objects.filter(user=user).count() == 1


def test_the_link_carries_no_address(site_cache, mailoutbox):
    """The token held the address, readable (base64, maybe zlib) in the link and so in every access
    log and history it passes through. It now names the claim only; the page finds its address."""
    address = f"Private.{_name()}@example.com"
    client, _, link = _signed_up(address, mailoutbox)
    payload = link.rstrip("/").rsplit("/", 1)[1].split(":")[0]
    data = signing.b64_decode(payload.lstrip(".").encode())
    data = zlib.decompress(data) if payload.startswith(".") else data
    assert address.split("@")[0].lower().encode() not in data.lower(), data
    assert "private" not in link.lower()
    assert f"Confirm <strong>{address}</strong>" in client.get(link).content.decode()


def test_the_database_keeps_one_claim_per_account():
    """One claim per account was only ``new_claim``'s rule (delete, then insert): two posts at once
    could both delete the old claim and both insert. Now a constraint (accounts.0013)."""
    user = User.objects.create(username=_name())
    PendingEmail.objects.create(user=user, email=f"{_name()}@example.com")
    with pytest.raises(IntegrityError), transaction.atomic():
        PendingEmail.objects.create(user=user, email=f"{_name()}@example.com")
    PendingEmail.objects.create(user=User.objects.create(username=_name()), email=f"{_name()}@example.com")


def test_two_address_changes_at_once_leave_one_claim(site_cache, mailoutbox):
    """Two "give another address" posts at once: each deletes the old claim, then inserts its own;
    the constraint refuses the second insert, and that post deletes the first's claim and inserts
    again, as one after the other would: one claim, the later one, and no server error.

    The race is made real without threads: the other post's claim is inserted just before this
    one's own (a pre_save receiver, once), after this one deleted the old claim."""
    from django.db.models.signals import pre_save

    client, user, _ = _signed_up(f"{_name()}@example.com", mailoutbox)
    mine, other = f"{_name()}@example.com", f"{_name()}@example.com"

    def the_other_post_first(sender, instance, **kwargs):
        if instance.user_id == user.pk:
            pre_save.disconnect(the_other_post_first, sender=PendingEmail)  # once: the other's own save
            PendingEmail.objects.create(user=user, email=other)

    pre_save.connect(the_other_post_first, sender=PendingEmail)
    try:
        answer = _change(client, mine)
    finally:
        pre_save.disconnect(the_other_post_first, sender=PendingEmail)
    assert answer.status_code == 302, answer.status_code
    assert list(PendingEmail.objects.filter(user=user).values_list("email", flat=True)) == [mine]
    assert mailoutbox[-1].to == [mine] and client.post(_link(mailoutbox[-1])).status_code == 302
    user.refresh_from_db()
    assert user.email == mine


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_each_accounts_newest_claim(site_cache):
    """A database where a race left an account two claims: accounts.0013 keeps the newest (the one
    whose link works) before it adds the constraint, which would refuse otherwise."""
    from django.core.management import call_command

    first, second = User.objects.create(username=_name()), User.objects.create(username=_name())
    try:
        call_command("migrate", "accounts", "0012", verbosity=0)
        older = PendingEmail.objects.create(user=first, email="older@example.com")
        newer = PendingEmail.objects.create(user=first, email="newer@example.com")
        alone = PendingEmail.objects.create(user=second, email="alone@example.com")
        assert older.created <= newer.created
        call_command("migrate", "accounts", verbosity=0)
        assert set(PendingEmail.objects.values_list("pk", flat=True)) == {newer.pk, alone.pk}
        with pytest.raises(IntegrityError), transaction.atomic():
            PendingEmail.objects.create(user=second, email="again@example.com")
    finally:  # the other tests' schema, whatever happened
        call_command("migrate", "accounts", verbosity=0)
        User.objects.filter(pk__in=[first.pk, second.pk]).delete()


def test_changing_the_address_takes_the_password_and_tells_the_old_one(site_cache, mailoutbox, make_user):
    """Whoever held a signed-in session (a shared computer, a stolen cookie) could post their own
    address to the e-mail page with no password, confirm it from that session, then reset the
    password there: the password change asks for the old one, this did not. Now the page takes the
    password with the address; the confirmed address stays the account's (and gets the resets)
    until the new one is confirmed, and then it is told of the change."""
    owner = make_user()
    old, new = owner.email, f"{_name()}@example.com"
    client = Client()
    client.force_login(owner)
    assert 'id="change-pending-email"' in client.get("/accounts/email/").content.decode()

    no_password = client.post("/accounts/email/", {"email": new}, REMOTE_ADDR=own_address())
    wrong = _change(client, new, password="not-" + PASSWORD)
    assert no_password.status_code == 400 and wrong.status_code == 400
    assert "Your password was entered incorrectly." in wrong.content.decode()
    assert not PendingEmail.objects.filter(user=owner).exists() and mailoutbox == []

    assert _change(client, new).status_code == 302
    assert [m.to for m in mailoutbox] == [[new]]
    owner.refresh_from_db()
    assert owner.email == old and _reset_mails(old, mailoutbox)  # resets still go to the old one
    assert client.post(_link(mailoutbox[0])).status_code == 302
    owner.refresh_from_db()
    assert owner.email == new
    told = [m for m in mailoutbox if m.to == [old] and "was changed" in m.subject]
    assert len(told) == 1 and owner.username in told[0].body and new not in told[0].body


@override_settings(EMAIL_CONFIRM_RESENDS_PER_ACCOUNT=100, ACCOUNT_THROTTLE_ATTEMPTS=100)
def test_the_e_mail_pages_password_shares_the_lockout(site_cache, mailoutbox, make_user):
    """The page's password check is one more way to guess the password from a session: past
    ``LOGIN_THROTTLE_ATTEMPTS`` wrong ones it is refused, the right one too, as at the login."""
    owner, address = make_user(), own_address()
    client = Client()
    client.force_login(owner)
    new = f"{_name()}@example.com"
    wrong = [_change(client, new, password=f"guess{n}", address=address).status_code
             for n in range(settings.LOGIN_THROTTLE_ATTEMPTS)]
    assert wrong == [400] * settings.LOGIN_THROTTLE_ATTEMPTS
    locked = _change(client, new, address=address)
    assert locked.status_code == 429 and "Too many failed attempts" in locked.content.decode()
    assert not PendingEmail.objects.filter(user=owner).exists() and mailoutbox == []


def test_mistyped_e_mail_forms_do_not_use_up_the_owners_resends(site_cache, mailoutbox, make_user):
    """A wrong password or a malformed address on the e-mail page mails nothing, yet each used one of
    the account's ``EMAIL_CONFIRM_RESENDS_PER_ACCOUNT`` posts: three typos and the owner's right form
    was refused (429) for the rest of the window. The password guesses have the login lockout."""
    owner, address = make_user(), own_address()
    client = Client()
    client.force_login(owner)
    new = f"{_name()}@example.com"
    typos = [_change(client, new, password="not-" + PASSWORD, address=address),
             _change(client, "not-an-address", address=address),
             _change(client, new, password="", address=address)]
    typos += [_change(client, new, password=f"guess{n}", address=address)
              for n in range(settings.EMAIL_CONFIRM_RESENDS_PER_ACCOUNT)]
    assert [answer.status_code for answer in typos] == [400] * len(typos) and mailoutbox == []
    assert _change(client, new, address=address).status_code == 302
    assert [m.to for m in mailoutbox] == [[new]]


def test_an_account_without_an_address_can_give_one(site_cache, mailoutbox, make_user):
    """Accounts the admin or the demo made have no address (``User.email`` empty): the page asks for
    one, with the password, and its link confirms it; nobody is told of a change."""
    user = make_user()
    User.objects.filter(pk=user.pk).update(email="")
    client = Client()
    client.force_login(user)
    page = client.get("/accounts/email/").content.decode()
    assert "No confirmed address" in page and "Give an address to confirm" in page
    address = f"{_name()}@example.com"
    assert _change(client, address).status_code == 302 and [m.to for m in mailoutbox] == [[address]]
    assert client.post(_link(mailoutbox[0])).status_code == 302
    user.refresh_from_db()
    assert user.email == address and len(mailoutbox) == 1
