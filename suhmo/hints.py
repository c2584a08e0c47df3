"""Commands in printed hints ("next: ...", "try: ..."), spelled so that they run as printed.

A newcomer runs ``make search`` without activating ``.venv``: a bare ``suhmo`` in a hint is
then "command not found". :func:`command` spells a console script of this installation as
the shell will find it: the bare name when the PATH already resolves it to this
installation (an activated venv, a global install), else its path (``.venv/bin/suhmo``
relative to the current folder when below it, absolute otherwise).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def command(name: str) -> str:
    """How to type console script ``name`` (``suhmo``, ``suhmo-search``) from this shell."""
    script = Path(sys.executable).parent / name
    if not script.is_file():
        return name  # not installed as a script beside this interpreter: nothing better to say
    found = shutil.which(name)
    if found and Path(found).resolve() == script.resolve():
        return name
    try:
        rel = os.path.relpath(script, Path.cwd())
    except ValueError:  # another drive (Windows)
        rel = str(script)
    return str(script) if rel.startswith("..") else rel if os.sep in rel else f".{os.sep}{rel}"


def suhmo() -> str:
    return command("suhmo")


def suhmo_search() -> str:
    return command("suhmo-search")
