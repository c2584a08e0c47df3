"""``load_dataset(cfg)``: the training/evaluation landmark set a run uses, normalised;
``make_sampler(train_set, cfg)``: its training batch stream."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from suhmo.data.dataset import DataError, LandmarkSet, check_lengths, load_npz
from suhmo.data.packed import is_packed
from suhmo.data.packed_clips import load_packed
from suhmo.data.normalize import normalize_set
from suhmo.data.synth import synthesize
from suhmo.data.windows import BatchSampler, MixedSampler, smooth_positions
from suhmo.utils import check_regular_file


def load_landmarks(path: str | Path, *, fps: float = 25.0, min_len: Optional[int] = None,
                   notify: Optional[Callable[[str], None]] = None) -> LandmarkSet:
    """A landmark dataset: a canonical ``.npz`` (validated, loaded whole, other frame rates
    resampled to ``fps``: ``suhmo.data.dataset.load_npz``) or a packed dataset folder (opened
    lazily: its clips are read on access and must already be at ``fps``: ``suhmo.data.packed``)."""
    if is_packed(path):
        return load_packed(path, fps=fps, min_len=min_len)
    return load_npz(path, fps=fps, min_len=min_len, notify=notify)


def check_data_path(path, what: str = "landmark data") -> Path:
    """``path`` must be a packed dataset folder or a regular file (a canonical .npz); else one
    DataError naming it."""
    path = Path(path)
    if path.is_dir() and not is_packed(path):
        raise DataError(f"{path}: a folder without dataset.json, expected {what}: a landmark .npz or a "
                        f"packed dataset folder (suhmo data pack)")
    if not is_packed(path):
        check_regular_file(path, what, error=DataError)
    return path



def load_dataset(cfg, *, notify: Optional[Callable[[str], None]] = None) -> LandmarkSet:
    """The landmark set of ``cfg.data``, validated, at ``cfg.data.fps``, normalised to [0, 1].

    ``cfg.data.path`` names a canonical ``.npz`` or a packed dataset folder (read lazily:
    ``suhmo.data.packed``); when it is None the embedded synthetic set
    (``synth_clips`` x ``synth_seconds`` s, ``synth_seed``) is generated in memory (fast: no
    disk cache). Every clip must hold a training window of ``obs_len + seq_len`` frames.
    When ``smooth_frames > 1`` the positions are smoothed (trailing moving average) after
    normalisation; see ``suhmo.data.windows`` for why positions and not velocities.
    """
    d = cfg.data
    min_len = int(d.obs_len + d.seq_len)
    if d.path:
        ls = load_landmarks(d.path, fps=d.fps, min_len=min_len, notify=notify)
        return _prepared(ls, cfg)
    return load_synthetic(cfg)


def load_synthetic(cfg) -> LandmarkSet:
    """The embedded procedural speakers of ``cfg.data`` (``synth_clips`` x ``synth_seconds`` s,
    ``synth_seed``), normalised like a file: the default data, and the synthetic share of a
    mixed batch (``data.synth_mix``)."""
    d = cfg.data
    ls = synthesize(d.synth_clips, d.synth_seconds, d.synth_seed, fps=d.fps)
    ls.path = (f"<synthetic: {d.synth_clips} clips x {d.synth_seconds:g} s, seed {d.synth_seed}>")
    try:
        check_lengths([len(c) for c in ls.clips], ls.path, int(d.obs_len + d.seq_len))
    except DataError as e:
        raise DataError(f"{e}; raise data.synth_seconds") from None
    return _prepared(ls, cfg)


def _prepared(ls: LandmarkSet, cfg) -> LandmarkSet:
    d = cfg.data
    ls = normalize_set(ls, d.normalize, d.bbox_scale)
    if d.smooth_frames > 1:
        if ls.lazy:
            ls = ls.copy_with(ls.clips.with_normalization(d.normalize, d.bbox_scale, d.smooth_frames))
        else:
            ls = ls.copy_with([smooth_positions(c, d.smooth_frames) for c in ls.clips])
    return ls


def make_sampler(train_set: LandmarkSet, cfg, seed: int = 0):
    """The training batch stream of ``cfg``: a BatchSampler, or a MixedSampler with the
    procedural speakers when ``data.synth_mix > 0`` (real data only: ``data.path`` set)."""
    if float(cfg.data.synth_mix) <= 0:
        return BatchSampler(train_set, cfg, seed=seed)
    return MixedSampler(train_set, load_synthetic(cfg), cfg, seed=seed)
