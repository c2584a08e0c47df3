"""The motion spaces a generator can work in (``model.space``).

The paper's generator predicts the velocity of the 136 landmark coordinates and integrates it
(eq. 4). Every current head-motion system instead generates a head pose plus a few expression
coefficients, never free coordinates, and free coordinates are where our faces fell apart at
CPU scale (``experiments/README.md``). A *space* is the fixed map between a frame of landmarks
``[..., 68, 2]`` and the state ``[..., D]`` in which the generator's core runs and integrates:

``landmarks`` (the paper's)  the flattened coordinates, D = 136, identity map.
``pose3d``                   D = 6 + K: 3-D head pose and K expression coefficients on the
                             reference's fixed face shape (``models.pose3d``).
``semantic``                 D = 4 + K: head pose (centroid x, y, log scale, in-plane roll) and
                             K coefficients on the principal components of the
                             Procrustes-aligned training shapes (expressions and the shape
                             changes of yaw and pitch). ``decode`` is differentiable:
                             ``x = centroid + exp(log_scale) R(roll) (mean + basis c)``.

The semantic state is scaled per dimension by the std of its per-frame change on the training
data (times ``model.vel_scale``), so that the velocity G predicts has the same spread in every
dimension (``1 / vel_scale``, like landmark velocities times ``vel_scale``) and ``vel_scale *
velocity`` is of order one in the core's input, as in the landmark space.

Yaw and pitch are not separate pose parameters: with one 2-D view their effect on the
landmarks is confounded with face shape and expression, so they live in the leading shape
components (the first two components of the real dev set are a head turn and a nod).

The space's tensors are buffers, fitted once on the training set at the start of a run
(:meth:`SemanticSpace.fit`), saved with the generator's state dict and therefore inside every
checkpoint and export, scripted with the exported generator (no second file).
"""



from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from suhmo.geometry import centre_scale_t, place_t, shape_pca
from suhmo.models.layers import FRAME_DIM, LANDMARKS, POSE_DIM
from suhmo.registry import SPACES
from suhmo.utils import SuhmoError


class LandmarkSpace(nn.Module):
    """The paper's space: a frame is its 136 coordinates (x, y interleaved)."""

    dim: torch.jit.Final[int]

    def __init__(self):
        super().__init__()
        self.dim = FRAME_DIM

    def encode(self, x: Tensor) -> Tensor:
        """``[..., 68, 2] -> [..., 136]``."""
        return x.flatten(-2)

    def encode_velocity(self, x: Tensor, v: Tensor) -> Tensor:
        """``v [..., 68, 2] -> [..., 136]`` (``x`` unused: the map is linear)."""
        return v.flatten(-2)

    def context(self, obs: Tensor) -> Tensor:
        """What decoding takes from the observed frames: nothing (see ``models.pose3d``)."""
        return obs.new_zeros(0)

    def decode(self, z: Tensor, ctx: Optional[Tensor] = None) -> Tensor:
        """``[..., 136] -> [..., 68, 2]`` (``ctx`` unused)."""
        return z.unflatten(-1, (68, 2))


class SemanticSpace(nn.Module):
    """Head pose + K shape coefficients, scaled per dimension (module docstring)."""

    dim: torch.jit.Final[int]
    k: torch.jit.Final[int]

    def __init__(self, k: int):
        super().__init__()
        if k < 1 or k > FRAME_DIM - POSE_DIM:
            raise SuhmoError(f"semantic space: {k} shape components; choose 1..{FRAME_DIM - POSE_DIM}")
        self.k = int(k)
        self.dim = POSE_DIM + self.k
        self.register_buffer("mean_shape", torch.zeros(LANDMARKS, 2))  # centred, unit RMS radius
        self.register_buffer("basis", torch.zeros(FRAME_DIM, self.k))  # orthonormal columns
        self.register_buffer("offset", torch.zeros(self.dim))  # raw state mean
        self.register_buffer("scale", torch.ones(self.dim))  # raw state units per state unit
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # ----------------------------------------------------------------------- the map
    def raw(self, x: Tensor) -> Tensor:
        """``[..., 68, 2] -> [..., 4 + K]``: [centroid x, y, log scale, roll, coefficients].

        The unit shape ``xn`` is rotated by ``th``, the angle that maps it onto the mean shape
        (``atan2(cross, dot)`` of the two), and projected on the basis: ``(R(th) xn - m) . b``.
        Every term is linear in ``xn``: ``R(th) xn = cos th xn + sin th xn_perp`` with
        ``xn_perp = (-y, x)``, and ``xn_perp . a = xn . a_perp`` with ``a_perp = (a_y, -a_x)``,
        so one product of ``xn`` with ``[m | m_perp | basis | basis_perp]`` gives dot, cross and
        both halves of the coefficients: a few operations on ``[..., 68, 2]`` instead of a
        dozen (``model.d_semantic`` encodes every training batch; benchmarks/train_step.py
        --phases). Equal to the rotate-then-project form within float rounding (tests/test_space.py)."""
        c, s, xn = centre_scale_t(x)
        m = self.mean_shape.reshape(-1, 1)  # [136, 1], x and y interleaved
        cols = torch.cat([m, self.basis], 1)  # [136, 1 + K]
        perp = torch.stack([cols[1::2], -cols[0::2]], 1).reshape(cols.shape)  # a -> a_perp, row pairs
        proj = xn.flatten(-2) @ torch.cat([cols, perp], 1)  # [..., 2 + 2K]
        k = self.k
        dot, cross = proj[..., 0], proj[..., k + 1]
        th = torch.atan2(cross, dot)
        co, si = torch.cos(th).unsqueeze(-1), torch.sin(th).unsqueeze(-1)
        coef = co * proj[..., 1:k + 1] + si * proj[..., k + 2:] - (m.t() @ self.basis).squeeze(0)
        return torch.cat([c, s.log().unsqueeze(-1), (-th).unsqueeze(-1), coef], -1)

    def from_raw(self, r: Tensor) -> Tensor:
        """Inverse of :meth:`raw` up to the PCA residual: ``[..., 4 + K] -> [..., 68, 2]``."""
        shape = self.mean_shape + (r[..., 4:] @ self.basis.t()).unflatten(-1, (68, 2))
        return place_t(shape, r[..., :2], r[..., 2], r[..., 3])

    def encode_velocity(self, x: Tensor, v: Tensor) -> Tensor:
        """The state change of a frame ``x`` that moved by ``v`` (both ``[..., 68, 2]``)."""
        return self.encode(x) - self.encode(x - v)

    def encode(self, x: Tensor) -> Tensor:
        """Landmarks ``[..., 68, 2]`` -> scaled state ``[..., 4 + K]``."""
        return (self.raw(x) - self.offset) / self.scale

    def context(self, obs: Tensor) -> Tensor:
        """What decoding takes from the observed frames: nothing (see ``models.pose3d``)."""
        return obs.new_zeros(0)

    def decode(self, z: Tensor, ctx: Optional[Tensor] = None) -> Tensor:
        """Scaled state ``[..., 4 + K]`` -> landmarks ``[..., 68, 2]`` (differentiable; ``ctx`` unused)."""
        return self.from_raw(z * self.scale + self.offset)

    # ----------------------------------------------------------------------- fitting
    @torch.no_grad()
    def fit(self, frames: np.ndarray, windows: np.ndarray, vel_scale: float) -> Tensor:
        """Fit on training data: the Procrustes mean and PCA basis on ``frames [N, 68, 2]``; the
        state offset and per-dimension scale on ``windows [M, T, 68, 2]`` (augmented training
        windows, so that the pose ranges are those G sees). ``scale_d = std of the per-frame
        change of raw dimension d * vel_scale``. Returns ``encode(windows)`` ``[M, T, 4 + K]``
        from the raw states computed here (the same values; the reversion rates need them)."""
        frames = np.asarray(frames, np.float64).reshape(-1, LANDMARKS, 2)
        if len(frames) < self.k + 1:
            raise SuhmoError(f"semantic space: {len(frames)} training frames cannot fit {self.k} shape components")
        m, _, vt = shape_pca(frames)
        self.mean_shape.copy_(torch.as_tensor(m, dtype=torch.float32))
        self.basis.copy_(torch.as_tensor(vt[: self.k].T, dtype=torch.float32))
        w = torch.as_tensor(np.asarray(windows, np.float32))
        raw = self.raw(w)
        r = raw.double()  # [M, T, D]
        step = (r[:, 1:] - r[:, :-1]).reshape(-1, self.dim).std(0).clamp_min(1e-6)
        self.offset.copy_(r.reshape(-1, self.dim).mean(0).float())
        self.scale.copy_((step * float(vel_scale)).float())
        self.fitted.fill_(True)
        return (raw - self.offset) / self.scale  # = self.encode(w), without a second raw()

    def round_trip_error(self, x: Tensor) -> Tensor:
        """RMS landmark distance of ``decode(encode(x))`` to ``x`` per frame ``[...]`` (input units)."""
        return (self.decode(self.encode(x)) - x).pow(2).sum(-1).mean(-1).sqrt()


def landmark_space(cfg) -> nn.Module:
    return LandmarkSpace()


def semantic_space(cfg) -> nn.Module:
    return SemanticSpace(cfg.model.semantic_k)


def build_space(cfg) -> nn.Module:
    """The space of ``cfg.model.space`` (``suhmo.registry.SPACES``; unfitted for ``semantic``: see
    :meth:`SemanticSpace.fit`)."""
    name = cfg.model.space
    if name not in SPACES:
        raise SuhmoError(f"model.space={name!r}: choose one of {', '.join(SPACES)}")
    return SPACES[name](cfg)
