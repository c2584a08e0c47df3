"""ACTOR baseline (Petrovich et al. 2021, "Action-Conditioned 3D Human Motion Synthesis with
Transformer VAE"), adapted to head motion as in the SUHMo paper (Sec. 4.3): the action label
that conditions ACTOR is replaced by the observed initial frame, the reference pose x_0.

A conditional VAE with one latent vector per sequence:

- encoder q(z | x_{1:T}, x_0): a Transformer encoder over two learned distribution tokens
  (ACTOR's mu- and Sigma-tokens, here shifted by the embedding of x_0 instead of the action's)
  followed by one token per frame, ``[x_t - x_0 | vel_scale * (x_t - x_{t-1})]`` plus the
  sinusoidal encoding of t; the outputs at the two distribution tokens give mu and log sigma^2;
- decoder p(x_{1:T} | z, x_0): a Transformer decoder whose queries are the sinusoidal
  encodings of the frame indices 1..T and whose memory is (z, x_0), both embedded; it outputs
  all T frames at once, as displacements from x_0;
- loss (``elbo``): reconstruction (positions plus ``actor.w_vel`` x velocities, mean squared
  2-D point distance) + ``actor.beta`` x KL(q || N(0, I)).

Length: the decoder is queried at frame indices, so it generates any number of frames; it is
trained on ``data.obs_len + data.seq_len - 1`` frames (44 by default) and beyond that it
*extrapolates* the sinusoidal encodings (documented, not an error: the paper scores 80 frames,
twice the training length). Frames do not depend on the observed frames after x_0: with
``O`` observed frames the first ``O - 1`` decoded frames are the reconstruction.
"""


from typing import Tuple

import torch
from torch import Tensor, nn

from suhmo.models.vae import (FRAME_DIM, Block, VAEGenerator, kl_normal, reconstruction, reparameterise, sinusoid,
                              small_head)


class ActorCore(nn.Module):
    """The CVAE itself; ``forward`` samples z ~ N(0, I) (scriptable), ``elbo`` is the training pass."""

    def __init__(self, latent: int, width: int, ff: int, layers: int, heads: int, *, beta: float, w_vel: float,
                 vel_scale: float):
        super().__init__()
        self.latent = latent
        self.width = width
        self.beta = float(beta)
        self.w_vel = float(w_vel)
        self.vel_scale = float(vel_scale)
        self.cond = nn.Linear(FRAME_DIM, width)  # x_0 -> condition (ACTOR: the action's embedding)
        self.frame_in = nn.Linear(2 * FRAME_DIM, width)
        self.mu_token = nn.Parameter(torch.randn(width) * 0.02)
        self.logvar_token = nn.Parameter(torch.randn(width) * 0.02)
        self.encoder = nn.ModuleList([Block(width, heads, ff) for _ in range(layers)])
        self.enc_ln = nn.LayerNorm(width)
        self.to_mu = nn.Linear(width, latent)
        self.to_logvar = nn.Linear(width, latent)
        self.z_in = nn.Linear(latent, width)
        self.decoder = nn.ModuleList([Block(width, heads, ff, cross=True) for _ in range(layers)])
        self.dec_ln = nn.LayerNorm(width)
        self.head = small_head(width, FRAME_DIM)

    def encode(self, seq: Tensor) -> Tuple[Tensor, Tensor]:
        """``seq [B, T+1, 68, 2]`` (frame 0 = x_0) -> mu, logvar ``[B, latent]``."""
        B, T = seq.shape[0], seq.shape[1] - 1
        x = seq.reshape(B, T + 1, 136)
        x0 = x[:, :1]
        frames = torch.cat([x[:, 1:] - x0, self.vel_scale * (x[:, 1:] - x[:, :-1])], -1)
        idx = torch.arange(1, T + 1, device=seq.device)
        tokens = self.frame_in(frames) + sinusoid(idx, self.width).to(seq.dtype)
        c = self.cond(x0)  # [B, 1, E]
        h = torch.cat([self.mu_token.expand(B, 1, self.width) + c, self.logvar_token.expand(B, 1, self.width) + c,
                       tokens], 1)
        for blk in self.encoder:
            h = blk(h, None, None)
        h = self.enc_ln(h)
        return self.to_mu(h[:, 0]), self.to_logvar(h[:, 1]).clamp(-12.0, 8.0)

    def decode(self, z: Tensor, x0: Tensor, frames: int) -> Tensor:
        """``z [B, latent]``, ``x0 [B, 136]`` -> positions of frames 1..frames ``[B, frames, 136]``."""
        B = z.shape[0]
        memory = torch.stack([self.z_in(z), self.cond(x0)], 1)  # [B, 2, E]
        idx = torch.arange(1, frames + 1, device=z.device)
        h = sinusoid(idx, self.width).to(z.dtype).unsqueeze(0).expand(B, frames, self.width)
        for blk in self.decoder:
            h = blk(h, None, memory)
        return x0.unsqueeze(1) + self.head(self.dec_ln(h))

    def forward(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Tuple[Tensor, Tensor]:
        """Generation (``init_vel`` is not a condition of this model): z ~ N(0, I), decode
        ``O - 1 + n_future`` frames -> (future ``[B, n_future, 68, 2]``, recon ``[B, O-1, 68, 2]``)."""
        B, O = obs.shape[0], obs.shape[1]
        x0 = obs[:, 0].reshape(B, 136)
        z = torch.randn(B, self.latent, device=obs.device, dtype=obs.dtype)
        pos = self.decode(z, x0, O - 1 + n_future).reshape(B, O - 1 + n_future, 68, 2)
        return pos[:, O - 1:], pos[:, :O - 1]

    @torch.jit.unused
    def elbo(self, seq: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """``seq [B, T+1, 68, 2]`` -> (loss = recon + beta * KL, recon, KL per sequence)."""
        B, T = seq.shape[0], seq.shape[1] - 1
        mu, logvar = self.encode(seq)
        z = reparameterise(mu, logvar, torch.randn_like(mu))
        pred = self.decode(z, seq[:, 0].reshape(B, 136), T).reshape(B, T, 68, 2)
        recon = reconstruction(pred, seq[:, 1:], seq[:, :1], self.w_vel)
        kl = kl_normal(mu, logvar).sum(-1).mean()
        return recon + self.beta * kl, recon, kl


class ActorGenerator(VAEGenerator):
    """ACTOR-style CVAE with the platform's generator interface (``model.variant=actor``); its sizes
    and loss weights are the ``actor`` config section's (``suhmo.config.ActorConfig``)."""

    core_cls = ActorCore
    section = "actor"
