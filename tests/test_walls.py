"""Dependency walls: suhmo/ never imports ray, optuna or mlflow; only tracking/ imports mlflow;
only launch/ imports ray and optuna."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imports(folder: str) -> dict[str, set[str]]:
    found = {}
    for py in (REPO / folder).rglob("*.py"):
        tree = ast.parse(py.read_text(), filename=str(py))
        mods = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
        found[str(py.relative_to(REPO))] = mods
    return found


def test_suhmo_imports_no_search_or_tracking_stack():
    bad = {f: m & {"ray", "optuna", "mlflow", "launch", "tracking"} for f, m in _imports("suhmo").items()}
    assert not {f: m for f, m in bad.items() if m}


def test_only_tracking_imports_mlflow_and_only_launch_imports_ray():
    for f, m in _imports("launch").items():
        assert "mlflow" not in m, f
    for f, m in _imports("tracking").items():
        assert not m & {"ray", "optuna"}, f


def test_importing_every_suhmo_module_loads_no_forbidden_package():
    mods = sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in (REPO / "suhmo").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}:\n    importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('ray', 'optuna', 'mlflow'))\n"
        "print(bad)\nsys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
