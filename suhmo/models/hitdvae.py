"""HiT-DVAE baseline (Bie et al. 2022, "HiT-DVAE: Human Motion Generation via Hierarchical
Transformer Dynamical VAE"), adapted to head motion as in the SUHMo paper (Sec. 4.3): the
observed-frames conditioning is kept, here one observed frame, and the model generates 40 or
80 frames from it.

A dynamical VAE with one latent z_t per frame, autoregressive in both x and z:

- a causal Transformer reads, at step t, the token of the previous frame and latent,
  ``embed([x_{t-1} | vel_scale * v_{t-1}]) + embed(z_{t-1})`` (z_0 = 0, v_0 = the initial
  velocity or 0), and outputs h_t, a summary of x_{0:t-1} and z_{1:t-1} (key/value cache: one
  token per step);
- prior p(z_t | h_t) = N(mu_p, sigma_p^2) from an MLP on h_t;
- generation p(x_t | h_t, z_t): mean x_{t-1} + v_t, with the velocity v_t from an MLP on
  (h_t, z_t) (the integration of the SUHMo generators, eq. 4);
- inference network q(z_t | h_t, g_t) where g_t summarises the frames x_{t:T} (an anti-causal
  Transformer over the real frames: frame t attends to frames t..T), so that the posterior
  sees the past through h_t and the future through g_t, as a DVAE's smoothing posterior does;
- loss (``elbo``): reconstruction of x_{1:T} under teacher forcing (positions plus
  ``hitdvae.w_vel`` x velocities, mean squared 2-D point distance) + ``hitdvae.beta`` x the
  KL(q_t || p_t) per step, summed over latent dimensions and averaged over steps.

Simplification, on purpose: one level of latents (HiT-DVAE stacks a hierarchy of them) and no
positional encoding (the causal order is the only time information, so any length can be
generated without extrapolating an encoding). Generation observes O frames (teacher forcing,
latents from the prior) and then runs free for any number of frames, the predicted mean fed
back; the output at frame t depends only on the inputs up to t (tested).
"""


from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from suhmo.models.step import Integrator
from suhmo.models.vae import (FRAME_DIM, Block, VAEGenerator, kl_normal, reconstruction, reparameterise,
                              small_head)


def anti_causal_mask(n: int, device: torch.device) -> Tensor:
    """Bool ``[n, n]``: position i may attend to positions j >= i."""
    return torch.ones(n, n, dtype=torch.bool, device=device).triu()


class HitDVAECore(nn.Module):
    """The dynamical VAE; ``forward`` samples the latents from the prior (scriptable), ``elbo``
    is the training pass with the inference network."""

    def __init__(self, latent: int, width: int, ff: int, layers: int, heads: int, *, beta: float, w_vel: float,
                 vel_scale: float):
        super().__init__()
        self.latent = latent
        self.width = width
        self.heads = heads
        self.n_layers = layers
        self.beta = float(beta)
        self.w_vel = float(w_vel)
        self.vel_scale = float(vel_scale)
        self.x_in = nn.Linear(2 * FRAME_DIM, width)
        self.z_in = nn.Linear(latent, width)
        self.blocks = nn.ModuleList([Block(width, heads, ff) for _ in range(layers)])  # causal, stepped
        self.ln = nn.LayerNorm(width)
        self.prior = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(width + latent, width), nn.GELU())
        self.head = small_head(width, FRAME_DIM)
        self.integrate = Integrator(FRAME_DIM)  # eq. 4, as in the SUHMo generators
        # inference network (training only; kept in the exported module's weights, never run there)
        self.post_in = nn.Linear(2 * FRAME_DIM, width)
        self.post_blocks = nn.ModuleList([Block(width, heads, ff) for _ in range(layers)])
        self.post_ln = nn.LayerNorm(width)
        self.posterior = nn.Sequential(nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, 2 * latent))

    def _token(self, pos: Tensor, vel: Tensor) -> Tensor:
        return torch.cat([pos, self.vel_scale * vel], -1)

    def _run(self, x: Tensor, v0: Tensor, total: int, eps: Tensor,
             post: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Step through ``total`` frames after x_0. ``x [B, O, 136]``: frames teacher-forced at
        steps 0..O-1; ``eps [B, total, latent]``: the noise of the latents; ``post [B, total, E]``:
        the inference network's g_t (training) or None (latents from the prior).
        Returns (predicted positions ``[B, total, 136]``, KL per step ``[B, total]`` or ``[B, 0]``)."""
        B, O = x.shape[0], x.shape[1]
        hd = self.width // self.heads
        ks: List[Tensor] = []
        vs: List[Tensor] = []
        for _ in range(self.n_layers):
            ks.append(x.new_zeros(B, self.heads, 0, hd))
            vs.append(x.new_zeros(B, self.heads, 0, hd))
        pos = x[:, 0]
        vel = v0
        z = x.new_zeros(B, self.latent)
        preds: List[Tensor] = []
        kls: List[Tensor] = []
        for t in range(total):
            if t >= 1 and t < O:  # teacher forcing on the observed frames
                pos = x[:, t]
                vel = x[:, t] - x[:, t - 1]
            h = (self.x_in(self._token(pos, vel)) + self.z_in(z)).unsqueeze(1)
            j = 0
            for blk in self.blocks:
                h, k, v = blk.step(h, ks[j], vs[j])
                ks[j] = k
                vs[j] = v
                j += 1
            h = self.ln(h[:, 0])
            mu_p, logvar_p = self.prior(h).chunk(2, -1)
            logvar_p = logvar_p.clamp(-12.0, 8.0)
            if post is not None:
                mu_q, logvar_q = self.posterior(torch.cat([h, post[:, t]], -1)).chunk(2, -1)
                logvar_q = logvar_q.clamp(-12.0, 8.0)
                z = reparameterise(mu_q, logvar_q, eps[:, t])
                kls.append(kl_normal(mu_q, logvar_q, mu_p, logvar_p).sum(-1))
            else:
                z = reparameterise(mu_p, logvar_p, eps[:, t])
            step_vel = self.head(self.dec(torch.cat([h, z], -1)))
            pos = self.integrate(pos, step_vel, x[:, 0])
            vel = step_vel
            preds.append(pos)
        kl = torch.stack(kls, 1) if len(kls) > 0 else x.new_zeros(B, 0)
        return torch.stack(preds, 1), kl

    def forward(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Tuple[Tensor, Tensor]:
        """Generation: O observed frames, latents from the prior -> (future, recon)."""
        B, O = obs.shape[0], obs.shape[1]
        total = O - 1 + n_future
        eps = torch.randn(B, total, self.latent, device=obs.device, dtype=obs.dtype)
        pred, _ = self._run(obs.reshape(B, O, 136), init_vel.reshape(B, 136), total, eps, None)
        pred = pred.reshape(B, total, 68, 2)
        return pred[:, O - 1:], pred[:, :O - 1]

    @torch.jit.unused
    def infer(self, seq: Tensor) -> Tensor:
        """Inference network: g_t for the frames 1..T of ``seq [B, T+1, 68, 2]`` -> ``[B, T, E]``;
        g_t attends to the frames t..T only."""
        B, T = seq.shape[0], seq.shape[1] - 1
        x = seq.reshape(B, T + 1, 136)
        g = self.post_in(self._token(x[:, 1:], x[:, 1:] - x[:, :-1]))
        mask = anti_causal_mask(T, seq.device)
        for blk in self.post_blocks:
            g = blk(g, mask, None)
        return self.post_ln(g)

    @torch.jit.unused
    def elbo(self, seq: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``seq [B, T+1, 68, 2]`` (all frames teacher-forced, the model starts from x_0 at rest)
        -> (loss = recon + beta * KL per step, recon, KL per step)."""
        B, T = seq.shape[0], seq.shape[1] - 1
        x = seq.reshape(B, T + 1, 136)
        eps = torch.randn(B, T, self.latent, device=seq.device, dtype=seq.dtype)
        pred, kl = self._run(x, x.new_zeros(B, FRAME_DIM), T, eps, self.infer(seq))
        recon = reconstruction(pred.reshape(B, T, 68, 2), seq[:, 1:], seq[:, :1], self.w_vel)
        kl = kl.mean()
        return recon + self.beta * kl, recon, kl


class HitDVAEGenerator(VAEGenerator):
    """HiT-DVAE-style dynamical VAE with the platform's generator interface (``model.variant=hitdvae``);
    its sizes and loss weights are the ``hitdvae`` config section's (``suhmo.config.HitDVAEConfig``)."""

    core_cls = HitDVAECore
    section = "hitdvae"


__all__ = ["HitDVAECore", "HitDVAEGenerator", "anti_causal_mask"]
