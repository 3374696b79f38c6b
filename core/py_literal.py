"""Amazon's 2014 metadata lines as JSON: each is a Python dict literal, not JSON.

The 2014 release wrote ``str(dict)`` per line (single quotes, ``True``/``None``, numeric prices,
nested dicts and lists), which no JSON reader accepts. ``ast.literal_eval`` reads literals only
(it never calls or evaluates anything, unlike ``eval``), so a hostile line cannot run code; its
result is re-serialised as JSON for the load job's ordinary JSON classification. A line that is not
such a literal gets a reason instead, for the quarantine. Lives in ``core`` because Spark ships
``core`` to its Python workers, which run this per line.
"""
from __future__ import annotations

import ast
import json
import re

# A JSON object never starts with "{'": this is how a 2014 metadata line is told from JSON.
PYTHON_DICT_START = r"^\s*\{\s*'"
MAX_LINE_CHARS = 1_000_000  # literal_eval's parser needs memory in proportion; longer lines are refused

BAD_LITERAL = "bad Python dict literal"
NOT_A_DICT = "Python literal is not a dict"
NOT_JSON_VALUES = "Python literal has values JSON cannot hold"
TOO_LONG = "Python dict literal too long"

_START = re.compile(PYTHON_DICT_START)


def looks_like_python_dict(line: str | None) -> bool:
    return bool(line) and _START.match(line) is not None


def python_dict_to_json(line: str | None) -> tuple[str | None, str | None]:
    """(the line as a JSON object, None) or (None, the reason it cannot be one); None -> (None, None)."""
    if line is None:  # the load job hands JSON lines over as null: nothing to convert
        return None, None
    if len(line) > MAX_LINE_CHARS:
        return None, TOO_LONG
    try:
        value = ast.literal_eval(line.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None, BAD_LITERAL
    if not isinstance(value, dict):
        return None, NOT_A_DICT
    try:
        # allow_nan=False: float('nan') cannot appear in a literal, but 1e999 (inf) can.
        return json.dumps(value, ensure_ascii=False, allow_nan=False), None
    except (TypeError, ValueError):  # sets, bytes, complex numbers, infinities
        return None, NOT_JSON_VALUES
