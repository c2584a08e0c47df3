"""The named presets of ``--preset NAME``: one YAML file each in this folder (``NAME.yaml``), a
mapping of config values (sections or dotted keys) applied over the defaults by
``suhmo.config.make_config``; each file opens with two lines saying what it is for."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ORDER = ("paper", "small", "cpu", "tiny")  # the order help texts and error messages list them in


class Presets(Mapping):
    """Preset name -> its values (a dict), each file read on first use by ``load`` (the config's
    YAML reader, ``suhmo.config.load_yaml``); the names are the YAML files here, ``ORDER`` first."""

    def __init__(self, load: Callable[[Path], dict], folder: Path = HERE):
        self.load, self.folder = load, folder
        self._values: dict[str, dict[str, Any]] = {}

    def _names(self) -> list[str]:
        found = {p.stem for p in self.folder.glob("*.yaml")}
        return [n for n in ORDER if n in found] + sorted(found - set(ORDER))

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self.folder / f"{name}.yaml").is_file()

    def __getitem__(self, name: str) -> dict[str, Any]:
        if name not in self:
            raise KeyError(name)
        if name not in self._values:
            self._values[name] = self.load(self.folder / f"{name}.yaml")
        return self._values[name]
