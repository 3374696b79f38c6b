from django.db import migrations


class Migration(migrations.Migration):
    """``Profile.onboarded`` was written (demo accounts) but never read: sign-up leads to the
    onboarding step (/welcome/) and nothing else asks whether an account went through it."""

    dependencies = [
        ("accounts", "0005_accountdeletion"),
    ]

    operations = [
        migrations.RemoveField(
            model_name="profile",
            name="onboarded",
        ),
    ]
