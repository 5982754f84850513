"""The package's layout rules: no import circle between modules, no private name imported from another module, the
environment read in ``duomem/settings.py`` alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parents[1] / "duomem"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> the duomem modules it imports (at any depth of its code, lazy imports included)."""
    edges: dict[str, set[str]] = {}
    for name, tree in modules.items():
        edges[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("duomem"):
                edges[name] |= {m for m in [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                                if m in modules and m != name}
            elif isinstance(node, ast.Import):
                edges[name] |= {a.name for a in node.names if a.name in modules and a.name != name}
    return edges


def test_no_import_circle():
    edges = _imports(_modules())
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(edges[module]):
            assert state.get(dep) != 1, "import circle: " + " -> ".join([*path[path.index(dep):], dep])
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_no_private_name_across_modules_and_the_environment_read_in_settings_alone():
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("duomem"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{name} imports private {private} from {node.module}"
            if name != "duomem.settings" and isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                raise AssertionError(f"{name} reads the environment (line {node.lineno}); read it in "
                                     "duomem/settings.py")
