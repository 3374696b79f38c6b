"""Accounts on the real site: sign-up with Django's password validators and one account per
(confirmed) e-mail address, login and logout, login throttling, password change and reset by e-mail, and demo accounts
linked to real reviewers.

Requests go through Django's test client into the real views, with the session's MongoDB, Kafka
and Redis behind them (the cache under the session's own prefix, see conftest.site_cache).
"""
from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.auth.models import User

from tests.site_catalog import PASSWORD, own_address

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _name() -> str:
    return f"shopper{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("password,complaint", [
    ("Sh0rt!", "too short"),
    ("password123", "too common"),
    ("80417294561", "entirely numeric"),
    (None, "too similar"),  # the username itself, slightly changed
])
def test_signup_refuses_weak_passwords(site, client, password, complaint):
    username = _name()
    password = password or f"{username}1"
    response = client.post("/accounts/signup/", {"username": username, "email": f"{username}@example.com",
                                                  "password1": password, "password2": password})
    assert response.status_code == 400
    assert complaint in response.content.decode()
    assert not User.objects.filter(username=username).exists()


def test_signup_logs_in_and_shows_onboarding(site, client):
    username = _name()
    response = client.post("/accounts/signup/", {"username": username, "email": f"{username}@example.com",
                                                  "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/welcome/"  # onboarding first
    user = User.objects.get(username=username)
    uid = user.profile.recommender_id
    assert uid == user.profile.site_id and uid.startswith("site-") and user.profile.reviewer_id is None
    assert uid != f"site-{user.pk}"  # random: a reused primary key must not inherit someone's ratings
    page = client.get("/recommendations/")
    assert page.status_code == 200
    body = page.content.decode()
    assert 'data-source="popular"' in body and 'id="onboarding"' in body
    # a second sign-up with the same name is refused
    again = client.post("/accounts/signup/", {"username": username, "email": "x@example.com",
                                              "password1": PASSWORD, "password2": PASSWORD})
    assert again.status_code == 302  # already logged in: sent to the recommendations instead
    client.logout()
    again = client.post("/accounts/signup/", {"username": username, "email": "x@example.com",
                                              "password1": PASSWORD, "password2": PASSWORD})
    assert again.status_code == 400 and User.objects.filter(username=username).count() == 1


def test_login_logout_and_safe_next(site, client, make_user):
    user = make_user()
    assert client.get("/accounts/login/").status_code == 200
    wrong = client.post("/accounts/login/", {"username": user.username, "password": "not-the-password"})
    assert wrong.status_code == 400 and "_auth_user_id" not in client.session
    ok = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert ok.status_code == 302 and ok["Location"] == "/recommendations/"
    assert client.session["_auth_user_id"] == str(user.pk)
    assert client.get("/recommendations/").status_code == 200
    out = client.post("/accounts/logout/")
    assert out.status_code == 302 and out["Location"] == "/"
    gone = client.get("/recommendations/")
    assert gone.status_code == 302 and gone["Location"].startswith("/accounts/login/")

    product = site.order()[0]
    to_product = client.post(f"/accounts/login/?next=/p/{product}/", {"username": user.username, "password": PASSWORD})
    assert to_product["Location"] == f"/p/{product}/"
    client.logout()
    for evil in ("https://evil.example/", "//evil.example/", "/\\evil.example/"):
        response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD, "next": evil})
        assert response.status_code == 302 and response["Location"] == "/recommendations/", evil
        client.logout()


def test_a_product_form_posted_after_the_session_expired_returns_to_the_product(site, client, make_user):
    """A rating or control posted logged out (the session expired on an open page) sent the shopper
    to log in and then back to the POST-only URL with a GET: a blank 405. Back to the product."""
    user, product = make_user(), site.order()[0]
    for action in ("rate", "unrate", "not-interested", "interested-again"):
        answer = client.post(f"/p/{product}/{action}/", {"rating": "4"})
        assert answer.status_code == 302 and answer["Location"] == f"/accounts/login/?next=/p/{product}/", action
    after = client.post(f"/accounts/login/?next=/p/{product}/", {"username": user.username, "password": PASSWORD})
    assert after["Location"] == f"/p/{product}/" and client.get(after["Location"]).status_code == 200
    client.logout()
    assert client.post("/p/no%20such/rate/", {"rating": "4"}).status_code == 404  # no product, no login


def test_login_throttled_after_repeated_failures(site, client, make_user):
    from django.conf import settings
    from django.contrib.auth.signals import user_login_failed

    limit = settings.LOGIN_THROTTLE_ATTEMPTS
    user, bystander = make_user(), make_user()

    # a success resets the count
    for _ in range(limit - 1):
        assert client.post("/accounts/login/", {"username": user.username, "password": "nope"}).status_code == 400
    assert client.post("/accounts/login/", {"username": user.username, "password": PASSWORD}).status_code == 302
    client.logout()

    for _ in range(limit):
        assert client.post("/accounts/login/", {"username": user.username, "password": "nope"}).status_code == 400
    checked = []
    user_login_failed.connect(lambda **kw: checked.append(kw), weak=False, dispatch_uid="site-test-throttle")
    try:
        locked = client.post("/accounts/login/", {"username": user.username.upper(), "password": "still-nope"})
        right_but_locked = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    finally:
        user_login_failed.disconnect(dispatch_uid="site-test-throttle")
    assert locked.status_code == 429 and right_but_locked.status_code == 429
    assert "Too many failed attempts" in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert checked == [], "a locked-out attempt still reached the password check"

    # the lock is per username and address: other users, and this user elsewhere, can still log in
    assert client.post("/accounts/login/", {"username": bystander.username, "password": PASSWORD}).status_code == 302
    client.logout()
    elsewhere = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD},
                            REMOTE_ADDR="203.0.113.9")
    assert elsewhere.status_code == 302


def test_password_change(site, client, make_user):
    user = make_user()
    client.force_login(user)
    assert "<title>Password change · amazon-recommender</title>" in client.get("/accounts/password_change/").content.decode()
    weak = client.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": "abc",
                                                       "new_password2": "abc"})
    assert weak.status_code == 200 and "too short" in weak.content.decode()
    new = "Another-Long-Passphrase-42"
    done = client.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": new,
                                                       "new_password2": new})
    assert done.status_code == 302 and done["Location"] == "/accounts/password_change/done/"
    client.logout()
    assert client.post("/accounts/login/", {"username": user.username, "password": PASSWORD}).status_code == 400
    assert client.post("/accounts/login/", {"username": user.username, "password": new}).status_code == 302


def test_password_reset_by_email(site, client, make_user, mailoutbox):
    user = make_user()
    form = client.get("/accounts/password_reset/").content.decode()
    assert "<title>Password reset · amazon-recommender</title>" in form  # the site's page, not the admin's
    unknown = client.post("/accounts/password_reset/", {"email": "nobody-here@example.com"})
    assert unknown.status_code == 302 and mailoutbox == []  # same answer, no mail: no account enumeration
    sent = client.post("/accounts/password_reset/", {"email": user.email})
    assert sent.status_code == 302 and sent["Location"] == "/accounts/password_reset/done/"
    assert len(mailoutbox) == 1 and mailoutbox[0].to == [user.email]
    link = re.search(r"/accounts/reset/[^/\s]+/[^/\s]+/", mailoutbox[0].body)
    assert link, mailoutbox[0].body
    form_url = client.get(link.group(0))["Location"]  # Django swaps the token into the session
    assert form_url.endswith("/set-password/")
    new = "Reset-Passphrase-Works-77"
    weak = client.post(form_url, {"new_password1": "12345678", "new_password2": "12345678"})
    assert weak.status_code == 200 and "entirely numeric" in weak.content.decode()
    done = client.post(form_url, {"new_password1": new, "new_password2": new})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    assert client.post("/accounts/login/", {"username": user.username, "password": new}).status_code == 302
    client.logout()
    assert client.get(link.group(0)).status_code == 200  # a used link is dead: the page says so
    assert "invalid or has expired" in client.get(link.group(0)).content.decode()


def test_demo_accounts_link_to_the_most_active_reviewers(site, client):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("create_demo_accounts", count=3, password=PASSWORD, stdout=out)
    counts = site.reviewer_counts()
    expected = sorted(counts, key=lambda u: (-counts[u], u))[:3]
    linked = [User.objects.get(username=f"demo{i}").profile.reviewer_id for i in (1, 2, 3)]
    assert linked == expected
    assert all(f"reviewer {u}, {counts[u]} ratings" in out.getvalue() for u in expected)

    call_command("create_demo_accounts", count=3, password=PASSWORD, stdout=StringIO())  # idempotent
    assert User.objects.filter(username__startswith="demo").count() == 3

    assert client.post("/accounts/login/", {"username": "demo1", "password": PASSWORD}).status_code == 302
    data = client.get("/api/recommendations/").json()
    rated = {r.product_id for rs in site.reviews.values() for r in rs if r.user_id == expected[0]}
    assert data["user_id"] == expected[0] and data["source"] == "personal"
    assert data["model_version"] == site.model_version and data["n_rated"] == len(rated)
    assert data["items"] and not rated & {i["product_id"] for i in data["items"]}
    assert all(i["because"] in rated for i in data["items"]), "a reason that is not one of the user's ratings"


def test_a_changed_link_is_seen_on_the_next_request(site, client, make_user):
    """The profile comes with the logged-in user on each request (accounts.backends): relinking,
    unlinking in bulk (create_demo_accounts' update()) or deleting it takes effect at once."""
    from io import StringIO

    from django.core.management import call_command

    from accounts.models import Profile

    def served_as() -> str:
        response = client.get("/api/recommendations/")
        assert response.status_code == 200
        return response.json()["user_id"]

    counts = site.reviewer_counts()
    top = sorted(counts, key=lambda u: (-counts[u], u))[0]
    squatter = make_user(reviewer_id=top)
    client.force_login(squatter)
    assert served_as() == top
    call_command("create_demo_accounts", count=1, password=PASSWORD, stdout=StringIO())  # takes the link (update())
    profile = Profile.objects.get(user=squatter)
    assert profile.reviewer_id is None and served_as() == profile.site_id != top
    profile.reviewer_id = "A-LINKED-BY-ADMIN"
    profile.save()
    assert served_as() == "A-LINKED-BY-ADMIN"
    Profile.objects.filter(pk=profile.pk).delete()
    fresh = served_as()  # a new profile, a new random id: not the deleted one's
    assert fresh.startswith("site-") and fresh != profile.site_id


# --- one account per e-mail address ------------------------------------------------------------------
def _signup(client, username: str, email: str, address: str | None = None):
    return client.post("/accounts/signup/", {"username": username, "email": email, "password1": PASSWORD,
                                              "password2": PASSWORD}, REMOTE_ADDR=address or own_address())


def _confirmed_signup(client, username: str, email: str, mailoutbox) -> None:
    """Sign up with ``email`` and confirm on the link mailed to it: the address is then the account's
    (``User.email``), the one that counts (accounts.confirmation). The client stays signed in."""
    assert _signup(client, username, email).status_code == 302
    link = re.search(r"/accounts/email/confirm/[^/\s]+/", mailoutbox[-1].body).group(0)
    assert client.post(link).status_code == 302  # the link's GET only asks; its form's POST confirms
    assert User.objects.get(username=username).email == User.objects.normalize_email(email.strip())


@pytest.mark.parametrize("typed", ["{local}@example.com", "{LOCAL}@EXAMPLE.COM", "  {local}@Example.com  "])
def test_signup_with_an_address_another_account_has_mails_its_owner(site_cache, client, typed, mailoutbox):
    """Same case, another case, surrounding spaces: the same mailbox, which stays one account's. The
    sign-up is answered as for a free address (refusing it told anyone which addresses have
    accounts); the new account never gets the address, and its owner is mailed that someone tried,
    at the address as confirmed. Only a confirmed address counts (a pending one blocks nobody:
    tests/integration/test_site_email_confirmation.py)."""
    local = _name()
    _confirmed_signup(client, local, f"{local}@example.com", mailoutbox)
    client.logout()
    second = _name()
    accepted = _signup(client, second, typed.format(local=local, LOCAL=local.upper()))
    assert accepted.status_code == 302 and accepted["Location"] == "/welcome/"
    assert User.objects.get(username=second).email == ""
    assert User.objects.filter(email__iexact=f"{local}@example.com").count() == 1
    notice = mailoutbox[-1]
    assert notice.to == [f"{local}@example.com"] and "/accounts/email/confirm/" not in notice.body
    assert "/accounts/password_reset/" in notice.body


def test_a_signup_costs_one_count_whatever_its_address(site_cache, client, mailoutbox):
    """A sign-up with an address that has an account makes an account and keeps its count, as one
    with a free address does: nothing to tell them apart. A sign-up refused for anything else (here
    mismatched passwords, with an address that has an account) says nothing of the address and
    gives its count back."""
    from django.test.utils import override_settings

    owner = _name()
    _confirmed_signup(client, owner, f"{owner}@example.com", mailoutbox)
    client.logout()
    address = own_address()
    with override_settings(ACCOUNT_THROTTLE_ATTEMPTS=2):
        for _ in range(3):  # more than the count allows: each one given back
            mismatched = client.post("/accounts/signup/", {"username": _name(), "email": f"{owner}@example.com",
                                                           "password1": PASSWORD, "password2": "other"},
                                     REMOTE_ADDR=address)
            assert mismatched.status_code == 400
            assert "in use" not in mismatched.content.decode()
        assert _signup(client, _name(), f"{owner}@example.com", address).status_code == 302
        client.logout()
        assert _signup(client, _name(), f"{_name()}@example.com", address).status_code == 302
        client.logout()
        refused = _signup(client, _name(), f"{_name()}@example.com", address)
        assert refused.status_code == 429, refused.status_code


def test_signup_stores_the_address_with_its_domain_in_lower_case(site_cache, client, mailoutbox):
    """Django's normalize_email: spaces gone, the domain lowered; the local part as typed. So it is
    kept while pending, mailed and, once confirmed, stored."""
    from accounts.models import PendingEmail

    username = _name()
    _confirmed_signup(client, username, f"  Mixed.{username}@Example.ORG ", mailoutbox)
    assert mailoutbox[-1].to == [f"Mixed.{username}@example.org"]
    assert User.objects.get(username=username).email == f"Mixed.{username}@example.org"
    assert not PendingEmail.objects.filter(user__username=username).exists()


def test_the_database_refuses_a_second_account_with_one_address_in_any_case(db):
    """The unique index on lower(email) (accounts.0009): what stops two sign-ups at once, each
    checked by the form before the other's insert. Accounts without an address are not in it."""
    from django.db import IntegrityError, transaction

    local = _name()
    User.objects.create(username=f"{local}a", email=f"{local}@example.com")
    with pytest.raises(IntegrityError, match="auth_user_email_ci_unique"), transaction.atomic():
        User.objects.create(username=f"{local}b", email=f"{local.upper()}@Example.Com")
    User.objects.create(username=f"{local}c", email="")
    User.objects.create(username=f"{local}d", email="")  # many accounts without an address


@pytest.mark.parametrize("exclude_own", [False, True])  # sign-up; the admin's user page
def test_looking_an_address_up_uses_the_unique_index(db, exclude_own):
    """``email_in_use`` asks as the index is made (``lower(email)``, ``email <> ''``), so the database
    answers from it; ``email__iexact`` read the whole user table on every sign-up and admin save.
    The plan is checked on SQLite, where the tests run; on PostgreSQL only the SQL's shape is."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from accounts.forms import email_in_use

    owner = User.objects.create(username=_name(), email=f"{_name()}@example.com")
    with CaptureQueriesContext(connection) as queries:
        assert email_in_use(owner.email.upper(), exclude_pk=owner.pk if exclude_own else None) is not exclude_own
    (query,) = queries.captured_queries
    assert 'LOWER("auth_user"."email") = (LOWER(' in query["sql"] and '"auth_user"."email" <> \'\'' in query["sql"]
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
        assert "USING INDEX auth_user_email_ci_unique" in plan, plan


def test_a_signup_that_loses_the_race_for_a_username_gets_the_form_error(site_cache, client):
    """Two sign-ups with one username at once: both pass Django's check, the username's UNIQUE
    constraint refuses the second insert. That one gets Django's usual "username taken" error (it
    was a server error, 500), nothing of it is kept, and its sign-up count is given back as for any
    username found taken by the form.

    The race is made real without threads: the other account is inserted just before this sign-up's
    own insert (a pre_save receiver, once), after the form's check."""
    from django.db.models.signals import pre_save
    from django.test.utils import override_settings

    name = _name()

    def the_other_signup_first(sender, instance, **kwargs):
        if instance.username == name:
            pre_save.disconnect(the_other_signup_first, sender=User)  # once: the other's own save
            User.objects.create(username=name, email=f"other.{name}@example.com")

    address = own_address()
    pre_save.connect(the_other_signup_first, sender=User)
    try:
        with override_settings(ACCOUNT_THROTTLE_ATTEMPTS=1):
            lost = _signup(client, name, f"{name}@example.com", address)
            assert lost.status_code == 400, lost.status_code
            assert "A user with that username already exists." in lost.content.decode()
            assert "already in use by another account" not in lost.content.decode()
            assert not User.objects.filter(email__iexact=f"{name}@example.com").exists()
            other = _name()  # the count was given back: one more sign-up is allowed
            assert _signup(client, other, f"{other}@example.com", address).status_code == 302
    finally:
        pre_save.disconnect(the_other_signup_first, sender=User)


def test_demo_accounts_are_made_whoever_has_the_made_up_address(site, client, make_user):
    """Demo accounts have no e-mail address: the ``demo1@example.com`` they had could be a shopper's
    already, and the unique index then stopped the command."""
    from io import StringIO

    from django.core.management import call_command

    shopper = make_user()
    User.objects.filter(pk=shopper.pk).update(email="Demo1@Example.com")
    call_command("create_demo_accounts", count=2, password=PASSWORD, stdout=StringIO())
    assert User.objects.get(pk=shopper.pk).email == "Demo1@Example.com"
    assert list(User.objects.filter(username__in=["demo1", "demo2"]).values_list("email", flat=True)) == ["", ""]


@pytest.mark.parametrize("given", ["env", "option"])
def test_createsuperuser_refuses_an_address_another_account_has(db, monkeypatch, given):
    """``createsuperuser --noinput`` with an address another account has (in another case): a clear
    refusal before anything is made, where the unique index's IntegrityError was a traceback. The
    address comes from ``DJANGO_SUPERUSER_EMAIL`` or ``--email``, as Django's command takes it.
    Blank addresses stay outside the rule: a superuser without one is made whoever else has none;
    so is one with a free address."""
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    def create(name: str, email: str) -> None:
        options = {"email": email}
        if given == "env":
            monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", options.pop("email"))
        call_command("createsuperuser", interactive=False, username=name, stdout=StringIO(), **options)

    owner = User.objects.create(username=_name(), email=f"{_name()}@example.com")
    User.objects.create(username=_name(), email="")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    refused, blank, free = _name(), _name(), _name()
    with pytest.raises(CommandError, match="Another account already uses this e-mail address"):
        create(refused, owner.email.upper())
    assert not User.objects.filter(username=refused).exists()
    create(blank, "")
    create(free, f"{free}@example.com")
    assert User.objects.get(username=blank, is_superuser=True).email == ""
    assert User.objects.get(username=free, is_superuser=True).email == f"{free}@example.com"


@pytest.fixture
def elsewhere(transactional_db, tmp_path):
    """A second database alias ("elsewhere"), a SQLite file of its own with the user table and its
    indexes on lower(email) and lower(username), for ``--database``. Added after the test's own
    databases were set up, and gone before they are torn down. (Not by migrate: accounts.0003 reads
    the default database whichever one is migrated.)"""
    from django.db import connections

    from accounts.email_index import EMAIL_INDEX
    from accounts.username_index import USERNAME_INDEX

    alias = "elsewhere"
    connections.settings[alias] = connections.configure_settings({
        "default": {}, alias: {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "elsewhere.sqlite3")}})[alias]
    try:
        # connected here: pytest-django's test case refuses to open a connection to an alias it did not set up
        connections[alias].connect()
        with connections[alias].schema_editor() as editor:
            editor.create_model(User)
        EMAIL_INDEX.create(connections[alias])
        USERNAME_INDEX.create(connections[alias])
        yield alias
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


def _superuser(name: str, email: str, **options) -> None:
    from io import StringIO

    from django.core.management import call_command

    call_command("createsuperuser", interactive=False, username=name, email=email, stdout=StringIO(), **options)


def test_createsuperuser_checks_the_address_in_the_database_it_writes_to(elsewhere, monkeypatch):
    """``--database``: the address was looked up in the default database whatever the option said, so
    one taken only there refused a superuser elsewhere, and one taken only elsewhere passed the check
    and ended in the index's IntegrityError traceback."""
    from django.core.management.base import CommandError

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    there = User.objects.db_manager(elsewhere).create(username=_name(), email=f"{_name()}@example.com")
    here = User.objects.create(username=_name(), email=f"{_name()}@example.com")
    refused, made = _name(), _name()
    with pytest.raises(CommandError, match="Another account already uses this e-mail address"):
        _superuser(refused, there.email.upper(), database=elsewhere)
    _superuser(made, here.email.upper(), database=elsewhere)
    assert not User.objects.using(elsewhere).filter(username=refused).exists()
    assert User.objects.using(elsewhere).get(username=made).is_superuser
    assert not User.objects.filter(username__in=[refused, made]).exists()


@pytest.mark.django_db(transaction=True)  # the refused insert in autocommit, as the command runs
@pytest.mark.parametrize("race", ["email", "username"])
def test_createsuperuser_that_loses_a_race_at_its_insert_stops_with_a_clear_error(monkeypatch, race):
    """Another account takes the address (or the username in another case) between the command's
    check and its insert, as a sign-up at that moment would: a ``CommandError`` saying which, where
    the index's IntegrityError was a traceback; no superuser is made."""
    from django.core.management.base import CommandError
    from django.db.models.signals import pre_save

    name, email = _name(), f"{_name()}@example.com"

    def the_other_first(sender, instance, **kwargs):
        if instance.username == name:
            pre_save.disconnect(the_other_first, sender=User)  # once: the other's own save
            User.objects.create(username=name.upper() if race == "username" else _name(),
                                email=email.upper() if race == "email" else "")

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", PASSWORD)
    pre_save.connect(the_other_first, sender=User)
    try:
        expected = "Another account already uses" if race == "email" else "A user with that username already exists"
        with pytest.raises(CommandError, match=expected):
            _superuser(name, email)
    finally:
        pre_save.disconnect(the_other_first, sender=User)
    assert not User.objects.filter(username=name).exists()


def _email_index_exists() -> bool:
    from django.db import connection

    with connection.cursor() as cursor:
        return "auth_user_email_ci_unique" in connection.introspection.get_constraints(cursor, "auth_user")


@pytest.mark.django_db(transaction=True)
def test_the_migration_refuses_shared_addresses_clearly_and_changes_nothing(site_cache):
    """A deployment holding accounts that share an address: accounts.0009 stops before it changes
    anything, saying how many and how to list them (``shared_emails``); once each has its own, it runs."""
    from io import StringIO

    from django.core.management import call_command
    from django.core.management.base import CommandError

    local = _name()
    try:
        call_command("migrate", "accounts", "0008", verbosity=0)
        assert not _email_index_exists()
        first = User.objects.create(username=f"{local}a", email=f"{local}@example.com")
        second = User.objects.create(username=f"{local}b", email=f"{local.upper()}@example.com")
        User.objects.create(username=f"{local}c", email="")
        User.objects.create(username=f"{local}d", email="")  # blank ones are not shared addresses
        with pytest.raises(CommandError) as refused:
            call_command("migrate", "accounts", verbosity=0)
        assert "1 e-mail address(es) are shared by 2 accounts" in str(refused.value)
        assert "manage.py shared_emails" in str(refused.value)
        assert not _email_index_exists()
        assert sorted(User.objects.filter(username__startswith=local).values_list("email", flat=True)) == \
            sorted(["", "", f"{local}@example.com", f"{local.upper()}@example.com"])  # nobody's changed

        listed = StringIO()
        call_command("shared_emails", stdout=listed)
        assert f"{local}@example.com:" in listed.getvalue()
        assert f"id {first.pk}  {first.username}  <{first.email}>" in listed.getvalue()
        assert f"id {second.pk}  {second.username}  <{second.email}>" in listed.getvalue()

        User.objects.filter(pk=second.pk).update(email=f"{local}.b@example.com")
        call_command("migrate", "accounts", verbosity=0)
        assert _email_index_exists()
    finally:  # the other tests' schema, whatever happened
        User.objects.filter(username__startswith=local).delete()
        call_command("migrate", "accounts", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_migrate_puts_back_the_index_a_table_rebuild_dropped(site_cache):
    """On SQLite, Django rebuilds auth_user for a schema change (a future auth migration's
    alter_field) and re-creates only the indexes its models know: the raw e-mail index vanished
    silently. Every migrate now puts it back (accounts' post_migrate receiver)."""
    import copy

    from django.core.management import call_command
    from django.db import IntegrityError, connection, transaction

    from django.db.migrations.loader import MigrationLoader

    local = _name()
    model = MigrationLoader(connection).project_state().apps.get_model("auth", "User")  # as a migration has it
    field = model._meta.get_field("first_name")
    wider = copy.deepcopy(field)
    wider.max_length = field.max_length + 10
    try:
        with connection.schema_editor() as editor:
            editor.alter_field(model, field, wider)
            editor.alter_field(model, wider, field)
        if connection.vendor == "sqlite":
            assert not _email_index_exists()  # what the receiver is for
        call_command("migrate", verbosity=0)  # nothing to migrate: post_migrate only
        assert _email_index_exists()
        User.objects.create(username=f"{local}a", email=f"{local}@example.com")
        with pytest.raises(IntegrityError, match="auth_user_email_ci_unique"), transaction.atomic():
            User.objects.create(username=f"{local}b", email=f"{local.upper()}@example.com")
    finally:
        User.objects.filter(username__startswith=local).delete()
        call_command("migrate", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_an_index_that_cannot_be_made_says_which_addresses_are_shared(site_cache):
    """Accounts sharing an address when the index is (re)made (here by migrate, after a rebuild
    dropped it; in accounts.0009, inserted by an old process still running between the check and
    the index): the operator gets the same message as from the check (how many, ``shared_emails``),
    not the database's own; nothing is changed."""
    from django.core.management import call_command
    from django.core.management.base import CommandError
    from django.db import connection

    local = _name()
    try:
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX auth_user_email_ci_unique")  # as a rebuild on SQLite left it
        User.objects.create(username=f"{local}a", email=f"{local}@example.com")
        User.objects.create(username=f"{local}b", email=f"{local.upper()}@example.com")
        with pytest.raises(CommandError) as refused:
            call_command("migrate", verbosity=0)  # nothing to migrate: post_migrate only
        assert "1 e-mail address(es) are shared by 2 accounts" in str(refused.value)
        assert "manage.py shared_emails" in str(refused.value)
        assert not _email_index_exists()
    finally:
        User.objects.filter(username__startswith=local).delete()
        call_command("migrate", verbosity=0)
        assert _email_index_exists()
