"""One generator step (Sec. 3.1, eq. 4), the parts every generator shares: the step's input
(:func:`step_input`), the velocity head (:func:`velocity_head`) and the integrator
(:func:`integrate`, :class:`Integrator`: eq. 4, with the delta baseline and the reversion
folded in).

Input scale: the velocity half of every step input is multiplied by ``model.vel_scale``
(see ``suhmo.config.ModelConfig``) so that it has about the spread of the positions; the
predicted velocity and the Euler integration (eq. 4) stay in position units.

Deviation from the authors' code, on purpose: the velocity heads' *output* layer is a plain
Linear initialised 100x smaller than PyTorch's default (the hidden layers keep spectral norm
when ``model.spectral_norm``). A spectrally normalised output layer after LayerNorm starts
with velocities of order 1 per frame on a [0, 1] face, ~1000x real head motion, and Adam at
lr 2e-5 needs tens of thousands of steps to shrink them.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from suhmo.geometry import centre_flat_t
from suhmo.models.layers import FRAME_DIM, MLP

STEP_DIM = 2 * FRAME_DIM  # 272: per-frame generator input [pos | vel] (or [pos - x0 | x0] for delta)
OUT_GAIN = 0.01  # the velocity head's output layer, times PyTorch's default initialisation


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
    rel, cx, cy = centre_flat_t(pos)
    return torch.cat([rel, vel * vel_scale, cx - 0.5, cy - 0.5], -1)


def velocity_head(d_in: int, width: int, frame_dim: int, depth: int, spectral: bool) -> nn.Module:
    """The deep output that maps a step's hidden state (and inputs) to the predicted velocity
    ``[..., frame_dim]``: ``depth`` hidden layers (LayerNorm, LeakyReLU; spectral norm with
    ``spectral``) and a plain output layer ``OUT_GAIN`` x PyTorch's initialisation (module docstring)."""
    return MLP(d_in, width, frame_dim, depth=depth, norm=True, spectral=spectral, spectral_out=False,
               out_gain=OUT_GAIN)


def integrate(pos: Tensor, out: Tensor, x0: Tensor, rate: Optional[Tensor], delta: bool) -> Tuple[Tensor, Tensor]:
    """One step of eq. 4 from the state ``pos`` and the head's output ``out`` -> (next state,
    the velocity it moved by); ``x0`` is the reference frame's state.

    ``x_t = x_{t-1} + v_t`` (eq. 4; the velocity is ``out`` itself); with a reversion ``rate``
    (``Integrator.rate``) ``x_t = x_{t-1} + v_t - k (x_{t-1} - x_0)``; the delta baseline
    (``model.delta``) reads ``out`` as the displacement from the reference, ``x_t = x_0 + out``."""
    if delta:
        nxt = x0 + out
        return nxt, nxt - pos
    if rate is not None:
        nxt = pos + out - rate * (pos - x0)
        return nxt, nxt - pos
    return pos + out, out


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

    def rate(self) -> Optional[Tensor]:
        """The reversion rates ``k [dim]``, or None without reversion (:func:`integrate`'s ``rate``)."""
        if self.revert:
            return torch.sigmoid(self.logit)
        return None

    def forward(self, pos: Tensor, vel: Tensor, x0: Tensor) -> Tensor:
        return integrate(pos, vel, x0, self.rate(), False)[0]

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


def stack_frames(frames: List[Tensor], like: Tensor) -> Tensor:
    """List of ``[B, D]`` -> ``[B, n, D]`` (n may be 0)."""
    if len(frames) == 0:
        return like.new_zeros(like.shape[0], 0, like.shape[-1])
    return torch.stack(frames, 1)
