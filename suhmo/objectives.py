"""Training objectives: what one iteration of ``suhmo.train.Trainer`` does with a batch.

Chosen by config in one place, :func:`objective_name`:

- ``gan``  the SUHMo objective (Sec. 3.4): G runs once, a D step (hinge, eq. 12) and a G step
           (adversarial eq. 8-10 + lambda L2, eq. 11) on the same fakes;
- ``mle``  the MLE baseline (``loss.adversarial: false``): the same iteration without D;
- ``vae``  the VAE baselines (``model.variant`` in ``actor``, ``hitdvae``): one step on the
           negative ELBO, ``recon + beta * KL`` (``VAEGenerator.elbo``) of the real window;
           there is no discriminator.

Each objective has ``step(trainer, batch, it) -> logs`` (the update(s) of one iteration, the
loss logs under their metric names, ``loss_g`` included) and ``uses_d`` (whether the trainer
builds, optimises and checkpoints D).
"""

from __future__ import annotations

from typing import Callable

import torch

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


class AdversarialObjective:
    """GAN (and, with ``loss.adversarial: false``, MLE) iteration of the SUHMo trainer."""

    uses_d = True  # the MLE baseline keeps its (unused) D, as its checkpoints always had

    def step(self, trainer, batch: torch.Tensor, it: int) -> dict[str, float]:
        from suhmo.losses import (discriminator_loss, generator_loss, lambda_at, needs_discriminator,
                                  sequence_features, uses_motion_state)
        from suhmo import speed
        from suhmo.models import num_feature_frames

        cfg, G, D = trainer.cfg, trainer.G, trainer.D
        obs_len, seq_len = cfg.data.obs_len, cfg.data.seq_len
        use_d = needs_discriminator(cfg)
        space = getattr(G, "space", None)  # read by the D features with model.d_semantic
        # "up to obs_len observed frames" (Sec. 4.1): at test time G starts from a
        # single reference frame, so training also covers short observations
        k = obs_len
        if cfg.data.random_obs and obs_len > 1:
            k = int(torch.randint(1, obs_len + 1, (1,), generator=trainer.window_rng))
        obs = batch[:, :k]

        # --- generate (once)
        with speed.autocast(trainer.device, trainer.amp):  # train.amp (off: a no-op)
            out = G(obs, obs_len + seq_len - k)  # future [B, O+S-k, 68, 2], recon [B, k-1, 68, 2]
        fake = torch.cat([obs, out.future], dim=1)  # same layout as batch
        plan = trainer.windows.sample(num_feature_frames(fake.shape[1]), trainer.window_rng) if use_d else None
        # the semantic states of the real and the fake windows, encoded once: D's features read them
        # (model.d_semantic) and so do the motion-statistics terms (loss.w_motion, loss.w_motion_mean)
        fake_z = real_z = None
        if space is not None and ((use_d and cfg.model.d_semantic) or uses_motion_state(cfg)):
            with speed.autocast(trainer.device, trainer.amp):
                fake_z, real_z = space.encode(fake), space.encode(batch)
        fake_feats = None  # D's features of the fakes, once: the D step reads them detached, the G step with the graph
        if use_d:
            with speed.autocast(trainer.device, trainer.amp):
                fake_feats = sequence_features(fake, cfg, space=space, z=fake_z)

        # --- D step (fakes detached)
        logs: dict[str, float] = {}
        if use_d:
            with speed.autocast(trainer.device, trainer.amp):
                loss_d, logs_d = discriminator_loss(D, batch, fake.detach(), plan, cfg, space, fake_feats, real_z)
            trainer._update(D, trainer.opt_d, loss_d)
            logs.update(_metric_names(logs_d))
            logs["loss_d"] = float(loss_d.detach())

        # --- G step (same fakes; D's weights get no gradient from this loss)
        with speed.autocast(trainer.device, trainer.amp):
            loss_g, logs_g = generator_loss(D, fake, batch, out, plan, cfg, lambda_at(cfg.loss, it), space,
                                          fake_feats, fake_z, real_z)
        trainer._update(G, trainer.opt_g, loss_g)
        trainer._update_ema()
        logs.update(_metric_names(logs_g))
        logs["loss_g"] = float(loss_g.detach())
        return logs


class VAEObjective:
    """One Adam step of G on its negative ELBO (``recon + beta * KL``) of the real window
    ``batch [B, obs_len + seq_len, 68, 2]``: frame 0 is the reference the VAE is conditioned on,
    the other frames are reconstructed. Logs ``loss_g`` (the loss), ``loss_vae_recon``,
    ``loss_vae_kl``."""

    uses_d = False

    def step(self, trainer, batch: torch.Tensor, it: int) -> dict[str, float]:
        from suhmo import speed

        with speed.autocast(trainer.device, trainer.amp):
            loss, logs = trainer.G.elbo(batch)
        trainer._update(trainer.G, trainer.opt_g, loss)
        trainer._update_ema()
        return {"loss_vae_recon": logs["vae_recon"], "loss_vae_kl": logs["vae_kl"], "loss_g": float(loss.detach())}


OBJECTIVES: dict[str, Callable[[], object]] = {
    "gan": AdversarialObjective,
    "mle": AdversarialObjective,  # the same iteration; losses.needs_discriminator skips D
    "vae": VAEObjective,
}


def objective_name(cfg) -> str:
    """``vae`` for the VAE variants, else ``gan`` or ``mle`` by ``loss.adversarial``."""
    if cfg.model.variant in VAE_VARIANTS:
        return "vae"
    return "gan" if cfg.loss.adversarial else "mle"


def build_objective(cfg):
    return OBJECTIVES[objective_name(cfg)]()


__all__ = ["OBJECTIVES", "AdversarialObjective", "VAEObjective", "build_objective", "objective_name"]
