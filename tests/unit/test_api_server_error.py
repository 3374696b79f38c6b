"""An unhandled error under ``/api/`` is the API's JSON error body, not Django's HTML 500 page.

An app parsing every other answer as ``{"detail", "code"}`` got ``<h1>Server Error (500)</h1>``.
A view that raises stands in for a defect (this module is the URLconf of the test); the handler
is the site's own (``recsite.urls.handler500``).
"""
from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import path

from recsite import urls as site_urls


def _defect(request):
    raise RuntimeError("a defect the view did not expect")


urlpatterns = [path("api/boom/", _defect), path("boom/", _defect)]
handler500 = getattr(site_urls, "handler500", "django.views.defaults.server_error")  # Django's when unset


@pytest.fixture
def client():
    with override_settings(ROOT_URLCONF=__name__, DEBUG=False):
        yield Client(raise_request_exception=False)


def test_an_api_defect_answers_the_one_error_body(client):
    response = client.get("/api/boom/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == "server_error" and set(body) == {"detail", "code"}
    assert "RuntimeError" not in body["detail"]  # nothing about the defect is told


def test_a_page_defect_keeps_djangos_page(client):
    response = client.get("/boom/")
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
