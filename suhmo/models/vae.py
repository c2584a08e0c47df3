"""Shared pieces of the two VAE baselines of the paper's Table 1 (Sec. 4.3): ACTOR
(``suhmo.models.actor``) and HiT-DVAE (``suhmo.models.hitdvae``).

- the Gaussian pieces: reparameterisation ``z = mu + exp(logvar / 2) * eps`` and the
  closed-form KL divergence between diagonal Gaussians;
- sinusoidal encodings of a frame index (Vaswani et al.), defined for any index;
- a small pre-LN Transformer block (self-attention with an optional boolean mask, optional
  cross-attention to a memory, feed-forward) and a one-token step against key/value caches;
- :class:`VAEGenerator`, the base class that gives both VAEs the platform's generator
  interface (``forward``, ``generate``, ``export_module``, see ``suhmo.models.generators``)
  plus ``elbo(seq)``, the training loss that ``suhmo.objectives.VAEObjective`` minimises.

Randomness: the latents are drawn with ``torch.randn`` from torch's global generator, in the
same order in eager and scripted code, so that ``torch.manual_seed(s)`` before a call makes
generation (and the exported module) reproducible; ``suhmo.generate.sample`` seeds it from its
``seed`` in a forked RNG state. The VAEs do not need pairs of rows: each row is generated
independently (the pair layout of the platform is accepted and ignored).
"""


import math
from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from suhmo.models.generators import GenOutput, check_inputs, evaluating
from suhmo.utils import SuhmoError

FRAME_DIM = 136  # 68 landmarks x (x, y)


def reparameterise(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """``z = mu + sigma * eps`` with ``sigma = exp(logvar / 2)``: differentiable in mu and logvar."""
    return mu + torch.exp(0.5 * logvar) * eps


def kl_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Optional[Tensor] = None,
              logvar_p: Optional[Tensor] = None) -> Tensor:
    """Elementwise ``KL(N(mu_q, e^logvar_q) || N(mu_p, e^logvar_p))`` (prior N(0, 1) when omitted):
    ``0.5 * (logvar_p - logvar_q + (e^logvar_q + (mu_q - mu_p)^2) / e^logvar_p - 1)``."""
    if mu_p is None or logvar_p is None:
        return 0.5 * (torch.exp(logvar_q) + mu_q.pow(2) - 1.0 - logvar_q)
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1.0)


def sinusoid(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal encodings ``[n, dim]`` of frame indices ``positions [n]`` (float): sin on even,
    cos on odd channels, wavelengths 2*pi .. 10000 * 2*pi. Defined for any index, so a decoder
    queried by them can be asked for frames beyond the ones it was trained on."""
    half = (dim + 1) // 2
    freq = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * (-math.log(10000.0) / half))
    ang = positions.float().unsqueeze(1) * freq.unsqueeze(0)  # [n, half]
    enc = torch.stack([torch.sin(ang), torch.cos(ang)], -1).flatten(1)
    return enc[:, :dim]


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Scaled dot-product attention of ``q [B,h,n,d]`` over ``k, v [B,h,m,d]``; ``mask`` bool
    ``[n, m]`` (True = may attend)."""
    s = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(s, -1), v)


class Attention(nn.Module):
    """Multi-head attention of the tokens ``x [B,n,E]`` over ``mem [B,m,E]``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:  # [B, n, E] -> [B, h, n, E/h]
        B, n, E = x.shape
        return x.reshape(B, n, self.heads, E // self.heads).transpose(1, 2)

    def _merge(self, a: Tensor) -> Tensor:  # [B, h, n, d] -> [B, n, h*d]
        B, h, n, d = a.shape
        return self.out(a.transpose(1, 2).reshape(B, n, h * d))

    def forward(self, x: Tensor, mem: Tensor, mask: Optional[Tensor]) -> Tensor:
        k, v = self.kv(mem).chunk(2, -1)
        return self._merge(_attend(self._split(self.q(x)), self._split(k), self._split(v), mask))

    def step(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Self-attention of new tokens ``x [B,n,E]`` over the cached keys/values ``[B,h,t,d]`` and
        their own (every new token sees all cached ones and itself; callers pass n = 1 for a
        causal step). Returns (output, caches extended by the new keys and values)."""
        k, v = self.kv(x).chunk(2, -1)
        k_cache = torch.cat([k_cache, self._split(k)], 2)
        v_cache = torch.cat([v_cache, self._split(v)], 2)
        return self._merge(_attend(self._split(self.q(x)), k_cache, v_cache, None)), k_cache, v_cache


class Block(nn.Module):
    """Pre-LN Transformer block: self-attention (optional mask), cross-attention to a memory
    when built with ``cross``, feed-forward (GELU)."""

    cross: torch.jit.Final[bool]

    def __init__(self, dim: int, heads: int, ff: int, cross: bool = False):
        super().__init__()
        self.cross = cross
        self.ln1 = nn.LayerNorm(dim)
        self.sa = Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim) if cross else nn.Identity()
        self.ca = Attention(dim, heads) if cross else nn.Identity()
        self.ln3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.GELU(), nn.Linear(ff, dim))

    def forward(self, x: Tensor, mask: Optional[Tensor], memory: Optional[Tensor]) -> Tensor:
        h = self.ln1(x)
        x = x + self.sa(h, h, mask)
        if self.cross:  # a Final constant: TorchScript compiles this branch only for cross blocks
            if memory is not None:
                x = x + self.ca(self.ln2(x), memory, None)
        return x + self.ff(self.ln3(x))

    def step(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One causal step (``x [B,1,E]``) against this block's self-attention caches."""
        a, k_cache, v_cache = self.sa.step(self.ln1(x), k_cache, v_cache)
        x = x + a
        return x + self.ff(self.ln3(x)), k_cache, v_cache


def point_sq(a: Tensor, b: Tensor) -> Tensor:
    """Mean over points, frames and batch of the squared 2-D distance; ``[..., 68, 2]`` inputs."""
    return (a - b).pow(2).sum(-1).mean()


def reconstruction(pred: Tensor, target: Tensor, prev: Tensor, w_vel: float) -> Tensor:
    """Reconstruction term: ``point_sq`` of the positions ``pred`` vs ``target`` ``[B,T,68,2]``,
    plus ``w_vel`` times that of their velocities (``prev [B,1,68,2]``: the frame before the first)."""
    loss = point_sq(pred, target)
    if w_vel > 0:
        loss = loss + w_vel * point_sq(torch.diff(pred, dim=1, prepend=prev), torch.diff(target, dim=1, prepend=prev))
    return loss


class VAEGenerator(nn.Module):
    """The generator interface of ``suhmo.models.generators.Generator`` for a VAE core.

    A core implements ``forward(obs [B,O,68,2], init_vel [B,68,2], n_future) -> (future, recon)``
    (sampling the latents from the prior; TorchScript-compatible) and ``elbo(seq [B,T,68,2]) ->
    (loss, recon, kl)`` (the posterior pass). Subclasses set ``self.core`` and ``_build_core``.
    """

    core: nn.Module
    core_cls: type  # the core's class, set by each subclass
    section: str  # its config section (``actor``, ``hitdvae``)

    def __init__(self, latent: int, width: int, ff: int, layers: int, heads: int, *, beta: float, w_vel: float,
                 vel_scale: float):
        super().__init__()
        self._args = dict(latent=latent, width=width, ff=ff, layers=layers, heads=heads, beta=beta, w_vel=w_vel,
                          vel_scale=vel_scale)
        self.core = self._build_core()

    def _build_core(self) -> nn.Module:
        a = dict(self._args)
        return self.core_cls(a.pop("latent"), a.pop("width"), a.pop("ff"), a.pop("layers"), a.pop("heads"), **a)

    @classmethod
    def from_config(cls, cfg) -> "VAEGenerator":
        c = getattr(cfg, cls.section)
        return cls(c.latent, c.width, c.ff, c.layers, c.heads, beta=c.beta, w_vel=c.w_vel,
                   vel_scale=cfg.model.vel_scale)

    def _inputs(self, obs: Tensor, n_future: int, init_vel: Optional[Tensor]) -> Tensor:
        return check_inputs(obs, n_future, init_vel, pairs=False)

    def forward(self, obs: Tensor, n_future: int, init_vel: Optional[Tensor] = None) -> GenOutput:
        """A sample from the prior, with autograd: ``obs [B,O,68,2]`` -> GenOutput(future, recon)."""
        future, recon = self.core(obs, self._inputs(obs, n_future, init_vel), int(n_future))
        return GenOutput(future, recon)

    def generate(self, obs: Tensor, n_future: int, init_vel: Optional[Tensor] = None) -> GenOutput:
        """Inference: no grad, eval mode; latents from the prior (torch's global RNG)."""
        v0 = self._inputs(obs, n_future, init_vel)
        with evaluating(self):
            future, recon = self.core(obs, v0, int(n_future))
        return GenOutput(future, recon)

    def elbo(self, seq: Tensor) -> Tuple[Tensor, dict]:
        """Training loss ``recon + beta * KL`` on real windows ``seq [B,T,68,2]`` (frame 0 is the
        reference) -> (loss, logs: ``vae_recon``, ``vae_kl``, ``vae_elbo_loss``)."""
        if seq.dim() != 4 or seq.shape[2:] != (68, 2) or seq.shape[1] < 2:
            raise SuhmoError(f"VAE training input: expected [B, T >= 2, 68, 2], got {tuple(seq.shape)}")
        loss, recon, kl = self.core.elbo(seq)
        return loss, {"vae_recon": float(recon.detach()), "vae_kl": float(kl.detach()),
                      "vae_elbo_loss": float(loss.detach())}

    def export_module(self) -> nn.Module:
        """A self-contained, ``torch.jit.script``-able module ``forward(obs, init_vel, n_future)
        -> [B, n_future, 68, 2]`` equal to ``generate(...).future`` under the same torch seed."""
        core = self._build_core()
        core.load_state_dict(self.core.state_dict())
        for p in core.parameters():
            p.requires_grad_(False)
        return ExportedVAE(core.eval()).eval()


class ExportedVAE(nn.Module):
    """Inference-only wrapper produced by ``VAEGenerator.export_module``."""

    def __init__(self, core: nn.Module):
        super().__init__()
        self.core = core

    def forward(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Tensor:
        with torch.no_grad():
            future, _ = self.core(obs, init_vel, n_future)
        return future


def small_head(dim: int, out: int, gain: float = 0.01) -> nn.Linear:
    """An output layer initialised ``gain`` x smaller than PyTorch's default: per-frame landmark
    motion is ~1e-2 of the face's extent, so a default-scaled head starts far off (as in
    ``suhmo.models.generators``)."""
    lin = nn.Linear(dim, out)
    with torch.no_grad():
        lin.weight.mul_(gain)
        lin.bias.zero_()
    return lin


__all__ = ["Attention", "Block", "ExportedVAE", "VAEGenerator", "kl_normal", "point_sq", "reconstruction",
           "reparameterise", "sinusoid", "small_head"]
