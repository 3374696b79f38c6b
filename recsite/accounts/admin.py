from django.contrib import admin

from accounts.models import Profile


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "reviewer_id", "onboarded")
    search_fields = ("user__username", "reviewer_id")
