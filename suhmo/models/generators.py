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
folded weights ``W / sigma(W)``, scripted; the generator itself is left untouched). The RNN
core's training pass is the same recurrence as one autograd node with its backward written out
(``RNNCore._rollout_fused``, ``kernels.RNNRollout``; where that does not apply, with fewer
autograd nodes, ``RNNCore._rollout_autograd``), equal within float rounding.

Input scale: the velocity half of every step input is multiplied by ``model.vel_scale``
(see ``suhmo.config.ModelConfig``) so that it has about the spread of the positions; the
predicted velocity and the Euler integration (eq. 4) stay in position units.

Deviation from the authors' code, on purpose: the velocity heads' *output* layer is a plain
Linear initialised 100x smaller than PyTorch's default (the hidden layers keep spectral norm
when ``model.spectral_norm``). A spectrally normalised output layer after LayerNorm starts
with velocities of order 1 per frame on a [0, 1] face, ~1000x real head motion, and Adam at
lr 2e-5 needs tens of thousands of steps to shrink them.
"""


import copy
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from suhmo.models.kernels import CachedAttention, RNNRollout, amp_dtype
from suhmo.models.layers import (FRAME_DIM, MLP, BatchCrossAttention, MultiHeadAttention, batch_pool,
                                  causal_mask)
from suhmo.models.space import build_space
from suhmo.utils import SuhmoError

STEP_DIM = 2 * FRAME_DIM  # 272: per-frame generator input [pos | vel] (or [pos - x0 | x0] for delta)
_OUT_GAIN = 0.01


def step_width(centred: bool, frame_dim: int = FRAME_DIM) -> int:
    """Width of :func:`step_input` for states of ``frame_dim`` values: ``2 * frame_dim`` (272 for
    landmarks; also the delta baseline's input), 274 for centred landmarks."""
    return 2 * frame_dim + (2 if centred else 0)


def step_input(pos: Tensor, vel: Tensor, vel_scale: float, centred: bool) -> Tensor:
    """One generator step input from ``pos``, ``vel`` ``[..., 136]`` (x, y interleaved).

    ``[pos | vel_scale * vel]`` (272, the paper's), or with ``centred`` (``model.g_centred``)
    ``[pos - centroid | vel_scale * vel | centroid - 0.5]`` (274): the same information, with
    the face's shape separated from where the face is, as the discriminators see it
    (``suhmo.losses.sequence_features``)."""
    if not centred:
        return torch.cat([pos, vel * vel_scale], -1)
    cx = pos[..., 0::2].mean(-1, keepdim=True)
    cy = pos[..., 1::2].mean(-1, keepdim=True)
    rel = torch.stack([pos[..., 0::2] - cx, pos[..., 1::2] - cy], -1).flatten(-2)
    return torch.cat([rel, vel * vel_scale, cx - 0.5, cy - 0.5], -1)


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
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                future, recon = run_in_space(self.space, self.core, obs, v0, int(n_future), True)
        finally:
            self.train(was_training)
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
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in module.state_dict().items()
                     if ".parametrizations." not in f".{k}"}
            for name, sub in module.named_modules():
                if parametrize.is_parametrized(sub):
                    for tensor_name in sub.parametrizations.keys():
                        key = f"{name}.{tensor_name}" if name else tensor_name
                        state[key] = getattr(sub, tensor_name).detach().clone()
    finally:
        module.train(was_training)
    return state


def run_in_space(space: nn.Module, core: nn.Module, obs: Tensor, init_vel: Tensor, n_future: int,
                 use_buffers: bool) -> Tuple[Tensor, Tensor]:
    """Encode ``obs [B,O,68,2]`` and ``init_vel [B,68,2]`` into the space, run the core there,
    decode its ``(future [B,n,D], recon [B,O-1,D])`` to landmarks."""
    z = space.encode(obs)
    v = space.encode_velocity(obs[:, 0], init_vel)
    future, recon = core(z, v, n_future, use_buffers)
    return space.decode(future), space.decode(recon)


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
            future, _ = self.core(z, v, n_future, True)
        return self.space.decode(future)


def _stack_frames(frames: List[Tensor], like: Tensor) -> Tensor:
    """List of ``[B, D]`` -> ``[B, n, D]`` (n may be 0)."""
    if len(frames) == 0:
        return like.new_zeros(like.shape[0], 0, like.shape[-1])
    return torch.stack(frames, 1)


class Integrator(nn.Module):
    """Eq. 4, ``x_t = x_{t-1} + v_t``: the one place where a predicted velocity moves the state.

    With ``revert`` (``model.revert``, off = the paper) the step also pulls the state back
    towards the reference frame's, ``x_t = x_{t-1} + v_t - k * (x_{t-1} - x_0)``, with one
    learned rate ``k = sigmoid(logit)`` in (0, 1) per state dimension (initialised from the
    training data by :meth:`fit_rates`, else 0.01). Real faces are stationary: their shape and
    pose wander a little about the person's rest state and come back (experiments/README.md,
    "natural motion": the distance to frame 0 of real shapes saturates by frame 40, a free
    integrator's keeps growing), and G only ever sees 45-frame windows in training, too short
    to learn by itself to come back. With k = 0 this is exactly eq. 4."""

    revert: torch.jit.Final[bool]

    def __init__(self, dim: int, revert: bool = False):
        super().__init__()
        self.revert = bool(revert)
        if self.revert:
            self.logit = nn.Parameter(torch.full((dim,), -4.6))  # sigmoid = 0.01
        else:
            self.register_buffer("logit", torch.zeros(0), persistent=False)

    def forward(self, pos: Tensor, vel: Tensor, x0: Tensor) -> Tensor:
        if self.revert:
            return pos + vel - torch.sigmoid(self.logit) * (pos - x0)
        return pos + vel

    @torch.jit.unused
    @torch.no_grad()
    def fit_rates(self, windows: Tensor, lo: float = 1e-3, hi: float = 0.3, lag: int = 10) -> None:
        """Reversion rate per dimension of real state windows ``[M, T, D]``, by least squares
        over ``lag`` frames: ``z_{t+L} - z_t ~ -(1 - (1 - k)^L) (z_t - z_0)``, clamped to [lo, hi].

        Not over one frame: real motion has momentum (a head that has turned away is still
        turning), so the one-step change correlates with the displacement that produced it and
        the one-step fit sets the rates of the pose near 0 (measured on the dev set's train
        persons: roll 0.003, x 0.0001; over 10 frames 0.014 and 0.017; experiments/README.md,
        "Natural head motion"). ``L = min(lag, T // 4)``; for a first-order walk both agree."""
        if not self.revert:
            return
        L = max(1, min(int(lag), windows.shape[1] // 4))
        z = windows.double()
        dev = z[:, :-L] - z[:, :1]
        step = z[:, L:] - z[:, :-L]
        b = (-(dev * step).sum((0, 1)) / dev.pow(2).sum((0, 1)).clamp_min(1e-12)).clamp(0.0, 0.999)
        k = (1 - (1 - b) ** (1.0 / L)).clamp(lo, hi).to(self.logit)
        self.logit.copy_(torch.log(k / (1 - k)))


def _space_or_landmarks(space: Optional[nn.Module], centred: bool) -> nn.Module:
    from suhmo.models.space import LandmarkSpace

    space = LandmarkSpace() if space is None else space
    if centred and int(space.dim) != FRAME_DIM:
        raise SuhmoError("model.g_centred=true needs model.space=landmarks (a semantic state has no landmark centroid)")
    return space


# ---------------------------------------------------------------------------------- RNN
class RNNCore(nn.Module):
    """One LSTMCell stepped over time; BP (eq. 13-14) of the previous hidden state joins the input."""

    pair: torch.jit.Final[bool]
    delta: torch.jit.Final[bool]
    centred: torch.jit.Final[bool]
    noise: torch.jit.Final[int]
    rho: torch.jit.Final[float]

    def __init__(self, hidden: int, mlp: int, *, pair: bool, delta: bool, spectral: bool, vel_scale: float = 1.0,
                 centred: bool = False, frame_dim: int = FRAME_DIM, noise: int = 0, revert: bool = False,
                 rho: float = 0.0):
        super().__init__()
        self.noise = int(noise)
        # model.noise_rho: the noise inputs' correlation from one step to the next. Fresh noise
        # per step (0) reaches the velocity head directly and comes out as frame-to-frame jitter
        # (experiments/README.md, "Natural head motion"); correlated noise varies smoothly.
        self.rho = float(rho)
        self.integrate = Integrator(frame_dim, revert and not delta)
        self.pair = pair
        self.delta = delta
        self.centred = centred and not delta  # the delta baseline's input has no centred form
        self.vel_scale = float(vel_scale)
        step = step_width(self.centred, frame_dim)
        # learned initial state (h0, c0) from the first frame's (pos, vel)
        self.init_mlp = nn.Sequential(nn.Linear(step, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, 2 * hidden))
        self.cell = nn.LSTMCell(step + self.noise + (hidden if pair else 0), hidden)
        # deep output on [h_t, pos_t, vel_t(, noise_t)] -> velocity
        self.head = MLP(hidden + step + self.noise, mlp, frame_dim, depth=2, norm=True, spectral=spectral,
                        spectral_out=False, out_gain=_OUT_GAIN)

    def _start(self, x0: Tensor, vel: Tensor) -> Tuple[Tensor, Tensor]:
        """The LSTM's initial ``(h, c)`` from the reference state and initial velocity."""
        h, c = self.init_mlp(step_input(x0, vel, self.vel_scale, self.centred)).chunk(2, -1)
        return h.contiguous(), c.contiguous()

    def _next_noise(self, n: Tensor, i: int) -> Tensor:
        """Step ``i``'s noise inputs: fresh N(0, 1), or with ``rho`` a stationary AR(1) (unit variance
        at every step) continuing ``n``."""
        e = torch.randn(n.shape[0], self.noise, dtype=n.dtype, device=n.device)
        if self.rho > 0.0 and i > 0:
            return self.rho * n + math.sqrt(1.0 - self.rho * self.rho) * e
        return e

    def forward(self, obs: Tensor, init_vel: Tensor, n_future: int, use_buffers: bool) -> Tuple[Tensor, Tensor]:
        if not use_buffers:  # training (autograd): the same recurrence, one autograd node (or fewer nodes)
            fused = self._rollout_fused(obs, init_vel, n_future)
            return fused if fused is not None else self._rollout_autograd(obs, init_vel, n_future)
        O = obs.shape[1]
        x = obs  # [B, O, D] states (D = 136 in the landmark space)
        x0 = x[:, 0]
        vel = init_vel
        h, c = self._start(x0, vel)
        pos = x0
        recon: List[Tensor] = []
        future: List[Tensor] = []
        n = x0.new_zeros(x.shape[0], self.noise)
        for i in range(O + n_future - 1):
            if i < O:  # teacher forcing
                pos = x[:, i]
                if i > 0:
                    vel = x[:, i] - x[:, i - 1]
            if self.delta:
                feat = torch.cat([pos - x0, x0], -1)
            else:
                feat = step_input(pos, vel, self.vel_scale, self.centred)
            if self.noise > 0:
                n = self._next_noise(n, i)
                feat = torch.cat([feat, n], -1)
            if self.pair:
                h, c = self.cell(torch.cat([feat, batch_pool(h)], -1), (h, c))
            else:
                h, c = self.cell(feat, (h, c))
            out = self.head(torch.cat([h, feat], -1))
            if self.delta:  # delta baseline: displacement from x_0
                nxt = x0 + out
                vel = nxt - pos
            else:  # eq. 4, Euler integration of the predicted velocity
                nxt = self.integrate(pos, out, x0)
                vel = nxt - pos if self.integrate.revert else out
            pos = nxt
            if i < O - 1:
                recon.append(nxt)
            else:
                future.append(nxt)
        return _stack_frames(future, obs), _stack_frames(recon, obs)

    @torch.jit.unused
    def _rollout_fused(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Optional[Tuple[Tensor, Tensor]]:
        """``forward`` for training as one autograd node (``kernels.RNNRollout``: the loop run without
        recording, backpropagation through time written out, each weight's gradient one product
        over all steps): the same recurrence, equal within float rounding. None where it does not
        apply (the delta baseline, centred inputs, another head, gradients wanted for the
        observations), and ``_rollout_autograd`` runs instead. Under autocast (``train.amp``) the
        node runs with autocast off and the cell's products in autocast's type (``RNNRollout``'s ``lowp``)."""
        net = list(self.head.net)
        if (self.delta or self.centred or obs.requires_grad or init_vel.requires_grad or n_future <= 0
                or len(net) != 7
                or not all(isinstance(m, k) for m, k in zip(net, (nn.Linear, nn.LayerNorm, nn.LeakyReLU) * 2 + (nn.Linear,)))
                or net[1].weight is None or net[4].weight is None or net[2].negative_slope != net[5].negative_slope):
            return None
        x0 = obs[:, 0]
        h, c = self._start(x0, init_vel)
        cell = self.cell
        w = torch.cat([cell.weight_ih, cell.weight_hh], 1).t()  # [in + H, 4H]
        b = cell.bias_ih + cell.bias_hh
        rate = torch.sigmoid(self.integrate.logit) if self.integrate.revert else None
        l1, n1, a1, l2, n2, _, l3 = net
        dev = obs.device.type
        lowp = amp_dtype(obs)
        meta = (int(n_future), self.vel_scale, self.pair, self._next_noise, self.noise, n1.eps, n2.eps,
                float(a1.negative_slope), lowp)
        with torch.autocast(dev, enabled=False):  # its recurrence in the weights' precision, h0 and c0 included
            states = RNNRollout.apply(obs, init_vel, h.to(w.dtype), c.to(w.dtype), rate, w, b, l1.weight, l1.bias,
                                      n1.weight, n1.bias, l2.weight, l2.bias, n2.weight, n2.bias, l3.weight, l3.bias, meta)
        O = obs.shape[1]
        return states[:, O - 1:], states[:, :O - 1]

    @torch.jit.unused
    def _rollout_autograd(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Tuple[Tensor, Tensor]:
        """``forward`` for training: the loop above with fewer operations per step, each of which
        autograd records and runs backward: the cell's two products and bias sum as one product,
        ``cat([input, BP(h), h]) @ [W_ih | W_hh]^T + (b_ih + b_hh)`` (weights joined once per
        pass), the step input and the noise in one concatenation, BP expanded into it without
        a copy, the integrator's rate formed once. A Python ``autograd.Function`` for the cell's
        pointwise part was measured slower than the plain expressions at this size. The same
        noise draws; equal to the loop within float rounding (the sums are ordered differently;
        tests/test_step_equivalence.py)."""
        O = obs.shape[1]
        x = obs
        x0 = x[:, 0]
        vel = init_vel
        h, c = self._start(x0, vel)
        cell = self.cell
        w = torch.cat([cell.weight_ih, cell.weight_hh], 1).t()  # [in + H, 4H]
        b = cell.bias_ih + cell.bias_hh
        rate = torch.sigmoid(self.integrate.logit) if self.integrate.revert and not self.delta else None
        pos = x0
        recon: List[Tensor] = []
        future: List[Tensor] = []
        n = x0.new_zeros(x.shape[0], self.noise)
        for i in range(O + n_future - 1):
            if i < O:  # teacher forcing
                pos = x[:, i]
                if i > 0:
                    vel = x[:, i] - x[:, i - 1]
            if self.noise > 0:
                n = self._next_noise(n, i)
            if self.delta:
                parts = [pos - x0, x0]
            elif self.centred:
                parts = [step_input(pos, vel, self.vel_scale, True)]
            else:  # step_input's [pos | vel_scale * vel], written into the one concatenation
                parts = [pos, vel * self.vel_scale]
            if self.noise > 0:
                parts.append(n)
            feat = torch.cat(parts, -1) if len(parts) > 1 else parts[0]
            if self.pair:  # [feat | BP(h) | h] per pair of rows, BP broadcast over the pair (eq. 13-14)
                hp = h.view(-1, 2, h.shape[-1])
                inp = torch.cat([feat.view(hp.shape[0], 2, -1), hp.amax(1, keepdim=True).expand_as(hp), hp],
                                -1).view(h.shape[0], -1)
            else:
                inp = torch.cat([feat, h], -1)
            i_, f_, g_, o_ = torch.addmm(b, inp, w).chunk(4, 1)  # nn.LSTMCell's gate order
            c = torch.sigmoid(f_) * c + torch.sigmoid(i_) * torch.tanh(g_)
            h = torch.sigmoid(o_) * torch.tanh(c)
            out = self.head(torch.cat([h, feat], -1))
            if self.delta:
                nxt = x0 + out
                vel = nxt - pos
            elif rate is not None:  # eq. 4 with reversion (Integrator)
                nxt = pos + out - rate * (pos - x0)
                vel = nxt - pos
            else:  # eq. 4
                nxt = pos + out
                vel = out
            pos = nxt
            if i < O - 1:
                recon.append(nxt)
            else:
                future.append(nxt)
        return _stack_frames(future, obs), _stack_frames(recon, obs)


class RNNGenerator(Generator):
    """SUHMo-RNN generator: LSTMCell (hidden_g) + BP + deep-output MLP (mlp_g)."""

    def __init__(self, hidden: int = 1024, mlp: int = 1024, *, pair: bool = True, delta: bool = False,
                 spectral: bool = True, vel_scale: float = 1.0, centred: bool = False, space: Optional[nn.Module] = None,
                 noise: int = 0, revert: bool = False, noise_rho: float = 0.0):
        super().__init__()
        self.space = _space_or_landmarks(space, centred)
        self._args = dict(hidden=hidden, mlp=mlp, pair=pair, delta=delta, vel_scale=vel_scale, centred=centred,
                          frame_dim=int(self.space.dim), noise=noise, revert=revert, noise_rho=noise_rho)
        self.core = self._build_core(spectral)

    def _build_core(self, spectral: bool) -> nn.Module:
        a = self._args
        return RNNCore(a["hidden"], a["mlp"], pair=a["pair"], delta=a["delta"], spectral=spectral,
                       vel_scale=a["vel_scale"], centred=a["centred"], frame_dim=a["frame_dim"], noise=a["noise"],
                       revert=a["revert"], rho=a.get("noise_rho", 0.0))

    @classmethod
    def from_config(cls, cfg) -> "RNNGenerator":
        m = cfg.model
        return cls(m.hidden_g, m.mlp_g, pair=m.pair_g, delta=m.delta, spectral=m.spectral_norm,
                   vel_scale=m.vel_scale, centred=m.g_centred, space=build_space(cfg), noise=m.noise_g,
                   revert=m.revert, noise_rho=m.noise_rho)


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
        self.head = MLP(emb, ff, frame_dim, depth=1, norm=True, spectral=False, out_gain=_OUT_GAIN)

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
        nxt = x0 + out if self.delta else self.integrate(x, out, x0)  # eq. 4 (or delta baseline)
        recon = nxt[:, :O - 1]
        pos = nxt[:, O - 1]
        step_vel = nxt[:, O - 1] - x[:, O - 1] if self.delta or self.integrate.revert else out[:, O - 1]
        future: List[Tensor] = [pos]
        # free running: one token per step against the caches, O(T) projections in total
        for t in range(O, total):
            if self.delta:
                tok = torch.cat([pos - x0[:, 0], x0[:, 0]], -1)
            else:
                tok = step_input(pos, step_vel, self.vel_scale, self.centred)
            out, caches = self._run(tok.unsqueeze(1), caches, t, use_buffers, None)
            o = out[:, 0]
            if self.delta:
                new = x0[:, 0] + o
                step_vel = new - pos
            else:
                new = self.integrate(pos, o, x0[:, 0])
                step_vel = new - pos if self.integrate.revert else o
            pos = new
            future.append(pos)
        return _stack_frames(future, obs), recon


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
        self.space = _space_or_landmarks(space, centred)
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
