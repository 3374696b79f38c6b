"""Sign-up form: Django's own, with an e-mail address for password resets (one account's each, once
confirmed: ``accounts.confirmation``); the admin's user forms, which refuse an address in use;
telling a lost race for a username or an address from any other failed insert; the reset form with
a cap on the mails to one mailbox; the delete-account confirmation."""
from __future__ import annotations

import logging

from django import forms
from django.contrib.auth.forms import AdminUserCreationForm, PasswordResetForm, UserChangeForm, UserCreationForm
from django.contrib.auth.models import User
from django.db import IntegrityError
from django.db.models import F, Lookup, QuerySet, Value
from django.db.models.functions import Lower

from accounts import throttle
from accounts.email_index import EMAIL_INDEX
from accounts.username_index import USERNAME_INDEX

log = logging.getLogger(__name__)

# The UNIQUE constraint of auth_user.username as the first line of the IntegrityError names it:
# SQLite's message, PostgreSQL's (Django's own name for the column's constraint). Only the first
# line: PostgreSQL's DETAIL line quotes the refused value, which could spell either index's name.
USERNAME_CONSTRAINT = ("UNIQUE constraint failed: auth_user.username", 'unique constraint "auth_user_username_key"')


def lost_username_race(error: IntegrityError) -> bool:
    """Whether ``error`` is the username's constraint, or its index on lower(username), refusing an
    insert: another account took the name (in this case or another) after the form's check (two
    sign-ups, or admin saves, at once)."""
    first_line = str(error).partition("\n")[0]
    return any(name in first_line for name in USERNAME_CONSTRAINT) or USERNAME_INDEX.lost_race(error)


def lost_race(error: IntegrityError) -> str | None:
    """The field ("username" or "email") whose race ``error`` says a save lost, None for any other
    failed insert (which must stay an error). Each is told by the error's first line only."""
    if lost_username_race(error):
        return "username"
    if EMAIL_INDEX.lost_race(error):
        return "email"
    return None


def username_taken() -> forms.ValidationError:
    """Django's own error for a username in use, as its forms give it when their check finds one."""
    return User().unique_error_message(User, ("username",))


def normalized_email(email: str) -> str:
    """The address as stored: Django's ``normalize_email`` (surrounding spaces gone, the domain in
    lower case). The local part keeps the case it was typed in: mail goes to the address exactly as
    its owner wrote it (a few servers do tell cases apart), while every comparison ignores case
    (:func:`email_in_use`, the index, Django's reset form)."""
    return User.objects.normalize_email(email.strip())


def email_in_use(email: str, exclude_pk: int | None = None, using: str | None = None) -> bool:
    """Whether an account (other than ``exclude_pk``) has this address, in any case, in the database
    ``using`` (the default one if None; ``createsuperuser --database`` names another). A blank one is
    never in use: accounts made without an address (the admin, demo accounts) share it freely."""
    if not email:
        return False
    return _same_address(email).using(using).exclude(pk=exclude_pk).exists()


def holder_address(email: str, exclude_pk: int | None = None) -> str | None:
    """The address of the account (other than ``exclude_pk``) that has ``email`` in any case, as that
    account confirmed it (mail about it goes there, exactly as its owner wrote it); None if none has."""
    if not email:
        return None
    found = _same_address(email).exclude(pk=exclude_pk).values_list("email", flat=True)[:1]
    return next(iter(found), None)


class _NotEqual(Lookup):
    """``lhs <> rhs``, the very term of the index's WHERE clause: SQLite uses a partial index only for
    a query that has it as written, and ``exclude(email="")`` is ``NOT (email = '')``."""

    lookup_name = "ne"

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} <> {rhs}", (*lhs_params, *rhs_params)


def _same_address(email: str) -> QuerySet[User]:
    """The accounts with ``email`` in any case, asked as the unique index is made (accounts.0009):
    ``lower(email)`` on both sides and ``email <> ''``, so the database can answer from the index.
    ``email__iexact`` is ``UPPER(email) = UPPER(%s)`` on PostgreSQL (``LIKE`` on SQLite), which no
    index has: every sign-up and admin save read the whole user table. Lowered by the database, not
    Python: SQLite's lower() changes ASCII letters only, and the comparison must be the index's."""
    return (User.objects.annotate(email_lower=Lower("email"))
            .filter(_NotEqual(F("email"), Value("")), email_lower=Lower(Value(email))))


class SignUpForm(UserCreationForm):
    """Django's sign-up with a required e-mail address. The address is not the account's yet:
    :meth:`save` leaves ``User.email`` blank, and the sign-up keeps it as a pending claim until its
    owner confirms it (``accounts.confirmation``).

    Whether another account has the address is not checked here, and the sign-up is answered the
    same either way: refusing it ("address in use") told anyone which addresses have accounts, one
    sign-up each. A taken address's claim can never be confirmed, and its owner is mailed that
    someone tried instead of a link (``confirmation.send_link``)."""

    email = forms.EmailField(required=True, max_length=254,
                             help_text="Used only to reset your password, once you confirm it by the link we mail you.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")

    def clean_email(self) -> str:
        return normalized_email(self.cleaned_data["email"])

    def save(self, commit: bool = True) -> User:
        """The account without the address (``cleaned_data["email"]``): whoever typed it may not own it."""
        user = super().save(commit=False)
        user.email = ""
        if commit:
            user.save()
        return user


def field_passed(form, field: str) -> bool:
    """Whether ``form`` was bound and checked and ``field`` passed its checks (a password proved
    right): only that resolves a password check as right. "No error on the field" also held for an
    unbound form, which has no errors at all."""
    return form.is_bound and field in getattr(form, "cleaned_data", {})


class OwnPasswordForm(forms.Form):
    """A form of the signed-in ``user`` that takes their current password again and checks it
    (the views count that check as a login attempt: ``throttle.own_password_attempt``)."""

    password = forms.CharField(strip=False, max_length=1024, widget=forms.PasswordInput(
        attrs={"autocomplete": "current-password"}))

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("Your password was entered incorrectly.")
        return password


class PendingEmailForm(OwnPasswordForm):
    """An address to confirm (``views.account_email``): in place of the pending one (a typo at
    sign-up sent every "send again" to a stranger), for an account that has none, or in place of
    the confirmed one. As at sign-up, an address another account has is taken as any other (its
    owner is mailed instead of a link): refusing it told which have accounts.

    It takes the account's password too: the address it sets is where password resets go, so
    without it whoever held a signed-in session (a shared computer, a stolen cookie) could give
    their own mailbox, confirm it from that session and reset the password, which the password
    change itself guards with the old one."""

    email = forms.EmailField(max_length=254, label="Address")
    field_order = ["email", "password"]

    def __init__(self, user, *args, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.fields["password"].label = "Your password"

    def clean_email(self) -> str:
        return normalized_email(self.cleaned_data["email"])


class _LostUsernameRace:
    """For the admin's user forms: the username refused as taken when this very save lost the race
    for it (``lost_username_race``, set by shop.admin.RecommenderUserAdmin). Another account took it
    after the check, so it is taken whatever the check finds now (that account's insert may have
    been undone with the refused save's own transaction, as in the tests)."""

    lost_username_race = False

    def _post_clean(self) -> None:
        super()._post_clean()
        if self.lost_username_race and not self.has_error("username"):
            self.add_error("username", username_taken())


class SiteUserCreationForm(_LostUsernameRace, AdminUserCreationForm):
    """The admin's "add user" form: Django's, with the username of a lost race refused."""


class SiteUserChangeForm(_LostUsernameRace, UserChangeForm):
    """The admin's user form: an address another account has (in any case) is refused on the form,
    where the unique index alone made the save a server error; so is the username of a lost race."""

    # Set by the admin (shop.admin.RecommenderUserAdmin) when the index refused this very save's
    # address: another account took it after the check, so it is taken whatever the check finds.
    lost_email_race = False

    def clean_email(self) -> str:
        email = normalized_email(self.cleaned_data.get("email") or "")
        if (email and self.lost_email_race) or email_in_use(email, exclude_pk=self.instance.pk):
            raise forms.ValidationError("Another account already uses this e-mail address.", code="email_taken")
        return email


class CappedPasswordResetForm(PasswordResetForm):
    """Django's reset form, sending one mailbox at most ``PASSWORD_RESET_MAILS_PER_EMAIL`` mails per
    ``ACCOUNT_THROTTLE_WINDOW`` (``accounts.throttle.reset_mail_allowed``). A mail over the cap is
    dropped silently: the page must answer the same whether a mail went or not, as it does whether
    an account has the address or not."""

    def send_mail(self, subject_template_name: str, email_template_name: str, context: dict, from_email: str | None,
                  to_email: str, html_email_template_name: str | None = None) -> None:
        if not throttle.reset_mail_allowed(to_email):
            log.info("password reset: mail cap reached for a mailbox, no mail sent")
            return
        super().send_mail(subject_template_name, email_template_name, context, from_email, to_email,
                          html_email_template_name)


class DeleteAccountForm(OwnPasswordForm):
    """Confirmation of "Delete my account": the current password and an explicit tick."""

    confirm = forms.BooleanField(required=True, label="Yes, delete my account and everything kept about me",
                                 error_messages={"required": "Tick the box to confirm."})
