"""Asking for an address's confirmation link: one sequence for the e-mail page
(``views.account_email``) and the API (``api.account_email``), so their limits, password check and
mail cannot drift apart; each answers in its own way (a page with the form, an error body).

The order matters: the resend is counted first (``throttle.confirm_resend``: concurrent posts cannot
all pass), then the password is checked under the login lockout, and a post that mails nothing (a
wrong password, a malformed address, a lockout) gives its resend back, so typos cannot make the
owner wait out the window.
"""
from __future__ import annotations

from django.http import HttpRequest

from accounts import confirmation, throttle
from accounts.forms import PendingEmailForm, field_passed
from accounts.models import PendingEmail, recommender_id
from recsite.client_address import client_address


class FormInvalid(Exception):
    """The form has errors (a wrong password, a malformed address): nothing claimed or mailed."""


def send_link(request: HttpRequest, form: PendingEmailForm | None,
              pending: PendingEmail | None) -> tuple[PendingEmail, bool]:
    """With a bound ``form`` (an address and the account's password): make its address the one
    waiting and mail it the link; without one, mail the ``pending`` address's link again. Returns
    the claim and whether the mail went (``confirmation.send_link``). Raises ``throttle.Refused``
    (``TooManyRequests`` past the resends' limits, ``Locked`` or ``LockoutUnavailable`` from the
    password's lockout) or ``FormInvalid``."""
    account, address = recommender_id(request.user), client_address(request)
    throttle.confirm_resend(account, address)
    if form is not None:
        try:  # the password check is a login attempt too: it shares the lockout
            with throttle.own_password_attempt(request, str(form.data.get("password", ""))) as checked:
                valid = form.is_valid()
                checked.right = field_passed(form, "password")
        except throttle.Refused:  # only ever raised before the check: nothing mailed
            throttle.give_back_confirm_resend(account, address)
            raise
        if not valid:  # nothing mailed (the password guess was counted above)
            throttle.give_back_confirm_resend(account, address)
            raise FormInvalid()
        pending = confirmation.new_claim(request.user, form.cleaned_data["email"])
    else:
        pending = confirmation.new_claim(request.user, pending.email)
    return pending, confirmation.send_link(request, pending, again=True)
