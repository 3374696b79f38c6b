"""Give every profile its own random recommender id (``site-<pk>`` can be handed out twice).

Three migrations, as Django's docs do it for a new unique field: add it nullable, fill it, then
make it unique; separate transactions, so PostgreSQL does not refuse to alter a table with
pending deferred-constraint triggers from the fill.
"""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="profile",
            name="site_id",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
    ]
