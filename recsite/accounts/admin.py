from django.contrib import admin

from accounts.models import AccountDeletion, Profile
from shop.admin import ReadOnlyAdmin


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "site_id", "reviewer_id")
    search_fields = ("user__username", "site_id", "reviewer_id")
    readonly_fields = ("site_id",)


@admin.register(AccountDeletion)
class AccountDeletionAdmin(ReadOnlyAdmin):
    """Deletions carried out: when, which kind of account, how much was removed. Read-only."""

    list_display = ("deleted_at", "kind", "removed", "worker_notified")
    list_filter = ("kind", "worker_notified")
    readonly_fields = ("deleted_at", "kind", "counts", "worker_notified")

    @admin.display(description="removed")
    def removed(self, obj: AccountDeletion) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(obj.counts.items()))
