"""Typed, serialisable configuration of a SUHMo run.

Every knob of the trainer is a field of one of the dataclasses below; defaults follow the
paper (Sec. 4.1), except ``model.d_centred`` (on: the discriminators see the face about its
centroid, see ``suhmo.losses.sequence_features``) and ``model.vel_scale``/``acc_scale``. Field
names are addressed with dots (``optim.lr_g``, ``windows.family``) by ``--set key=value``, YAML files and the search spaces. Unknown keys are errors that
name the key and suggest the closest known one.

Presets (``suhmo/presets/NAME.yaml``): ``paper`` (the defaults), ``small`` (CPU-sized experiments), ``cpu`` (the recipe
for a 2-core CPU and ~30 minutes, experiments/README.md) and ``tiny`` (smoke runs and tests).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pydantic

from suhmo.config_errors import ConfigError, Field, base_hint as _base_hint, error_line, suggest
from suhmo import presets as _presets
from suhmo.registry import GENERATORS, SEQ_DISCRIMINATORS, SPACES, TAU_FAMILIES, Registry


# Every field's type, range and allowed values are declared on its annotation (``Annotated``) and
# checked by pydantic in ``Config.validate``; rules that relate several fields stay in ``validate``.
def _at_least(*, ge=None, gt=None, le=None, lt=None, note: str = "") -> Any:
    """Bounds of a number field; ``note`` ends its error message (``must be >= 1 (note)``)."""
    return pydantic.Field(ge=ge, gt=gt, le=le, lt=lt, description=note or None)


@dataclass(frozen=True)
class OneOf:
    """Allowed values of a text field: fixed ones, and the names in a registry (``suhmo.registry``),
    read when a config is validated: a variant registered there is a valid choice here."""

    values: tuple = ()
    registry: Optional[Registry] = None

    def __init__(self, *values: str, registry: Optional[Registry] = None):
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "registry", registry)

    def choices(self) -> tuple:
        return self.values + (self.registry.names() if self.registry is not None else ())


VAE_VARIANTS = ("actor", "hitdvae")  # generator variants trained as VAEs (suhmo.objectives), each with its section


@dataclass
class DataConfig:
    path: Optional[str] = None  # canonical landmark .npz; None = embedded synthetic data
    fps: Annotated[float, _at_least(ge=1)] = 25.0  # training frame rate; other rates are resampled
    obs_len: Annotated[int, _at_least(ge=1)] = 5  # observed (teacher-forced) frames, paper: "up to 5"
    random_obs: bool = True  # each iteration observes k ~ U{1..obs_len} frames ("up to 5"), so G
    # also learns the single-reference start it gets at test time; False = always obs_len
    seq_len: Annotated[int, _at_least(ge=2)] = 40  # generated frames per training window (1.6 s at 25 fps)
    normalize: Annotated[str, OneOf("bbox", "centred")] = "bbox"  # bbox (keeps head translation) | centred (suppresses it)
    bbox_scale: float = 1.1  # per-clip bounding box enlargement before mapping to [0, 1]
    pairing: Annotated[str, OneOf("random", "cooccurring")] = "random"  # random pairs (2n, 2n+1) | cooccurring (real pairs when the data has them)
    augment: bool = True  # random rescale, translation and flip (with index swap)
    aug_scale_low: Annotated[float, _at_least(gt=0)] = 0.6  # rescale factor range about the centre
    aug_scale_high: Annotated[float, _at_least(gt=0)] = 1.0
    aug_flip_p: Annotated[float, _at_least(ge=0, le=1)] = 0.5
    smooth_frames: Annotated[int, _at_least(ge=1)] = 1  # trailing moving average on REAL positions at load (1 = off); vel/acc are plain differences for real and fake alike
    test_fraction: Annotated[float, _at_least(gt=0, lt=1)] = 0.25  # share of persons held out for evaluation
    synth_clips: int = 48  # embedded synthetic data, used when path is None
    synth_seconds: float = 8.0
    synth_seed: int = 0
    synth_mix: Annotated[float, _at_least(ge=0, le=1)] = 0.0  # share of each batch's pairs drawn from the synthetic speakers beside data.path; 0 = off
    synth_mix_until: Optional[Annotated[int, _at_least(ge=0, note="or null")]] = None  # mix only for the first N iterations (synth_mix=1: pretraining); None = always


@dataclass
class WindowConfig:
    """Window-based multi-scale sequence discriminator sampling (eq. 5)."""

    family: Annotated[str, OneOf(registry=TAU_FAMILIES)] = "uniform"  # fixed | uniform | texp  (distribution of the window length tau)
    scales: list = field(default_factory=lambda: [5, 10, 20, 40])  # family=fixed
    tau_min: Annotated[int, _at_least(ge=2)] = 5  # uniform / texp support [tau_min, tau_max]
    tau_max: int = 40
    texp_mean: Annotated[float, _at_least(gt=0)] = 20.0  # texp: mean of the untruncated exponential
    starts: Annotated[str, OneOf("random", "grid")] = "random"  # random (paper) | grid (authors' code, stride grid_stride * tau)
    grid_stride: Annotated[float, _at_least(gt=0, le=1)] = 0.5
    num_windows: Annotated[int, _at_least(ge=1)] = 4  # windows drawn per D call (random starts)
    single_scale: bool = False  # ablation: one window of length seq_len


@dataclass
class ModelConfig:
    variant: Annotated[str, OneOf(registry=GENERATORS)] = "rnn"  # rnn | transformer (SUHMo, GAN) | actor | hitdvae (VAE baselines: sections actor, hitdvae)
    d_form: Annotated[str, OneOf("auto", registry=SEQ_DISCRIMINATORS)] = "auto"  # rnn | transformer | auto (= variant) for the sequence discriminators
    hidden_g: Annotated[int, _at_least(ge=1)] = 1024  # LSTM hidden size (rnn) / feed-forward width (transformer)
    mlp_g: Annotated[int, _at_least(ge=1)] = 1024  # deep-output MLP width
    emb_g: Annotated[int, _at_least(ge=1)] = 1024  # transformer token embedding
    blocks_g: Annotated[int, _at_least(ge=1)] = 1
    heads_g: Annotated[int, _at_least(ge=1)] = 1
    attn_window_g: Optional[Annotated[int, _at_least(gt=0, note="of frames or null (full causal attention)")]] = None  # transformer G: SA and BXA see the W most recent tokens; None = full (paper)
    hidden_d: Annotated[int, _at_least(ge=1)] = 1024  # sequence D LSTM hidden size (rnn) / feed-forward width (transformer)
    emb_d: Annotated[int, _at_least(ge=1)] = 128  # transformer D embedding
    blocks_d: Annotated[int, _at_least(ge=1)] = 1
    heads_d: Annotated[int, _at_least(ge=1)] = 1
    pos_enc_d: bool = True  # sinusoidal positional encoding in the Transformer sequence D (authors: on)
    frame_d_hidden: Annotated[int, _at_least(ge=1)] = 1024  # D_F width
    spectral_norm: bool = True
    pair_g: bool = True  # batch-pool / batch-cross attention in G (False = one-sample G)
    joint_d: bool = True  # joint pair discriminator D_s^j (False = one-sample D)
    delta: bool = False  # delta-based baseline: displacements from x_0
    vel_scale: float = 25.0  # x velocity in G inputs and D features (std ~ positions; losses.scale_features)
    acc_scale: float = 25.0  # x acceleration in the D features (same reason)
    d_centred: bool = True  # D sees each frame's shape about its centroid plus the centroid (410); False = the paper's raw 408
    g_centred: bool = False  # G reads positions about the centroid plus the centroid (models.step.step_input)
    space: Annotated[str, OneOf(registry=SPACES)] = "landmarks"  # landmarks (paper: G integrates 136 coordinates) | semantic (head pose + PCA shape, models.space) | pose3d (3-D head pose + expression on the reference's fixed shape, models.pose3d)
    semantic_k: Annotated[int, _at_least(ge=1, le=132, note="(68 x 2 coordinates less 4 pose values)")] = 16  # shape components of the semantic space (expression components of pose3d)
    noise_g: Annotated[int, _at_least(ge=0, note="(0 = no noise input)")] = 0  # Gaussian inputs per generator step (0 = the paper's deterministic G; diversity then comes only from the pair)
    noise_rho: Annotated[float, _at_least(ge=0.0, lt=1.0, note="(the noise's correlation from one frame to the next)")] = 0.0  # RNN G: noise inputs follow n_t = rho n_{t-1} + sqrt(1 - rho^2) e_t (0 = fresh per frame; models.rnn.RNNCore)
    revert: bool = False  # G's integrator pulls the state back towards frame 0 at a learned rate per dimension (models.step.Integrator); False = eq. 4
    d_semantic: bool = False  # the discriminators also see G's semantic state and its velocity per frame (2 x (4 + semantic_k) more features; needs model.space=semantic)
    d_anchor: bool = False  # the discriminators also see each frame's semantic state relative to the sequence's first frame, z_t - z_0 (4 + semantic_k more features; needs model.d_semantic): a face that turns into another face, every sample the same way, is otherwise seen by no D stream
    revert_lag: Annotated[int, _at_least(ge=1, note="(frames over which the reversion rates are fitted)")] = 10  # frames over which the initial reversion rates are fitted to the data (1 = one-step least squares, biased to 0 by momentum)


@dataclass
class ActorConfig:
    """ACTOR-style Transformer CVAE baseline (``model.variant=actor``, ``suhmo.models.actor``).
    Defaults = Petrovich et al. 2021 (8 layers, 4 heads, width 256, feed-forward 1024, latent 256,
    lambda_KL 1e-5); the small and tiny presets scale them down."""

    latent: Annotated[int, _at_least(ge=1)] = 256  # size of the one latent vector per sequence
    width: Annotated[int, _at_least(ge=1)] = 256  # token width of encoder and decoder
    ff: Annotated[int, _at_least(ge=1)] = 1024  # feed-forward width
    layers: Annotated[int, _at_least(ge=1)] = 8  # blocks in the encoder and in the decoder (each)
    heads: Annotated[int, _at_least(ge=1)] = 4
    beta: Annotated[float, _at_least(ge=0)] = 1e-5  # weight of the KL term (ACTOR's lambda_KL)
    w_vel: Annotated[float, _at_least(ge=0)] = 1.0  # weight of the velocity reconstruction term (0 = positions only)


@dataclass
class HitDVAEConfig:
    """HiT-DVAE-style dynamical VAE baseline (``model.variant=hitdvae``, ``suhmo.models.hitdvae``):
    one latent per frame, causal Transformer prior, anti-causal inference network. Defaults are of
    the scale of Bie et al. 2022's model (width 256, 4 heads; latent 32 per frame is our choice, the
    paper's exact sizes were not at hand); small and tiny presets scale them down. ``beta`` is in this project's loss units (reconstruction = mean squared 2-D point
    distance in the [0, 1] frame, KL per frame): 1e-5 equals the exact ELBO of a Gaussian
    likelihood with sigma ~ 0.02 per coordinate (beta = sigma^2 / 34)."""

    latent: Annotated[int, _at_least(ge=1)] = 32  # latent size per frame
    width: Annotated[int, _at_least(ge=1)] = 256  # token width of the causal (prior/generation) and inference Transformers
    ff: Annotated[int, _at_least(ge=1)] = 512  # feed-forward width
    layers: Annotated[int, _at_least(ge=1)] = 4  # blocks of each Transformer
    heads: Annotated[int, _at_least(ge=1)] = 4
    beta: Annotated[float, _at_least(ge=0)] = 1e-5  # weight of the per-step KL term (see the docstring)
    w_vel: Annotated[float, _at_least(ge=0)] = 1.0  # weight of the velocity reconstruction term (0 = positions only)


@dataclass
class LossConfig:
    adversarial: bool = True  # False = MLE baseline (L2 only)
    w_seq: Annotated[float, _at_least(ge=0)] = 1.0  # D_s
    w_joint: Annotated[float, _at_least(ge=0)] = 1.0  # D_s^j
    w_frame: Annotated[float, _at_least(ge=0)] = 1.0  # D_F
    lam: Annotated[float, _at_least(ge=0)] = 1e-2  # lambda of eq. 11
    lam_decay: Annotated[str, OneOf("none", "step", "linear", "exp")] = "none"  # none | step | linear | exp
    lam_decay_iters: int = 5000  # iterations over which (or at which, for step) lambda decays
    lam_final: Annotated[float, _at_least(ge=0)] = 1e-4
    reco: Annotated[float, _at_least(ge=0)] = 0.0  # optional L2 on the teacher-forced observed frames (authors: 1e-3)
    r1_frame: Annotated[float, _at_least(ge=0)] = 0.0  # gamma of a zero-centred gradient penalty on D_F at real frames; 0 = off
    w_motion: Annotated[float, _at_least(ge=0)] = 0.0  # motion-statistics matching (losses.motion_stats_loss): the batch's mean squared displacement per state dimension over 1 and motion_lag frames, generated vs real, in log ratio; 0 = off (paper)
    motion_lag: Annotated[int, _at_least(ge=2, note="(frames)")] = 5  # the slower of the two lags of loss.w_motion
    motion_lag_long: Annotated[int, _at_least(ge=0, note="(frames; 0 = off)")] = 0  # a third, long lag of loss.w_motion: matches how far the state wanders, not only how fast it moves
    motion_stat: Annotated[str, OneOf("msd", "window", "both")] = "msd"  # loss.w_motion's statistic per lag and state dimension: the batch's mean squared displacement (msd), the distribution over windows of each window's log of it (window: mean and sd; calm beside lively heads, as in real data), or the mean of the two terms (both)
    motion_dims: Annotated[str, OneOf("all", "pose")] = "all"  # loss.w_motion matches every state dimension, or only the head pose (x, y, log scale, roll; needs model.space=semantic)
    w_motion_mean: Annotated[float, _at_least(ge=0)] = 0.0  # the first moment beside loss.w_motion's second (losses.motion_bias_loss): the batch's mean displacement per state dimension over the generated span, generated vs real, in units of the real rms displacement; against a shared push of every sample one way (drift; with the cpu preset, 3 seeds: drift 0.18 -> 0.08 but speed 0.73 -> 0.59, so off there: experiments/README.md); 0 = off (paper)
    motion_mean_scale: Annotated[str, OneOf("batch", "state")] = "batch"  # loss.w_motion_mean's unit per dimension: the real windows' rms displacement over the span (batch) or the real states' sd over the batch's frames (state; stabler)
    w_motion_spread: Annotated[float, _at_least(ge=0)] = 0.0  # where the batch's states go from where they started (losses.motion_spread_loss): each state dimension's regression of the displacement on the start state and its spread over the batch, over the later half of the generated span, generated vs real; against heads that all slide to the mean pose (a turned head swinging frontal); 0 = off (paper)


@dataclass
class OptimConfig:
    lr_g: Annotated[float, _at_least(gt=0)] = 2e-5
    lr_d: Annotated[float, _at_least(gt=0)] = 1e-5
    beta1: Annotated[float, _at_least(ge=0, lt=1)] = 0.5
    beta2: Annotated[float, _at_least(ge=0, lt=1)] = 0.999
    lr_decay_iter: Optional[int] = 60000  # step decay point; None = never
    lr_decay_factor: float = 0.1
    grad_clip: Optional[Annotated[float, _at_least(gt=0, note="or null")]] = None  # max gradient norm; None = off (authors: 1.0)
    ema_g: Annotated[float, _at_least(ge=0, lt=1, note="(0 = no moving average)")] = 0.0  # decay of an exponential moving average of G's weights, used to evaluate and generate; 0 = off


@dataclass
class TrainConfig:
    iterations: Annotated[int, _at_least(ge=1)] = 80000
    batch_size: Annotated[int, _at_least(ge=2)] = 120  # sequences, i.e. batch_size / 2 pairs
    eval_every: Annotated[int, _at_least(ge=1)] = 1000
    seed: int = 0
    device: Annotated[str, OneOf("auto", "cpu", "cuda")] = "auto"  # auto | cpu | cuda
    threads: Optional[Annotated[int, _at_least(gt=0, note="of CPU threads or null (torch's default)")]] = None  # torch CPU threads; None = torch default
    select_metric: str = "fd_clip40"  # best.pt is chosen on this metric
    select_mode: Annotated[str, OneOf("min", "max")] = "min"
    progress: bool = True
    compile: bool = False  # torch.compile G's step modules and D_F (suhmo.speed); a failure -> eager, one warning
    amp: bool = False  # bf16 mixed precision (autocast; the recurrences' products too) where bf16 is native (suhmo.speed)


@dataclass
class EvalConfig:
    samples: Annotated[int, _at_least(ge=2)] = 256  # generated sequences per evaluation
    frames: Annotated[int, _at_least(ge=1)] = 40  # generated frames per sequence during training evaluation
    runs: Annotated[int, _at_least(ge=1)] = 1
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
        """Check every field against its declaration, then the rules between fields; raise
        ConfigError naming the field."""
        c = self
        for section in _sections():
            _check_declared(section, getattr(c, section))
        if c.model.variant in VAE_VARIANTS:
            used = {"model.space": (c.model.space, "landmarks"), "model.noise_g": (c.model.noise_g, 0),
                    "model.revert": (c.model.revert, False), "train.compile": (c.train.compile, False)}
            for key, (value, default) in used.items():
                if value != default:
                    raise ConfigError(f"{key}={value!r}: the SUHMo generators' option, not the "
                                      f"{c.model.variant} VAE's; leave it at {default!r}")
        if c.model.space != "landmarks" and c.model.g_centred:
            raise ConfigError("model.g_centred=true with model.space=semantic: the semantic state already "
                              "separates pose from shape; set model.g_centred=false")
        if c.model.noise_rho > 0 and (c.model.variant != "rnn" or c.model.noise_g == 0):
            raise ConfigError(f"model.noise_rho={c.model.noise_rho}: correlated noise inputs are an option of the "
                              f"RNN generator's noise (model.variant=rnn, model.noise_g > 0); here variant="
                              f"{c.model.variant!r}, noise_g={c.model.noise_g}")
        if c.loss.motion_lag_long and c.loss.motion_lag_long <= c.loss.motion_lag:
            raise ConfigError(f"loss.motion_lag_long={c.loss.motion_lag_long}: must be 0 (off) or longer than "
                              f"loss.motion_lag={c.loss.motion_lag}")
        if c.loss.motion_lag_long and c.loss.motion_lag_long >= c.data.seq_len:
            raise ConfigError(f"loss.motion_lag_long={c.loss.motion_lag_long}: must be shorter than the training "
                              f"windows (data.seq_len={c.data.seq_len})")
        if (c.loss.w_motion > 0 or c.loss.w_motion_mean > 0 or c.loss.w_motion_spread > 0) \
                and c.loss.motion_dims == "pose" \
                and c.model.space == "landmarks":
            raise ConfigError(f"loss.motion_dims=pose with model.space={c.model.space!r}: only a semantic or pose3d "
                              "state has head-pose dimensions; set model.space=semantic or loss.motion_dims=all")
        if c.model.d_anchor and not c.model.d_semantic:
            raise ConfigError("model.d_anchor=true with model.d_semantic=false: the discriminators see the state "
                              "relative to the first frame only beside the state itself; set model.d_semantic=true "
                              "(and model.space=semantic) or model.d_anchor=false")
        if c.model.d_semantic and c.model.space == "landmarks":
            raise ConfigError(f"model.d_semantic=true with model.space={c.model.space!r}: the discriminators can "
                              "only see a semantic state G has; set model.space=semantic or model.d_semantic=false")
        if not c.data.aug_scale_low <= c.data.aug_scale_high:
            raise ConfigError(
                f"data.aug_scale_low={c.data.aug_scale_low} and data.aug_scale_high="
                f"{c.data.aug_scale_high}: need 0 < low <= high"
            )
        if c.data.synth_mix > 0 and not c.data.path:
            raise ConfigError(f"data.synth_mix={c.data.synth_mix}: mixes the synthetic speakers into real data, "
                              "but data.path is not set (the data already is synthetic)")
        if c.train.batch_size % 2:
            raise ConfigError(f"train.batch_size={c.train.batch_size}: must be even (samples come in pairs)")
        w = c.windows
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
        if c.model.attn_window_g is not None and c.model.variant != "transformer":
            raise ConfigError(f"model.attn_window_g={c.model.attn_window_g}: only the transformer generator has "
                              f"attention (model.variant={c.model.variant}); set it to null")
        if c.model.g_centred and c.model.delta:
            raise ConfigError("model.g_centred=true with model.delta=true: the delta baseline reads displacements "
                              "from x_0, not positions; set one of them to false")
        for width, heads in (("model.emb_g", "model.heads_g"), ("model.emb_d", "model.heads_d"),
                             *((f"{v}.width", f"{v}.heads") for v in VAE_VARIANTS)):
            if c.get(width) % c.get(heads):
                raise ConfigError(f"{width}={c.get(width)} is not divisible by {heads}={c.get(heads)}")
        if c.loss.r1_frame > 0 and (not c.loss.adversarial or c.loss.w_frame <= 0):
            raise ConfigError(f"loss.r1_frame={c.loss.r1_frame}: penalises D_F, which is not trained here "
                              f"(loss.adversarial={c.loss.adversarial}, loss.w_frame={c.loss.w_frame}); set it to 0")
        return self


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


PRESETS = _presets.Presets(load_yaml)  # name -> values, from suhmo/presets/NAME.yaml


def all_keys() -> list[str]:
    return list(Config().flat())


def field_type(dotted: str) -> Any:
    section, name = _resolve(dotted, "config")
    return _field_types(type(getattr(Config(), section)))[name]


# ---------------------------------------------------------------------- helpers
def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    """Field name -> type (``Optional[int]``), without the declared checks; cached: evaluating the
    annotations builds their pydantic metadata."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


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
    """Convert ``value`` (YAML or ``--set`` text) to the field type ``ftype`` or raise ConfigError.

    Strict types (pydantic): no bool as a number, no 2.5 as an int; text is read as a YAML scalar
    first (or a float), ``none``/``null`` is None for an optional field, 7.0 is 7, a tuple a list."""
    base = base_type(ftype)
    if isinstance(value, str) and value.lower() in ("none", "null") and _base_hint(ftype) is not ftype:
        value = None  # an optional field
    elif isinstance(value, str) and base is not str:
        value = _parse_scalar(value)
    if base is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as text
        try:
            value = float(value)
        except ValueError:
            pass
    if base is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, tuple):
        value = list(value)
    try:
        return _adapter(ftype, finite=False).validate_python(value)
    except pydantic.ValidationError as e:
        raise ConfigError(error_line(e.errors()[0], field=Field(where, value, getattr(base, "__name__", str(base)))))\
            from None


def base_type(ftype: Any) -> Any:
    """``Optional[int]`` -> int, ``list[int]`` -> list: the type a value must have."""
    return typing.get_origin(_base_hint(ftype)) or _base_hint(ftype)


@functools.lru_cache(maxsize=None)
def _adapter(hint: Any, finite: bool = True) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(hint, config=pydantic.ConfigDict(strict=True, allow_inf_nan=not finite))


def _check_declared(section: str, obj: Any) -> None:
    """Validate each field of one section against its annotation: type, bounds, allowed values."""
    hints, plain = _declared_types(type(obj)), _field_types(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        key = f"{section}.{f.name}"
        one_of = next((m for m in getattr(_base_hint(hint), "__metadata__", ()) if isinstance(m, OneOf)), None)
        if one_of is not None:
            choices = one_of.choices()
            hint = Literal[choices] if hint is _base_hint(hint) else Optional[Literal[choices]]
        try:
            _adapter(hint).validate_python(value)
        except pydantic.ValidationError as e:
            tname = getattr(base_type(plain[f.name]), "__name__", plain[f.name])
            spec = Field(key, value, str(tname), hint, choices if one_of is not None else None)
            raise ConfigError(error_line(e.errors()[0], field=spec)) from None


@functools.lru_cache(maxsize=None)
def _declared_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)
