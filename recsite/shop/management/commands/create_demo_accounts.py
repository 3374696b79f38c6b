"""Create demo accounts linked to the most active reviewers of the loaded data.

A visitor who logs in as one of them sees personal recommendations at once, because the batch
job already wrote that reviewer's list. Idempotent: an existing demo account is reused and its
password reset to the printed one. Made without an e-mail address: e-mail addresses are unique
per account, and a made-up one (``demo1@example.com``) could already belong to a shopper's account,
which would stop the command; its password is reset by running this again, never by mail.
"""
from __future__ import annotations

import secrets

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Profile
from core import catalog, rating_history


class Command(BaseCommand):
    help = __doc__.splitlines()[0]

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=5)
        parser.add_argument("--password", default="", help="default: a random one per run, printed")

    def handle(self, *args, count: int, password: str, **options):
        deleted = rating_history.deleted_user_ids()  # a reviewer whose demo account was deleted stays deleted
        reviewers = [r for r in catalog.most_active_users(limit=count + len(deleted)) if r[0] not in deleted][:count]
        if not reviewers:
            raise CommandError("no reviewers in MongoDB: run the pipeline (bin/pipeline) first")
        password = password or f"demo-{secrets.token_urlsafe(6)}"
        for i, (reviewer_id, n) in enumerate(reviewers, start=1):
            username = f"demo{i}"
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
            Profile.objects.filter(reviewer_id=reviewer_id).exclude(user=user).update(reviewer_id=None)
            Profile.objects.update_or_create(user=user, defaults={"reviewer_id": reviewer_id})
            self.stdout.write(f"{username} / {password}  (reviewer {reviewer_id}, {n} ratings)")
