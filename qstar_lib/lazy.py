"""Lazy exports for the subpackages (PEP 562): a chapter imports ``from qstar_lib.lm import load_model`` and
only the module that defines ``load_model`` is loaded.

It knows nothing of what the packages hold: each passes its own name -> module table.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence


def lazy_exports(
    package: str, exports: Mapping[str, str], modules: Sequence[str]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` of ``package``.

    ``exports`` maps an exported name to the module of the package that defines it; ``modules`` are the
    package's modules, importable as attributes too (``qstar_lib.lm.train``).
    """
    names = sorted(exports) + list(modules)

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names
