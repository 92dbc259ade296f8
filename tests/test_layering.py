"""The code's shape: imports only go upward, the command modules load fast, functions stay small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dinokit"

# Lower layers never import these upper ones.
UPPER = ("tasks", "eval", "cli", "inspect", "train")
LOWER = ("models", "features", "blocks", "io", "errors", "devices", "settings", "runs", "distributed")


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, top_level_only: bool = False) -> list[str]:
    """Absolute names of the dinokit modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                out.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names]
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("path", sorted(p for p in SRC.rglob("*.py") if _layer(_module_name(p)) in LOWER),
                         ids=lambda p: str(p.relative_to(SRC)))
def test_lower_layers_never_import_upper_ones(path):
    bad = [m for m in _imports(path) if m.startswith("dinokit.") and _layer(m) in UPPER]
    assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_tasks_do_not_import_eval_cli_or_inspect():
    for path in (SRC / "tasks").rglob("*.py"):
        bad = [m for m in _imports(path) if _layer(m) in ("eval", "cli", "inspect")]
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


# Modules the commands may read while building the parser: they import neither torch nor NumPy
# (test_help_loads_no_torch checks it).
LIGHT_MODULES = {"dinokit.eval.datasets.registry"}


@pytest.mark.parametrize("path", sorted((SRC / "cli").glob("cmd_*.py")), ids=lambda p: p.name)
def test_command_modules_import_no_heavy_library_at_module_level(path):
    heavy = [m for m in _imports(path, top_level_only=True)
             if m.split(".")[0] in ("torch", "numpy", "cv2", "PIL", "scipy", "faiss")
             or (m.startswith("dinokit.") and _layer(m) not in ("cli", "settings", "errors", "")
                 and m not in LIGHT_MODULES)]
    assert not heavy, f"{path.name} imports {heavy} at module level (keep 'dinokit --help' fast)"


def test_help_loads_no_torch():
    code = "import sys, dinokit.cli as c; c.build_parser(); print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_no_private_names_imported_across_modules():
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.relative_to(SRC)} imports private {private} from {node.module}"


def test_no_function_over_80_lines():
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(SRC)}:{node.name} ({n} lines)")
    assert not long, long
