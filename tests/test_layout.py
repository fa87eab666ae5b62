"""The package layout: every module imports on its own in a fresh interpreter (no import cycle),
imports flow one way between the layers of ``docs/DESIGN.md``, and no module imports another's
underscore names."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import sve

ROOT = Path(sve.__file__).parent
#: the layers, lowest first: a module may import its own layer's and lower layers' modules only
LAYERS = [
    {"sve.errors", "sve.paths"},
    {"sve.metrics", "sve.stats", "sve.backbones", "sve.data", "sve.bundle", "sve.calibration", "sve.plots"},
    {"sve.ensemble"},
    {"sve.methods"},
    {"sve.io", "sve.accounting"},
    {"sve.train"},
    {"sve.experiments"},
    {"sve.cli", "sve.__main__"},
]


def _modules() -> list[str]:
    """Every module of the package (``sve.__main__`` runs the CLI when imported, so it is left out)."""
    names = ["sve"] + [info.name for info in pkgutil.walk_packages([str(ROOT)], prefix="sve.")]
    return sorted(n for n in names if n != "sve.__main__")


def _component(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _rank(module: str) -> int | None:
    comp = _component(module)
    return next((i for i, layer in enumerate(LAYERS) if comp in layer), None)


def _imports(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every ``import`` anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}: use absolute imports (line {node.lineno})"
            out.append((node.module or "", [a.name for a in node.names], node.lineno))
    return out


def _path(module: str) -> Path:
    rel = Path(*module.split(".")[1:])
    return ROOT / rel / "__init__.py" if (ROOT / rel).is_dir() else ROOT / f"{rel}.py"


#: run in one child process: each module is imported with no ``sve`` module loaded before it (the
#: third-party packages stay loaded, so torch is imported once): an import cycle inside ``sve``
#: fails exactly as it would in a fresh interpreter
ISOLATED_IMPORTS = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for key in [k for k in sys.modules if k == "sve" or k.startswith("sve.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except BaseException:
        failed[name] = traceback.format_exc()[-600:]
print(json.dumps(failed))
"""


def test_every_module_imports_alone():
    import json

    proc = subprocess.run([sys.executable, "-c", ISOLATED_IMPORTS, json.dumps(_modules())],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{name}: {err}" for name, err in failed.items())


def test_the_isolated_import_check_sees_a_cycle(tmp_path):
    """The check above catches an import cycle (two modules importing a name from each other)."""
    import json

    pkg = tmp_path / "sve_cycle_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from sve_cycle_demo.b import B\nA = 1\n")
    (pkg / "b.py").write_text("from sve_cycle_demo.a import A\nB = 2\n")
    code = ISOLATED_IMPORTS.replace('k == "sve" or k.startswith("sve.")', 'k.startswith("sve_cycle_demo")')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(["sve_cycle_demo.a"])],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "partially initialized" in json.loads(proc.stdout.strip().splitlines()[-1])["sve_cycle_demo.a"]


def test_every_module_has_a_layer():
    missing = sorted({_component(m) for m in _modules() if m != "sve" and _rank(m) is None})
    assert not missing, f"add these to LAYERS (and docs/DESIGN.md): {missing}"


@pytest.mark.parametrize("module", [m for m in _modules() if m != "sve"])
def test_imports_flow_one_way_and_skip_private_names(module):
    rank = _rank(module)
    problems = []
    for target, names, line in _imports(_path(module), module):
        if not target.startswith("sve.") or _component(target) == _component(module):
            continue
        if _rank(target) is None or _rank(target) > rank:
            problems.append(f"line {line}: {module} (layer {rank}) imports {target} (layer {_rank(target)})")
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        if private:
            problems.append(f"line {line}: {module} imports private names {private} from {target}")
    assert not problems, "\n".join(problems)
