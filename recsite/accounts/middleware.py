"""Answer 429/503 wherever a credential check was refused by the lockout (``accounts.throttle``).

The admin's login and DRF's ``/api/token/`` are not our views: they only see that authentication
failed and would answer "wrong password" (inviting another guess). The backend marks the
request; this turns whatever the view answered into the refusal.
"""
from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, JsonResponse

from accounts import throttle


def refusal_response(request, refusal: throttle.Refused) -> HttpResponse:
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": refusal.message}, status=refusal.status)
    else:
        response = HttpResponse(refusal.message, status=refusal.status, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(settings.LOGIN_THROTTLE_WINDOW if refusal.status == 429 else 5)
    return response


def credential_refusal_middleware(get_response):
    def middleware(request):
        response = get_response(request)
        refusal = throttle.refusal_of(request)
        if refusal is not None and response.status_code not in (429, 503):
            return refusal_response(request, refusal)
        return response

    return middleware
