from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from accounts.email_index import EMAIL_INDEX
        from accounts.tokens import connect_signals
        from accounts.username_index import USERNAME_INDEX

        connect_signals()
        # the indexes on lower(...) are raw SQL, unknown to the models: a table rebuild on SQLite drops them
        for index in (EMAIL_INDEX, USERNAME_INDEX):
            post_migrate.connect(index.restore, sender=self, dispatch_uid=f"accounts.{index.name}.restore")
