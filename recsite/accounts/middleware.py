"""Answer 429/503 wherever a credential check was refused by the lockout (``accounts.throttle``).

The admin's login and ``/api/token/`` (knox's view, ``accounts.api``) are not our views: they
only see that authentication failed and would answer "wrong password" (inviting another guess).
The backend marks the request; this turns whatever the view answered into the refusal.
"""
from __future__ import annotations

from django.http import HttpResponse

from accounts import throttle
from recsite import api_errors, apipaths


def refusal_response(request, refusal: throttle.Refused) -> HttpResponse:
    if apipaths.is_api_path(request.path):
        code = api_errors.THROTTLED if refusal.status == 429 else api_errors.UNAVAILABLE
        response = api_errors.json_error(refusal.message, code, refusal.status)
    else:
        response = HttpResponse(refusal.message, status=refusal.status, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(throttle.window_left() if refusal.status == 429 else 5)
    return response


def credential_refusal_middleware(get_response):
    def middleware(request):
        response = get_response(request)
        refusal = throttle.refusal_of(request)
        if refusal is not None and response.status_code not in (429, 503):
            return refusal_response(request, refusal)
        return response

    return middleware

