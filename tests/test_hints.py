"""Printed hints run as printed: console scripts spelled so the shell finds them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from suhmo.hints import command


def test_hint_is_bare_on_the_path_and_a_path_otherwise(tmp_path, monkeypatch):
    bindir = Path(sys.executable).parent
    if not (bindir / "suhmo").is_file():
        import pytest

        pytest.skip("suhmo is not installed as a script beside this interpreter")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}/usr/bin:/bin")
    assert command("suhmo") == "suhmo"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # not activated: the venv's bin is not on PATH
    monkeypatch.chdir(bindir.parent.parent)
    spelled = command("suhmo")
    assert spelled == os.path.relpath(bindir / "suhmo") and os.sep in spelled
    monkeypatch.chdir(tmp_path)  # outside the checkout: an absolute path
    spelled = command("suhmo-search")
    assert Path(spelled).is_absolute()
    # what is printed runs, from where it was printed, without an activated venv
    r = subprocess.run([spelled, "--help"], capture_output=True, text=True, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert r.returncode == 0 and "Usage" in r.stdout
    assert command("no-such-script") == "no-such-script"
