"""A password validator Django does not ship: an upper bound on length.

Django hashes whatever it is given, so a 1 MB "password" is accepted and stored; the limit makes a
sign-up or password change with an absurd value a plain form error instead.
"""
from __future__ import annotations

from django.core.exceptions import ValidationError


class MaximumLengthValidator:
    def __init__(self, max_length: int = 1024) -> None:
        self.max_length = max_length

    def validate(self, password: str, user=None) -> None:
        if len(password) > self.max_length:
            raise ValidationError(f"This password is too long: at most {self.max_length} characters.",
                                  code="password_too_long")

    def get_help_text(self) -> str:
        return f"Your password can't be longer than {self.max_length} characters."
