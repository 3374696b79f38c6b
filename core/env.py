"""Reading one knob from the environment: blank means unset, and a value that does not parse (or
is below the knob's ``minimum``, or not finite) stops the program with the variable's name in the
error, instead of a bare ``int()`` message, a silent default or a value that quietly breaks things.

Every program reads its knobs through these functions, whether the knob is shared
(:mod:`core.settings`) or belongs to one module (kept beside its use, e.g. ``WORKER_BATCH_MAX``).
Not through them: variables other programs define and read (``JAVA_HOME``,
``PROMETHEUS_MULTIPROC_DIR``), and services/programs.py, which runs on the standard library alone.
tests/unit/test_configuration_documented.py finds every call and holds the README's Configuration
tables to them.
"""
from __future__ import annotations

import math
import os
import re


def env_str(name: str, default: str) -> str:
    """The variable's value, or ``default`` when it is unset or blank.

    Blank counts as unset: compose files and supervisord pass ``NAME=`` for "not given".
    """
    value = os.environ.get(name, "").strip()
    return value or default


def _parsed(name: str, default, parse, expected: str, minimum: float | None = None):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError as exc:  # a typo in the environment should stop the program, loudly
        raise ValueError(f"environment variable {name} must be {expected}, got {raw!r}") from exc
    lowest = min(value) if isinstance(value, list) else value
    if minimum is not None and lowest < minimum:  # e.g. RECS_TOP_N=0: empty lists, silently
        raise ValueError(f"environment variable {name} must be at least {minimum:g}, got {raw!r}")
    return value


def env_int(name: str, default: int, minimum: int | None = None) -> int:
    """An integer knob; a whole number in scientific notation (``2e6``) counts."""
    return _parsed(name, default, _integer, "an integer", minimum)


def env_float(name: str, default: float, minimum: float | None = None) -> float:
    """A finite number (``nan`` and ``inf`` parse as floats, and would pass every comparison wrong)."""
    return _parsed(name, default, _finite, "a finite number", minimum)


def env_floats(name: str, default: tuple[float, ...], minimum: float | None = None) -> list[float]:
    """A comma-separated list of finite numbers (a grid to try), each at least ``minimum``.

    An empty item (``50,,100``) is refused like any other typo rather than skipped: a list that
    silently lost a value would be tuned on a grid nobody asked for.
    """
    return _parsed(name, list(default), _finite_list, "comma-separated finite numbers", minimum)


def env_bool(name: str, default: bool) -> bool:
    return _parsed(name, default, _flag, "1/0, true/false, yes/no or on/off")


def env_jvm_size(name: str, default: str) -> str:
    """A size as the JVM and Spark read one (``spark.executor.memory``, ``spark.sql.files.maxPartitionBytes``):
    a whole number above 0 with an optional unit, ``b``, ``k``/``kb`` ... ``p``/``pb``, any case
    (``512m``, ``4G``, ``134217728``). Handed to Spark as given; checked here because Spark's own
    refusal comes later, as a JVM trace that never names the variable."""
    return _parsed(name, default, _jvm_size, "a JVM size above 0 such as 512m, 4g or 134217728")


JVM_SIZE = re.compile(r"(\d+)([kmgtp]b?|b)?", re.IGNORECASE)


def _jvm_size(raw: str) -> str:
    match = JVM_SIZE.fullmatch(raw)
    if match is None or int(match.group(1)) == 0:
        raise ValueError(raw)
    return raw


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        value = float(raw)  # "2e6" passes; "ten" and "1.5" raise
        if not value.is_integer():
            raise
        return int(value)


def _finite(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _finite_list(raw: str) -> list[float]:
    return [_finite(part) for part in raw.split(",")]


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)
