"""The unique index on lower(username) of auth_user (migration accounts.0011). Django's sign-up
form refuses a username taken in another case ("Bob" when "bob" exists), but the column's own
UNIQUE constraint tells cases apart: two sign-ups at once, "Bob" and "bob", both passed the form's
check and both were made. This index decides between them, as the e-mail index does for addresses
(``accounts.unique_lower``): the one that loses gets the form's "A user with that username already
exists.".
"""
from __future__ import annotations

from accounts.unique_lower import UniqueLower

USERNAME_INDEX = UniqueLower(
    column="username", name="auth_user_username_ci_unique", migration=("accounts", "0011_username_unique_ci"),
    values="username(s)", command="shared_usernames",
    fix="rename all but one account of each (or delete the ones nobody uses)")
