"""SUHMo generators (Sec. 3.1 and 3.5, Fig. 3): autoregressive velocity prediction, eq. 4.

Both variants consume ``obs_len`` observed frames with teacher forcing (step i reads the
real ``x_i`` and ``v_i = x_i - x_{i-1}``, ``v_0`` = the given initial velocity or 0), then run
free: the predicted velocity is Euler-integrated, ``x_{i+1} = x_i + G(x_{0:i})`` (eq. 4), and
fed back. The outputs of the first ``O-1`` steps reconstruct the observed frames 1..O-1;
the rest are the future frames. Pairs are batch rows ``(2n, 2n+1)``.

Each generator wraps a TorchScript-compatible *core* (``forward(obs, init_vel, n_future,
use_buffers) -> (future, recon)``): the same code runs training (autograd), ``generate``
(no grad; the Transformer writes its attention caches into preallocated buffers) and the
exported module (``export_module``: a fresh core without spectral norm, loaded with the
folded weights ``W / sigma(W)``, scripted; the generator itself is left untouched).

Here: the interface every generator has (:class:`Generator`, its checks, its export) and the
Transformer variant; the RNN variant is ``suhmo.models.rnn``; the parts of a step that both
share (its input, the velocity head, the integrator of eq. 4) are ``suhmo.models.step``.
"""


import contextlib
import copy
from typing import Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from suhmo.models.kernels import CachedAttention
from suhmo.models.layers import FRAME_DIM, BatchCrossAttention, MultiHeadAttention, causal_mask
from suhmo.models.space import build_space
from suhmo.models.step import Integrator, integrate, stack_frames, step_input, step_width, velocity_head
from suhmo.utils import SuhmoError


class GenOutput(NamedTuple):
    future: Tensor  # [B, n_future, 68, 2] generated positions x_O .. x_{O+n_future-1}
    recon: Tensor  # [B, O-1, 68, 2] teacher-forced predictions of the observed frames 1..O-1


def check_inputs(obs: Tensor, n_future: int, init_vel: Optional[Tensor], pairs: bool) -> Tensor:
    """Check a generator call's ``obs [B, O, 68, 2]``, ``n_future`` and ``init_vel [B, 68, 2]``
    (``pairs``: B even, consecutive rows are pairs); returns the initial velocity (zeros if None)."""
    if obs.dim() != 4 or obs.shape[2:] != (68, 2) or obs.shape[0] == 0:
        raise SuhmoError(f"generator input: expected obs [B, O, 68, 2] with B >= 1, got {tuple(obs.shape)}")
    if pairs and obs.shape[0] % 2:
        raise SuhmoError(f"generator input: batch of {obs.shape[0]} is not a positive even number "
                         "(samples come in pairs of consecutive rows)")
    if obs.shape[1] < 1 or int(n_future) < 1:
        raise SuhmoError(f"generator input: need >= 1 observed frame and n_future >= 1, got "
                         f"{obs.shape[1]} and {n_future}")
    if init_vel is None:
        return obs.new_zeros(obs.shape[0], 68, 2)
    if init_vel.shape != (obs.shape[0], 68, 2):
        raise SuhmoError(f"generator input: init_vel must be [B, 68, 2], got {tuple(init_vel.shape)}")
    return init_vel.to(obs)


class Generator(nn.Module):
    """Common interface; subclasses build ``self.core``, which runs in ``self.space``
    (``suhmo.models.space``: the landmarks themselves, or the semantic pose + shape state): the
    observations are encoded, the core predicts and integrates state velocities (eq. 4) and
    its outputs are decoded back to landmarks, so that everything outside sees landmarks."""

    core: nn.Module
    space: nn.Module

    def _build_core(self, spectral: bool) -> nn.Module:
        """A new core of this generator's architecture (``spectral=False``: plain Linear layers)."""
        raise NotImplementedError

    def _inputs(self, obs: Tensor, n_future: int, init_vel: Optional[Tensor]) -> Tensor:
        return check_inputs(obs, n_future, init_vel, pairs=True)

    def forward(self, obs: Tensor, n_future: int, init_vel: Optional[Tensor] = None) -> GenOutput:
        """Training pass with autograd: ``obs [B,O,68,2]`` -> GenOutput(future, recon)."""
        v0 = self._inputs(obs, n_future, init_vel)
        with parametrize.cached():  # one spectral-norm power iteration per pass, not per step
            future, recon = run_in_space(self.space, self.core, obs, v0, int(n_future), False)
        return GenOutput(future, recon)

    def generate(self, obs: Tensor, n_future: int, init_vel: Optional[Tensor] = None) -> GenOutput:
        """Inference: no grad, eval-mode spectral norm (no power-iteration side effect), O(T) work."""
        v0 = self._inputs(obs, n_future, init_vel)
        with evaluating(self):
            future, recon = run_in_space(self.space, self.core, obs, v0, int(n_future), True)
        return GenOutput(future, recon)

    def export_module(self) -> nn.Module:
        """A self-contained module ``forward(obs [B,O,68,2], init_vel [B,68,2], n_future: int)
        -> [B, n_future, 68, 2]`` equal to ``generate(...).future``; ``torch.jit.script``-able.

        Built from a fresh core without parametrizations and the folded state dict: this
        generator keeps its spectral-norm parametrizations and stays usable (removing them from
        a deep copy would delete the ``weight`` property from the parametrized class that torch
        shares between the copy and the original)."""
        core = self._build_core(spectral=False)
        core.load_state_dict(folded_state_dict(self.core))
        for p in core.parameters():
            p.requires_grad_(False)
        return ExportedGenerator(core.eval(), copy.deepcopy(self.space).eval()).eval()


def folded_state_dict(module: nn.Module) -> dict:
    """``module.state_dict()`` with every parametrized tensor replaced by its value as ``generate``
    sees it (eval mode: spectral norm divides by sigma from the stored power-iteration vectors,
    no update), under the plain name (``net.0.weight``); the parametrization entries are dropped."""
    with evaluating(module):
        state = {k: v.detach().clone() for k, v in module.state_dict().items()
                 if ".parametrizations." not in f".{k}"}
        for name, sub in module.named_modules():
            if parametrize.is_parametrized(sub):
                for tensor_name in sub.parametrizations.keys():
                    key = f"{name}.{tensor_name}" if name else tensor_name
                    state[key] = getattr(sub, tensor_name).detach().clone()
    return state


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Inside: ``module`` in eval mode (spectral norm without its power-iteration update) and no
    autograd; its mode restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def run_in_space(space: nn.Module, core: nn.Module, obs: Tensor, init_vel: Tensor, n_future: int,
                 use_buffers: bool) -> Tuple[Tensor, Tensor]:
    """Encode ``obs [B,O,68,2]`` and ``init_vel [B,68,2]`` into the space, run the core there,
    decode its ``(future [B,n,D], recon [B,O-1,D])`` to landmarks (on the sequence's context: the
    pose3d space's reference shape, empty in the others)."""
    z = space.encode(obs)
    v = space.encode_velocity(obs[:, 0], init_vel)
    ctx = space.context(obs)
    future, recon = core(z, v, n_future, use_buffers)
    return space.decode(future, ctx), space.decode(recon, ctx)


class ExportedGenerator(nn.Module):
    """Inference-only wrapper produced by ``Generator.export_module`` (no suhmo code needed once
    scripted; the space's basis travels inside it)."""

    def __init__(self, core: nn.Module, space: nn.Module):
        super().__init__()
        self.core = core
        self.space = space

    def forward(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Tensor:
        with torch.no_grad():  # run_in_space, written out: TorchScript functions take no modules
            z = self.space.encode(obs)
            v = self.space.encode_velocity(obs[:, 0], init_vel)
            ctx = self.space.context(obs)
            future, _ = self.core(z, v, n_future, True)
        return self.space.decode(future, ctx)


def space_or_landmarks(space: Optional[nn.Module], centred: bool) -> nn.Module:
    from suhmo.models.space import LandmarkSpace

    space = LandmarkSpace() if space is None else space
    if centred and int(space.dim) != FRAME_DIM:
        raise SuhmoError("model.g_centred=true needs model.space=landmarks (a semantic state has no landmark centroid)")
    return space


# -------------------------------------------------------------------------- Transformer
class GBlock(nn.Module):
    """Post-LN block: causal self-attention, batch-cross attention (eq. 15-17), feed-forward.

    ``forward(x [B,n,E], cache, past, use_buffers, mask)`` processes n new tokens at absolute
    positions past..past+n-1 given the cache of the earlier ones and returns (output, cache).
    ``mask`` (bool ``[n, past+n]``, ``causal_mask``) is required when n > 1. BXA reads the
    partner's entries (rows swapped once, when written). Two cache forms:

    - buffers (``generate``): per attention, its *inputs* ``[B, T_max, E]``, preallocated and
      written in place; a step reads them through ``MultiHeadAttention.attend_memory``, which
      never forms the keys and values: each generated token streams half the memory that a
      key and a value cache would make it read, and that is what long generations wait on.
    - no buffers (training, autograd): per attention, keys and values ``[B, h, T_max, dh]`` and
      their gradients, preallocated and written in place by ``CachedAttention``, whose
      backward carries the gradients of cached entries to the step that wrote them; each token
      is projected once.

    With a ``window`` W each token reads only the W most recent entries, itself included: a
    step without a mask (one token) reads a slice of the last W, a parallel pass relies on its
    mask (``causal_mask(..., window=W)``).
    """

    pair: torch.jit.Final[bool]
    window: torch.jit.Final[Optional[int]]

    def __init__(self, dim: int, heads: int, ff: int, pair: bool, window: Optional[int] = None):
        super().__init__()
        self.pair = pair
        self.window = window
        self.sa = MultiHeadAttention(dim, heads)
        self.ln1 = nn.LayerNorm(dim)
        if pair:
            self.bxa = BatchCrossAttention(dim, heads)
            self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff), nn.LeakyReLU(0.2), nn.Linear(ff, dim))
        self.ln3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, cache: List[Tensor], past: int, use_buffers: bool,
                mask: Optional[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        window = self.window
        # a step without a mask reads only its window's entries; a masked pass reads what the mask allows
        first = 0 if window is None or mask is not None else max(0, past - window + 1)
        if use_buffers:
            y, cache = self._attend_inputs_cache(x, cache, past, first, mask)
        else:
            y, cache = self._attend_kv_cache(x, cache, past, first, mask)
        return self.ln3(y + self.ff(y)), cache

    def _attend_inputs_cache(self, x: Tensor, cache: List[Tensor], past: int, first: int,
                             mask: Optional[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        end = past + x.shape[1]
        cache[0][:, past:end] = x
        y = self.ln1(x + self.sa.attend_memory(x, cache[0][:, first:end], mask))
        if self.pair:
            cache[1][:, past:end] = self.bxa.partner(y)
            y = self.ln2(y + self.bxa.attend_memory(y, cache[1][:, first:end], mask))
        return y, cache

    @torch.jit.unused
    def _attend_kv_cache(self, x: Tensor, cache: List[Tensor], past: int, first: int,
                         mask: Optional[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        k, v = self.sa.project_kv(x)
        y = self.ln1(x + self.sa.merge(CachedAttention.apply(self.sa.project_q(x), k, v, cache[:4], past, first,
                                                              mask)))
        if self.pair:
            k2, v2 = self.bxa.partner_kv(y)
            att = CachedAttention.apply(self.bxa.project_q(y), k2, v2, cache[4:], past, first, mask)
            y = self.ln2(y + self.bxa.merge(att))
        return y, cache


class TransformerCore(nn.Module):
    """Linear embedding of [pos, vel], ``blocks`` GBlocks, no positional encoding, velocity head.

    ``window`` (``model.attn_window_g``): None = full causal attention (the paper's model);
    W = every token attends to the W most recent tokens, itself included, in self-attention and
    in BXA alike, so that generation costs O(W) per frame instead of O(t).
    """

    delta: torch.jit.Final[bool]
    centred: torch.jit.Final[bool]
    noise: torch.jit.Final[int]
    n_attn: torch.jit.Final[int]
    window: torch.jit.Final[Optional[int]]

    def __init__(self, emb: int, heads: int, blocks: int, ff: int, *, pair: bool, delta: bool,
                 vel_scale: float = 1.0, window: Optional[int] = None, centred: bool = False,
                 frame_dim: int = FRAME_DIM, noise: int = 0, revert: bool = False):
        super().__init__()
        self.noise = int(noise)
        self.integrate = Integrator(frame_dim, revert and not delta)
        self.delta = delta
        self.centred = centred and not delta  # the delta baseline's input has no centred form
        self.vel_scale = float(vel_scale)
        self.emb = emb
        self.heads = heads
        self.head_dim = emb // heads
        self.window = window
        self.n_attn = 2 if pair else 1  # attentions per block: SA (+ BXA)
        self.frame_dim = frame_dim
        self.embed = nn.Linear(step_width(self.centred, frame_dim) + self.noise, emb)
        self.blocks = nn.ModuleList([GBlock(emb, heads, ff, pair, window) for _ in range(blocks)])
        self.head = velocity_head(emb, ff, frame_dim, 1, False)

    def _run(self, tokens: Tensor, caches: List[List[Tensor]], past: int, use_buffers: bool,
             mask: Optional[Tensor]) -> Tuple[Tensor, List[List[Tensor]]]:
        if self.noise > 0:  # model.noise_g: fresh Gaussian inputs per token
            z = torch.randn(tokens.shape[0], tokens.shape[1], self.noise, dtype=tokens.dtype, device=tokens.device)
            tokens = torch.cat([tokens, z], -1)
        h = self.embed(tokens)
        new_caches: List[List[Tensor]] = []
        j = 0
        for block in self.blocks:
            h, c = block(h, caches[j], past, use_buffers, mask)
            new_caches.append(c)
            j += 1
        return self.head(h), new_caches

    def forward(self, obs: Tensor, init_vel: Tensor, n_future: int, use_buffers: bool) -> Tuple[Tensor, Tensor]:
        B, O, D = obs.shape[0], obs.shape[1], obs.shape[2]
        x = obs  # [B, O, D] states (D = 136 in the landmark space)
        x0 = x[:, :1]
        vel = torch.cat([init_vel.reshape(B, 1, D), x[:, 1:] - x[:, :-1]], 1)
        total = O + n_future - 1
        caches: List[List[Tensor]] = []  # per block, see GBlock
        for _ in range(len(self.blocks)):
            if use_buffers:
                caches.append([obs.new_zeros(B, total, self.emb) for _ in range(self.n_attn)])
            else:
                caches.append([obs.new_zeros(B, self.heads, total, self.head_dim) for _ in range(4 * self.n_attn)])
        # observed frames: one parallel causal pass (teacher forcing), which fills the caches
        if self.delta:
            feat = torch.cat([x - x0, x0.expand(B, O, D)], -1)
        else:
            feat = step_input(x, vel, self.vel_scale, self.centred)
        mask: Optional[Tensor] = causal_mask(O, 0, obs.device, self.window) if O > 1 else None
        out, caches = self._run(feat, caches, 0, use_buffers, mask)
        nxt, moved = integrate(x, out, x0, self.integrate.rate(), self.delta)  # eq. 4 at every observed step
        recon = nxt[:, :O - 1]
        pos = nxt[:, O - 1]
        step_vel = moved[:, O - 1]
        future: List[Tensor] = [pos]
        # free running: one token per step against the caches, O(T) projections in total
        for t in range(O, total):
            if self.delta:
                tok = torch.cat([pos - x0[:, 0], x0[:, 0]], -1)
            else:
                tok = step_input(pos, step_vel, self.vel_scale, self.centred)
            out, caches = self._run(tok.unsqueeze(1), caches, t, use_buffers, None)
            pos, step_vel = integrate(pos, out[:, 0], x0[:, 0], self.integrate.rate(), self.delta)
            future.append(pos)
        return stack_frames(future, obs), recon


class TransformerGenerator(Generator):
    """SUHMo-Transformer generator: emb_g embedding, blocks_g x (causal SA, BXA, FF hidden_g);
    ``window`` (``model.attn_window_g``, None = full causal attention) bounds both attentions
    to the W most recent tokens."""

    def __init__(self, emb: int = 1024, heads: int = 1, blocks: int = 1, ff: int = 1024, *, pair: bool = True,
                 delta: bool = False, vel_scale: float = 1.0, window: Optional[int] = None, centred: bool = False,
                 space: Optional[nn.Module] = None, noise: int = 0, revert: bool = False):
        super().__init__()
        if window is not None and window < 1:
            raise SuhmoError(f"attention window {window}: must be a positive number of tokens or None")
        self.space = space_or_landmarks(space, centred)
        self._args = dict(emb=emb, heads=heads, blocks=blocks, ff=ff, pair=pair, delta=delta, vel_scale=vel_scale,
                          window=window, centred=centred, frame_dim=int(self.space.dim), noise=noise,
                          revert=revert)
        self.core = self._build_core(False)

    def _build_core(self, spectral: bool) -> nn.Module:
        a = self._args  # no spectral norm in this generator
        return TransformerCore(a["emb"], a["heads"], a["blocks"], a["ff"], pair=a["pair"], delta=a["delta"],
                               vel_scale=a["vel_scale"], window=a["window"], centred=a["centred"],
                               frame_dim=a["frame_dim"], noise=a["noise"], revert=a["revert"])

    @classmethod
    def from_config(cls, cfg) -> "TransformerGenerator":
        m = cfg.model
        # BXA follows pair_g only (the authors tied it to the joint-D flag by mistake)
        return cls(m.emb_g, m.heads_g, m.blocks_g, m.hidden_g, pair=m.pair_g, delta=m.delta,
                   vel_scale=m.vel_scale, window=m.attn_window_g, centred=m.g_centred, space=build_space(cfg),
                   noise=m.noise_g, revert=m.revert)
