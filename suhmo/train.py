"""The SUHMo trainer: one readable loop, checkpoints, evaluation hooks.

Per iteration (paper Sec. 3, eq. 8-12):

1. data      a batch of pairs of real windows ``[B, obs_len + seq_len, 68, 2]``;
2. generate  G runs ONCE: teacher-forced on k observed frames (k ~ U{1..obs_len} with
             ``data.random_obs``, the paper's "up to 5"; else k = obs_len), then free for the
             remaining ``obs_len + seq_len - k`` frames (eq. 4);
3. D step    hinge losses of D_F, D_s and D_s^j (eq. 12) on real vs the fakes, detached;
4. G step    adversarial losses (eq. 8-10) on the SAME fakes, with gradients, plus
             lambda * L2 (eq. 11) with lambda from its schedule;
             (steps 2-4 are the ``gan`` objective of ``suhmo.objectives``; the MLE baseline
             skips step 3, and the VAE baselines replace 2-4 by one step on their ELBO)
5. schedule  Adam step decay of both learning rates; the moving average of G's weights
             (``optim.ema_g``, off by default) takes the new G;
6. evaluate / checkpoint every ``train.eval_every`` iterations and at the end.

The search layer plugs in through ``report(step, metrics, checkpoint_path)`` (called at each
evaluation, after ``last.pt`` is written) and ``should_stop()`` (polled every iteration).
A run in a folder that holds ``last.pt`` resumes from it: same step, same schedule, same
data stream, same RNG states, so an interrupted run ends with the same weights.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from suhmo.checkpoint import (copy_checkpoint, generator_state, load_checkpoint, rng_state, save_checkpoint,
                              set_rng_state)
from suhmo import speed
from suhmo.config import Config
from suhmo.data.split import SPLIT_SEED, split_persons
from suhmo.selection import Criterion
from suhmo.utils import (SuhmoError, append_line, atomic_write_text, make_dirs, pick_device, remove_stale_tmp,
                         seed_everything)


MetricsFn = Callable[[Callable, int], dict]


class Trainer:
    """Train SUHMo per ``cfg`` into ``out_dir`` (see the module docstring).

    ``train_set``/``eval_set``: LandmarkSets in the normalised [0, 1] frame; when
    ``train_set`` is None, ``load_dataset(cfg)`` is split by person
    (``data.test_fraction``); when only ``eval_set`` is None, the training set is used.
    ``metrics_fn(sample_fn, step) -> dict``: None = the metric stack's ``trainer_metrics``
    (or, without it, the motion statistics of :func:`motion_stats_metrics`).
    """

    def __init__(self, cfg: Config, out_dir: str | Path, *, train_set=None, eval_set=None,
                 metrics_fn: Optional[MetricsFn] = None,
                 report: Optional[Callable[[int, dict, Optional[Path]], None]] = None,
                 should_stop: Optional[Callable[[], bool]] = None, resume: bool = True):
        from suhmo.data import load_dataset
        from suhmo.data.loading import make_sampler
        from suhmo.models import WindowSampler, build_discriminator, build_generator
        from suhmo.objectives import build_objective, objective_class

        self.cfg = cfg.validate()
        check_training_memory(cfg)  # before any data or model is made
        self.out_dir = Path(out_dir)
        self.report, self.should_stop = report, should_stop
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(int(tc.threads))
        self.device = pick_device(tc.device)
        speed.prepare_device(self.device)
        seed_everything(tc.seed)

        if train_set is None:
            full = load_dataset(cfg)
            train_set, held_out = split_persons(full, cfg.data.test_fraction)
            eval_set = held_out if eval_set is None else eval_set
        self.train_set = train_set
        self.eval_set = eval_set if eval_set is not None else train_set

        uses_d = objective_class(cfg).uses_d  # a D for the GAN objective only
        self.G = build_generator(cfg)
        if not (resume and self.last_path.is_file()):  # a resumed run loads its space from the checkpoint
            fit_space(self.G, self.train_set, cfg)
        self.G = self.G.to(self.device)
        self.D = build_discriminator(cfg).to(self.device) if uses_d else None
        o = cfg.optim
        self.opt_g = _adam(self.G.parameters(), o.lr_g, o, self.device)
        self.opt_d = _adam(self.D.parameters(), o.lr_d, o, self.device) if self.D is not None else None
        # G_ema: the weights evaluation and generation use when optim.ema_g > 0 (else G itself)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False).eval() if o.ema_g > 0 else None
        self.sampler = make_sampler(self.train_set, cfg, seed=tc.seed)
        self.windows = WindowSampler(cfg.windows, cfg.data.seq_len)
        self.window_rng = torch.Generator().manual_seed(tc.seed + 1)  # window plans (eq. 5)

        self.step = 0  # completed iterations
        self.metrics: dict[str, float] = {}  # of the latest evaluation
        self.best: Optional[dict] = None  # {"metric", "mode", "value", "step", "ema"}
        self.saved_step: Optional[int] = None  # step of the checkpoint in last.pt
        self._loss_sums: dict[str, float] = {}
        self._loss_count = 0
        if metrics_fn is None:
            _check_select_metric(cfg)  # before any work: a metric never reported means no best.pt
            metrics_fn = default_metrics_fn(cfg, self.eval_set)
        self.metrics_fn = metrics_fn
        # leftovers of atomic writes that a crash interrupted (.last.pt.*.tmp ...)
        remove_stale_tmp(self.out_dir, ("last.pt", "best.pt", "config.yaml"))
        if resume and self.last_path.is_file():
            self._restore(load_checkpoint(self.last_path, map_location=self.device))
            self._repair_metrics_log()
        self.amp = speed.check_amp(self.device, tc.amp)  # train.amp as it runs here
        # seconds spent compiling (train.compile), None when off or failed (then one warning)
        self.compile_seconds = (speed.compile_for_training(self.G, self.D, self._compile_probe, self.device)
                                if tc.compile else None)
        # what one iteration does (GAN, MLE or VAE), with the nets, optimisers and window RNG it updates
        self.objective = build_objective(cfg, G=self.G, opt_g=self.opt_g, D=self.D, opt_d=self.opt_d,
                                         G_ema=self.G_ema, rng=self.window_rng, windows=self.windows,
                                         device=self.device, amp=self.amp)

    # ------------------------------------------------------------------ paths
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train up to ``train.iterations``; returns the metrics of the final evaluation."""
        cfg, G, D = self.cfg, self.G, self.D
        total, eval_every = cfg.train.iterations, cfg.train.eval_every
        make_dirs(self.out_dir)
        cfg.save(self.out_dir / "config.yaml")
        if self.step >= total:
            return dict(self.metrics)
        self._apply_lr(self.step)
        G.train()
        if D is not None:
            D.train()
        bar = _progress(cfg, total, self.step)
        try:
            while self.step < total:
                it = self.step  # 0-based index of this iteration
                # --- data
                batch = speed.to_device(self.sampler.next(), self.device)  # [B, O+S, 68, 2]
                logs = self.objective.step(batch, it)  # suhmo.objectives: GAN, MLE or VAE
                self._check_finite(it, logs)

                # --- schedule
                self.step += 1
                self._apply_lr(self.step)
                bar.update(1)
                if self.step % 10 == 0 or self.step == total:
                    bar.set_postfix({k: f"{self._loss_sums[k] / self._loss_count:.3g}"
                                     for k in ("loss_d", "loss_g") if k in self._loss_sums}, refresh=False)

                # --- evaluate/checkpoint
                if self.step % eval_every == 0 or self.step == total:
                    self._evaluate_and_checkpoint()
                if self.should_stop is not None and self.step < total and self.should_stop():
                    if self.saved_step != self.step:
                        self._write_checkpoint(self.metrics)
                    break
        finally:
            bar.close()
        return dict(self.metrics)

    # ------------------------------------------------------------------ pieces of the loop
    def _compile_probe(self) -> None:
        """One training iteration's forward and backward passes on a made-up batch, its window plan
        drawn from a generator of its own (``train.compile``: ``speed.compile_for_training``
        compiles on it, then restores the weights and the RNG states)."""
        from suhmo.models import WindowSampler, num_feature_frames
        from suhmo.objectives import d_step_loss, g_step_loss, needs_discriminator

        cfg, G, D, device = self.cfg, self.G, self.D, self.device
        B, O, S = cfg.train.batch_size, cfg.data.obs_len, cfg.data.seq_len
        gen = torch.Generator().manual_seed(0)
        real = (0.3 + 0.4 * torch.rand(B, O + S, 68, 2, generator=gen)).to(device)
        with speed.autocast(device, self.amp):
            out = G(real[:, :O], S)
            fake = torch.cat([real[:, :O], out.future], 1)
            plan = WindowSampler(cfg.windows, S).sample(num_feature_frames(O + S), gen)
            use_d = needs_discriminator(cfg) and D is not None
            space = getattr(G, "space", None)  # read by the D features with model.d_semantic
            if use_d:
                loss_d, _ = d_step_loss(D, real, fake.detach(), plan, cfg, space)
        if use_d:
            loss_d.backward()
        with speed.autocast(device, self.amp):
            loss_g, _ = g_step_loss(D, fake, real, out, plan, cfg, 0.01, space)
        loss_g.backward()

    @property
    def G_eval(self) -> torch.nn.Module:
        """The generator to evaluate and sample with: ``G_ema`` when kept, else ``G``."""
        return self.G_ema if self.G_ema is not None else self.G

    def _apply_lr(self, step: int) -> None:
        """Step decay: both learning rates times ``lr_decay_factor`` from ``lr_decay_iter`` on."""
        o = self.cfg.optim
        factor = o.lr_decay_factor if o.lr_decay_iter is not None and step >= o.lr_decay_iter else 1.0
        for opt, base in ((self.opt_g, o.lr_g), (self.opt_d, o.lr_d)):
            for group in (opt.param_groups if opt is not None else []):
                group["lr"] = base * factor

    def _check_finite(self, it: int, logs: dict[str, float]) -> None:
        """Stop with a SuhmoError on a NaN/inf loss or weight; accumulate the loss means."""
        bad = [k for k, v in logs.items() if not math.isfinite(v)]
        bad_weights = self._non_finite_weights(ema=False)  # the average of finite weights is finite
        if bad or bad_weights:
            keep = (f"; the last good checkpoint {self.last_path} (iteration {self.saved_step}) is kept"
                    if self.saved_step is not None else "; no checkpoint was written yet")
            if bad:
                first = sorted(bad, key=lambda k: (k not in ("loss_g", "loss_d"), k))[0]
                totals = ", ".join(f"{k}={logs[k]:.4g}" for k in ("loss_d", "loss_g") if k in logs)
                what = f"{first} is {logs[first]}" + (f" ({totals})" if totals else "")
            else:
                net, name = bad_weights[0]
                what = f"non-finite weights in {net} ({name})"
            raise SuhmoError(f"diverged at iteration {it + 1}: {what}{keep}; lower the learning rates "
                             f"or set optim.grad_clip")
        for k, v in logs.items():
            self._loss_sums[k] = self._loss_sums.get(k, 0.0) + v
        self._loss_count += 1

    def sample_fn(self, refs: np.ndarray, frames: int, seed: int) -> np.ndarray:
        """``refs [K, 68, 2] -> [K, frames + 1, 68, 2]`` with :attr:`G_eval` (``suhmo.generate.sample``)."""
        from suhmo.generate import sample

        with speed.eager():  # compiled step modules (train.compile) run eagerly here: other shapes, no grad
            return sample(self.G_eval, refs, frames, seed, init_vel=self.cfg.eval.init_vel, device=self.device)

    def evaluate(self) -> dict:
        """Metrics of the current G, plus the mean losses since the previous evaluation.

        Evaluation runs under its own seeds: the global RNG states are restored afterwards,
        so evaluating does not change the training stream.
        """
        saved = rng_state()
        self.G_eval.eval()
        try:
            metrics = {k: float(v) for k, v in self.metrics_fn(self.sample_fn, self.step).items()}
        finally:
            self.G.train()  # G_ema, when kept, stays in eval mode
            set_rng_state(saved)
        if self._loss_count:
            for k, v in self._loss_sums.items():
                metrics.setdefault(k, v / self._loss_count)
        elif self.metrics:  # no iteration since the last evaluation (e.g. right after resuming)
            metrics.update({k: v for k, v in self.metrics.items() if k.startswith("loss")})
        self._loss_sums, self._loss_count = {}, 0
        return metrics

    def _evaluate_and_checkpoint(self) -> None:
        self.metrics = self.evaluate()
        path = self._write_checkpoint(self.metrics)
        append_line(self.out_dir / "metrics.jsonl", json.dumps(_metrics_row(self.step, self.metrics)))
        if self.report is not None:
            self.report(self.step, dict(self.metrics), path)

    def _write_checkpoint(self, metrics: dict) -> Path:
        """``last.pt`` always; ``best.pt`` when ``train.select_metric`` improved."""
        self._check_weights_finite()
        tc = self.cfg.train
        if self.best is not None and (self.best["metric"], self.best["mode"]) != (tc.select_metric, tc.select_mode):
            self.best = None  # the selection rule changed on resume: start a new best
        value = metrics.get(tc.select_metric)
        improved = Criterion(tc.select_metric, tc.select_mode).better(
            value, None if self.best is None else self.best["value"])
        if improved:
            self.best = {"metric": tc.select_metric, "mode": tc.select_mode, "value": float(value),
                         "step": self.step, "ema": self.G_ema is not None}
        save_checkpoint(self.last_path, self._payload(metrics))
        self.saved_step = self.step
        if improved:
            copy_checkpoint(self.last_path, self.best_path)
        return self.last_path

    def _non_finite_weights(self, ema: bool = True) -> list[tuple[str, str]]:
        """``(network, parameter)`` of every non-finite weight tensor of G, D (and G_ema with ``ema``).
        Per-tensor isfinite, not a norm: huge but finite weights overflow a norm to inf."""
        nets = [("G", self.G)] + ([("D", self.D)] if self.D is not None else [])
        if ema and self.G_ema is not None:
            nets.append(("G_ema", self.G_ema))
        if _all_finite([p.detach() for _, m in nets for p in m.parameters()]):  # the usual case, in a few operations
            return []
        return [(net, n) for net, m in nets for n, p in m.named_parameters() if not bool(torch.isfinite(p).all())]

    def _check_weights_finite(self) -> None:
        bad = self._non_finite_weights()
        if bad:
            net, name = bad[0]
            raise SuhmoError(f"diverged at iteration {self.step}: non-finite weights in {net} ({name}); "
                             f"not overwriting {self.last_path}")

    def _payload(self, metrics: dict) -> dict:
        return {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "seed": self.cfg.train.seed,
            "G": self.G.state_dict(),
            "D": self.D.state_dict() if self.D is not None else {},
            **({"G_ema": self.G_ema.state_dict()} if self.G_ema is not None else {}),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else {},
            "rng": {**rng_state(), "windows": self.window_rng.get_state()},
            "sampler": self.sampler.state_dict(),
            "metrics": dict(metrics),
            "best": self.best,
            "torch_version": str(torch.__version__),
        }

    def _repair_metrics_log(self) -> None:
        """Make ``metrics.jsonl`` hold every evaluated step up to the checkpoint exactly once.

        A kill can fall between writing ``last.pt`` and appending its line (the line is
        missing), leave a torn last line, or come after an append whose checkpoint was not
        written (the resumed run evaluates that step again). Rows after the checkpoint's
        step and duplicates go; the checkpoint's own evaluation is re-added from its metrics.
        """
        path = self.out_dir / "metrics.jsonl"
        rows: dict[int, dict] = {}
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    row = json.loads(line)
                    step = int(row["step"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or foreign line
                if step <= self.step:
                    rows[step] = row
        tc = self.cfg.train
        evaluated = self.step > 0 and (self.step % tc.eval_every == 0 or self.step == tc.iterations)
        if evaluated and self.step not in rows and self.metrics:
            rows[self.step] = _metrics_row(self.step, self.metrics)
        text = "".join(json.dumps(rows[k]) + "\n" for k in sorted(rows))
        if not path.is_file() or path.read_text(errors="replace") != text:
            atomic_write_text(path, text)

    def _restore(self, ck: dict) -> None:
        where = self.last_path
        missing = [k for k in ("config", "G", "D", "opt_g", "opt_d", "rng", "sampler", "step") if k not in ck]
        if missing:
            raise SuhmoError(f"{where}: cannot resume: the checkpoint lacks {', '.join(missing)} "
                             f"(not written by suhmo train); use another --out folder")
        _check_same_data(ck["config"].get("data", {}), self.cfg.to_dict()["data"], where)
        saved = ck["config"].get("model", {})  # fields it lacked are filled in (checkpoint.migrate)
        current = self.cfg.to_dict()["model"]
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        if diff:
            fix = " ".join(f"--set model.{k}={_yaml_value(saved[k])}" for k in diff if k in saved)
            hint = f"resume with {fix}, or use another --out folder" if fix else "use another --out folder"
            raise SuhmoError(f"{where}: cannot resume: its model config differs in "
                             f"{', '.join(f'model.{k}' for k in diff)}; {hint}")
        try:
            self.G.load_state_dict(ck["G"])
            if self.D is not None:
                self.D.load_state_dict(ck["D"])
            if self.G_ema is not None:
                # a run that starts its moving average on resume starts it from the current G
                self.G_ema.load_state_dict(generator_state(ck))
            for opt, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
                if opt is None:
                    continue
                # the saved options include fused (None before it was set): set it BEFORE loading,
                # as load_state_dict places the step counters on the device only for fused groups
                state = dict(ck[key])
                state["param_groups"] = [{**g, "fused": _fused(self.device)} for g in state["param_groups"]]
                opt.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError) as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
            detail = next((ln for ln in lines if "size mismatch" in ln or "Missing key" in ln
                           or "Unexpected key" in ln), lines[0])
            raise SuhmoError(f"{where}: cannot resume: {detail[:200]}") from None
        rng = dict(ck["rng"])
        self.window_rng.set_state(rng.pop("windows"))
        set_rng_state(rng)
        self.sampler.load_state_dict(ck["sampler"])
        self.step = self.saved_step = int(ck["step"])
        self.metrics = {k: float(v) for k, v in ck.get("metrics", {}).items()}
        self.best = ck.get("best")
        if self.best is not None and bool(self.best.get("ema", False)) != (self.G_ema is not None):
            self.best = None  # best.pt was scored with the other generator (average vs raw): start anew


# ---------------------------------------------------------------------- helpers
def check_training_memory(cfg: Config) -> None:
    """SuhmoError, before anything is built, when the config's sizes need more memory than this
    machine allows: the models (``model.*`` widths), a training batch (``train.batch_size`` x
    ``data.obs_len + data.seq_len`` frames through G and D: per frame the features and, for the
    backward pass, a few activations of each network's width and of every D window) and one
    evaluation (``eval.samples`` x ``eval.frames`` generated frames)."""
    from suhmo.generate import check_generation_size
    from suhmo.models import check_model_memory
    from suhmo.utils import check_memory

    check_model_memory(cfg, "config", training=True)
    m, d = cfg.model, cfg.data
    frames = int(d.obs_len) + int(d.seq_len)
    width = max(int(m.hidden_g), int(m.emb_g), int(m.mlp_g), int(m.hidden_d), int(m.emb_d),
                int(m.frame_d_hidden))
    per_frame = 4 * (4 * 410 + 8 * width * (1 + int(cfg.windows.num_windows)))
    check_memory(int(cfg.train.batch_size) * frames * per_frame,
                 f"a batch of train.batch_size={cfg.train.batch_size} x {frames} frames "
                 f"(data.obs_len + data.seq_len) through networks {width} wide with "
                 f"windows.num_windows={cfg.windows.num_windows}",
                 "lower train.batch_size, data.seq_len, windows.num_windows or the widths")
    check_generation_size(cfg, 2 * int(cfg.eval.samples), int(cfg.eval.frames),
                          f"an evaluation of eval.samples={cfg.eval.samples} x eval.frames={cfg.eval.frames}")


def _all_finite(tensors: list) -> bool:
    """Whether every entry of ``tensors`` is finite, in a few operations for all of them: ``x * 0``
    is 0 for a finite ``x`` and NaN for inf or NaN, so the sums of the products are all finite
    exactly when every entry is (no overflow, unlike a norm of the weights themselves; per
    tensor ``isfinite(p).all()`` took 5 operations per tensor, ~1.3 ms per iteration at the cpu
    preset)."""
    tensors = [t for t in tensors if t.is_floating_point() or t.is_complex()]
    if not tensors:
        return True
    zeros = torch._foreach_mul(tensors, 0.0)
    return bool(torch.isfinite(torch.stack([z.sum() for z in zeros])).all())


def _fused(device: torch.device) -> Optional[bool]:
    """Adam's fused kernel where torch has one (CPU, CUDA): one pass per tensor instead of a dozen
    operations, 2.3x faster at the cpu preset's sizes (the same update within float rounding)."""
    return True if device.type in ("cpu", "cuda") else None


def _adam(params, lr: float, o, device: torch.device) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=(o.beta1, o.beta2), fused=_fused(device))


def _metrics_row(step: int, metrics: dict) -> dict:
    """One line of ``metrics.jsonl``: the step, the time, the metrics (non-finite as null)."""
    return {"step": int(step), "time": round(time.time(), 3),
            **{k: (v if math.isfinite(v) else None) for k, v in metrics.items()}}


# data fields that decide which frames a run trains and is scored on
DATA_IDENTITY = ("path", "synth_clips", "synth_seconds", "synth_seed", "fps", "normalize", "test_fraction")


def _check_same_data(saved: dict, current: dict, where) -> None:
    """A resumed run must train and select ``best.pt`` on the data it started with."""
    keys = [k for k in DATA_IDENTITY if not (saved.get("path") and k.startswith("synth_"))]  # unused with a file
    diff = [k for k in keys if k in saved and k in current and saved[k] != current[k]]
    if diff:
        k = diff[0]
        raise SuhmoError(f"{where}: cannot resume on other data: the run used data.{k}={saved[k]!r}, "
                         f"now data.{k}={current[k]!r}; resume without --data/data.* changes (the run's "
                         f"own data is used), or use another --out folder")


def fit_space(G: torch.nn.Module, train_set, cfg: Config, windows: int = 2048) -> None:
    """Fit what G takes from the data before training: ``G.space`` (when it has a ``fit``: the
    semantic space), its shape basis on every training frame and its flip, its state scaling on
    ``windows`` augmented training windows drawn by a sampler of its own (the training stream is
    unchanged); and the initial reversion rates of G's integrator (``model.revert``)."""
    from suhmo.data import BatchSampler
    from suhmo.data.windows import hflip

    fit = getattr(getattr(G, "space", None), "fit", None)
    integrate = getattr(getattr(G, "core", None), "integrate", None)
    if fit is None:
        if integrate is not None and integrate.revert:
            windows = BatchSampler(train_set, cfg, seed=cfg.train.seed + 7919, batch_size=256).next()
            integrate.fit_rates(G.space.encode(torch.as_tensor(windows)), lag=cfg.model.revert_lag)
        return
    rng = np.random.default_rng(cfg.train.seed)
    total = train_set.num_frames
    if total > 20000:  # a sample of frames, read by index (a packed set is never concatenated)
        frames = train_set.frames_at(rng.choice(total, 20000, replace=False)).astype(np.float32)
    else:
        frames = np.concatenate(list(train_set.clips)).astype(np.float32)
    sampler = BatchSampler(train_set, cfg, seed=cfg.train.seed + 7919, batch_size=2 * max(1, windows // 2))
    windows = sampler.next()
    encoded = fit(np.concatenate([frames, hflip(frames)]), windows, cfg.model.vel_scale)  # G.space.encode(windows)
    if integrate is not None:
        integrate.fit_rates(encoded, lag=cfg.model.revert_lag)


def _yaml_value(v) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _progress(cfg: Config, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not cfg.train.progress, desc="train",
                unit="it", dynamic_ncols=True, leave=True)


def _check_select_metric(cfg: Config) -> None:
    import importlib

    try:
        check = importlib.import_module("suhmo.metrics").check_select_metric
    except (ModuleNotFoundError, AttributeError):
        return
    check(cfg)


def default_metrics_fn(cfg: Config, eval_set) -> MetricsFn:
    """The metric stack's ``trainer_metrics`` when installed, else :func:`motion_stats_metrics`."""
    import importlib

    try:
        stack = importlib.import_module("suhmo.metrics")
    except ModuleNotFoundError as e:
        if e.name != "suhmo.metrics":  # a broken metric stack must fail loudly, not fall back
            raise
        stack = None
    trainer_metrics = getattr(stack, "trainer_metrics", None)
    if trainer_metrics is None:
        return motion_stats_metrics(cfg, eval_set)
    return trainer_metrics(cfg, eval_set)


def mean_speed(seqs: np.ndarray) -> float:
    """Mean landmark displacement per frame of ``[K, T, 68, 2]`` (normalised units / frame)."""
    return float(np.linalg.norm(np.diff(seqs, axis=1), axis=-1).mean())


def motion_stats_metrics(cfg: Config, eval_set) -> MetricsFn:
    """Simple motion statistics: the trainer's metrics where the metric stack is not installed.

    ``cfg.eval.samples`` real windows of ``eval.frames + 1`` frames are drawn (seeded by
    ``eval.seed``) from ``eval_set``; their first frames are the references. Keys:
    ``finite_frac`` (share of generated sequences without NaN/inf), ``mean_speed`` (mean
    landmark displacement per frame of the finite ones) and ``speed_ratio`` (that speed over
    the real windows' speed; 1 = real speed, 0 = frozen).
    """
    frames = int(cfg.eval.frames)
    rng = np.random.default_rng(cfg.eval.seed)
    lengths = np.array([len(c) for c in eval_set.clips])
    span = min(frames + 1, int(lengths.max()))
    ok = np.flatnonzero(lengths >= span)
    clip_idx = rng.choice(ok, size=cfg.eval.samples)
    starts = (rng.random(cfg.eval.samples) * (lengths[clip_idx] - span + 1)).astype(int)
    real = np.stack([eval_set.clips[c][s:s + span] for c, s in zip(clip_idx, starts)]).astype(np.float32)
    refs = real[:, 0]
    real_speed = mean_speed(real)

    def metrics_fn(sample_fn, step: int) -> dict:
        gen = sample_fn(refs, frames, cfg.eval.seed)
        finite = np.isfinite(gen).all(axis=(1, 2, 3))
        speed = mean_speed(gen[finite]) if finite.any() else float("nan")
        return {"finite_frac": float(finite.mean()), "mean_speed": speed,
                "speed_ratio": speed / real_speed if real_speed > 0 else float("nan")}

    return metrics_fn


def train(cfg: Config, out_dir: str | Path, **kwargs) -> dict:
    """``Trainer(cfg, out_dir, **kwargs).fit()``."""
    return Trainer(cfg, out_dir, **kwargs).fit()


__all__ = ["Trainer", "train", "default_metrics_fn", "motion_stats_metrics", "SPLIT_SEED"]
