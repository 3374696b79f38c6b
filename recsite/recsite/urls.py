from django.contrib import admin
from django.urls import include, path

from recsite.metrics import metrics_view

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),  # Prometheus
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("", include("shop.urls")),
]
