"""SUHMo losses (Sec. 3.4): hinge D losses (eq. 12), G adversarial losses (eq. 8-10), the
lambda-weighted L2 supervision (eq. 11) with its schedule, and the optional reconstruction term.

Sequences handed to the losses are full position sequences, observed + generated frames,
``[B, O+S, 68, 2]`` (the fake one is ``cat(obs, out.future)``). The discriminators see their
``sequence_features``: ``motion_features`` ([pos|vel|acc]) with velocity and acceleration
multiplied by ``model.vel_scale`` and ``model.acc_scale`` (``scale_features``), the positions
taken about the frame's centroid and the centroid appended (``model.d_centred``, default;
410 values per frame, else the paper's 408), T = O+S-2 frames, the same for real and fake;
the sequence Ds score the
windows of ``plan`` (the same plan for real and fake, see ``suhmo.models.windows``), and D_F
scores the frames that involve generated positions (the last S feature frames). The scoring is
the discriminator's (``Discriminator.forward``); the losses here are functions of its scores and
read the ``loss`` section of the config; the features read the ``model`` section.

Supervision (eq. 11): L2 on [pos|vel|acc] of the S future frames, as the authors' code does:
squared Euclidean distance per 2-D point (positions, velocities and accelerations alike),
averaged over points, frames and batch. The velocity and acceleration terms tie the
supervision to the motion, not only to where the face ends up.
Reconstruction (``loss.reco``, not in the paper; authors 1e-3): the same point-wise squared
distance on the teacher-forced predictions of the observed frames 1..O-1 (positions; with
teacher forcing a position error there equals the velocity error).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from suhmo.config import ConfigError, LossConfig
from suhmo.data import motion_features
from suhmo.geometry import centroid_t
from suhmo.models import kernels
from suhmo.models.kernels import MotionL2, SequenceFeatures
from suhmo.models.layers import POSE_DIM


def hinge_d(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Hinge discriminator loss, eq. 12: ``E[max(0, 1 + D(fake))] + E[max(0, 1 - D(real))]``."""
    return F.relu(1.0 + fake_scores).mean() + F.relu(1.0 - real_scores).mean()


def lambda_at(loss_cfg: LossConfig, step: int) -> float:
    """lambda of eq. 11 at iteration ``step``: none (constant ``lam``), step (``lam_final`` from
    ``lam_decay_iters`` on), linear or exp (geometric) from ``lam`` to ``lam_final`` over
    ``lam_decay_iters`` iterations, constant afterwards."""
    c = loss_cfg
    lam0, lam1 = float(c.lam), float(c.lam_final)
    frac = min(max(step, 0) / max(c.lam_decay_iters, 1), 1.0)
    if c.lam_decay == "none":
        return lam0
    if c.lam_decay == "step":
        return lam0 if step < c.lam_decay_iters else lam1
    if c.lam_decay == "linear":
        return lam0 + (lam1 - lam0) * frac
    if c.lam_decay == "exp":
        if lam0 <= 0 or lam1 <= 0:
            raise ConfigError(f"loss.lam_decay=exp needs loss.lam and loss.lam_final > 0, got {lam0} and {lam1}")
        return lam0 * math.exp(math.log(lam1 / lam0) * frac)
    raise ConfigError(f"loss.lam_decay={c.lam_decay!r}: choose one of none, step, linear, exp")


def scale_features(f: Tensor, vel_scale: float, acc_scale: float) -> Tensor:
    """``[..., 68, 6]`` ``[pos | vel | acc]`` -> ``[pos | vel_scale * vel | acc_scale * acc]``.

    Per-frame velocities and accelerations are ~25x smaller than the positions' spread, so a
    discriminator's first layer (spectrally normalised, sigma = 1) would barely see motion.
    Measured over all frames (std of all coordinates, ``load_dataset``, bbox normalisation):

        data                      pos     vel      acc
        synthetic (48 clips)      0.211   0.0074   0.0065
        dev set (23 clips, real)  0.211   0.0107   0.0109
        (centred normalisation)   0.16    0.003-0.005 (vel and acc)

    The defaults ``vel_scale = acc_scale = 25`` put both at 0.16-0.27, the order of the
    positions' 0.21. Applied to the inputs of every discriminator (and, for velocities, of G);
    never to the L2 supervision of eq. 11, which stays in position units.
    """
    scale = f.new_tensor([1.0, 1.0, vel_scale, vel_scale, acc_scale, acc_scale])
    return f * scale


def sequence_features(seq: Tensor, m, motion: Tensor | None = None, space=None, z: Tensor | None = None) -> Tensor:
    """``[B, T, 68, 2]`` positions -> ``[B, T-2, F]`` discriminator features (F = ``feature_dim(m)``)
    as the model section ``m`` (``cfg.model``) asks for them.

    With ``model.d_centred`` (default), per frame ``[pos - centroid | vel_scale * vel |
    acc_scale * acc]`` (68 x 6, ``scale_features``) followed by ``centroid - 0.5`` (2): F = 410,
    an invertible re-parametrisation of the paper's [pos | vel | acc] (Sec. 3.5), the same
    information, better conditioned. Without it, the paper's 408 values (positions as they
    are). Measured (``benchmarks/d_probe.py``): with absolute positions an MLP D_F does not learn, in 300 Adam steps, to tell real clips from
    copies whose shape is warped by 30 % of the face radius (hinge loss stays at 2.0, chance),
    because the head's translation across clips dwarfs the shape differences; with centred
    positions it does (loss 0.2). Velocities and accelerations keep the head's translation.
    ``motion``: ``motion_features(seq)`` when the caller has it already.

    With ``model.d_semantic`` (``space`` = G's space; unused without it) the features of each frame end with G's semantic state ``z_t``
    (``space.encode``: pose and K shape coefficients, in the space's units) and ``vel_scale *
    (z_t - z_{t-1})`` (of order one, like the scaled landmark velocities): the head's pose and
    its expression, which the landmarks mix (an expression moves a few landmarks by a few
    percent of the face radius, a head turn all of them), as separate inputs. ``z``:
    ``space.encode(seq)`` when the caller has it (the training step encodes each sequence once
    for these features and the motion statistics).

    With ``model.d_anchor`` (needs ``model.d_semantic``) each frame's features end with
    ``z_t - z_0``, its state relative to the sequence's first frame, the reference G started
    from: without it no discriminator sees a frame beside the reference (D_F one frame, D_s and
    D_s^j windows of about 14 frames), so a face that slowly turns into another plausible face,
    every sample the same way, is invisible to all three (experiments/README.md, "Every head
    moves alike; the push no discriminator sees").
    """
    if m.d_semantic and z is None:
        z = _semantic_parts(seq, m, space, None, z_only=True)
    if m.d_centred and motion is None and seq.dim() == 4 and seq.shape[-2:] == (68, 2) and kernels.fast_enabled():
        # one buffer written in place, the backward written out (kernels.SequenceFeatures)
        f = SequenceFeatures.apply(seq, z if m.d_semantic else None, float(m.vel_scale),
                                   float(m.acc_scale))
        return torch.cat([f, _anchored(z)], -1) if m.d_anchor else f
    if m.d_centred:
        # one [68, 6] concatenation of [pos - centroid | vel_scale * vel | acc_scale * acc]
        # instead of three full-size copies forward and backward (benchmarks/train_step.py --phases)
        if motion is None:
            vel = seq[:, 1:] - seq[:, :-1]
            pos, vel, acc = seq[:, 2:], vel[:, 1:], vel[:, 1:] - vel[:, :-1]
        else:
            pos, vel, acc = motion[..., :2], motion[..., 2:4], motion[..., 4:]
        centroid = centroid_t(pos)  # [B, T-2, 2]
        f = torch.cat([pos - centroid.unsqueeze(-2), vel * m.vel_scale, acc * m.acc_scale], -1)
        parts = [f.reshape(f.shape[0], f.shape[1], -1), centroid - 0.5]
    else:
        motion = motion_features(seq) if motion is None else motion
        f = scale_features(motion, m.vel_scale, m.acc_scale)  # [B, T-2, 68, 6]
        parts = [f.reshape(f.shape[0], f.shape[1], -1)]
    parts += _semantic_parts(seq, m, space, z)
    if m.d_anchor:
        parts.append(_anchored(z))
    return torch.cat(parts, -1) if len(parts) > 1 else parts[0]  # the frame's features in one concatenation


def _anchored(z: Tensor) -> Tensor:
    """``model.d_anchor``: each feature frame's semantic state relative to the sequence's first
    frame (the reference G started from), ``z_t - z_0`` ``[B, T-2, 4 + K]``."""
    return z[:, 2:] - z[:, :1]


def _semantic_parts(seq: Tensor, m, space, z: Tensor | None = None, z_only: bool = False):
    """With ``model.d_semantic``, ``[z_t, vel_scale * (z_t - z_{t-1})]`` (each ``[B, T-2, 4 + K]``), else ``[]``;
    ``z_only``: ``z`` itself (``space.encode(seq)`` when not given)."""
    if not m.d_semantic:
        return []
    if z is None:
        if space is None:
            raise ValueError("model.d_semantic: sequence_features needs G's semantic space (space=G.space)")
        z = space.encode(seq)  # [B, T, 4 + K]
    if z_only:
        return z
    return [z[:, 2:], m.vel_scale * (z[:, 2:] - z[:, 1:-1])]


def stream_weights(loss_cfg: LossConfig) -> dict[str, float]:
    """The weight of each discriminator stream that takes part (weight > 0): ``seq`` (D_s,
    ``loss.w_seq``), ``joint`` (D_s^j, ``loss.w_joint``), ``frame`` (D_F, ``loss.w_frame``)."""
    w = {"seq": loss_cfg.w_seq, "joint": loss_cfg.w_joint, "frame": loss_cfg.w_frame}
    return {name: float(wt) for name, wt in w.items() if wt > 0}


def discriminator_loss(scores: dict[str, Tensor], n_real: int, loss_cfg: LossConfig, zero: Tensor,
                       r1: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum over D_s, D_s^j and D_F of the hinge losses (eq. 12), plus ``loss.r1_frame / 2``
    times the R1 penalty ``r1`` (``frame_gradient_penalty``) when given.

    ``scores``: ``Discriminator.forward`` of the real rows followed by the fake ones, per stream
    (``n_real`` real rows; the joint stream has one row per pair); ``zero``: the sum's start (its
    type and device: those of the features)."""
    weights = stream_weights(loss_cfg)
    loss = zero
    logs: dict[str, float] = {}
    for name, s in scores.items():
        half = n_real // 2 if name == "joint" else n_real
        real_s, fake_s = s[:half], s[half:]
        term = hinge_d(real_s, fake_s)
        loss = loss + weights[name] * term
        logs[f"d_{name}"] = float(term.detach())
        logs[f"d_real_{name}"] = float(real_s.detach().mean())
        logs[f"d_fake_{name}"] = float(fake_s.detach().mean())
    if r1 is not None:
        loss = loss + 0.5 * float(loss_cfg.r1_frame) * r1
        logs["d_r1_frame"] = float(r1.detach())
    logs["d_loss"] = float(loss.detach())
    return loss, logs


def frame_gradient_penalty(D, real_feats: Tensor) -> Tensor:
    """R1 on D_F: mean over real frames of ``|grad_x D_F(x)|^2`` (``loss.r1_frame`` weighs it by
    gamma / 2). It flattens D_F around the real frames, so that G cannot climb D_F's score by
    moving far from them (measured: against a frozen, unpenalised D_F, G raises its score
    while the face shape degrades further)."""
    x = real_feats.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D.frame(x).sum(), x, create_graph=True)
    return grad.pow(2).sum(-1).mean()


def _point_sq(a: Tensor, b: Tensor | None) -> Tensor:
    """Mean over points of the squared 2-D distance; ``[..., 68, 2k]`` inputs (k quantities per
    point); ``b`` None: ``a`` is the difference already."""
    d = (a if b is None else a - b).reshape(-1)
    return torch.dot(d, d) / (d.numel() // 2)  # the sum of squares over the 2-D points' count, one operation


def _motion_states(fake_seq: Tensor, real_seq: Tensor, n_future: int, space, pose_only: bool,
                   fake_z: Tensor | None, real_z: Tensor | None) -> tuple[Tensor, Tensor, int]:
    """The states of the last ``n + 1`` frames (``n`` generated ones and the one before them) of
    the fake and the (detached) real windows, and ``n``: G's semantic state (``space.encode``;
    ``fake_z``/``real_z`` when the caller has them) or the 136 landmark coordinates."""
    n = min(int(n_future), fake_seq.shape[1] - 1)

    def state(x: Tensor, z: Tensor | None) -> Tensor:
        if z is not None:
            z = z[:, -(n + 1):]
        else:
            x = x[:, -(n + 1):]
            z = space.encode(x) if space is not None else x.flatten(-2)
        return z[..., :int(getattr(space, "pose_dim", POSE_DIM))] if pose_only else z
    return state(fake_seq, fake_z), state(real_seq.detach(), real_z).detach(), n


def motion_stats_loss(fake_seq: Tensor, real_seq: Tensor, n_future: int, lag: int, space=None,
                      pose_only: bool = False, fake_z: Tensor | None = None, real_z: Tensor | None = None,
                      lag_long: int = 0, stat: str = "msd") -> Tensor:
    """Motion-statistics matching (``loss.w_motion``): for lags 1 and ``lag``, the batch's mean
    squared displacement ``m_d = E[(z_{t+L} - z_t)^2]`` of every state dimension ``d`` over the
    generated frames, matched to the real windows' in log ratio, ``mean_d (log m_fake - log
    m_real)^2``.

    ``stat`` (``loss.motion_stat``): ``msd`` is that batch mean; ``window`` matches instead the
    distribution over windows of each window's log mean squared displacement, by its mean (the
    *typical* window's speed) and its standard deviation (how much windows differ: calm heads
    beside lively ones), ``(mean_f - mean_r)^2 + (sd_f - sd_r)^2`` per dimension; ``both``
    averages the two statistics' terms. Real windows differ widely and the batch mean does not
    ask G to: measured on the cpu preset with ``loss.w_motion_mean=1`` (seed 0;
    experiments/README.md, "Every head moves alike; the push no discriminator sees"), the
    generated windows' head speeds spread over a third of the real ones' log range (10th-90th
    percentile 0.05-0.16 against 0.05-0.46 for x on the held-out persons), the fast tail that
    carries half of the real motion was missing, and the median was 0.6x real.

    The state is G's semantic state (``space.encode``) when it has one, else the 136 landmark
    coordinates. Statistics of the whole batch, not of each sample against its own real
    continuation (that is the L2 term, which pulls towards the mean and slows the head): G may
    move each sample as it likes so long as the batch moves as much as real heads do, at the
    frame rate (lag 1, where detector jitter lives) and over ``lag`` frames (the head's own
    motion). It is feature matching (Salimans et al., 2016) on fixed motion features, against
    the GAN's measured tendency to drop the fast half of real motion (experiments/README.md).
    ``pose_only`` (``loss.motion_dims=pose``): only the semantic state's 4 pose dimensions, where
    the deficit is (the shape coefficients move nearly as fast as real ones without it).
    ``fake_z``, ``real_z``: ``space.encode`` of the whole sequences when the caller has them (the
    state is per frame: their last frames are the encodings of the last frames).
    ``lag_long`` (``loss.motion_lag_long``, 0 = off): a third lag, long (tens of frames): the
    batch's spread over it, i.e. how far the state wanders, is matched too, so that speed at
    short lags is not bought with a state that walks off (the drift metric)."""
    zf, zr, n = _motion_states(fake_seq, real_seq, n_future, space, pose_only, fake_z, real_z)
    terms = []
    for L in sorted({1, min(int(lag), n)} | ({min(int(lag_long), n)} if lag_long else set())):
        sf = (zf[:, L:] - zf[:, :-L]).pow(2).mean(1)  # [B, D]: each window's mean squared displacement
        sr = (zr[:, L:] - zr[:, :-L]).pow(2).mean(1)
        if stat in ("msd", "both"):
            terms.append((torch.log(sf.mean(0) + 1e-12) - torch.log(sr.mean(0) + 1e-12)).pow(2).mean())
        if stat in ("window", "both"):
            lf, lr = torch.log(sf + 1e-12), torch.log(sr + 1e-12)  # [B, D]: each window's log
            terms.append(((lf.mean(0) - lr.mean(0)).pow(2) + (_sd(lf) - _sd(lr)).pow(2)).mean())
    return torch.stack(terms).mean()


def _sd(x: Tensor) -> Tensor:
    """Standard deviation over dim 0 (biased; a small floor keeps its gradient finite)."""
    return (x - x.mean(0)).pow(2).mean(0).add(1e-8).sqrt()


def motion_bias_loss(fake_seq: Tensor, real_seq: Tensor, n_future: int, space=None, pose_only: bool = False,
                     fake_z: Tensor | None = None, real_z: Tensor | None = None, scale: str = "batch") -> Tensor:
    """The first moment beside :func:`motion_stats_loss`'s second (``loss.w_motion_mean``): the
    batch's mean displacement of every state dimension over the whole generated span,
    ``mu_d = E[z_n - z_0]``, matched to the real windows', in units of the real windows' rms
    displacement over the same span: ``mean_d (mu_fake - mu_real)^2 / E_real[(z_n - z_0)^2]``.

    Every sample may move its own way; what costs is the batch moving one way together. That is
    the drift measured on the held-out persons (experiments/README.md, "The drift is a shared
    push"): the samples of a model, from 256 different reference poses, moved their shape
    coefficients on average 0.3-0.4 real standard deviations the same way by frame 80 (real
    windows: 0.07-0.09, sampling noise), so every face left the real shapes in the same
    direction while the spread between samples stayed real. Feature matching's own moment
    (Salimans et al., 2016), on the same fixed motion features.
    ``scale`` (``loss.motion_mean_scale``): the unit of each dimension, ``batch`` the real windows'
    rms displacement over the span (one heavy-tailed value per window: noisy on a batch of 32),
    ``state`` the real states' sd over all windows and frames of the batch (the unit of
    ``targets.py --probe``'s shared push; stable). Measured with the cpu preset (3 seeds each): the
    drift halves and the shapes become as plausible as real ones, but the head slows to about 0.6
    of real speed with either unit, and the push is not removed on the training batches; so the
    preset leaves it off (experiments/README.md)."""
    zf, zr, _ = _motion_states(fake_seq, real_seq, n_future, space, pose_only, fake_z, real_z)
    df, dr = zf[:, -1] - zf[:, 0], zr[:, -1] - zr[:, 0]
    unit = dr.pow(2).mean(0) if scale == "batch" else zr.reshape(-1, zr.shape[-1]).var(0)
    return ((df.mean(0) - dr.mean(0)).pow(2) / (unit + 1e-12)).mean()


def motion_spread_loss(fake_seq: Tensor, real_seq: Tensor, n_future: int, space=None, pose_only: bool = False,
                       fake_z: Tensor | None = None, real_z: Tensor | None = None) -> Tensor:
    """Where the batch's states go relative to where they started (``loss.w_motion_spread``).

    A generator can move every head towards the population's mean pose: the spread of the poses
    over sequences started from real references shrinks (real heads keep it), a turned head swings
    frontal, and the pose's lag correlations fall below real ones (measurements:
    experiments/README.md, "Heads as fast as people and keeping their pose"). The motion
    statistics cannot see it (they are displacements of each window, whatever its start).

    Per state dimension ``d``, over the later half of the generated span (frames ``t >= n/2``),
    with ``z_0`` the last observed state (the same for the fake and the real window):
    the **regression of the displacement on the start**, ``b_d = E[(z_0 - mean z_0)(z_t - z_0)] /
    var(z_0)`` over the batch (-1: every sample ends at the batch's mean; real heads: a fraction
    of that), and the **spread** of the states over the batch, ``s_d = mean_t var_b(z_t)``. The
    term is ``mean_d [(b_fake - b_real)^2 + (log s_fake - log s_real)^2] / 2``: statistics of the
    batch, like :func:`motion_stats_loss`, so each sample still moves its own way."""
    zf, zr, n = _motion_states(fake_seq, real_seq, n_future, space, pose_only, fake_z, real_z)
    z0 = zr[:, 0]
    c0 = z0 - z0.mean(0)
    v0 = c0.pow(2).mean(0) + 1e-8
    h = max(1, n // 2)

    def stats(z: Tensor) -> tuple[Tensor, Tensor]:
        late = z[:, h:]  # [B, H, D]
        slope = (c0.unsqueeze(1) * (late - z0.unsqueeze(1))).mean((0, 1)) / v0
        spread = (late - late.mean(0)).pow(2).mean((0, 1))
        return slope, spread

    bf, sf = stats(zf)
    br, sr = stats(zr)
    return 0.5 * ((bf - br).pow(2) + (torch.log(sf + 1e-12) - torch.log(sr + 1e-12)).pow(2)).mean()


def uses_motion_state(loss_cfg: LossConfig) -> bool:
    """Whether the G loss reads the states of the windows (``loss.w_motion``, ``loss.w_motion_mean``
    or ``loss.w_motion_spread``)."""
    return loss_cfg.w_motion > 0 or loss_cfg.w_motion_mean > 0 or loss_cfg.w_motion_spread > 0


def generator_loss(scores: dict[str, Tensor] | None, fake_seq: Tensor, real_seq: Tensor, out, loss_cfg: LossConfig,
                   lam: float, space=None, fake_z: Tensor | None = None,
                   real_z: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """G loss, eq. 11: adversarial terms (eq. 8-10) of D's ``scores`` of the fakes (weights
    ``loss.w_seq``, ``w_joint``, ``w_frame``; None or empty: the MLE baseline) + lam * L2
    (+ ``loss.reco`` * reconstruction, + the motion-statistics terms).
    ``fake_z``, ``real_z``: ``space.encode`` of the two sequences (the motion statistics')."""
    c = loss_cfg
    n_future = out.future.shape[1]
    loss = fake_seq.new_zeros(())
    logs: dict[str, float] = {}
    if scores:
        weights = stream_weights(c)
        for name, s in scores.items():
            adv = -s.mean()  # eq. 8 (joint), 9 (marginal), 10 (frame: mean over frames)
            loss = loss + weights[name] * adv
            logs[f"g_adv_{name}"] = float(adv.detach())
    # motion_features is linear: [pos|vel|acc] of fake minus real = [pos|vel|acc] of (fake - real),
    # over the last n feature frames (n + 2 positions): one difference, one set of features
    n = min(n_future, fake_seq.shape[1] - 2)
    if fake_seq.dim() == 4 and n > 0 and kernels.fast_enabled():  # the same, its backward written out (kernels.MotionL2)
        l2 = MotionL2.apply(fake_seq, real_seq.detach(), n)
    else:
        diff = motion_features(fake_seq[:, -(n + 2):] - real_seq[:, -(n + 2):].detach())
        l2 = _point_sq(diff, None)
    loss = loss + lam * l2
    logs["g_l2"] = float(l2.detach())
    logs["lam"] = float(lam)
    if c.w_motion > 0:
        ms = motion_stats_loss(fake_seq, real_seq, n_future, c.motion_lag, space,
                               pose_only=c.motion_dims == "pose", fake_z=fake_z, real_z=real_z,
                               lag_long=c.motion_lag_long, stat=c.motion_stat)
        loss = loss + float(c.w_motion) * ms
        logs["g_motion"] = float(ms.detach())
    if c.w_motion_mean > 0:
        mb = motion_bias_loss(fake_seq, real_seq, n_future, space, pose_only=c.motion_dims == "pose",
                              fake_z=fake_z, real_z=real_z, scale=c.motion_mean_scale)
        loss = loss + float(c.w_motion_mean) * mb
        logs["g_motion_mean"] = float(mb.detach())
    if c.w_motion_spread > 0:
        msp = motion_spread_loss(fake_seq, real_seq, n_future, space, pose_only=c.motion_dims == "pose",
                                 fake_z=fake_z, real_z=real_z)
        loss = loss + float(c.w_motion_spread) * msp
        logs["g_motion_spread"] = float(msp.detach())
    if c.reco > 0 and out.recon.shape[1] > 0:
        n_obs = out.recon.shape[1] + 1
        reco = _point_sq(out.recon, real_seq[:, 1:n_obs].detach())
        loss = loss + c.reco * reco
        logs["g_reco"] = float(reco.detach())
    logs["g_loss"] = float(loss.detach())
    return loss, logs
