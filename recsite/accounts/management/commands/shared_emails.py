"""List the e-mail addresses (compared in any case) that more than one account has.

Migration accounts.0009 makes addresses unique and refuses to run while any are shared: this shows
which accounts to give their own address (or none) in the admin first. ``shared_usernames`` is this
command for usernames (accounts.0011).
"""
from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.db.models import Count
from django.db.models.functions import Lower

from accounts.email_index import EMAIL_INDEX
from accounts.unique_lower import UniqueLower


class Command(BaseCommand):
    help = __doc__.splitlines()[0]
    index: UniqueLower = EMAIL_INDEX  # whose column's shared values are listed
    none_shared = "No e-mail address is shared by two accounts."

    def handle(self, *args, **options):
        column = self.index.column
        nonblank = User.objects.exclude(**{column: ""})  # blank addresses are outside the rule
        shared = (nonblank.values(value=Lower(column)).annotate(accounts=Count("id"))
                  .filter(accounts__gt=1).order_by("value"))
        values = [s["value"] for s in shared]
        if not values:
            self.stdout.write(self.none_shared)
            return
        users = nonblank.annotate(value=Lower(column)).filter(value__in=values).order_by("value", "date_joined")
        for value in values:
            self.stdout.write(f"{value}:")
            for user in (u for u in users if u.value == value):
                last = f"{user.last_login:%Y-%m-%d}" if user.last_login else "never"
                self.stdout.write(f"  id {user.pk}  {user.username}  <{user.email}>  joined {user.date_joined:%Y-%m-%d}"
                                  f"  last login {last}{'' if user.is_active else '  inactive'}")
        self.stdout.write(f"{len(values)} shared {self.index.values}: {self.index.fix} in the admin "
                          f"(/admin/auth/user/<id>/change/), then run migrate.")
