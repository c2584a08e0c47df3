"""Training objectives: what one iteration of ``suhmo.train.Trainer`` does with a batch.

Chosen by config in one place, :func:`objective_name`:

- ``gan``  the SUHMo objective (Sec. 3.4): G runs once, a D step (hinge, eq. 12) and a G step
           (adversarial eq. 8-10 + lambda L2, eq. 11) on the same fakes;
- ``mle``  the MLE baseline (``loss.adversarial: false``): the same iteration without D;
- ``vae``  the VAE baselines (``model.variant`` in ``actor``, ``hitdvae``): one step on the
           negative ELBO, ``recon + beta * KL`` (``VAEGenerator.elbo``) of the real window;
           there is no discriminator.

An objective is built with what it trains, explicitly: G and its optimiser, D and its optimiser
(None for the MLE and VAE baselines: they have no discriminator), G's moving average, the
generator of its random draws (observed-frame counts, window plans), the device and autocast;
``step(batch, it) -> logs`` makes the update(s) of one iteration and returns the loss logs under
their metric names (``loss_g`` included). ``uses_d`` (a class attribute): whether the trainer
builds, optimises and checkpoints a D for it.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from suhmo import losses
from suhmo.config import VAE_VARIANTS


def _metric_names(logs: dict) -> dict:
    """Loss logs under metric names: ``g_l2`` -> ``loss_l2``, ``g_adv_seq`` -> ``loss_g_seq``,
    ``d_seq`` -> ``loss_d_seq``; D scores (``d_real_*``, ``d_fake_*``) and ``lam`` keep their
    names; the totals (``d_loss``, ``g_loss``) are dropped (the trainer adds loss_d / loss_g)."""
    out = {}
    for k, v in logs.items():
        if k in ("d_loss", "g_loss"):
            continue
        if k.startswith("g_adv_"):
            k = "loss_g_" + k[len("g_adv_"):]
        elif k.startswith("g_"):
            k = "loss_" + k[2:]
        elif k.startswith("d_") and not k.startswith(("d_real_", "d_fake_")):
            k = "loss_d_" + k[2:]
        out[k] = v
    return out


def needs_discriminator(cfg) -> bool:
    """False for the MLE baseline (``loss.adversarial: false``): no D step, G trained on L2 only."""
    return bool(cfg.loss.adversarial)


def optimiser_step(net: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor,
                   grad_clip: Optional[float]) -> None:
    """One optimiser step of ``net`` on ``loss``, with optional gradient clipping (``optim.grad_clip``)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    opt.step()


@torch.no_grad()
def ema_update(G_ema: Optional[torch.nn.Module], G: torch.nn.Module, decay: float, step: int) -> None:
    """``G_ema <- d * G_ema + (1 - d) * G`` for the parameters; buffers are copied (None: no average).

    ``d = min(optim.ema_g, (1 + step) / (10 + step))``: a warm-up, so that early in a run the
    average is not mostly the initial weights (0.999 ** 1000 = 0.37 of them otherwise)."""
    if G_ema is None:
        return
    d = min(float(decay), (1.0 + step) / (10.0 + step))
    ema_p = list(G_ema.parameters())
    torch._foreach_lerp_(ema_p, [p.detach() for p in G.parameters()], 1.0 - d)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)


def frame_count(obs_len: int, n_positions: int) -> int:
    """Feature frames that involve generated positions: the last S = T_pos - obs_len."""
    return max(0, min(n_positions - int(obs_len), n_positions - 2))


@contextlib.contextmanager
def _frozen(module):
    """No weight gradients for ``module`` inside (they are decided when the graph is built)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def d_step_loss(D, real_seq: Tensor, fake_seq: Tensor, plan, cfg, space=None, fake_feats: Optional[Tensor] = None,
                real_z: Optional[Tensor] = None) -> tuple[Tensor, dict[str, float]]:
    """The D step's loss (``losses.discriminator_loss``, eq. 12) of D's scores of the real and the
    (detached) fake sequences ``[B, O+S, 68, 2]`` on the windows of ``plan``.

    Real and fake go through D in one batched call ([2B, ...]): D has no batch statistics, so this
    equals two calls, at lower cost. ``space``: G's space, read only with ``model.d_semantic``
    (``losses.sequence_features``). ``fake_feats``: ``sequence_features(fake_seq)`` when the
    caller has them (the training step computes them once for the D and the G step); detached
    here. ``real_z``: ``space.encode(real_seq)`` when the caller has it."""
    B = real_seq.shape[0]
    if fake_feats is None:
        feats = losses.sequence_features(torch.cat([real_seq, fake_seq.detach()], 0), cfg.model, space=space)
    else:
        feats = torch.cat([losses.sequence_features(real_seq, cfg.model, space=space, z=real_z),
                           fake_feats.detach()], 0)
    n_frame = frame_count(cfg.data.obs_len, real_seq.shape[1])
    with parametrize.cached():  # one spectral-norm power iteration per D step, R1 included
        scores = D(feats, plan, n_frame, losses.stream_weights(cfg.loss))
        r1 = (losses.frame_gradient_penalty(D, feats[:B, -n_frame:])
              if cfg.loss.r1_frame > 0 and n_frame > 0 and "frame" in scores else None)
    return losses.discriminator_loss(scores, B, cfg.loss, feats.new_zeros(()), r1)


def g_step_loss(D, fake_seq: Tensor, real_seq: Tensor, out, plan, cfg, lam: float, space=None,
                fake_feats: Optional[Tensor] = None, fake_z: Optional[Tensor] = None,
                real_z: Optional[Tensor] = None) -> tuple[Tensor, dict[str, float]]:
    """The G step's loss (``losses.generator_loss``, eq. 8-11): D's scores of the fakes (D None or
    the MLE baseline: none), D's weights getting no gradient from it. ``fake_feats``:
    ``sequence_features(fake_seq)`` (with its graph) when the caller has them; ``fake_z``,
    ``real_z``: ``space.encode`` of the two sequences (the motion statistics')."""
    scores = None
    if needs_discriminator(cfg) and D is not None:
        feats = losses.sequence_features(fake_seq, cfg.model, space=space) if fake_feats is None else fake_feats
        with _frozen(D), parametrize.cached():
            scores = D(feats, plan, frame_count(cfg.data.obs_len, fake_seq.shape[1]), losses.stream_weights(cfg.loss))
    return losses.generator_loss(scores, fake_seq, real_seq, out, cfg.loss, lam, space, fake_z, real_z)


class AdversarialObjective:
    """GAN iteration of the SUHMo trainer: a D step and a G step on the same fakes."""

    uses_d = True

    def __init__(self, cfg, *, G, opt_g, D=None, opt_d=None, G_ema=None, rng: torch.Generator, windows,
                 device: torch.device, amp: bool = False):
        self.cfg, self.G, self.opt_g, self.D, self.opt_d, self.G_ema = cfg, G, opt_g, D, opt_d, G_ema
        self.rng, self.windows, self.device, self.amp = rng, windows, device, amp

    def _update(self, net, opt, loss) -> None:
        optimiser_step(net, opt, loss, self.cfg.optim.grad_clip)

    def step(self, batch: torch.Tensor, it: int) -> dict[str, float]:
        from suhmo import speed
        from suhmo.models import num_feature_frames

        cfg, G, D = self.cfg, self.G, self.D
        obs_len, seq_len = cfg.data.obs_len, cfg.data.seq_len
        use_d = needs_discriminator(cfg) and D is not None
        space = getattr(G, "space", None)  # read by the D features with model.d_semantic
        # "up to obs_len observed frames" (Sec. 4.1): at test time G starts from a
        # single reference frame, so training also covers short observations
        k = obs_len
        if cfg.data.random_obs and obs_len > 1:
            k = int(torch.randint(1, obs_len + 1, (1,), generator=self.rng))
        obs = batch[:, :k]

        # --- generate (once)
        with speed.autocast(self.device, self.amp):  # train.amp (off: a no-op)
            out = G(obs, obs_len + seq_len - k)  # future [B, O+S-k, 68, 2], recon [B, k-1, 68, 2]
        fake = torch.cat([obs, out.future], dim=1)  # same layout as batch
        plan = self.windows.sample(num_feature_frames(fake.shape[1]), self.rng) if use_d else None
        # the semantic states of the real and the fake windows, encoded once: D's features read them
        # (model.d_semantic) and so do the motion-statistics terms (loss.w_motion, loss.w_motion_mean)
        fake_z = real_z = None
        if space is not None and ((use_d and cfg.model.d_semantic) or losses.uses_motion_state(cfg.loss)):
            with speed.autocast(self.device, self.amp):
                fake_z, real_z = space.encode(fake), space.encode(batch)
        fake_feats = None  # D's features of the fakes, once: the D step reads them detached, the G step with the graph
        if use_d:
            with speed.autocast(self.device, self.amp):
                fake_feats = losses.sequence_features(fake, cfg.model, space=space, z=fake_z)

        # --- D step (fakes detached)
        logs: dict[str, float] = {}
        if use_d:
            with speed.autocast(self.device, self.amp):
                loss_d, logs_d = d_step_loss(D, batch, fake.detach(), plan, cfg, space, fake_feats, real_z)
            self._update(D, self.opt_d, loss_d)
            logs.update(_metric_names(logs_d))
            logs["loss_d"] = float(loss_d.detach())

        # --- G step (same fakes; D's weights get no gradient from this loss)
        with speed.autocast(self.device, self.amp):
            loss_g, logs_g = g_step_loss(D, fake, batch, out, plan, cfg, losses.lambda_at(cfg.loss, it), space,
                                         fake_feats, fake_z, real_z)
        self._update(G, self.opt_g, loss_g)
        ema_update(self.G_ema, G, cfg.optim.ema_g, it)
        logs.update(_metric_names(logs_g))
        logs["loss_g"] = float(loss_g.detach())
        return logs


class MLEObjective(AdversarialObjective):
    """The MLE baseline (``loss.adversarial: false``): the GAN iteration without D (G on L2 only)."""

    uses_d = False


class VAEObjective:
    """One Adam step of G on its negative ELBO (``recon + beta * KL``) of the real window
    ``batch [B, obs_len + seq_len, 68, 2]``: frame 0 is the reference the VAE is conditioned on,
    the other frames are reconstructed. Logs ``loss_g`` (the loss), ``loss_vae_recon``,
    ``loss_vae_kl``."""

    uses_d = False

    def __init__(self, cfg, *, G, opt_g, G_ema=None, device: torch.device, amp: bool = False, **_unused):
        self.cfg, self.G, self.opt_g, self.G_ema, self.device, self.amp = cfg, G, opt_g, G_ema, device, amp

    def step(self, batch: torch.Tensor, it: int) -> dict[str, float]:
        from suhmo import speed

        with speed.autocast(self.device, self.amp):
            loss, logs = self.G.elbo(batch)
        optimiser_step(self.G, self.opt_g, loss, self.cfg.optim.grad_clip)
        ema_update(self.G_ema, self.G, self.cfg.optim.ema_g, it)
        return {"loss_vae_recon": logs["vae_recon"], "loss_vae_kl": logs["vae_kl"], "loss_g": float(loss.detach())}


OBJECTIVES: dict[str, type] = {
    "gan": AdversarialObjective,
    "mle": MLEObjective,
    "vae": VAEObjective,
}


def objective_name(cfg) -> str:
    """``vae`` for the VAE variants, else ``gan`` or ``mle`` by ``loss.adversarial``."""
    if cfg.model.variant in VAE_VARIANTS:
        return "vae"
    return "gan" if cfg.loss.adversarial else "mle"


def objective_class(cfg) -> type:
    """The objective ``cfg`` trains with (its ``uses_d`` says whether it needs a D)."""
    return OBJECTIVES[objective_name(cfg)]


def build_objective(cfg, **parts):
    """``objective_class(cfg)(cfg, **parts)``: G, opt_g, D, opt_d, G_ema, rng, windows, device, amp."""
    return objective_class(cfg)(cfg, **parts)


__all__ = ["OBJECTIVES", "AdversarialObjective", "MLEObjective", "VAEObjective", "build_objective", "d_step_loss",
           "ema_update", "g_step_loss", "needs_discriminator", "objective_class", "objective_name", "optimiser_step"]
