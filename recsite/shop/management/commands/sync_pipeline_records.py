"""Mirror the batch pipeline's runs and model versions from MongoDB into the Django admin."""
from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand

from shop.sync import sync_pipeline_records


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        runs, versions = sync_pipeline_records()
        self.stdout.write(f"synced {runs} pipeline job records and {versions} model versions "
                          f"at {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
