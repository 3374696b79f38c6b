"""List the usernames (compared in any case) that more than one account has ("Bob" and "bob").

Migration accounts.0011 makes usernames unique in any case and refuses to run while any differ only
in case: this shows which accounts to rename in the admin first (``shared_emails``, for usernames).
"""
from __future__ import annotations

from accounts.management.commands import shared_emails
from accounts.username_index import USERNAME_INDEX


class Command(shared_emails.Command):
    help = __doc__.splitlines()[0]
    index = USERNAME_INDEX
    none_shared = "No username is shared by two accounts (in any case)."
