"""The library's folders are its architecture: a static read of every import enforces the rooms and sizes.

Rooms, from the floor up (an arrow may only point to the same room or a room listed before it):

- floor: ``scale``, ``plots``, ``dpo``, ``stats``, ``cache``, ``lazy`` -- imports only other floor modules;
- ``theory``: the floor (the exact chapters: no language model, no data set, no judge);
- ``data``: the floor (records never need a model; a tokenizer is handed in);
- ``lm``: the floor and ``data`` (models never judge what they decode);
- ``eval``: the floor, ``data`` and ``lm``;
- top: ``experiments`` and ``__main__``, which may use everything.

Every import counts, also the ones inside functions (a lazy import is still an arrow). An import of a name
that a subpackage exports lazily (``from qstar_lib.lm import load_model``) is resolved through that
package's ``_EXPORTS`` to the module that defines it, so cycles are found module by module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qstar_lib"
FLOOR = {"scale", "plots", "dpo", "stats", "cache", "lazy", "__init__"}
TOP = {"experiments", "presets", "__main__"}
ALLOWED = {
    "floor": {"floor"},
    "theory": {"floor", "theory"},
    "data": {"floor", "data"},
    "lm": {"floor", "data", "lm"},
    "eval": {"floor", "data", "lm", "eval"},
    "top": {"floor", "theory", "data", "lm", "eval", "top"},
}
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
EXCEPTION_MARK = "Size exception:"  # in a module docstring: "Size exception: NAME -- reason"


def _modules() -> dict[str, Path]:
    """``qstar_lib.lm.train`` -> its path, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "floor"
    if parts[1] in ("theory", "data", "lm", "eval"):
        return parts[1]
    return "top" if parts[1] in TOP else "floor" if parts[1] in FLOOR else f"unknown:{parts[1]}"


def _exports(package: str, modules: dict[str, Path]) -> dict[str, str]:
    tree = ast.parse(modules[package].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            return {k.value: f"{package}.{v.value}" for k, v in zip(node.value.keys, node.value.values)}
    return {}


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``module`` imports, resolved to defining modules where possible."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.split(".")[0] == "qstar_lib"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qstar_lib":
            assert node.level == 0, f"{module}: use absolute imports"
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in modules:  # from qstar_lib.lm import train (a module)
                    targets.add(child)
                else:  # a name: resolve a lazy export to the module that defines it
                    targets.add(
                        _exports(node.module, modules).get(alias.name, node.module)
                        if node.module in modules
                        else node.module
                    )
    return {t for t in targets if t != module}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def test_every_module_lives_in_a_room(graph):
    assert not [m for m in graph if _room(m).startswith("unknown")]


def test_no_arrow_points_up_a_room(graph):
    bad = [
        f"{m} ({_room(m)}) imports {t} ({_room(t)})"
        for m, ts in graph.items()
        for t in sorted(ts)
        if _room(t) not in ALLOWED[_room(m)]
    ]
    assert not bad, "\n".join(bad)


def test_the_check_sees_arrows():
    """The reader must find what the rules forbid: a made-up lazy import from ``lm`` up into ``eval``."""
    modules = _modules()
    fake = PACKAGE.parent / "tests" / "_fake_arrow.py"
    try:
        fake.write_text("def f():\n    from qstar_lib.eval import compare\n    from qstar_lib.lm import load_model\n")
        found = _imports("qstar_lib.lm.fake", fake, modules)
    finally:
        fake.unlink()
    assert "qstar_lib.eval.judge" in found and "qstar_lib.lm.models" in found
    assert "eval" not in ALLOWED[_room("qstar_lib.lm.fake")]


def test_no_export_is_named_like_a_module_of_its_package():
    """Importing ``pkg.name`` binds the *module* as the attribute ``name`` of ``pkg``, so an exported
    function of that name would be shadowed once anything imports the module (``from qstar_lib.eval import
    best_of_n`` returned the module when best-of-n lived in ``eval/best_of_n.py``)."""
    modules = _modules()
    clashes = [
        f"{package}.{name}"
        for package in modules
        for name in _exports(package, modules)
        if f"{package}.{name}" in modules
    ]
    assert not clashes, f"exported names that are also module names: {clashes}"


def test_no_import_cycle(graph):
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t in graph and t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def _function_lengths(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def _exceptions(doc: str, module: str) -> dict[str, str]:
    """``Size exception: NAME -- reason`` lines of a module docstring: NAME is a function or ``module``."""
    out = {}
    for line in doc.splitlines():
        if line.strip().startswith(EXCEPTION_MARK):
            name, _, reason = line.strip()[len(EXCEPTION_MARK) :].partition("--")
            assert reason.strip(), f"{module}: '{line.strip()}' gives no reason (NAME -- reason)"
            out[name.strip()] = reason.strip()
    return out


def test_modules_and_functions_stay_small():
    """No module over 450 lines and no function over 80, unless the module's docstring says why, by name."""
    bad = []
    for module, path in _modules().items():
        text = path.read_text()
        tree = ast.parse(text)
        allowed = _exceptions(ast.get_docstring(tree) or "", module)
        n = len(text.splitlines())
        if n > MAX_MODULE_LINES and "module" not in allowed:
            bad.append(f"{module}: {n} lines")
        bad += [
            f"{module}.{name}: {k} lines"
            for name, k in _function_lengths(tree)
            if k > MAX_FUNCTION_LINES and name not in allowed
        ]
        stale = [name for name in allowed if name != "module" and name not in dict(_function_lengths(tree))]
        assert not stale, f"{module}: size exception for {stale}, which it does not define"
    assert not bad, "\n".join(bad)
