"""A copy of a module loaded from a file, to measure it beside this checkout's code.

bench/trending_refresh.py and bench/trending_fold_memory.py take ``--trending-from FILE``: the
trending code of another revision (``git show REV:core/trending.py > /tmp/trending_before.py``),
run in place of this checkout's so that a change is measured before and after on one machine in
one state. The copy imports the rest of ``core`` from this checkout.
"""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def load_copy(path: str, name: str) -> ModuleType:
    """The module in file ``path``, entered in ``sys.modules`` as ``name`` before it runs (its
    dataclasses look their module up there). Under the name of a module already imported, say
    ``core.trending``, it replaces that module for the imports that follow; the modules that
    imported the original keep it (a bench points them at the copy itself)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
