"""Self-describing training checkpoints, written atomically, read with ``weights_only=True``.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values, so it
loads with ``torch.load(..., weights_only=True)`` (no arbitrary code runs on load):

``format``/``version``  ``"suhmo-checkpoint"`` / ``VERSION``; an older version is brought up to
                        date on load by :func:`migrate`
``step``                completed training iterations
``config``              the resolved ``Config.to_dict()``
``seed``                ``train.seed`` of the run
``G``, ``D``            generator / discriminator state dicts
``G_ema``               moving average of G's weights (only with ``optim.ema_g > 0``); what
                        evaluation and generation use (:func:`generator_state`)
``opt_g``, ``opt_d``    Adam state dicts
``rng``                 python / numpy / torch (and cuda) RNG states, the window sampler's generator
``sampler``             the BatchSampler ``state_dict()`` (numpy arrays encoded as tensors)
``metrics``             the metrics of the evaluation at this checkpoint (may be empty)
``best``                best-so-far ``{"metric", "mode", "value", "step"}`` or None

A training export (``generator.pt`` + ``config.yaml`` in a folder) holds only what
generation needs; :func:`write_export` writes it, ``suhmo.generate.load_model`` reads both.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suhmo.utils import SuhmoError, atomic_save, atomic_write_stream, atomic_write_text

FORMAT = "suhmo-checkpoint"
VERSION = 2
_NDARRAY = "__ndarray__"

# Values of model fields that version 1 checkpoints may lack (the fields came later), as the runs
# that wrote those checkpoints had them.
MODEL_FIELDS_V1 = {"d_centred": False, "g_centred": False, "attn_window_g": None, "space": "landmarks",
                   "semantic_k": 16, "noise_g": 0, "revert": False, "d_semantic": False, "noise_rho": 0.0,
                   "d_anchor": False}


# ---------------------------------------------------------------------- versions
def migrate(state: dict, from_version: int) -> dict:
    """A checkpoint's ``state`` written in format ``from_version``, brought up to ``VERSION`` one
    version at a time (each step below); its ``version`` entry says so afterwards.

    - 0 -> 1: none (version 0 is a file without a ``version`` entry; the layout is the same);
    - 1 -> 2: ``config.model`` gets every model field it lacks, at the value that reproduces the
      run (``MODEL_FIELDS_V1``; the defaults of some differ, e.g. ``d_centred``)."""
    for version in range(int(from_version), VERSION):
        state = _STEPS[version](state)
    state["version"] = VERSION
    return state


def _v1_model_fields(state: dict) -> dict:
    model = state.get("config", {}).get("model") if isinstance(state.get("config"), dict) else None
    if isinstance(model, dict):
        state["config"]["model"] = {**MODEL_FIELDS_V1, **model}
    return state


_STEPS = {0: lambda state: state, 1: _v1_model_fields}  # _STEPS[v]: format v -> v + 1


# ---------------------------------------------------------------------- encoding of plain state
def encode_state(obj: Any) -> Any:
    """Make ``obj`` loadable with ``weights_only=True``: numpy arrays/scalars become tensors/ints."""
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("cannot store an object array in a checkpoint")
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(obj).copy()), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: encode_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(encode_state(v) for v in obj)
    return obj


def decode_state(obj: Any) -> Any:
    """Inverse of :func:`encode_state`."""
    if isinstance(obj, dict):
        if _NDARRAY in obj and set(obj) == {_NDARRAY, "dtype"}:
            return obj[_NDARRAY].numpy().astype(obj["dtype"], copy=False)
        return {k: decode_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode_state(v) for v in obj)
    return obj


def rng_state() -> dict:
    """The global Python, numpy and torch (CPU and CUDA) RNG states."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], encode_state(np_state[1]), int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, decode_state(keys), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------- files
def save_checkpoint(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` (see the module docstring) atomically; returns the path."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **encode_state(payload)}
    atomic_write_stream(path, lambda f: torch.save(payload, f))
    return path


def copy_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Atomic file copy (``best.pt`` from the ``last.pt`` just written)."""
    dst = Path(dst)
    atomic_save(dst, lambda tmp: shutil.copyfile(src, tmp), needed=Path(src).stat().st_size)
    return dst


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; a missing or unreadable file is a SuhmoError."""
    from suhmo.utils import check_regular_file

    path = check_regular_file(path, "checkpoint")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - garbage bytes raise anything from the unpickler
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SuhmoError(f"{path}: not a readable checkpoint ({first[:160]})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise SuhmoError(f"{path}: not a suhmo checkpoint (no 'format: {FORMAT}' entry)")
    version = ck.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise SuhmoError(f"{path}: not a suhmo checkpoint (version {version!r} is not a number)")
    if version > VERSION:
        raise SuhmoError(f"{path}: checkpoint version {ck['version']} is newer than this suhmo ({VERSION})")
    kinds = {"step": int, "config": dict, "G": dict}
    missing = [k for k in kinds if k not in ck]
    if missing:
        raise SuhmoError(f"{path}: incomplete suhmo checkpoint: no {', '.join(repr(k) for k in missing)} entry")
    wrong = [k for k, t in kinds.items() if not isinstance(ck[k], t) or isinstance(ck[k], bool)]
    if wrong:
        k = wrong[0]
        raise SuhmoError(f"{path}: corrupt suhmo checkpoint: {k!r} is a {type(ck[k]).__name__}, "
                         f"expected a {kinds[k].__name__}")
    return migrate(decode_state(ck), version)


def generator_state(ck: dict) -> dict:
    """The generator weights to sample with: the moving average ``G_ema`` when the run kept one
    (``optim.ema_g > 0``), else the trained ``G``."""
    return ck.get("G_ema") or ck["G"]


def write_export(out_dir: str | Path, generator_state: dict, cfg) -> Path:
    """A generation-only export: ``out_dir/generator.pt`` (state dict) and ``out_dir/config.yaml``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in generator_state.items()}
    atomic_write_stream(out_dir / "generator.pt", lambda f: torch.save(state, f))
    atomic_write_text(out_dir / "config.yaml", cfg.to_yaml())
    return out_dir
