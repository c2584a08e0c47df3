"""Registry of metric protocols: the weight-free landmark stack (default) and the paper's
detector stack (FID, t-FID, FVD from local TorchScript files).

Organisation (after stylegan2-ada-pytorch ``metrics/``): a metric is a named protocol in
:data:`REGISTRY`; :class:`MetricOptions` carries everything a protocol needs (the generated
sequences or a ``sample_fn``, the real reference clips, frames, sample count, runs, the
evaluation seed, cache and detector folders, device). Real-data statistics are computed once
and cached under a hash of (dataset, preprocessing, detector, protocol)
(:mod:`suhmo.metrics.reference`). The same registry serves the trainer
(:func:`trainer_metrics`), ``suhmo evaluate`` and ``suhmo metrics``.

Protocols
    ``landmark``  fd_frame, fd_clip10, fd_clip20, fd_clip40, fd_motion, apd, drift,
                  motion_energy, motion_energy_err (:mod:`suhmo.metrics.landmark`)
    ``fid``       Inception FID of the rasterised scored frames (paper Table 1 "FID")
    ``tfid40``    Inception FID of the motion maps of the 40 scored frames ("t-FID_40")
    ``fvd10``, ``fvd20``, ``fvd40``  I3D FVD of 10/20/40-frame chunks (Table 2)
    aliases: ``paper`` = fid + tfid40 + fvd40; ``detector`` = all five detector metrics.

What is scored: the last 40 of ``frames`` (40 or 80) generated frames of each sequence
(paper Table 1; with a ``sample_fn``, a smaller ``frames`` is raised to 40). With a ``sample_fn``, every run r draws ``num_samples`` sequences with seed
``seed + r``; results are the mean over ``runs`` with ``<key>_std`` when runs > 1. Sequences
start from reference poses taken from the real windows (frame 0 of evenly spread windows),
each pose used by :data:`APD_GROUP` sequences so that APD has groups; when the landmark
stack is requested the generation runs to at least 80 frames for ``drift`` (the first
``frames`` of them are scored, which has the same distribution as generating ``frames``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from suhmo.data.windows import MAX_WINDOWS, WindowSet
from suhmo.metrics import fidelity as fid
from suhmo.metrics import landmark as lm
from suhmo.metrics.frechet import feature_stats, frechet_distance
from suhmo.utils import SuhmoError

APD_GROUP = 4  # sequences generated from each reference pose
DRIFT_FRAMES = 2 * lm.SCORED_FRAMES


@dataclass
class MetricOptions:
    """Everything a metric protocol needs (module docstring)."""

    sequences: Optional[np.ndarray] = None  # generated [N, F + 1, 68, 2], frame 0 = reference
    sample_fn: Optional[Callable[[np.ndarray, int, int], np.ndarray]] = None  # (refs, frames, seed)
    refs: Optional[np.ndarray] = None  # reference poses [K, 68, 2] for sample_fn (default: real windows)
    real: Optional[list] = None  # real clips [T_i, 68, 2], normalised like the generated data
    real_fps: Optional[float] = None
    preprocessing: dict = field(default_factory=dict)  # how ``real`` was prepared (cache key)
    frames: int = 40  # generated frames per sequence; the last 40 are scored
    num_samples: int = 256
    runs: int = 1
    seed: int = 1234
    stride: int = 5  # frames between the starts of consecutive real windows
    cache_dir: Optional[Path] = None
    detector_dir: Optional[Path] = None
    device: str = "cpu"
    motion_mode: str = "ema"  # t-FID motion maps: ema (paper) | ramp (authors' code)
    lines: bool = False  # rasterise contour lines instead of one pixel per landmark
    batch_size: int = 64
    reference: Optional[lm.LandmarkReference] = None  # pre-fitted landmark statistics
    max_windows: Optional[int] = MAX_WINDOWS  # real windows the statistics use (a seeded sample beyond)
    horizon: int = fid.HORIZON  # generated frames of the fidelity protocol

    def replace(self, **kw) -> "MetricOptions":
        return dataclasses.replace(self, **kw)


@dataclass
class Metric:
    name: str
    keys: tuple
    fn: Callable[[np.ndarray, "MetricContext"], dict]
    description: str
    detector: Optional[str] = None
    higher_is_better: tuple = ()  # keys where a larger value is better; every other key: lower

    def mode(self, key: str) -> str:
        """``"max"`` when a larger value of ``key`` is better, else ``"min"``."""
        return "max" if key in self.higher_is_better else "min"


# ---------------------------------------------------------------------------- context
class MetricContext:
    """Per-``compute`` cache of reference statistics and detectors."""

    def __init__(self, opts: MetricOptions):
        self.opts = opts
        self._lm: Optional[lm.LandmarkReference] = opts.reference
        self._det: dict = {}
        self._windows: Optional[WindowSet] = None
        self._fingerprint: Optional[str] = None
        self._fid: Optional[fid.FidelityReference] = None

    def real_windows(self) -> WindowSet:
        """The real windows of 41 frames the statistics are taken on: every one at ``stride``,
        or a seeded sample of ``max_windows`` of them; read lazily, chunk by chunk."""
        if self._windows is None:
            if self.opts.real is None:
                raise SuhmoError("metrics: no real reference data given (MetricOptions.real)")
            self._windows = WindowSet(self.opts.real, lm.SCORED_FRAMES + 1, self.opts.stride,
                                      self.opts.max_windows)
            if len(self._windows) < 2:
                raise SuhmoError(f"metrics: the real data holds {len(self._windows)} windows of "
                                 f"{lm.SCORED_FRAMES + 1} frames; need at least 2 (longer clips)")
        return self._windows

    def key(self, detector: str, protocol: dict) -> dict:
        from suhmo.metrics.reference import cache_key

        o = self.opts
        return cache_key(self.fingerprint(), o.preprocessing, detector,
                         dict(protocol, window=lm.SCORED_FRAMES + 1, stride=o.stride, max_windows=o.max_windows))

    def fingerprint(self) -> str:
        """The reference windows' content and frame rate (cache keys; a bounded read)."""
        if self._fingerprint is None:
            self._fingerprint = f"{self.real_windows().fingerprint()}@{self.opts.real_fps}"
        return self._fingerprint

    def landmark(self) -> lm.LandmarkReference:
        if self._lm is None:
            from suhmo.metrics.reference import cached_arrays

            arrays, _, _ = cached_arrays(
                self.key(lm.VERSION, {"stack": "landmark"}),
                lambda: lm.LandmarkReference.fit(self.real_windows()).to_arrays(),
                cache_dir=self.opts.cache_dir, prefix="landmark")
            self._lm = lm.LandmarkReference.from_arrays(arrays)
        return self._lm

    def fidelity(self) -> "fid.FidelityReference":
        """The real side of the fidelity protocol: windows of ``horizon + 1`` frames (at most
        the longest lag + 1 when the horizon is longer), cached on disk like the landmark stack's."""
        if self._fid is None:
            from suhmo.metrics.reference import cached_arrays

            o = self.opts
            length = min(int(o.horizon), max(fid.LAGS)) + 1
            windows = WindowSet(o.real, length, o.stride, o.max_windows)
            if len(windows) < 2:
                raise SuhmoError(f"metrics: fidelity needs real clips of at least {length} frames; the real data "
                                 f"holds {len(windows)} such window(s)")
            arrays, _, _ = cached_arrays(
                self.key(fid.VERSION, {"stack": "fidelity", "length": length}),
                lambda: fid.FidelityReference.fit(windows, self.landmark().basis).to_arrays(),
                cache_dir=o.cache_dir, prefix="fidelity")
            self._fid = fid.FidelityReference(arrays)
        return self._fid

    def detector(self, name: str):
        from suhmo.metrics.detectors import load_detector

        return load_detector(name, self.opts.detector_dir, self.opts.device)

    def detector_stats(self, metric: str, det: str, featurize: Callable[[np.ndarray], np.ndarray]):
        """(mu, sigma) of the real windows' features for ``metric`` (cached on disk)."""
        if metric not in self._det:
            from suhmo.metrics.detectors import detector_path, file_digest
            from suhmo.metrics.reference import cached_arrays

            o = self.opts
            digest = file_digest(detector_path(det, o.detector_dir))
            proto = {"metric": metric, "motion_mode": o.motion_mode, "lines": o.lines}

            def build() -> dict:
                mu, sigma = feature_stats(featurize(self.real_windows()[:]))
                return {"mu": mu, "sigma": sigma}

            arrays, _, _ = cached_arrays(self.key(f"{det}:{digest}", proto), build,
                                         cache_dir=o.cache_dir, prefix=metric)
            self._det[metric] = (arrays["mu"], arrays["sigma"])
        return self._det[metric]


# ------------------------------------------------------------------------ the protocols
def _landmark(seqs: np.ndarray, ctx: MetricContext) -> dict:
    f = ctx.opts.frames
    scored = seqs[:, :f + 1]
    return lm.landmark_metrics(scored, ctx.landmark(), drift_seqs=seqs)


def _fidelity(seqs: np.ndarray, ctx: MetricContext) -> dict:
    h = int(ctx.opts.horizon)
    if seqs.shape[1] < h + 1:
        raise SuhmoError(f"fidelity: sequences of {seqs.shape[1]} frames; the protocol scores {h} generated frames")
    return fid.fidelity_metrics(seqs[:, :h + 1], ctx.fidelity(), ctx.landmark().basis)


def scored_part(seqs: np.ndarray, frames: int) -> np.ndarray:
    return lm.scored_segment(seqs, frames)[:, 1:]  # [N, 40, 68, 2]


def fid_features(ctx: MetricContext, scored: np.ndarray) -> np.ndarray:
    from suhmo.metrics.detectors import inception_features
    from suhmo.metrics.raster import rasterize

    o = ctx.opts
    model = ctx.detector("inception")
    frames = scored.reshape(-1, 68, 2)
    out = [inception_features(model, rasterize(frames[lo:lo + o.batch_size], lines=o.lines),
                              batch_size=o.batch_size, device=o.device)
           for lo in range(0, len(frames), o.batch_size)]
    return np.concatenate(out)


def tfid_features(ctx: MetricContext, scored: np.ndarray) -> np.ndarray:
    from suhmo.metrics.detectors import inception_features
    from suhmo.metrics.raster import motion_maps

    o = ctx.opts
    model = ctx.detector("inception")
    out = []
    for lo in range(0, len(scored), o.batch_size):
        maps = motion_maps(scored[lo:lo + o.batch_size], o.motion_mode, lines=o.lines)
        out.append(inception_features(model, np.round(maps * 255).astype(np.uint8),
                                      batch_size=o.batch_size, device=o.device))
    return np.concatenate(out)


def fvd_features(ctx: MetricContext, scored: np.ndarray, length: int) -> np.ndarray:
    from suhmo.metrics.detectors import i3d_features
    from suhmo.metrics.raster import rasterize

    o = ctx.opts
    model = ctx.detector("i3d")
    chunks = scored.reshape(-1, length, 68, 2)
    bs = max(1, o.batch_size // 8)
    out = [i3d_features(model, rasterize(chunks[lo:lo + bs], lines=o.lines), batch_size=bs, device=o.device)
           for lo in range(0, len(chunks), bs)]
    return np.concatenate(out)


def _detector_metric(name: str, det: str, featurize: Callable[[MetricContext, np.ndarray], np.ndarray]):
    def fn(seqs: np.ndarray, ctx: MetricContext) -> dict:
        real = ctx.detector_stats(name, det, lambda w: featurize(ctx, scored_part(w, lm.SCORED_FRAMES)))
        gen = feature_stats(featurize(ctx, scored_part(seqs, ctx.opts.frames)))
        return {name: frechet_distance(*gen, *real)}

    return fn


REGISTRY: dict[str, Metric] = {
    "landmark": Metric("landmark", lm.KEYS, _landmark,
                       "weight-free landmark stack: Fréchet distances (frame, clip 10/20/40, motion), "
                       "APD, drift, motion energy", higher_is_better=("apd",)),
    "fidelity": Metric("fidelity", fid.KEYS, _fidelity,
                       "over a long horizon (200 frames): pose memory, speed percentiles, identity drift, "
                       "frozen and broken windows, against real data"),
    "fid": Metric("fid", ("fid",), _detector_metric("fid", "inception", fid_features),
                  "Inception FID of the rasterised scored frames", "inception"),
    "tfid40": Metric("tfid40", ("tfid40",), _detector_metric("tfid40", "inception", tfid_features),
                     "Inception FID of motion maps of the 40 scored frames (t-FID)", "inception"),
}
for _L in lm.CLIP_LENGTHS:
    REGISTRY[f"fvd{_L}"] = Metric(
        f"fvd{_L}", (f"fvd{_L}",),
        _detector_metric(f"fvd{_L}", "i3d", lambda ctx, s, L=_L: fvd_features(ctx, s, L)),
        f"I3D FVD of {_L}-frame chunks of the scored frames", "i3d")
ALIASES = {"paper": ("fid", "tfid40", "fvd40"), "detector": ("fid", "tfid40", "fvd10", "fvd20", "fvd40")}


def list_protocols() -> list[str]:
    return list(REGISTRY)


def metric_modes(protocols=None) -> dict[str, str]:
    """``{key: "min" | "max"}``: the direction that is better for each key the protocols
    report (default: every registered protocol), as the registry declares it."""
    return {k: m.mode(k) for n in (protocols or REGISTRY) for m in [REGISTRY[n]] for k in m.keys}


def expand_names(names) -> list[str]:
    """Metric names (a list or a comma-separated string) with aliases expanded, validated."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    out: list[str] = []
    for n in (str(x).strip() for x in names):
        if not n:
            continue
        for m in ALIASES.get(n, (n,)):
            if m not in REGISTRY:
                from suhmo.config import suggest

                raise SuhmoError(f"unknown metric {m!r}{suggest(m, list(REGISTRY) + list(ALIASES))}; "
                                 f"known: {', '.join(list(REGISTRY) + list(ALIASES))}")
            if m not in out:
                out.append(m)
    if not out:
        raise SuhmoError("no metric named; choose from " + ", ".join(list(REGISTRY) + list(ALIASES)))
    return out


# --------------------------------------------------------------------------- compute
def default_refs(windows: np.ndarray, num_samples: int, seed: int, group: int = APD_GROUP) -> np.ndarray:
    """``num_samples`` reference poses: frame 0 of evenly spread real windows, each used by
    ``group`` consecutive sequences (random offset by ``seed``)."""
    n_poses = max(1, -(-num_samples // group))
    offset = np.random.default_rng(seed).integers(len(windows))
    idx = (offset + np.linspace(0, len(windows), n_poses, endpoint=False).astype(int)) % len(windows)
    first = windows.first_frames(idx) if isinstance(windows, WindowSet) else windows[idx, 0]
    return np.repeat(first, group, axis=0)[:num_samples]


def _generate(opts: MetricOptions, ctx: MetricContext, run: int, gen_frames: int) -> np.ndarray:
    seed = int(opts.seed) + run
    if opts.sample_fn is not None:
        refs = opts.refs if opts.refs is not None else default_refs(ctx.real_windows(), opts.num_samples, seed)
        seqs = np.asarray(opts.sample_fn(np.asarray(refs, np.float32), gen_frames, seed))
        if seqs.ndim != 4 or seqs.shape[0] != len(refs) or seqs.shape[1] != gen_frames + 1:
            raise SuhmoError(f"sample_fn returned shape {seqs.shape}; expected "
                             f"[{len(refs)}, {gen_frames + 1}, 68, 2]")
        return seqs
    seqs = opts.sequences if isinstance(opts.sequences, WindowSet) else np.asarray(opts.sequences)
    n = min(opts.num_samples, len(seqs))
    idx = np.sort(np.random.default_rng(seed).choice(len(seqs), n, replace=False))
    return seqs[idx]


def protocol_string(names: list[str], opts: MetricOptions) -> str:
    return (f"{'+'.join(names)}/f{opts.frames}/n{opts.num_samples}/r{opts.runs}/s{opts.seed}"
            + (f"/{opts.motion_mode}" if any(n.startswith("tfid") for n in names) else "")
            + ("/lines" if opts.lines else ""))


def compute_report(names, opts: MetricOptions) -> dict:
    """Run the protocols ``names`` -> ``{"protocol", "metrics", "options", "results", "per_run",
    "seconds"}`` (``results`` = :func:`compute`'s dict)."""
    names = expand_names(names)
    if opts.sample_fn is None and opts.sequences is None:
        raise SuhmoError("metrics: give generated sequences or a sample_fn")
    if int(opts.frames) < lm.SCORED_FRAMES:
        if opts.sample_fn is None:
            raise SuhmoError(f"frames={opts.frames}: {lm.SCORED_FRAMES} generated frames are scored; "
                             f"give sequences of at least {lm.SCORED_FRAMES + 1} frames")
        # the protocol scores 40 frames: shorter requests (tiny training configs) generate 40
        opts = opts.replace(frames=lm.SCORED_FRAMES)
    if opts.runs < 1 or opts.num_samples < 2:
        raise SuhmoError(f"runs={opts.runs}, samples={opts.num_samples}: need runs >= 1 and samples >= 2")
    if opts.sequences is not None and opts.sample_fn is None:
        t = (opts.sequences.shape if isinstance(opts.sequences, WindowSet)
             else np.asarray(opts.sequences).shape)[1] - 1
        if t < opts.frames:
            raise SuhmoError(f"the sequences hold {t} generated frames, fewer than frames={opts.frames}")
    ctx = MetricContext(opts)
    gen_frames = int(opts.frames)
    if "landmark" in names and opts.sample_fn is not None:
        gen_frames = max(gen_frames, DRIFT_FRAMES)
    if "fidelity" in names and opts.sample_fn is not None:
        gen_frames = max(gen_frames, int(opts.horizon))
    t0 = time.perf_counter()
    per_run = []
    for run in range(int(opts.runs)):
        seqs = _generate(opts, ctx, run, gen_frames)
        vals: dict[str, float] = {}
        for n in names:
            vals.update({k: float(v) for k, v in REGISTRY[n].fn(seqs, ctx).items()})
        per_run.append(vals)
    results: dict[str, float] = {}
    for k in per_run[0]:
        v = np.array([r[k] for r in per_run], np.float64)
        results[k] = float(np.mean(v))
        if len(v) > 1:
            results[f"{k}_std"] = float(np.std(v, ddof=1))
    return {
        "protocol": protocol_string(names, opts), "metrics": names, "results": results,
        "per_run": per_run, "seconds": round(time.perf_counter() - t0, 3),
        "options": {"frames": opts.frames, "samples": opts.num_samples, "runs": opts.runs,
                    "seed": opts.seed, "stride": opts.stride, "motion_mode": opts.motion_mode,
                    "lines": opts.lines, "preprocessing": opts.preprocessing},
    }


def compute(names, opts: MetricOptions) -> dict[str, float]:
    """Mean (and ``_std`` over runs) of every key of the protocols ``names``."""
    return compute_report(names, opts)["results"]


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line (the file is created when missing)."""
    from suhmo.utils import append_line, make_dirs

    path = Path(path)
    make_dirs(path.parent)
    append_line(path, json.dumps(record, sort_keys=True, default=_json_default))


def _json_default(o: Any):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# ---------------------------------------------------------------------- trainer hook
def preprocessing_of(cfg) -> dict:
    """The part of the config that shapes the real data (part of the reference cache key)."""
    d = cfg.data
    return {"normalize": d.normalize, "bbox_scale": d.bbox_scale, "fps": d.fps,
            "smooth_frames": d.smooth_frames}


def options_from_config(cfg, eval_set, **kw) -> MetricOptions:
    e = cfg.eval
    base = dict(real=eval_set.clips, real_fps=float(eval_set.fps), preprocessing=preprocessing_of(cfg),
                frames=int(e.frames), num_samples=int(e.samples), runs=int(e.runs), seed=int(e.seed))
    base.update(kw)
    return MetricOptions(**base)


# training losses and discriminator scores the Trainer adds to every evaluation's metrics
TRAINER_LOG_PREFIXES = ("loss_", "d_real_", "d_fake_")


def selectable_metrics(cfg) -> list[str]:
    """Names ``train.select_metric`` may take with the default metric stack: the keys of the
    protocols in ``eval.metrics`` (and their ``_std`` over ``eval.runs``) plus ``lam``."""
    keys = [k for n in expand_names(cfg.eval.metrics) for k in REGISTRY[n].keys]
    return keys + [f"{k}_std" for k in keys] + ["lam"]


def check_select_metric(cfg) -> None:
    """SuhmoError unless ``train.select_metric`` is a metric the Trainer reports (else best.pt
    would silently never be written)."""
    from suhmo.config import suggest

    m = cfg.train.select_metric
    known = selectable_metrics(cfg)
    if m in known or (isinstance(m, str) and m.startswith(TRAINER_LOG_PREFIXES)):
        return
    raise SuhmoError(f"train.select_metric={m!r}: not a metric of eval.metrics={list(cfg.eval.metrics)}"
                     f"{suggest(str(m), known)}; known: {', '.join(known[:len(known) // 2])}, loss_g, loss_d")


def trainer_metrics(cfg, eval_set) -> Callable[[Callable, int], dict]:
    """``metrics_fn(sample_fn, step) -> dict`` for the Trainer: the protocols of
    ``cfg.eval.metrics`` against the eval set's cached reference statistics.

    The reference statistics are loaded (or built and cached) here, once, so that every
    evaluation only pays for generation and the features of the generated sequences.
    """
    names = expand_names(cfg.eval.metrics)
    opts = options_from_config(cfg, eval_set)
    ctx = MetricContext(opts)
    if "landmark" in names:
        opts = opts.replace(reference=ctx.landmark())
    refs = default_refs(ctx.real_windows(), opts.num_samples, opts.seed)
    opts = opts.replace(refs=refs)

    def metrics_fn(sample_fn, step: int) -> dict:
        return compute(names, opts.replace(sample_fn=sample_fn))

    return metrics_fn
