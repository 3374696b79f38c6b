from django.contrib import admin
from django.urls import include, path, re_path

from recsite import apipaths
from recsite.metrics import metrics_view

handler500 = apipaths.server_error  # a JSON body under /api/

urlpatterns = [
    path("metrics", metrics_view, name="metrics"),  # Prometheus
    path("admin/", admin.site.urls),
    path("accounts/", include("accounts.urls")),
    path("", include("shop.urls")),
    re_path(r"^api/", apipaths.not_found, name=apipaths.NOT_FOUND),  # last: what no API route matched
]
