"""Sign-up, login, password change and reset, and account deletion, behind the shared lockout
(``accounts.throttle``); the account's e-mail address and its confirmation link
(``accounts.confirmation``); everything else is Django's own auth views."""
from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.contrib.auth.views import LoginView, PasswordChangeView, PasswordResetView
from django.db import IntegrityError, transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts import confirmation, deletion, email_change, throttle
from accounts.forms import (CappedPasswordResetForm, DeleteAccountForm, PendingEmailForm, SignUpForm,
                            field_passed, lost_username_race, username_taken)
from accounts.models import PendingEmail, Profile
from recsite.client_address import client_address


class ThrottledLoginView(LoginView):
    """Django's LoginView answering 429 (503 with the lockout's Redis down) instead of checking.

    The lockout itself sits in the authentication backend, shared with the admin and the API;
    this view checks it before the form too, so a locked-out attempt never reaches
    ``authenticate()`` (no hashing, no ``user_login_failed``). A failed login answers 400, like
    every other invalid form on the site.
    """

    def post(self, request, *args, **kwargs):
        username = str(request.POST.get("username", ""))[:150]
        try:
            throttle.check_login(username, str(request.POST.get("password", "")), client_address(request))
        except throttle.Refused as refusal:
            return self._refused(refusal)
        return super().post(request, *args, **kwargs)

    def _refused(self, refusal: throttle.Refused):
        context = self.get_context_data(form=self.get_form_class()(self.request), locked=refusal.message)
        return render(self.request, self.template_name, context, status=refusal.status)

    def form_invalid(self, form):
        refusal = throttle.refusal_of(self.request)  # refused inside authenticate() (a race)
        if refusal is not None:
            return self._refused(refusal)
        response = super().form_invalid(form)
        response.status_code = 400
        return response


class ThrottledPasswordChangeView(PasswordChangeView):
    """Django's password change; the old password is a credential check too (someone holding a
    stolen session must not guess it freely), so it shares the lockout of the logins. The
    admin's password change is this view too (``accounts.adminsite``)."""

    def post(self, request, *args, **kwargs):
        old_password = str(request.POST.get("old_password", ""))
        try:  # the attempt is resolved by form_valid/form_invalid
            with throttle.own_password_attempt(request, old_password) as self.checked:
                return super().post(request, *args, **kwargs)
        except throttle.Refused as refusal:  # only ever raised before the check
            context = self.get_context_data(form=self.get_form_class()(request.user), locked=refusal.message)
            return render(request, self.template_name, context, status=refusal.status)

    def form_valid(self, form):
        self.checked.right = True
        return super().form_valid(form)

    def form_invalid(self, form):
        self.checked.right = field_passed(form, "old_password")  # right, the new ones not; or wrong
        return super().form_invalid(form)


class ThrottledPasswordResetView(PasswordResetView):
    """Django's reset request, limited per client address (every request counts, whether or not an
    account has that e-mail address: the answer must not tell).

    Never refused because of the e-mail address asked for: anyone can post it, so such a count
    would let one address keep the owner's own request answering 429 from anywhere. One mailbox
    gets a capped number of mails instead (``CappedPasswordResetForm``), with the usual answer.
    """

    form_class = CappedPasswordResetForm

    def post(self, request, *args, **kwargs):
        try:
            throttle.account_action("reset", client_address(request))
        except throttle.Refused as refusal:
            context = self.get_context_data(form=self.get_form_class()(), locked=refusal.message)
            return render(request, self.template_name, context, status=refusal.status)
        return super().post(request, *args, **kwargs)


def _create_account(form: SignUpForm) -> tuple[User, PendingEmail] | None:
    """The account of a valid sign-up form, its profile and its address's pending claim, in one
    transaction; None, with the form showing the usual "username taken" error, when a concurrent
    sign-up took the username between the form's check and this insert (the username's UNIQUE
    constraint refused it, or the unique index on ``lower(username)`` for one differing in case:
    ``lost_username_race``). Any other refused insert stays an error. The address is no race: it is
    not the account's until confirmed (``accounts.confirmation``), and claims on it may be many."""
    user = form.save(commit=False)  # hashes the password: slow, so before the transaction, not in it
    try:
        with transaction.atomic():  # no account without its profile; a refused insert leaves nothing
            user.save()
            Profile.objects.create(user=user)
            pending = PendingEmail.objects.create(user=user, email=form.cleaned_data["email"])
    except IntegrityError as exc:
        if not lost_username_race(exc):
            raise
        form.add_error("username", username_taken())
        return None
    return user, pending


def signup(request):
    """Sign-up; accounts made per client address are limited (``ACCOUNT_THROTTLE_*``). Answered the
    same whether another account has the address or not (``SignUpForm``, ``confirmation.send_link``)."""
    if request.user.is_authenticated:
        return redirect("recommendations")
    form = SignUpForm(request.POST or None)
    if request.method == "POST":
        address = client_address(request)
        try:  # counted first, given back if no account is made: concurrent sign-ups cannot all pass
            throttle.account_action("signup", address)
        except throttle.Refused as refusal:
            return render(request, "registration/signup.html", {"form": SignUpForm(), "locked": refusal.message},
                          status=refusal.status)
        made = _create_account(form) if form.is_valid() else None
        if made is None:  # a typo costs nothing (the address is never looked up: SignUpForm)
            throttle.give_back_account_action("signup", address)
        else:
            user, pending = made
            login(request, user, backend="accounts.backends.ProfileBackend")
            messages.success(request, "Welcome! Rate a few products you know to get your own recommendations.")
            _tell_link_sent(request, pending, confirmation.send_link(request, pending, again=False))
            return redirect("onboarding")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


@login_required
@require_http_methods(["GET", "POST"])
def delete_account(request):
    """Confirmation page (password and a tick), then the deletion (accounts/deletion.py)."""
    # Bound on every POST, an empty one too: unbound, it has no errors and passed for a right password.
    form = DeleteAccountForm(request.user, request.POST if request.method == "POST" else None)
    if request.method == "POST":
        password = str(request.POST.get("password", ""))
        try:  # the password check is a login attempt too: it shares the lockout
            with throttle.own_password_attempt(request, password) as checked:
                valid = form.is_valid()
                checked.right = field_passed(form, "password")  # the tick may be missing
        except throttle.Refused as refusal:  # only ever raised before the check
            return render(request, "registration/delete_account.html",
                          {"form": DeleteAccountForm(request.user), "locked": refusal.message}, status=refusal.status)
        if valid:
            record = deletion.delete_account(request.user, request=request)
            return render(request, "registration/delete_account_done.html",
                          {"unfinished": deletion.unfinished(record)})
    return render(request, "registration/delete_account.html", {"form": form}, status=400 if form.errors else 200)


def _tell_link_sent(request, pending: PendingEmail, sent: bool) -> None:
    """Say whether the confirmation link went to ``pending``'s address, and what to do if not."""
    if sent:
        messages.info(request, f"We mailed a link to {pending.email}: open it to confirm the address. "
                               f"Until then password resets cannot use it.")
    else:
        messages.warning(request, f"We could not mail the confirmation link to {pending.email} just now. "
                                  f"Ask for it again later from the e-mail page of your account.")


@login_required
@require_http_methods(["GET", "POST"])
def account_email(request):
    """The account's confirmed address and the one waiting for confirmation. A POST mails the
    waiting one's link again or, with ``email`` and the account's password, makes that address the
    one waiting (a typo at sign-up, an account without one, or a change of the confirmed one) and
    mails it; then the page again (PRG). Both are limited per account and per client address
    (429 past either, ``throttle.confirm_resend``) and capped per mailbox; the password check is a
    login attempt too and shares the lockout. An address another account has is answered as any
    other (its owner gets a notice instead of the link, ``confirmation.send_link``): this page
    must not tell which addresses have accounts either."""
    user = request.user
    pending = confirmation.pending_of(user)
    form = PendingEmailForm(user, request.POST if "email" in request.POST else None)
    if request.method == "GET":
        return _email_page(request, pending, form)
    if not form.is_bound and pending is None:
        messages.info(request, "There is no address waiting for confirmation.")
        return redirect("account_email")
    try:
        pending, sent = email_change.send_link(request, form if form.is_bound else None, pending)
    except throttle.Refused as refusal:
        return _email_page(request, pending, PendingEmailForm(user), refusal.status, refusal.message)
    except email_change.FormInvalid:
        return _email_page(request, pending, form, 400)
    _tell_link_sent(request, pending, sent)
    return redirect("account_email")


def _email_page(request, pending: PendingEmail | None, form: PendingEmailForm, status: int = 200, locked: str = ""):
    return render(request, "registration/account_email.html",
                  {"pending": pending, "form": form, "locked": locked}, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def email_confirm(request, token: str):
    """The mailed link, for the signed-in account it was made for; signed out, the login page
    comes first and leads back here. A GET only asks "confirm <address> for <username>?"; the
    page's form POSTs (CSRF-checked) and only that confirms (``accounts.confirmation.confirm``).
    Else another site could send a signed-in visitor's browser to a link for a mailbox it owns
    (cookies go on a top-level cross-site GET) and get that address on the visitor's account,
    and with it the account's password resets. A link that cannot confirm says why on the GET."""
    if request.method == "POST":
        before = request.user.email
        outcome, address = confirmation.confirm(request.user, token)
        if outcome is confirmation.Outcome.CONFIRMED:
            if before and before != address:
                confirmation.tell_replaced_address(request, before)
            messages.success(request, f"Your e-mail address {address} is confirmed.")
            return redirect("account_email")
    else:
        outcome, address = confirmation.check(request.user, token)
        if outcome is confirmation.Outcome.CONFIRMED:
            return render(request, "registration/email_confirm_ask.html", {"address": address})
    return render(request, "registration/email_confirm.html", {"outcome": outcome.name, "address": address},
                  status=outcome.value)
