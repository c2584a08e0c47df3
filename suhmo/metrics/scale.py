"""A scale for the distances: what a frozen face and real data score under the same protocol.

A Fréchet distance of 2990 or 2e5 says nothing by itself. Beside a model's values we show

``frozen face``  a "generator" that never moves: every sequence is its reference pose
                 repeated, from the same reference poses, samples, seeds and frames as the
                 model (the :mod:`suhmo.metrics.sanity` ``frozen`` degradation, as a model);
``real data``    real clips of other persons than the reference set (the training split
                 when the reference is the held-out split): ``samples`` windows of
                 ``frames + 1`` frames scored against the same reference statistics, i.e.
                 what real motion of unseen persons scores with as many samples as the model
                 gets. (Scoring the reference clips themselves would give 0 as soon as the
                 samples cover their windows.) Persons differ in face shape, so on ``fd_frame``
                 real data of other persons can score above a frozen face of the reference
                 persons' own poses; the clip and motion distances are the ones about motion.

A model that scores above ``frozen face`` on a distance is worse there than not moving at all;
one near ``real data`` is as close to the reference as real data of other people. Both rows
are cached on disk like the reference statistics (:mod:`suhmo.metrics.reference`), under a hash
of both datasets, the preprocessing and the protocol, so every later call costs a file read.
"""

from __future__ import annotations

import numpy as np

from suhmo.metrics import landmark as lm

ROWS = ("frozen face", "real data")
VERSION = "scale-1"


def frozen_sample_fn(refs: np.ndarray, frames: int, seed: int) -> np.ndarray:
    """``[K, frames + 1, 68, 2]``: each reference pose held still (a sample_fn)."""
    refs = np.asarray(refs, np.float32)
    return np.repeat(refs[:, None], frames + 1, axis=1)


def scale_keys(names) -> tuple:
    """The keys with a scale row: the landmark distances, and the fidelity keys when asked for."""
    from suhmo.metrics import fidelity as fid

    return lm.FD_KEYS + (fid.KEYS if "fidelity" in names else ())


def scale_rows(opts, other_real: list, other_fps: float | None = None,
               names=("landmark",)) -> dict[str, dict[str, float]]:
    """``{"frozen face": {fd_*: v}, "real data": {fd_*: v}}`` under ``opts``' protocol.

    ``opts`` is the :class:`~suhmo.metrics.MetricOptions` the model is scored with (its
    ``sample_fn``/``sequences`` are ignored); ``other_real`` the real clips of the ``real data``
    row, normalised like ``opts.real``.
    """
    from suhmo.data.windows import WindowSet
    from suhmo.metrics import MetricContext, compute
    from suhmo.metrics.reference import cached_arrays, cache_key

    names = ["landmark"] + (["fidelity"] if "fidelity" in names else [])
    keys = scale_keys(names)
    frames = max(int(opts.frames), lm.SCORED_FRAMES)
    length = max(frames, int(opts.horizon) if "fidelity" in names else 0) + 1
    base = opts.replace(sample_fn=None, sequences=None, frames=frames)
    ctx = MetricContext(base)
    if base.reference is None:
        base = base.replace(reference=ctx.landmark())
    # the real-data row: windows of the other persons, a seeded sample when there are many
    windows = WindowSet(other_real, length, base.stride, base.max_windows)
    key = cache_key(f"{ctx.fingerprint()}+{windows.fingerprint()}@{other_fps or base.real_fps}",
                    base.preprocessing, VERSION,
                    {"frames": frames, "samples": int(base.num_samples), "runs": int(base.runs),
                     "seed": int(base.seed), "stride": int(base.stride), "refs": _refs_digest(base.refs),
                     "max_windows": base.max_windows, "names": names, "length": length})

    def build() -> dict:
        frozen = compute(names, base.replace(sample_fn=frozen_sample_fn))
        if len(windows) < 2:
            real = {k: float("nan") for k in keys}
        else:
            real = compute(names, base.replace(sequences=windows,
                                               num_samples=min(int(base.num_samples), len(windows))))
        return {"keys": np.array(keys),
                "values": np.array([[row.get(k, np.nan) for k in keys] for row in (frozen, real)], np.float64)}

    arrays, _, _ = cached_arrays(key, build, cache_dir=base.cache_dir, prefix="scale")
    keys = [str(k) for k in arrays["keys"]]
    return {row: dict(zip(keys, map(float, arrays["values"][i]))) for i, row in enumerate(ROWS)}


def _refs_digest(refs) -> str:
    if refs is None:
        return "default"
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(refs, np.float32).tobytes()).hexdigest()[:16]


def scale_for_config(cfg) -> dict[str, dict[str, float]]:
    """The scale rows for the protocol a trainer with ``cfg`` evaluates with: its held-out
    persons as the reference, its training persons as ``real data``."""
    from suhmo.data.split import load_split
    from suhmo.metrics import options_from_config

    train_set, eval_set = load_split(cfg)
    return scale_rows(options_from_config(cfg, eval_set), train_set.clips, float(train_set.fps))


def verdict(values: dict[str, float], scale: dict[str, dict[str, float]]) -> list[str]:
    """The distances on which ``values`` are no better than a frozen face (plain words)."""
    frozen = scale.get("frozen face", {})
    return [k for k in lm.FD_KEYS
            if k in values and k in frozen and np.isfinite(values[k]) and values[k] >= frozen[k]]


def format_scale(values: dict[str, float] | None, scale: dict[str, dict[str, float]],
                 keys=lm.FD_KEYS, label: str = "model") -> list[str]:
    """Rows ``model`` (when ``values``), ``frozen face``, ``real data`` over the distance columns."""
    keys = [k for k in keys if k in scale.get("frozen face", {})]
    width = {k: max(12, len(k) + 1) for k in keys}
    lines = [f"{'':14s}" + "".join(f"{k:>{width[k]}s}" for k in keys)]
    rows = ([(label, values)] if values is not None else []) + [(r, scale[r]) for r in ROWS]
    for name, vals in rows:
        lines.append(f"{name:14s}" + "".join(
            f"{vals[k]:{width[k]}.4g}" if k in vals and vals[k] is not None and np.isfinite(vals[k])
            else f"{'-':>{width[k]}s}" for k in keys))
    return lines
