from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from accounts import email_index
        from accounts.tokens import connect_signals

        connect_signals()
        # the e-mail index is raw SQL, unknown to the models: a table rebuild on SQLite drops it
        post_migrate.connect(email_index.restore, sender=self, dispatch_uid="accounts.email_index.restore")
