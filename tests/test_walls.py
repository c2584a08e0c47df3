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


# ------------------------------------------------------------------ import graph
PACKAGES = ("suhmo", "launch", "tracking")


def _module_files() -> dict[str, Path]:
    """``dotted module name -> file`` of every module of suhmo/, launch/ and tracking/."""
    mods = {}
    for pkg in PACKAGES:
        for py in (REPO / pkg).rglob("*.py"):
            parts = list(py.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = py
    return mods


def _imported_names(mod: str, py: Path, mods: dict[str, Path]) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every name an import statement of ``py`` (module ``mod``)
    imports, anywhere in the file; relative imports resolved from the module's package, and
    ``from package import module`` named as the module when it is one of ``mods``."""
    out = []
    for node in ast.walk(ast.parse(py.read_text(), filename=str(py))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package
                pkg = mod if py.name == "__init__.py" else mod.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names]
    return out


def _import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, function-level imports included (every
    import statement anywhere in the file counts, whatever runs it)."""

    def ours(name: str):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for mod, py in mods.items():
        targets = {ours(name) for _, name in _imported_names(mod, py, mods)}
        graph[mod] = {t for t in targets if t and t != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_sees_function_level_imports(tmp_path):
    a = ast.parse("def f():\n    from launch.b import g\n")
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(a))  # ast.walk reaches into functions
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_among_suhmo_launch_tracking_modules():
    mods = _module_files()
    graph = _import_graph(mods)
    assert "launch.space" in graph["launch.progress"] and "suhmo.objectives" in graph["suhmo.train"]  # top and function-level imports are edges
    assert _cycles(graph) == []


def _private_ray_imports(source: str, where: str) -> list[str]:
    """``where:line: module`` of every import of a private Ray module (a part after ``ray``
    that starts with an underscore), function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "ray" and any(p.startswith("_") for p in parts[1:]):
                found.append(f"{where}:{node.lineno}: {name}")
    return found


def test_private_ray_import_finder():
    src = ("import ray\nfrom ray import tune\nimport ray._private.ray_constants\n"
           "def f():\n    from ray.train._internal.session import get_session\n"
           "    from ray.train import _internal\n")
    assert [h.split(": ")[1] for h in _private_ray_imports(src, "x.py")] == [
        "ray._private.ray_constants", "ray.train._internal.session.get_session", "ray.train._internal"]


def test_no_private_ray_module_is_imported_anywhere():
    """Tune's public API only (ray.tune.report / get_checkpoint / get_context, ExperimentAnalysis):
    no ``ray._private``, ``ray.train._internal``, ``ray.air._internal``, ... in the repo's code."""
    files = [p for p in REPO.rglob("*.py")
             if not any(part.startswith(".") or part == "suhmo-runs" for part in p.relative_to(REPO).parts)]
    assert any(p.name == "trainable.py" for p in files)
    bad = [hit for p in files for hit in _private_ray_imports(p.read_text(), str(p.relative_to(REPO)))]
    assert bad == [], bad


def _private_names_imported(source: str, where: str) -> list[str]:
    """``from <project module> import _name``: a private name crossing files."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.ImportFrom) and node.module
                and node.module.split(".")[0] in ("suhmo", "launch", "tracking")):
            out += [f"{where}: from {node.module} import {a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
    return out


def test_private_name_finder():
    assert _private_names_imported("from suhmo.metrics import _Context, Metric\nfrom os import _exit\n", "x") == [
        "x: from suhmo.metrics import _Context"]


def test_no_private_name_crosses_files():
    found = [hit for mod, path in _module_files().items()
             for hit in _private_names_imported(path.read_text(), mod)]
    assert not found, found


def test_face_geometry_sits_at_the_bottom_of_the_layers():
    """``suhmo.geometry`` (centring, scale, Procrustes, similarity transform) imports nothing of
    ours; the models and the losses take face geometry from it, never from the metrics (a layer
    beside them), and the metrics take it from it too (no metric module defines its own)."""
    graph = _import_graph(_module_files())
    assert "suhmo.geometry" in graph["suhmo.models.space"]  # the walker sees the edge
    assert not {t for t in graph["suhmo.geometry"] if t.split(".")[0] in PACKAGES}
    up = {m: sorted(t for t in deps if t == "suhmo.metrics" or t.startswith("suhmo.metrics."))
          for m, deps in graph.items() if m == "suhmo.losses" or m.startswith("suhmo.models")}
    assert not {m: t for m, t in up.items() if t}, up
    assert "suhmo.geometry" in graph["suhmo.metrics.landmark"] and "suhmo.geometry" in graph["suhmo.metrics.sanity"]
    for mod in ("suhmo.metrics.landmark", "suhmo.models.space"):
        defined = {n.name for n in ast.parse(_module_files()[mod].read_text()).body if isinstance(n, ast.FunctionDef)}
        assert not defined & {"centre_scale", "align_shapes", "mean_shape_gpa", "face_radius", "rotate_t"}, mod


# ------------------------------------------------------------------ layers inside suhmo/
# Module prefix -> rank. A module may import its own rank and below, never above; the longest
# prefix that names a module decides its rank. Every suhmo module matches a prefix.
LAYERS = {
    # 0: data, geometry and the leaf helpers (no model, no metric): the run's config and its
    # presets and error messages, the checkpoint file format, paths, the option registry.
    "suhmo.data": 0, "suhmo.geometry": 0, "suhmo.utils": 0, "suhmo.paths": 0, "suhmo.registry": 0,
    "suhmo.hints": 0, "suhmo.config": 0, "suhmo.config_errors": 0, "suhmo.presets": 0,
    "suhmo.checkpoint": 0,
    # 1: the networks and the metrics (beside each other; models never import metrics)
    "suhmo.models": 1, "suhmo.metrics": 1,
    # 2: what trains and chooses: losses, objectives, the speed options, ranking runs, resolving a trial
    "suhmo.losses": 2, "suhmo.objectives": 2, "suhmo.speed": 2, "suhmo.selection": 2, "suhmo.resolve": 2,
    # 3: training, generation and what shows the generated motion
    "suhmo.train": 3, "suhmo.generate": 3, "suhmo.render": 3, "suhmo.animate": 3,
    # 4: the commands and the CLI (and the package itself)
    "suhmo.commands": 4, "suhmo.cli": 4, "suhmo": 4,
}


def _rank(module: str) -> int | None:
    """The rank of the longest prefix of ``module`` in LAYERS; ``"suhmo"`` ranks only the package
    itself (so that a module missing from the table is found missing)."""
    name = module
    while name:
        if name in LAYERS and (name != "suhmo" or module == "suhmo"):
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def _upward_imports(mods: dict[str, Path]) -> list[str]:
    """``file:line: imports module (rank r > s)`` for every import, at any level of the file,
    of a suhmo module of a higher rank than the importing module's."""
    out = []
    for mod, py in sorted(mods.items()):
        here = _rank(mod) if mod.startswith("suhmo") else None
        if here is None:  # outside suhmo/, or missing from LAYERS (test_every_suhmo_module_has_a_layer)
            continue
        for line, name in _imported_names(mod, py, mods):
            there = _rank(name) if name.startswith("suhmo.") else None
            if there is not None and there > here:
                out.append(f"{py.relative_to(REPO)}:{line}: imports {name} (rank {there} > {here})")
    return out


def test_every_suhmo_module_has_a_layer():
    missing = sorted(m for m in _module_files() if m.startswith("suhmo") and _rank(m) is None)
    assert not missing, f"add these modules to LAYERS in tests/test_walls.py: {missing}"
    assert _rank("suhmo.data.packed") == 0 and _rank("suhmo.models.kernels.ops") == 1 and _rank("suhmo") == 4
    assert _rank("suhmo.not_in_the_table") is None


def test_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    pkg = tmp_path / "suhmo"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "x.py").write_text("import os\n\ndef f():\n    from suhmo.train import Trainer\n")
    (pkg / "train.py").write_text("from suhmo.data import x\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    mods = {"suhmo.data.x": pkg / "data" / "x.py", "suhmo.train": pkg / "train.py"}
    assert _upward_imports(mods) == ["suhmo/data/x.py:4: imports suhmo.train (rank 3 > 0)"]


def test_no_suhmo_module_imports_a_higher_layer():
    """data and geometry at the bottom with the leaf helpers, then models and metrics, then
    losses and objectives, then train and generate, then the commands and the CLI; function-level
    imports count."""
    bad = _upward_imports(_module_files())
    assert not bad, "imports up a layer (LAYERS in tests/test_walls.py):\n" + "\n".join(bad)


def _too_long(py: Path) -> list[str]:
    """``file: N lines`` when over 600, ``file:line name: N lines`` for each function over 80."""
    src = py.read_text()
    where = py.relative_to(REPO)
    out = [f"{where}: {len(src.splitlines())} lines"] if len(src.splitlines()) > 600 else []
    for node in ast.walk(ast.parse(src, filename=str(py))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
            out.append(f"{where}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    return out


def test_no_file_over_600_lines_and_no_function_over_80():
    bad = [hit for pkg in PACKAGES for py in sorted((REPO / pkg).rglob("*.py")) for hit in _too_long(py)]
    assert not bad, "split by concern:\n" + "\n".join(bad)
