from django.db import migrations, models

import accounts.models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_fill_site_id"),
    ]

    operations = [
        migrations.AlterField(
            model_name="profile",
            name="site_id",
            field=models.CharField(default=accounts.models.new_site_id, editable=False,
                                   help_text="Id this account's own ratings and recommendations are stored under.",
                                   max_length=64, unique=True),
        ),
    ]
