"""Sign-up form: Django's own, with an e-mail address for password resets; the reset form with a
cap on the mails to one mailbox; the delete-account confirmation."""
from __future__ import annotations

import logging

from django import forms
from django.contrib.auth.forms import PasswordResetForm, UserCreationForm
from django.contrib.auth.models import User

from accounts import throttle

log = logging.getLogger(__name__)


class SignUpForm(UserCreationForm):
    email = forms.EmailField(required=True, max_length=254,
                             help_text="Used only to reset your password.")

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


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


class DeleteAccountForm(forms.Form):
    """Confirmation of "Delete my account": the current password and an explicit tick."""

    password = forms.CharField(strip=False, max_length=1024, widget=forms.PasswordInput(
        attrs={"autocomplete": "current-password"}))
    confirm = forms.BooleanField(required=True, label="Yes, delete my account and everything kept about me",
                                 error_messages={"required": "Tick the box to confirm."})

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)

    def clean_password(self):
        password = self.cleaned_data["password"]
        if not self.user.check_password(password):
            raise forms.ValidationError("Your password was entered incorrectly.")
        return password
