"""The README's video venv recipe installs every package the video commands import.

The recipe (``VIDEO_VENV_STEPS``, the same lines as the README's) builds a venv with MediaPipe
and a handful of packages, then installs suhmo with ``--no-deps``: nothing the project
declares comes along by itself, so a new import on the path of ``suhmo data prepare`` or
``suhmo generate --image`` breaks that venv (as pydantic once did) while every test of the
main venv still passes. Building the venv downloads MediaPipe and takes minutes, so CI checks
the recipe two cheaper ways, both here and both fast:

- statically: every third-party module that suhmo's code on those paths imports (module level
  or inside a function, through every ``suhmo`` module it imports in turn) is installed by the
  recipe by name, or comes with a package the recipe pins (:data:`VIA_PINNED`);
- by running both commands in this venv (with the stand-in detector instead of MediaPipe) and
  checking that each third-party module they load belongs to a package the recipe installs or
  one that such a package requires (its metadata here).

``SUHMO_TEST_VIDEO_VENV=1`` runs the recipe itself (tests/test_newcomer.py).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"suhmo", "launch", "tracking"}
# Import names the recipe gets through a package it pins, not by name: mediapipe==0.10.21
# requires opencv-contrib-python (its own OpenCV; installing another one beside it would
# clash). The opt-in test that builds the venv checks this against mediapipe's metadata.
VIA_PINNED = {"cv2": ("mediapipe", "opencv-contrib-python")}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def recipe_packages(steps) -> set[str]:
    """Canonical names of the packages the recipe's ``pip install`` lines name (the project's
    own ``-e .`` excluded)."""
    out = set()
    for step in steps:
        words = shlex.split(step)
        if "pip" not in " ".join(words[:1]) or "install" not in words:
            continue
        for w in words[words.index("install") + 1:]:
            if w.startswith("-") or w in (".", "./"):
                continue
            out.add(canon(re.split(r"[<>=!~\[;@ ]", w, maxsplit=1)[0]))
    return out


# ------------------------------------------------------------------------------ statically
def _module_file(name: str) -> Path | None:
    p = ROOT.joinpath(*name.split("."))
    if (p / "__init__.py").is_file():
        return p / "__init__.py"
    if p.with_suffix(".py").is_file():
        return p.with_suffix(".py")
    return None


def _imports(name: str) -> list[tuple[str, int]]:
    """Every module ``name``'s source imports, anywhere in it (absolute names, with line)."""
    path = _module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names]  # submodules imported by name
    return out


def reachable_imports(roots: list[str]) -> dict[str, str]:
    """Third-party top-level module -> where it is first imported (``file:line``), over the
    suhmo modules reachable from ``roots`` through imports at any depth of their source."""
    seen: set[str] = set()
    third: dict[str, str] = {}
    todo = list(roots)
    while todo:
        mod = todo.pop()
        if mod in seen or _module_file(mod) is None:
            continue
        seen.add(mod)
        parts = mod.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b runs a/__init__
        for imp, line in _imports(mod):
            top = imp.split(".")[0]
            if top in FIRST_PARTY:
                while imp and _module_file(imp) is None:  # `from suhmo.data import x`: x may be a name
                    imp = imp.rpartition(".")[0]
                if imp:
                    todo.append(imp)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(top, f"{_module_file(mod).relative_to(ROOT)}:{line}")
    return third


def video_command_roots() -> list[str]:
    """Where ``suhmo data prepare`` and ``suhmo generate --image`` start: the CLI, the modules
    of the two commands (as the CLI's table names them) and the default detector's module."""
    from suhmo.cli import _BUILTIN
    from suhmo.data.detect import DEFAULT_DETECTOR

    return ["suhmo.cli", _BUILTIN["data"].split(":")[0], _BUILTIN["generate"].split(":")[0],
            DEFAULT_DETECTOR.split(":")[0]]


def missing_from_recipe(steps, imports: dict[str, str]) -> dict[str, str]:
    """The imports the recipe provides no package for: import name -> where it is imported."""
    have = recipe_packages(steps)
    dists = metadata.packages_distributions()
    missing = {}
    for name, where in imports.items():
        if canon(name) in have:
            continue
        if name in VIA_PINNED and VIA_PINNED[name][0] in have:
            continue
        if any(canon(d) in have for d in dists.get(name, [])):  # an import name unlike its package's (yaml)
            continue
        missing[name] = where
    return missing


def test_the_recipe_installs_every_module_the_video_commands_import():
    from suhmo.data.detect import VIDEO_VENV_STEPS

    imports = reachable_imports(video_command_roots())
    assert {"click", "numpy", "torch", "cv2", "mediapipe", "pydantic"} <= set(imports)  # the walk sees them
    assert imports["pydantic"].startswith("suhmo/config.py")  # imported by run_cli, inside the function
    missing = missing_from_recipe(VIDEO_VENV_STEPS, imports)
    assert not missing, (f"the video venv recipe (VIDEO_VENV_STEPS in suhmo/data/detect.py and the README's "
                         f"'Real videos' block) installs nothing for these imports: {missing}; add the "
                         f"packages to its pip install line")


def test_the_static_check_catches_a_recipe_without_pydantic():
    from suhmo.data.detect import VIDEO_VENV_STEPS

    broken = [re.sub(r'\s*"pydantic[^"]*"', "", s) for s in VIDEO_VENV_STEPS]
    assert broken != list(VIDEO_VENV_STEPS)
    imports = reachable_imports(video_command_roots())
    assert set(missing_from_recipe(broken, imports)) == {"pydantic"}
    assert recipe_packages(['.venv-video/bin/pip install "a==1" b[x]>=2 --no-deps -e .']) == {"a", "b"}


# ------------------------------------------------------------------------------ by running them
def _closure(packages: set[str]) -> set[str]:
    """The packages and everything they require, from their metadata in this venv (a package
    not installed here, mediapipe, adds only itself)."""
    from packaging.requirements import Requirement

    out, todo = set(), list(packages)
    while todo:
        name = canon(todo.pop())
        if name in out:
            continue
        out.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in reqs:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


_PROBE = """
import atexit, json, sys
before = set(sys.modules)
out = sys.argv[1]

def dump():
    new = {}
    for m in sorted(set(sys.modules) - before):
        top = m.split(".")[0]
        new.setdefault(top, getattr(sys.modules.get(top), "__file__", None))
    with open(out, "w") as f:
        json.dump(new, f)

atexit.register(dump)
sys.argv = ["suhmo"] + sys.argv[2:]
from suhmo.cli import main
main()
"""


def _loaded(tmp_path: Path, name: str, *argv: str) -> dict[str, str | None]:
    """Run ``suhmo ARGV`` in a fresh interpreter of this venv: the top-level modules it loaded
    (-> file), beyond those the interpreter starts with."""
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "SUHMO_LANDMARK_DETECTOR": "prepare_standin:standin_detector",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", _PROBE, str(out), *argv], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(out.read_text())


def test_the_video_commands_load_only_what_the_recipe_installs(tmp_path):
    import cv2

    import prepare_standin as S
    from suhmo.checkpoint import write_export
    from suhmo.config import make_config
    from suhmo.data.detect import VIDEO_VENV_STEPS
    from suhmo.models import build_generator

    (tmp_path / "videos").mkdir()
    S.talking_head(tmp_path / "videos" / "head", 2.4, seed=1)
    cfg = make_config("tiny")
    write_export(tmp_path / "model", build_generator(cfg).state_dict(), cfg)
    cv2.imwrite(str(tmp_path / "face.png"), S.draw(S.face_track(0.2, seed=2)[0]))
    loaded = _loaded(tmp_path, "prepare", "data", "prepare", "videos", "--out", "pack", "--no-progress")
    assert "pydantic" in loaded and "cv2" in loaded  # the CLI's config and the video decoding
    loaded.update(_loaded(tmp_path, "generate", "generate", "--model", "model", "--image", "face.png",
                          "--frames", "4", "--samples", "1", "--out", "motion.npz"))
    assert "torch" in loaded
    assert not outside_recipe(loaded, VIDEO_VENV_STEPS), (
        f"suhmo data prepare / generate --image loaded modules of packages the video venv recipe does "
        f"not install: {outside_recipe(loaded, VIDEO_VENV_STEPS)}")
    broken = [re.sub(r'\s*"pydantic[^"]*"', "", s) for s in VIDEO_VENV_STEPS]
    assert "pydantic" in outside_recipe(loaded, broken)  # the check catches the recipe that lacked it


def outside_recipe(loaded: dict[str, str | None], steps) -> dict[str, object]:
    """The loaded third-party modules (those of this venv's site-packages) that no package of
    the recipe's, nor any package one requires, provides: module -> its packages here."""
    allowed = _closure(recipe_packages(steps))
    dists = metadata.packages_distributions()
    site = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    outside = {}
    for name, file in loaded.items():
        if file is None or name in VIA_PINNED:
            continue
        if not any(Path(file).resolve().is_relative_to(s) for s in site):  # the standard library, suhmo
            continue
        owners = {canon(d) for d in dists.get(name, [])}
        if not owners & allowed:
            outside[name] = sorted(owners) or file
    return outside
