"""The site's JSON parser: a body nested too deeply is a 400 like any malformed JSON, not a 500."""
from __future__ import annotations

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's ``JSONParser``, also refusing JSON nested past Python's recursion limit.

    DRF turns only ``ValueError`` into a ``ParseError``; the json module raises ``RecursionError``
    on about a thousand nested ``[``, a 2 KB body well under ``REQUEST_MAX_BODY_BYTES``, so every
    JSON endpoint answered it with a 500 (the anonymous ``/api/token/`` too). Used by default
    (``DEFAULT_PARSER_CLASSES``) and wherever a view names its parsers.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
