"""The unique index on lower(email) of auth_user that makes e-mail addresses one account's each
(migration accounts.0009): the migration creates it, ``post_migrate`` puts it back, the address's
confirmation (``accounts.confirmation``) and the admin know a lost race by its name. How is
``accounts.unique_lower``'s, shared with the username's index (``accounts.username_index``).
"""
from __future__ import annotations

from accounts.unique_lower import UniqueLower

# Accounts without an address (the admin, createsuperuser, demo accounts) are outside it.
EMAIL_INDEX = UniqueLower(
    column="email", name="auth_user_email_ci_unique", migration=("accounts", "0009_email_unique_ci"),
    values="e-mail address(es)", command="shared_emails",
    fix="give each of those accounts its own address (or clear all but one)", where="email <> ''")
