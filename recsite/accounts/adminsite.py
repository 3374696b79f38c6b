"""The site's admin: Django's, with its password change behind the shared lockout.

Django's admin checks the old password at ``/admin/password_change/`` in its own view, outside
``accounts.throttle``: a stolen staff session could guess it without limit. Installed as
``accounts.adminsite.SiteAdminConfig`` in place of ``django.contrib.admin`` (whose ``admin.site``
is then a ``SiteAdmin``).
"""
from __future__ import annotations

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.urls import reverse


class SiteAdmin(AdminSite):
    def password_change(self, request, extra_context=None):
        """Django's ``AdminSite.password_change`` with the site's throttled view in place of
        ``PasswordChangeView``."""
        from django.contrib.admin.forms import AdminPasswordChangeForm

        from accounts.views import ThrottledPasswordChangeView

        defaults = {
            "form_class": AdminPasswordChangeForm,
            "success_url": reverse("admin:password_change_done", current_app=self.name),
            "extra_context": {**self.each_context(request), **(extra_context or {})},
        }
        if self.password_change_template is not None:
            defaults["template_name"] = self.password_change_template
        request.current_app = self.name
        return ThrottledPasswordChangeView.as_view(**defaults)(request)


class SiteAdminConfig(AdminConfig):
    default_site = "accounts.adminsite.SiteAdmin"
