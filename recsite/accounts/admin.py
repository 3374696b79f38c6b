from django.contrib import admin
from pymongo.errors import PyMongoError

from accounts.deletion import UNFINISHED, note_ended_erasures
from accounts.models import AccountDeletion, Profile
from core import mongo
from shop.admin import ReadOnlyAdmin


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "site_id", "reviewer_id")
    search_fields = ("user__username", "site_id", "reviewer_id")
    readonly_fields = ("site_id",)


@admin.register(AccountDeletion)
class AccountDeletionAdmin(ReadOnlyAdmin):
    """Deletions carried out: when, which kind of account, how much was removed, when the erasure
    ended. Read-only. Opening the list or a record first notes the erasures a run again ended since
    (``accounts.deletion.note_ended_erasures``); with MongoDB down, the last noted state is shown."""

    list_display = ("deleted_at", "kind", "removed", "erasure", "worker_notified")
    list_filter = ("kind", "worker_notified", ("erased_at", admin.EmptyFieldListFilter))
    readonly_fields = ("deleted_at", "kind", "counts", "erasure", "worker_notified")

    def changelist_view(self, request, extra_context=None):
        self._note_ended(request)
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        self._note_ended(request)
        return super().change_view(request, object_id, form_url, extra_context)

    def _note_ended(self, request) -> None:
        try:
            note_ended_erasures()
        except (PyMongoError, mongo.StoreUnavailable) as exc:
            self.message_user(request, f"Could not read the erasures' state from MongoDB "
                                       f"({exc.__class__.__name__}); showing the last noted.", level="warning")

    @admin.display(description="removed")
    def removed(self, obj: AccountDeletion) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(obj.counts.items()))

    @admin.display(description="erasure ended", ordering="erased_at")
    def erasure(self, obj: AccountDeletion) -> str:
        if obj.erased_at is not None:
            return f"{obj.erased_at:%Y-%m-%d %H:%M:%S} UTC"
        if obj.erasure_ref:
            return f"not yet: stopped ({obj.counts.get(UNFINISHED)}), left to a run again"
        # stopped before the records learnt of the erasures' ends (migration 0007): nothing to follow
        return "unknown (stopped before this was noted)"
