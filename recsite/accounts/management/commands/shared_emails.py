"""List the e-mail addresses (compared in any case) that more than one account has.

Migration accounts.0009 makes addresses unique and refuses to run while any are shared: this shows
which accounts to give their own address (or none) in the admin first.
"""
from __future__ import annotations

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand
from django.db.models import Count
from django.db.models.functions import Lower


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def handle(self, *args, **options):
        shared = (User.objects.exclude(email="").values(address=Lower("email"))
                  .annotate(accounts=Count("id")).filter(accounts__gt=1).order_by("address"))
        addresses = [s["address"] for s in shared]
        if not addresses:
            self.stdout.write("No e-mail address is shared by two accounts.")
            return
        users = (User.objects.annotate(address=Lower("email")).filter(address__in=addresses)
                 .order_by("address", "date_joined"))
        for address in addresses:
            self.stdout.write(f"{address}:")
            for user in (u for u in users if u.address == address):
                last = f"{user.last_login:%Y-%m-%d}" if user.last_login else "never"
                self.stdout.write(f"  id {user.pk}  {user.username}  <{user.email}>  joined {user.date_joined:%Y-%m-%d}"
                                  f"  last login {last}{'' if user.is_active else '  inactive'}")
        self.stdout.write(f"{len(addresses)} shared address(es): give each account its own in the admin "
                          f"(/admin/auth/user/<id>/change/), then run migrate.")
