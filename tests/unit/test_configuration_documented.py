"""Every environment variable the app reads has a row in the README's Configuration tables, with
the default the code uses, so an operator reading the README sees every knob there is and what it
is set to.

The knobs are found in the source (core.settings' ``env_*`` readers and any direct ``os.environ``
read), not listed by hand: a knob added without its row fails here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_FOLDERS = ("core", "kafka_workers", "spark_jobs", "dags", "recsite", "services")
# Variables set by other programs for us, not knobs an operator sets.
NOT_KNOBS = {"PYSPARK_GATEWAY_PORT", "DJANGO_SETTINGS_MODULE"}


def _is_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _names_read(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        arg = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            direct = name in {"env_str", "env_int", "env_float", "env_floats", "env_bool", "env_jvm_size", "_port"}
            on_environ = name in {"get", "setdefault"} and isinstance(func, ast.Attribute) and _is_environ(func.value)
            if direct or on_environ or name == "getenv":
                arg = node.args[0]
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            arg = node.slice
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.isupper():
            names.add(arg.value)
    return names


def knobs_in_code() -> dict[str, str]:
    found = {}
    for folder in APP_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for name in _names_read(ast.parse(path.read_text(), str(path))):
                found.setdefault(name, str(path.relative_to(ROOT)))
    return {name: where for name, where in found.items() if name not in NOT_KNOBS}


def readme_defaults() -> dict[str, str]:
    """{variable: its row's "default" cell} of the README's Configuration tables."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Configuration"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    return {name: cells[1] for cells in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0])}


def knobs_in_readme() -> set[str]:
    return set(readme_defaults())


# Defaults the README words instead of quoting: 0 for "derived at run time" (the row says from
# what), and Django's console e-mail backend by its name. Skipped by the check of the README's
# value only: test_a_variable_has_one_default holds them too.
WORDED_DEFAULTS = {"SINGLE_NODE_MEMORY_GB", "SERVING_THREADS", "DJANGO_EMAIL_BACKEND"}


DEFAULTED_READERS = {"env_str", "env_int", "env_float", "env_floats", "env_jvm_size"}  # core/env.py's, with a default


def literal_defaults() -> dict[str, list[tuple[object, str]]]:
    """{variable: [(default, where)]} of every ``env_*`` call whose default is a literal."""
    found: dict[str, list[tuple[object, str]]] = {}
    for folder in APP_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                func = getattr(node, "func", None)
                name = getattr(func, "id", getattr(func, "attr", ""))
                if not (isinstance(node, ast.Call) and name in DEFAULTED_READERS and len(node.args) == 2):
                    continue
                try:
                    var, default = ast.literal_eval(node.args[0]), ast.literal_eval(node.args[1])
                except ValueError:  # a computed default (a path, another variable): not checked
                    continue
                found.setdefault(var, []).append((default, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return found


def _numbers(cell: str) -> set[float]:
    return {float(m.replace(",", "")) for m in re.findall(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?(?:e\d+)?)", cell)}


def _stated(default: object, cell: str) -> bool:
    if isinstance(default, tuple):  # env_floats: the row quotes the list as an operator writes it
        return ",".join(f"{float(n):g}" for n in default) in cell
    if isinstance(default, (int, float)):
        return float(default) in _numbers(cell)
    return default == "" or default in cell


def test_every_knob_read_by_the_code_has_a_readme_row():
    missing = {name: where for name, where in knobs_in_code().items() if name not in knobs_in_readme()}
    assert not missing, f"read by the code, not in README's Configuration tables: {missing}"


def test_every_literal_default_is_the_one_the_readme_states():
    # Loose where a row holds several variables: any of the row's values counts for each of them.
    cells = readme_defaults()
    wrong = []
    for var, uses in literal_defaults().items():
        if var in WORDED_DEFAULTS or var not in cells:  # (a missing row fails the test above)
            continue
        for default, where in uses:
            if not _stated(default, cells[var]):
                wrong.append(f"{where}: {var} defaults to {default!r}, README says {cells[var]!r}")
    assert not wrong, "\n".join(wrong)


def test_a_variable_has_one_default():
    """Read in two places with two defaults, one unset variable meant two things: WORKER_METRICS_PORT
    was off for the workers and 9410 for the dashboard. The README check above missed it (a worded
    default, skipped; and it accepts any value a row names). Read it in one function instead."""
    several = {var: uses for var, uses in literal_defaults().items() if len({default for default, _ in uses}) > 1}
    assert not several, f"one variable, several defaults: {several}"


def test_the_scan_finds_the_readers_it_is_meant_to():
    tree = ast.parse(
        "env_int('A_KNOB', 1)\nos.environ.get('B_KNOB')\nos.environ['C_KNOB']\n"
        "os.getenv('D_KNOB')\nsettings.env_str('E_KNOB', '')\nenviron.get('PATH_INFO')\nd.get('NOT_ENV')\n"
        "env_floats('F_KNOB', (1, 2), minimum=0)\nenv_jvm_size('G_KNOB', '1g')\n"
    )
    assert _names_read(tree) == {"A_KNOB", "B_KNOB", "C_KNOB", "D_KNOB", "E_KNOB", "F_KNOB", "G_KNOB"}
