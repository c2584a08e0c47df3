"""Typed, serialisable configuration of a SUHMo run.

Every knob of the trainer is a field of one of the dataclasses below; defaults follow the
paper (Sec. 4.1), except ``model.d_centred`` (on: the discriminators see the face about its
centroid, see ``suhmo.losses.sequence_features``) and ``model.vel_scale``/``acc_scale``. Field
names are addressed with dots (``optim.lr_g``, ``windows.family``) by ``--set key=value``, YAML files and the search spaces. Unknown keys are errors that
name the key and suggest the closest known one.

Presets: ``paper`` (the defaults), ``small`` (CPU-sized experiments), ``cpu`` (the recipe
for a 2-core CPU and ~30 minutes, experiments/README.md) and ``tiny`` (smoke runs and tests).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


class ConfigError(ValueError):
    """A configuration mistake; the message says which key and why."""


VAE_VARIANTS = ("actor", "hitdvae")  # generator variants trained as VAEs (suhmo.objectives), each with its section


@dataclass
class DataConfig:
    path: Optional[str] = None  # canonical landmark .npz; None = embedded synthetic data
    fps: float = 25.0  # training frame rate; other rates are resampled
    obs_len: int = 5  # observed (teacher-forced) frames, paper: "up to 5"
    random_obs: bool = True  # each iteration observes k ~ U{1..obs_len} frames ("up to 5"), so G
    # also learns the single-reference start it gets at test time; False = always obs_len
    seq_len: int = 40  # generated frames per training window (1.6 s at 25 fps)
    normalize: str = "bbox"  # bbox (keeps head translation) | centred (suppresses it)
    bbox_scale: float = 1.1  # per-clip bounding box enlargement before mapping to [0, 1]
    pairing: str = "random"  # random pairs (2n, 2n+1) | cooccurring (real pairs when the data has them)
    augment: bool = True  # random rescale, translation and flip (with index swap)
    aug_scale_low: float = 0.6  # rescale factor range about the centre
    aug_scale_high: float = 1.0
    aug_flip_p: float = 0.5
    smooth_frames: int = 1  # trailing moving average on REAL positions at load (1 = off); vel/acc are plain differences for real and fake alike
    test_fraction: float = 0.25  # share of persons held out for evaluation
    synth_clips: int = 48  # embedded synthetic data, used when path is None
    synth_seconds: float = 8.0
    synth_seed: int = 0
    synth_mix: float = 0.0  # share of each batch's pairs drawn from the synthetic speakers beside data.path; 0 = off
    synth_mix_until: Optional[int] = None  # mix only for the first N iterations (synth_mix=1: pretraining); None = always


@dataclass
class WindowConfig:
    """Window-based multi-scale sequence discriminator sampling (eq. 5)."""

    family: str = "uniform"  # fixed | uniform | texp  (distribution of the window length tau)
    scales: list = field(default_factory=lambda: [5, 10, 20, 40])  # family=fixed
    tau_min: int = 5  # uniform / texp support [tau_min, tau_max]
    tau_max: int = 40
    texp_mean: float = 20.0  # texp: mean of the untruncated exponential
    starts: str = "random"  # random (paper) | grid (authors' code, stride grid_stride * tau)
    grid_stride: float = 0.5
    num_windows: int = 4  # windows drawn per D call (random starts)
    single_scale: bool = False  # ablation: one window of length seq_len


@dataclass
class ModelConfig:
    variant: str = "rnn"  # rnn | transformer (SUHMo, GAN) | actor | hitdvae (VAE baselines: sections actor, hitdvae)
    d_form: str = "auto"  # rnn | transformer | auto (= variant) for the sequence discriminators
    hidden_g: int = 1024  # LSTM hidden size (rnn) / feed-forward width (transformer)
    mlp_g: int = 1024  # deep-output MLP width
    emb_g: int = 1024  # transformer token embedding
    blocks_g: int = 1
    heads_g: int = 1
    attn_window_g: Optional[int] = None  # transformer G: SA and BXA see the W most recent tokens; None = full (paper)
    hidden_d: int = 1024  # sequence D LSTM hidden size (rnn) / feed-forward width (transformer)
    emb_d: int = 128  # transformer D embedding
    blocks_d: int = 1
    heads_d: int = 1
    pos_enc_d: bool = True  # sinusoidal positional encoding in the Transformer sequence D (authors: on)
    frame_d_hidden: int = 1024  # D_F width
    spectral_norm: bool = True
    pair_g: bool = True  # batch-pool / batch-cross attention in G (False = one-sample G)
    joint_d: bool = True  # joint pair discriminator D_s^j (False = one-sample D)
    delta: bool = False  # delta-based baseline: displacements from x_0
    vel_scale: float = 25.0  # x velocity in G inputs and D features (std ~ positions; losses.scale_features)
    acc_scale: float = 25.0  # x acceleration in the D features (same reason)
    d_centred: bool = True  # D sees each frame's shape about its centroid plus the centroid (410); False = the paper's raw 408
    g_centred: bool = False  # G reads positions about the centroid plus the centroid (generators.step_input)
    space: str = "landmarks"  # landmarks (paper: G integrates 136 coordinates) | semantic (head pose + PCA shape, models.space)
    semantic_k: int = 16  # shape components of the semantic space
    noise_g: int = 0  # Gaussian inputs per generator step (0 = the paper's deterministic G; diversity then comes only from the pair)
    revert: bool = False  # G's integrator pulls the state back towards frame 0 at a learned rate per dimension (generators.Integrator); False = eq. 4
    revert_lag: int = 10  # frames over which the initial reversion rates are fitted to the data (1 = one-step least squares, biased to 0 by momentum)


@dataclass
class ActorConfig:
    """ACTOR-style Transformer CVAE baseline (``model.variant=actor``, ``suhmo.models.actor``).
    Defaults = Petrovich et al. 2021 (8 layers, 4 heads, width 256, feed-forward 1024, latent 256,
    lambda_KL 1e-5); the small and tiny presets scale them down."""

    latent: int = 256  # size of the one latent vector per sequence
    width: int = 256  # token width of encoder and decoder
    ff: int = 1024  # feed-forward width
    layers: int = 8  # blocks in the encoder and in the decoder (each)
    heads: int = 4
    beta: float = 1e-5  # weight of the KL term (ACTOR's lambda_KL)
    w_vel: float = 1.0  # weight of the velocity reconstruction term (0 = positions only)


@dataclass
class HitDVAEConfig:
    """HiT-DVAE-style dynamical VAE baseline (``model.variant=hitdvae``, ``suhmo.models.hitdvae``):
    one latent per frame, causal Transformer prior, anti-causal inference network. Defaults are of
    the scale of Bie et al. 2022's model (width 256, 4 heads; latent 32 per frame is our choice, the
    paper's exact sizes were not at hand); small and tiny presets scale them down. ``beta`` is in this project's loss units (reconstruction = mean squared 2-D point
    distance in the [0, 1] frame, KL per frame): 1e-5 equals the exact ELBO of a Gaussian
    likelihood with sigma ~ 0.02 per coordinate (beta = sigma^2 / 34)."""

    latent: int = 32  # latent size per frame
    width: int = 256  # token width of the causal (prior/generation) and inference Transformers
    ff: int = 512  # feed-forward width
    layers: int = 4  # blocks of each Transformer
    heads: int = 4
    beta: float = 1e-5  # weight of the per-step KL term (see the docstring)
    w_vel: float = 1.0  # weight of the velocity reconstruction term (0 = positions only)


@dataclass
class LossConfig:
    adversarial: bool = True  # False = MLE baseline (L2 only)
    w_seq: float = 1.0  # D_s
    w_joint: float = 1.0  # D_s^j
    w_frame: float = 1.0  # D_F
    lam: float = 1e-2  # lambda of eq. 11
    lam_decay: str = "none"  # none | step | linear | exp
    lam_decay_iters: int = 5000  # iterations over which (or at which, for step) lambda decays
    lam_final: float = 1e-4
    reco: float = 0.0  # optional L2 on the teacher-forced observed frames (authors: 1e-3)
    r1_frame: float = 0.0  # gamma of a zero-centred gradient penalty on D_F at real frames; 0 = off


@dataclass
class OptimConfig:
    lr_g: float = 2e-5
    lr_d: float = 1e-5
    beta1: float = 0.5
    beta2: float = 0.999
    lr_decay_iter: Optional[int] = 60000  # step decay point; None = never
    lr_decay_factor: float = 0.1
    grad_clip: Optional[float] = None  # max gradient norm; None = off (authors: 1.0)
    ema_g: float = 0.0  # decay of an exponential moving average of G's weights, used to evaluate and generate; 0 = off


@dataclass
class TrainConfig:
    iterations: int = 80000
    batch_size: int = 120  # sequences, i.e. batch_size / 2 pairs
    eval_every: int = 1000
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: Optional[int] = None  # torch CPU threads; None = torch default
    select_metric: str = "fd_clip40"  # best.pt is chosen on this metric
    select_mode: str = "min"
    progress: bool = True
    compile: bool = False  # torch.compile G's step modules and D_F (suhmo.speed); a failure -> eager, one warning
    amp: bool = False  # bf16 autocast of forward passes and losses where supported (suhmo.speed.autocast)


@dataclass
class EvalConfig:
    samples: int = 256  # generated sequences per evaluation
    frames: int = 40  # generated frames per sequence during training evaluation
    runs: int = 1
    seed: int = 1234  # evaluation is seeded on its own
    init_vel: float = 0.01  # random initial velocity range (authors' evaluation); 0 = still start
    metrics: list = field(default_factory=lambda: ["landmark"])


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    hitdvae: HitDVAEConfig = field(default_factory=HitDVAEConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``{"optim.lr_g": 2e-5, ...}``: every field by dotted name."""
        out = {}
        for sec, values in self.to_dict().items():
            for k, v in values.items():
                out[f"{sec}.{k}"] = v
        return out

    @classmethod
    def from_dict(cls, d: dict, *, where: str = "config") -> "Config":
        cfg = cls()
        cfg.update(d, where=where)
        return cfg

    def update(self, d: dict, *, where: str = "config") -> "Config":
        """Apply a nested or dotted dict of values, rejecting unknown keys."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
        for key, value in d.items():
            if "." in str(key):
                self.set(str(key), value, where=where)
            elif isinstance(value, dict) and key in _sections():
                for sub, v in value.items():
                    self.set(f"{key}.{sub}", v, where=where)
            else:
                self.set(str(key), value, where=where)
        return self

    def set(self, dotted: str, value: Any, *, where: str = "config") -> None:
        section, name = _resolve(dotted, where)
        sec_obj = getattr(self, section)
        ftype = _field_types(type(sec_obj))[name]
        setattr(sec_obj, name, coerce(value, ftype, f"{where}: {dotted}"))

    def get(self, dotted: str) -> Any:
        section, name = _resolve(dotted, "config")
        return getattr(getattr(self, section), name)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from suhmo.utils import atomic_write_text

        atomic_write_text(Path(path), self.to_yaml())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    # ------------------------------------------------------------------ derived values
    @property
    def d_form(self) -> str:
        return self.model.variant if self.model.d_form == "auto" else self.model.d_form

    def validate(self) -> "Config":
        """Check ranges and choices; raise ConfigError naming the field."""
        c = self
        _choice("data.normalize", c.data.normalize, ("bbox", "centred"))
        _choice("data.pairing", c.data.pairing, ("random", "cooccurring"))
        _choice("windows.family", c.windows.family, ("fixed", "uniform", "texp"))
        _choice("windows.starts", c.windows.starts, ("random", "grid"))
        _choice("model.variant", c.model.variant, ("rnn", "transformer") + VAE_VARIANTS)
        _choice("model.d_form", c.model.d_form, ("auto", "rnn", "transformer"))
        _choice("model.space", c.model.space, ("landmarks", "semantic"))
        if not 1 <= c.model.semantic_k <= 132:
            raise ConfigError(f"model.semantic_k={c.model.semantic_k}: must lie in 1..132 (68 x 2 coordinates "
                              "less 4 pose values)")
        if c.model.revert_lag < 1:
            raise ConfigError(f"model.revert_lag={c.model.revert_lag}: must be >= 1 (frames over which the "
                              "reversion rates are fitted)")
        if c.model.noise_g < 0:
            raise ConfigError(f"model.noise_g={c.model.noise_g}: must be >= 0 (0 = no noise input)")
        if c.model.variant in VAE_VARIANTS:
            used = {"model.space": (c.model.space, "landmarks"), "model.noise_g": (c.model.noise_g, 0),
                    "model.revert": (c.model.revert, False), "train.compile": (c.train.compile, False)}
            for key, (value, default) in used.items():
                if value != default:
                    raise ConfigError(f"{key}={value!r}: the SUHMo generators' option, not the "
                                      f"{c.model.variant} VAE's; leave it at {default!r}")
        if c.model.space == "semantic" and c.model.g_centred:
            raise ConfigError("model.g_centred=true with model.space=semantic: the semantic state already "
                              "separates pose from shape; set model.g_centred=false")
        _choice("loss.lam_decay", c.loss.lam_decay, ("none", "step", "linear", "exp"))
        _choice("train.device", c.train.device, ("auto", "cpu", "cuda"))
        _choice("train.select_mode", c.train.select_mode, ("min", "max"))
        _positive("data.obs_len", c.data.obs_len)
        _positive("data.seq_len", c.data.seq_len, minimum=2)
        _positive("data.fps", c.data.fps)
        _positive("data.smooth_frames", c.data.smooth_frames)
        if not 0 < c.data.aug_scale_low <= c.data.aug_scale_high:
            raise ConfigError(
                f"data.aug_scale_low={c.data.aug_scale_low} and data.aug_scale_high="
                f"{c.data.aug_scale_high}: need 0 < low <= high"
            )
        if not 0 <= c.data.aug_flip_p <= 1:
            raise ConfigError(f"data.aug_flip_p={c.data.aug_flip_p}: must lie in [0, 1]")
        if not 0 <= c.data.synth_mix <= 1:
            raise ConfigError(f"data.synth_mix={c.data.synth_mix}: must lie in [0, 1]")
        if c.data.synth_mix > 0 and not c.data.path:
            raise ConfigError(f"data.synth_mix={c.data.synth_mix}: mixes the synthetic speakers into real data, "
                              "but data.path is not set (the data already is synthetic)")
        if c.data.synth_mix_until is not None and c.data.synth_mix_until < 0:
            raise ConfigError(f"data.synth_mix_until={c.data.synth_mix_until}: must be >= 0 or null")
        if not 0 < c.data.test_fraction < 1:
            raise ConfigError(f"data.test_fraction={c.data.test_fraction}: must lie in (0, 1)")
        _positive("train.batch_size", c.train.batch_size, minimum=2)
        if c.train.batch_size % 2:
            raise ConfigError(f"train.batch_size={c.train.batch_size}: must be even (samples come in pairs)")
        _positive("train.iterations", c.train.iterations)
        if c.train.threads is not None and (isinstance(c.train.threads, bool) or int(c.train.threads) < 1):
            raise ConfigError(f"train.threads={c.train.threads}: must be a positive number of CPU threads "
                              "or null (torch's default)")
        _positive("train.eval_every", c.train.eval_every)
        _positive("eval.samples", c.eval.samples, minimum=2)
        _positive("eval.frames", c.eval.frames)
        _positive("eval.runs", c.eval.runs)
        w = c.windows
        _positive("windows.num_windows", w.num_windows)
        _positive("windows.tau_min", w.tau_min, minimum=2)
        if w.tau_max < w.tau_min:
            raise ConfigError(f"windows.tau_max={w.tau_max} < windows.tau_min={w.tau_min}")
        if w.family == "fixed":
            if not w.scales or any(int(s) < 2 for s in w.scales):
                raise ConfigError(f"windows.scales={w.scales}: need a non-empty list of lengths >= 2")
        span = c.data.seq_len
        too_long = [s for s in (w.scales if w.family == "fixed" else [w.tau_max]) if int(s) > span]
        if too_long:
            raise ConfigError(
                f"windows: length {too_long[0]} exceeds data.seq_len={span}; lower it or raise seq_len"
            )
        if w.texp_mean <= 0:
            raise ConfigError(f"windows.texp_mean={w.texp_mean}: must be > 0")
        if not 0 < w.grid_stride <= 1:
            raise ConfigError(f"windows.grid_stride={w.grid_stride}: must lie in (0, 1]")
        for name in ("hidden_g", "mlp_g", "emb_g", "blocks_g", "heads_g", "hidden_d", "emb_d",
                     "blocks_d", "heads_d", "frame_d_hidden"):
            _positive(f"model.{name}", getattr(c.model, name))
        if c.model.attn_window_g is not None and c.model.attn_window_g < 1:
            raise ConfigError(f"model.attn_window_g={c.model.attn_window_g}: must be a positive number of frames "
                              "or null (full causal attention)")
        if c.model.attn_window_g is not None and c.model.variant != "transformer":
            raise ConfigError(f"model.attn_window_g={c.model.attn_window_g}: only the transformer generator has "
                              f"attention (model.variant={c.model.variant}); set it to null")
        if c.model.g_centred and c.model.delta:
            raise ConfigError("model.g_centred=true with model.delta=true: the delta baseline reads displacements "
                              "from x_0, not positions; set one of them to false")
        if c.model.emb_g % c.model.heads_g:
            raise ConfigError(f"model.emb_g={c.model.emb_g} is not divisible by model.heads_g={c.model.heads_g}")
        if c.model.emb_d % c.model.heads_d:
            raise ConfigError(f"model.emb_d={c.model.emb_d} is not divisible by model.heads_d={c.model.heads_d}")
        for sec in VAE_VARIANTS:
            vc = getattr(c, sec)
            for name in ("latent", "width", "ff", "layers", "heads"):
                _positive(f"{sec}.{name}", getattr(vc, name))
            if vc.width % vc.heads:
                raise ConfigError(f"{sec}.width={vc.width} is not divisible by {sec}.heads={vc.heads}")
            for name in ("beta", "w_vel"):
                v = getattr(vc, name)
                if not (v >= 0 and math.isfinite(v)):
                    raise ConfigError(f"{sec}.{name}={v}: must be a finite number >= 0")
        for name in ("lr_g", "lr_d"):
            v = getattr(c.optim, name)
            if not (v > 0 and math.isfinite(v)):
                raise ConfigError(f"optim.{name}={v}: must be a positive number")
        if c.loss.r1_frame > 0 and (not c.loss.adversarial or c.loss.w_frame <= 0):
            raise ConfigError(f"loss.r1_frame={c.loss.r1_frame}: penalises D_F, which is not trained here "
                              f"(loss.adversarial={c.loss.adversarial}, loss.w_frame={c.loss.w_frame}); set it to 0")
        for name in ("beta1", "beta2"):
            v = getattr(c.optim, name)
            if not 0 <= v < 1:
                raise ConfigError(f"optim.{name}={v}: must lie in [0, 1)")
        if not 0.0 <= c.optim.ema_g < 1.0:
            raise ConfigError(f"optim.ema_g={c.optim.ema_g}: must be in [0, 1) (0 = no moving average)")
        if c.optim.grad_clip is not None and c.optim.grad_clip <= 0:
            raise ConfigError(f"optim.grad_clip={c.optim.grad_clip}: must be > 0 or null")
        for name in ("w_seq", "w_joint", "w_frame", "lam", "lam_final", "reco", "r1_frame"):
            v = getattr(c.loss, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ConfigError(f"loss.{name}={v}: must be a finite number >= 0")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "small": {
        "model.hidden_g": 128, "model.mlp_g": 128, "model.emb_g": 128, "model.hidden_d": 128,
        "model.emb_d": 64, "model.frame_d_hidden": 128,
        "train.batch_size": 32, "train.iterations": 3000, "train.eval_every": 250,
        "optim.lr_g": 1e-4, "optim.lr_d": 5e-5, "optim.lr_decay_iter": None,
        "eval.samples": 128,
        "actor.latent": 64, "actor.width": 128, "actor.ff": 256, "actor.layers": 2, "actor.heads": 4,
        "hitdvae.latent": 16, "hitdvae.width": 128, "hitdvae.ff": 256, "hitdvae.layers": 2, "hitdvae.heads": 4,
    },
    # The recipe for a 2-core CPU and about 30 minutes of training: the best trial of the
    # natural-motion search (experiments/README.md, "Natural head motion"; trial_162a9f8a):
    # 64-wide RNN in a 24-component semantic space with the reverting integrator and 16 noise
    # inputs, 64-frame windows, best.pt on the dynamics-aware score over 80 generated frames.
    # On real data that trial also mixed in the synthetic speakers: --set data.synth_mix=0.25.
    "cpu": {
        "model.space": "semantic", "model.semantic_k": 24, "model.revert": True, "model.noise_g": 16,
        "model.hidden_g": 64, "model.mlp_g": 64, "model.emb_g": 64, "model.hidden_d": 64,
        "model.emb_d": 32, "model.frame_d_hidden": 64,
        "data.seq_len": 64, "windows.family": "texp", "windows.texp_mean": 14.2,
        "loss.w_frame": 1.07, "loss.w_seq": 1.07, "loss.w_joint": 0.678, "loss.lam": 3e-4,
        "optim.grad_clip": 1.0, "optim.ema_g": 0.999,
        "optim.lr_g": 3.1e-4, "optim.lr_d": 3.15e-4, "optim.lr_decay_iter": None,
        "train.batch_size": 32, "train.iterations": 2000, "train.eval_every": 250,
        "train.select_metric": "fd_clip40_dyn",
        "eval.samples": 128, "eval.frames": 80,
    },
    "tiny": {
        "model.hidden_g": 32, "model.mlp_g": 32, "model.emb_g": 32, "model.hidden_d": 32,
        "model.emb_d": 16, "model.frame_d_hidden": 32,
        "data.synth_clips": 12, "data.synth_seconds": 4.0,
        "train.batch_size": 8, "train.iterations": 20, "train.eval_every": 10, "train.progress": False,
        "optim.lr_g": 1e-4, "optim.lr_d": 5e-5, "optim.lr_decay_iter": None,
        "eval.samples": 16,
        "actor.latent": 16, "actor.width": 32, "actor.ff": 64, "actor.layers": 1, "actor.heads": 2,
        "hitdvae.latent": 8, "hitdvae.width": 32, "hitdvae.ff": 64, "hitdvae.layers": 1, "hitdvae.heads": 2,
    },
}


def make_config(preset: str = "paper", *, yaml_path: str | Path | None = None,
                overrides: list[str] | dict | None = None, validate: bool = True) -> Config:
    """Preset, then YAML file, then ``key=value`` overrides; validated (unless ``validate=False``,
    for a caller that sets more fields, then validates the whole)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = Config().update(PRESETS[preset], where=f"preset {preset}")
    if yaml_path is not None:
        cfg.update(load_yaml(yaml_path), where=str(yaml_path))
    if overrides:
        if isinstance(overrides, dict):
            cfg.update(overrides, where="overrides")
        else:
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"--set {item!r}: expected key=value, e.g. optim.lr_g=1e-4")
                k, v = item.split("=", 1)
                cfg.set(k.strip(), _parse_scalar(v.strip()), where="--set")
    return cfg.validate() if validate else cfg


YAML_MAX_BYTES = 1 << 20


def load_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        what = "not a regular file (a folder, pipe or device)" if p.exists() else "config file not found"
        raise ConfigError(f"{p}: {what}")
    if p.stat().st_size > YAML_MAX_BYTES:
        raise ConfigError(f"{p}: {p.stat().st_size} bytes; a config or space file is at most "
                          f"{YAML_MAX_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(p.read_text())
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def all_keys() -> list[str]:
    return list(Config().flat())


def field_type(dotted: str) -> Any:
    section, name = _resolve(dotted, "config")
    return _field_types(type(getattr(Config(), section)))[name]


# ---------------------------------------------------------------------- helpers
def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if not close:
        # also try on the last dotted component
        tail = {c.split(".")[-1]: c for c in candidates}
        hit = difflib.get_close_matches(name.split(".")[-1], list(tail), n=1, cutoff=0.6)
        close = [tail[hit[0]]] if hit else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _resolve(dotted: str, where: str) -> tuple[str, str]:
    keys = all_keys()
    parts = dotted.split(".")
    if len(parts) == 1:
        # a bare field name is accepted when it is unique across sections
        owners = [k for k in keys if k.split(".")[1] == dotted]
        if len(owners) == 1:
            return tuple(owners[0].split("."))  # type: ignore[return-value]
    if len(parts) != 2 or dotted not in keys:
        raise ConfigError(f"{where}: unknown config key {dotted!r}{suggest(dotted, keys)}")
    return parts[0], parts[1]


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def coerce(value: Any, ftype: Any, where: str) -> Any:
    """Convert ``value`` to the field type ``ftype`` or raise ConfigError."""
    origin = typing.get_origin(ftype)
    args = typing.get_args(ftype)
    if origin is typing.Union and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        ftype = next(a for a in args if a is not type(None))
    if isinstance(value, str) and ftype is not str:
        value = _parse_scalar(value)
    try:
        if ftype is bool:
            if isinstance(value, bool):
                return value
            raise TypeError
        if ftype is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if ftype is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if ftype is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if ftype is list or typing.get_origin(ftype) is list:
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                raise TypeError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    tname = getattr(ftype, "__name__", str(ftype))
    raise ConfigError(f"{where}: expected {tname}, got {value!r}")


def _choice(name: str, value: Any, options: tuple) -> None:
    if value not in options:
        raise ConfigError(f"{name}={value!r}: choose one of {', '.join(map(str, options))}")


def _positive(name: str, value: Any, minimum: float = 1) -> None:
    if value is None or value < minimum:
        raise ConfigError(f"{name}={value}: must be >= {minimum}")
