from django.contrib import admin

from accounts.models import Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "site_id", "reviewer_id", "onboarded")
    search_fields = ("user__username", "site_id", "reviewer_id")
    readonly_fields = ("site_id",)
