"""SUHMo-RNN generator (Sec. 3.1, Fig. 3): one LSTM cell stepped over time, batch-pool BP
(eq. 13-14) of the previous hidden state joining each step's input, a deep-output velocity head
and the integrator of eq. 4 (``suhmo.models.step``).

The recurrence is written once, :meth:`RNNCore.reference`: generation and the exported module
run it (the cell as ``nn.LSTMCell``), and so does training under autograd where the fast
implementation does not apply or the reference is asked for (``kernels.reference``; the cell's
two products then one product over the joined weights, fewer autograd nodes). The fast
implementation of the training pass is ``kernels.RNNRollout``: the same recurrence as one
autograd node with its backward written out, equal within float rounding
(tests/test_step_equivalence.py).
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from suhmo.models import kernels
from suhmo.models.generators import Generator, space_or_landmarks
from suhmo.models.kernels import RNNRollout, amp_dtype
from suhmo.models.layers import FRAME_DIM, batch_pool, lstm_cell
from suhmo.models.space import build_space
from suhmo.models.step import Integrator, integrate, stack_frames, step_input, step_width, velocity_head


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
        self.head = velocity_head(hidden + step + self.noise, mlp, frame_dim, 2, spectral)

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

    def _joined_weights(self) -> Tuple[Tensor, Tensor]:
        """The cell's ``[W_ih | W_hh]^T`` ``[in + H, 4H]`` and ``b_ih + b_hh``: its two products as one."""
        cell = self.cell
        return torch.cat([cell.weight_ih, cell.weight_hh], 1).t(), cell.bias_ih + cell.bias_hh

    def _features(self, pos: Tensor, vel: Tensor, x0: Tensor, n: Tensor) -> Tensor:
        """The step's input ``[B, F]`` in one concatenation: ``[pos - x0 | x0]`` for the delta
        baseline, else :func:`step_input`'s, then the noise inputs."""
        if self.delta:
            parts = [pos - x0, x0]
        elif self.centred:
            parts = [step_input(pos, vel, self.vel_scale, True)]
        else:  # step_input's [pos | vel_scale * vel], written into the one concatenation
            parts = [pos, vel * self.vel_scale]
        if self.noise > 0:
            parts.append(n)
        return torch.cat(parts, -1) if len(parts) > 1 else parts[0]

    def forward(self, obs: Tensor, init_vel: Tensor, n_future: int, use_buffers: bool) -> Tuple[Tensor, Tensor]:
        """``obs [B, O, D]`` states, ``init_vel [B, D]`` -> (future ``[B, n_future, D]``, recon
        ``[B, O-1, D]``); ``use_buffers``: generation (no autograd), else the training pass."""
        if not use_buffers:
            return self._training_pass(obs, init_vel, n_future)
        return self.reference(obs, init_vel, n_future, False)

    @torch.jit.unused
    def _training_pass(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Tuple[Tensor, Tensor]:
        """The fast implementation where it applies and the switch allows it, else the reference
        recorded by autograd with the cell's products joined."""
        fused = self._rollout_fused(obs, init_vel, n_future) if kernels.fast_enabled() else None
        return fused if fused is not None else self.reference(obs, init_vel, n_future, True)

    def reference(self, obs: Tensor, init_vel: Tensor, n_future: int, joined: bool) -> Tuple[Tensor, Tensor]:
        """The recurrence, step by step: teacher forcing over the ``O`` observed states (step ``i``
        reads ``x_i`` and ``v_i = x_i - x_{i-1}``, ``v_0 = init_vel``), then free running, each
        step's predicted velocity integrated by eq. 4 (:func:`step.integrate`) and fed back.

        ``joined``: the cell's two products and bias sum as one product,
        ``cat([input, BP(h), h]) @ [W_ih | W_hh]^T + (b_ih + b_hh)``, BP expanded into it
        without a copy (autograd records fewer operations per step; equal to ``nn.LSTMCell``
        within float rounding), else the cell module itself (generation, the exported module)."""
        O = obs.shape[1]
        x = obs  # [B, O, D] states (D = 136 in the landmark space)
        x0 = x[:, 0]
        vel = init_vel
        h, c = self._start(x0, vel)
        w, b = self._joined_weights() if joined else (x0, x0)  # (x0, x0): unused placeholders
        rate = self.integrate.rate() if not self.delta else None
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
            feat = self._features(pos, vel, x0, n)
            if joined:
                h, c = self._joined_cell(feat, h, c, w, b)
            elif self.pair:
                h, c = self.cell(torch.cat([feat, batch_pool(h)], -1), (h, c))
            else:
                h, c = self.cell(feat, (h, c))
            out = self.head(torch.cat([h, feat], -1))
            nxt, vel = integrate(pos, out, x0, rate, self.delta)
            pos = nxt
            if i < O - 1:
                recon.append(nxt)
            else:
                future.append(nxt)
        return stack_frames(future, obs), stack_frames(recon, obs)

    def _joined_cell(self, feat: Tensor, h: Tensor, c: Tensor, w: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
        """One LSTM step (``nn.LSTMCell``'s gate order i, f, g, o) on ``[feat | BP(h) | h]`` (pairs)
        or ``[feat | h]`` with the joined weights ``w``, ``b`` (:meth:`_joined_weights`)."""
        if self.pair:  # BP broadcast over the pair (eq. 13-14)
            hp = h.view(-1, 2, h.shape[-1])
            inp = torch.cat([feat.view(hp.shape[0], 2, -1), hp.amax(1, keepdim=True).expand_as(hp), hp],
                            -1).view(h.shape[0], -1)
        else:
            inp = torch.cat([feat, h], -1)
        return lstm_cell(torch.addmm(b, inp, w), c)

    @torch.jit.unused
    def _rollout_fused(self, obs: Tensor, init_vel: Tensor, n_future: int) -> Optional[Tuple[Tensor, Tensor]]:
        """The training pass as one autograd node (``kernels.RNNRollout``: the loop run without
        recording, backpropagation through time written out, each weight's gradient one product
        over all steps): the same recurrence, equal within float rounding. None where it does not
        apply (the delta baseline, centred inputs, another head, gradients wanted for the
        observations), and the reference runs instead. Under autocast (``train.amp``) the node
        runs with autocast off and the cell's products in autocast's type (``RNNRollout``'s ``lowp``)."""
        net = list(self.head.net)
        if (self.delta or self.centred or obs.requires_grad or init_vel.requires_grad or n_future <= 0
                or len(net) != 7
                or not all(isinstance(m, k) for m, k in zip(net, (nn.Linear, nn.LayerNorm, nn.LeakyReLU) * 2 + (nn.Linear,)))
                or net[1].weight is None or net[4].weight is None or net[2].negative_slope != net[5].negative_slope):
            return None
        x0 = obs[:, 0]
        h, c = self._start(x0, init_vel)
        w, b = self._joined_weights()
        rate = self.integrate.rate()
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


class RNNGenerator(Generator):
    """SUHMo-RNN generator: LSTMCell (hidden_g) + BP + deep-output MLP (mlp_g)."""

    def __init__(self, hidden: int = 1024, mlp: int = 1024, *, pair: bool = True, delta: bool = False,
                 spectral: bool = True, vel_scale: float = 1.0, centred: bool = False, space: Optional[nn.Module] = None,
                 noise: int = 0, revert: bool = False, noise_rho: float = 0.0):
        super().__init__()
        self.space = space_or_landmarks(space, centred)
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
