"""The product/user id pattern in its two dialects agrees: Python's (the site's form and API, the
events the workers validate) and Java's (Spark's ``rlike``, with which load quarantines batch lines).

A batch id one accepts and the other refuses is a product the site cannot link to (every page
listing it fails) or cannot be rated, so both are asked about ids made to hit where Java's regex
and Python's ``re`` differ: line terminators before the end (Java's ``\\Z`` and ``$`` accept a final
"\\r", "\\u0085", "\\u2028"...), non-ASCII letters and digits, and the length limit. Java is asked
through the JVM PySpark starts (py4j), as ``rlike`` asks it: ``Pattern.compile(p).matcher(s).find()``.
"""
from __future__ import annotations

import pytest

from core.events import PRODUCT_ID_JAVA_PATTERN, is_product_id

# (id, whether it is a valid product or user id)
CASES = [
    ("B00X", True), ("0006428320", True), ("A2IBPI20UZIR0U", True), ("a.b:c@d-e_f", True),
    ("x" * 128, True), ("-", True),
    ("x" * 129, False), ("", False), (" ", False), ("a b", False), (" a", False), ("a\t", False),
    ("a/b", False), ("a\\b", False), ("a%2Fb", False), ("a+b", False), ("a#b", False), ("a?b", False),
    ("a\n", False), ("\na", False), ("a\r", False), ("a\r\n", False), ("a\u0085", False),
    ("a\u2028", False), ("a\u2029", False), ("a\x00", False),
    ("é", False), ("ß", False), ("\uff41", False), ("\u0663", False), ("\u216b", False),  # ａ, Arabic-Indic 3, Ⅻ
    ("\u212a", False), ("\u0130", False),  # the Kelvin sign and a dotted I: letters under case folding only
    ("\U0001F600", False), ("x" * 127 + "\U0001F600", False),  # one code point in Python, two chars in Java
    (".", False), ("..", False), ("...", True), (".a", True), ("a..", True),  # /p/../ is the catalog's URL
]


@pytest.fixture(scope="module")
def java_pattern():
    """``PRODUCT_ID_JAVA_PATTERN`` compiled by Java in a JVM of PySpark's (no Spark session)."""
    from pyspark.java_gateway import launch_gateway

    gateway = launch_gateway()
    try:
        yield gateway.jvm.java.util.regex.Pattern.compile(PRODUCT_ID_JAVA_PATTERN)
    finally:
        gateway.shutdown()
        gateway.proc.stdin.close()  # the JVM ends when its stdin closes
        gateway.proc.wait(timeout=60)


@pytest.mark.parametrize("value, valid", CASES)
def test_python_pattern_verdicts(value, valid):
    assert is_product_id(value) == valid


def test_java_pattern_agrees_with_the_python_one(java_pattern):
    java_says = {value: bool(java_pattern.matcher(value).find()) for value, _ in CASES}
    assert java_says == {value: is_product_id(value) for value, _ in CASES}
