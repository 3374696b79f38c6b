"""The site's JSON parser: a body nested too deeply, or naming a key twice, is a 400 like any
malformed JSON (not a 500, nor a guess at what the client meant)."""
from __future__ import annotations

import codecs
import sys
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json


def _object_without_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """One JSON object, refused when it names a key twice: the json module keeps the last value,
    so ``{"rating": 1, "rating": 5}`` was a 5 star rating whatever the client meant."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen.add(key)
    return dict(pairs)


def _integer(digits: str) -> int:
    """A JSON integer, refused plainly past Python's limit on converting digits (4300 by default):
    ``int()`` raised a ValueError telling the client to call ``sys.set_int_max_str_digits()``."""
    limit = sys.get_int_max_str_digits()
    if limit and len(digits.lstrip("-")) > limit:
        raise ValueError("an integer has too many digits")
    return int(digits)


class JSONParser(parsers.JSONParser):
    """DRF's ``JSONParser``, also refusing JSON nested past Python's recursion limit, objects
    with a duplicate key (with a message that names it) and integers too long to read.

    DRF turns only ``ValueError`` into a ``ParseError``; the json module raises ``RecursionError``
    on about a thousand nested ``[``, a 2 KB body well under ``REQUEST_MAX_BODY_BYTES``, so every
    JSON endpoint answered it with a 500 (the anonymous ``/api/token/`` too). DRF's ``parse`` has
    no way to pass an ``object_pairs_hook``, so this is its ``parse`` with one. Used by default
    (``DEFAULT_PARSER_CLASSES``) and wherever a view names its parsers.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        constant = json.strict_constant if self.strict else None  # DRF's: NaN and Infinity refused
        try:
            return json.load(codecs.getreader(encoding)(stream), parse_constant=constant, parse_int=_integer,
                             object_pairs_hook=_object_without_duplicate_keys)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
