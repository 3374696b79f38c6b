"""A MongoDB or Kafka outage seen by any page is a 503 with Retry-After, never a 500.

The rating views answer 503 themselves, at once, behind the breakers (core.breaker); other pages
(product, recommendations, search, the API's reads) meet the outage as an exception from pymongo
after the driver's server-selection timeout, then, while the driver has not seen the server back,
at once (``core.mongo.web_request``). This turns those into the same documented answer, and
tells the MongoDB breaker, so the next rating is refused at once instead of waiting too. A model
store that this process has never read and cannot reach (``core.published``; ``ARTIFACTS_DIR`` in a
bucket) is the same answer, without telling MongoDB's breaker.
Other errors are left to Django (a real bug stays a 500, logged with its traceback).
"""
from __future__ import annotations

import logging

from django.http import HttpResponse
from pymongo.errors import ConnectionFailure, ExecutionTimeout, NetworkTimeout, ServerSelectionTimeoutError

from core import mongo
from core.breaker import Unavailable
from core.published import ModelStoreUnreachable
from recsite import api_errors, apipaths

log = logging.getLogger(__name__)
_OUTAGE = (ConnectionFailure, ServerSelectionTimeoutError, NetworkTimeout, ExecutionTimeout)
RETRY_AFTER_S = "5"


def outage_middleware(get_response):
    def middleware(request):
        with mongo.web_request():  # while MongoDB is known down, a page that needs it is refused at once
            return get_response(request)

    def process_exception(request, exception):
        if isinstance(exception, _OUTAGE):
            mongo.BREAKER.failure()
        elif not isinstance(exception, (Unavailable, ModelStoreUnreachable)):
            return None
        log.warning("503 for %s %s: %s", request.method, request.path, exception.__class__.__name__)
        message = "This part of the shop is unavailable for a moment. Please try again in a few seconds."
        if apipaths.is_api_path(request.path):
            response = api_errors.json_error(message, api_errors.UNAVAILABLE, 503)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = RETRY_AFTER_S
        return response

    middleware.process_exception = process_exception
    return middleware
