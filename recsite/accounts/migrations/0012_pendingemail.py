"""Addresses given at sign-up wait here until their owner confirms them (accounts.models.PendingEmail).

Existing accounts keep their ``User.email`` as it is: it counts as confirmed. It depends on 0011
(the unique index on lower(username)), so a database where 0011 refuses (usernames that differ only
in case) stops before this table exists: see README's upgrade notes.
"""

import django.db.models.deletion
import django.db.models.functions.text
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0011_username_unique_ci'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='PendingEmail',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('email', models.EmailField(max_length=254)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='pending_emails', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'ordering': ['-created', '-pk'],
                'indexes': [models.Index(django.db.models.functions.text.Lower('email'), name='accounts_pendingemail_lower')],
            },
        ),
    ]
