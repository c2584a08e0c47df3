"""The plug-in points of the models, by name, readable without importing what they name.

A registry maps a name to ``"module:attribute"`` (or, for a plug-in registered at run time,
the object itself), imported when it is first looked up. ``suhmo.config`` validates
``model.variant``, ``model.d_form``, ``model.space`` and ``windows.family`` against these names
without importing torch (a search driver never does), and ``suhmo.models`` builds from them.
"""

from __future__ import annotations

import importlib
from typing import Any, Iterator


class Registry:
    """``name -> object``: a dict-like view that imports its entries on first lookup."""

    def __init__(self, what: str, entries: dict[str, Any]):
        self.what = what
        self._entries = dict(entries)

    def register(self, name: str, target: Any) -> None:
        """Add (or replace) ``name``: an object, or ``"module:attribute"`` to import on use."""
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __getitem__(self, name: str) -> Any:
        target = self._entries[name]
        if isinstance(target, str):
            module, _, path = target.partition(":")
            target = importlib.import_module(module)
            for attr in path.split("."):
                target = getattr(target, attr)
            self._entries[name] = target
        return target

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what}: {', '.join(self._entries)})"


# factory(cfg) -> Generator
GENERATORS = Registry("generator", {
    "rnn": "suhmo.models.rnn:RNNGenerator.from_config",
    "transformer": "suhmo.models.generators:TransformerGenerator.from_config",
    "actor": "suhmo.models.actor:ActorGenerator.from_config",  # VAE baselines (Table 1), trained by suhmo.objectives
    "hitdvae": "suhmo.models.hitdvae:HitDVAEGenerator.from_config",
})
# factory(cfg, joint: bool) -> nn.Module scoring windows [N, tau, 410] -> [N] (joint: [N/2])
SEQ_DISCRIMINATORS = Registry("sequence discriminator", {
    "rnn": "suhmo.models.discriminators:rnn_seq_discriminator",
    "transformer": "suhmo.models.discriminators:transformer_seq_discriminator",
})
# family(WindowConfig, n, torch.Generator | None) -> n window lengths tau (eq. 5)
TAU_FAMILIES = Registry("window length distribution", {
    "fixed": "suhmo.models.windows:tau_fixed",
    "uniform": "suhmo.models.windows:tau_uniform",
    "texp": "suhmo.models.windows:tau_texp",
})
# factory(cfg) -> the motion space G integrates in (suhmo.models.space)
SPACES = Registry("motion space", {
    "landmarks": "suhmo.models.space:landmark_space",
    "semantic": "suhmo.models.space:semantic_space",
    "pose3d": "suhmo.models.pose3d:pose3d_space",
})
