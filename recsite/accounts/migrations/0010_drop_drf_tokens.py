"""Drop DRF's token table, left behind when API tokens moved to django-rest-knox.

``rest_framework.authtoken`` left INSTALLED_APPS, but not the database: its table kept a foreign
key to ``auth_user`` that Django no longer knew of, so deleting any account that had ever had a
DRF token was refused by it (after the account's MongoDB data were erased), and its keys sat in
plain text, unused. ``migrate authtoken zero`` cannot run once the app is gone, so the table and
the app's migration records are removed here. Irreversible in content (those tokens no longer
work anyway); reversing the migration leaves nothing to restore.
"""
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [("accounts", "0009_email_unique_ci")]

    operations = [
        migrations.RunSQL(
            ["DROP TABLE IF EXISTS authtoken_token",
             "DELETE FROM django_migrations WHERE app = 'authtoken'"],  # the app may be installed again later
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
