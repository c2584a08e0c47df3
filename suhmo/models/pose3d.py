"""The 3-D motion space (``model.space=pose3d``): an explicit head pose, an expression code, and
the person's face shape fixed from the reference frame and never generated.

A frame of 2-D landmarks ``x [68, 2]`` is the weak-perspective view of a 3-D face:

    x_p = t + s * R2(yaw, pitch, roll) (S_p + sum_k e_k E_kp)          (p = 1..68)

``S [68, 3]`` is the person's shape (centred), ``E_k [68, 3]`` the expression components,
``R2`` the first two rows of ``R = Rz(roll) Ry(yaw) Rx(pitch)``, ``s`` the scale and ``t`` the 2-D
centroid. The state the generator integrates is

    [t_x, t_y, log s, yaw, pitch, roll, e_1 .. e_K]                       (D = 6 + K)

scaled per dimension like the semantic space's (the std of its per-frame change times
``model.vel_scale``). The person's shape is not in the state: :meth:`Pose3DSpace.context` fits it
on the reference frame (``obs[:, 0]``) and :meth:`Pose3DSpace.decode` places every generated
frame with it, so a generated head can turn and talk but cannot become another face, and a
head turned at the reference rotates in 3-D rather than morphing through 2-D shape components.
The reference's detail that no component captures travels with its shape (the residual,
back-projected into the model frame), so decoding the reference's own state returns the
reference frame.

Fitting, once per run on training windows (:meth:`Pose3DSpace.fit`):

1. the shape model starts from the 3-D mean face (``suhmo.data.synth.mean_face``, the OpenFace
   68-point model), centred, scaled to unit RMS radius of its frontal view;
2. each frame's pose is fitted to the mean face (:func:`fit_pose`: the least-squares 2x3 affine
   map, made a scaled rotation by its polar factor), and what the pose leaves is back-projected
   into the model frame (the minimum-norm 3-D offsets that explain it);
3. the mean of those offsets corrects the mean face to the data's landmark convention; the
   per-window mean offsets (constant within a clip) give the identity components, the per-frame
   offsets about their window mean (projected off the identity components) the expression
   components: two PCAs with orthonormal columns;
4. per frame (:meth:`Pose3DSpace.raw`), pose and coefficients are fitted alternately: with the
   pose fixed the coefficients are a ridge least-squares solve whose prior is each component's
   variance (``NOISE / var_k``), in closed form because the projection of an orthonormal basis
   loses only its components along the viewing direction.

Every step is differentiable (the polar factor of a 2x2 in closed form, no SVD: a scaled rotation
has two equal singular values, where SVD gradients are undefined) and TorchScript-compatible.
"""

from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn

from suhmo.data.synth import mean_face
from suhmo.models.layers import LANDMARKS, POSE3D_DIM
from suhmo.utils import SuhmoError

ID_K = 16  # identity components
NOISE = 1e-4  # landmark noise variance (unit-radius faces) of the coefficients' ridge prior
ITERS = 2  # pose / coefficient alternations per frame
REFINE = 3  # Richardson steps of each coefficient solve


def unit_mean_face() -> np.ndarray:
    """The 3-D mean face ``[68, 3]``, centred, with unit RMS radius of its frontal (x, y) view."""
    m = mean_face() - mean_face().mean(0)
    return m / np.sqrt((m[:, :2] ** 2).sum(-1).mean())


def rotation(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """``R = Rz(roll) Ry(yaw) Rx(pitch)`` ``[..., 3, 3]`` from angles ``[...]`` (radians)."""
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    r0 = torch.stack([cr * cy, cr * sy * sp - sr * cp, cr * sy * cp + sr * sp], -1)
    r1 = torch.stack([sr * cy, sr * sy * sp + cr * cp, sr * sy * cp - cr * sp], -1)
    r2 = torch.stack([-sy, cy * sp, cy * cp], -1)
    return torch.stack([r0, r1, r2], -2)


def angles(r: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`rotation`: ``(yaw, pitch, roll)`` of ``r [..., 3, 3]``."""
    yaw = torch.atan2(-r[..., 2, 0], torch.sqrt(r[..., 0, 0] ** 2 + r[..., 1, 0] ** 2 + 1e-12))
    pitch = torch.atan2(r[..., 2, 1], r[..., 2, 2])
    roll = torch.atan2(r[..., 1, 0], r[..., 0, 0])
    return yaw, pitch, roll


def fit_pose(sts: Tensor, sx: Tensor) -> Tuple[Tensor, Tensor]:
    """Scale ``s [N]`` and rotation ``R [N, 3, 3]`` that best map a centred 3-D shape ``S`` onto a
    centred 2-D frame ``x`` under weak perspective, from their moments ``sts = S^T S [N, 3, 3]``
    and ``sx = S^T x [N, 3, 2]``: the affine ``A = (S^T S)^-1 S^T x`` (transposed: 2x3), then its
    polar factor ``A = sqrt(A A^T) R2`` in closed form (for a 2x2 SPD ``M``: ``sqrt(M) = (M +
    sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M))``), ``s = tr sqrt(A A^T) / 2`` and the third row
    ``r1 x r2``. Small products are written out: batched 2x3 matrix products are slow on the CPU."""
    a = torch.linalg.solve(sts, sx).transpose(-1, -2)  # [N, 2, 3]
    m00, m11 = a[:, 0].pow(2).sum(-1), a[:, 1].pow(2).sum(-1)
    m01 = (a[:, 0] * a[:, 1]).sum(-1)
    rd = torch.sqrt((m00 * m11 - m01 * m01).clamp_min(1e-20))
    tr = torch.sqrt((m00 + m11 + 2 * rd).clamp_min(1e-20))
    q00, q11, q01 = (m00 + rd) / tr, (m11 + rd) / tr, m01 / tr  # sqrt(M)
    s = (q00 + q11) / 2
    # sqrt(M)^-1 A, the inverse of the 2x2 by its adjugate (det sqrt(M) = sqrt(det M))
    r0 = (q11.unsqueeze(-1) * a[:, 0] - q01.unsqueeze(-1) * a[:, 1]) / rd.unsqueeze(-1)
    r1 = (q00.unsqueeze(-1) * a[:, 1] - q01.unsqueeze(-1) * a[:, 0]) / rd.unsqueeze(-1)
    return s, torch.stack([r0, r1, torch.linalg.cross(r0, r1, dim=-1)], 1)


class Pose3DSpace(nn.Module):
    """Head pose + K expression coefficients over the reference's fixed 3-D shape (module docstring)."""

    dim: torch.jit.Final[int]
    k: torch.jit.Final[int]
    k_id: torch.jit.Final[int]
    pose_dim: torch.jit.Final[int]
    points: torch.jit.Final[int]
    iters: torch.jit.Final[int]
    refine: torch.jit.Final[int]

    def __init__(self, k: int, k_id: int = ID_K):
        super().__init__()
        if k < 1 or k + k_id > 3 * LANDMARKS - 7:
            raise SuhmoError(f"pose3d space: {k} expression components; choose 1..{3 * LANDMARKS - 7 - k_id}")
        self.k, self.k_id = int(k), int(k_id)
        self.dim = POSE3D_DIM + self.k
        self.pose_dim = POSE3D_DIM
        self.points = LANDMARKS
        self.iters = ITERS
        self.refine = REFINE
        kk = self.k + self.k_id
        self.register_buffer("mean3d", torch.as_tensor(unit_mean_face(), dtype=torch.float32))  # [68, 3]
        self.register_buffer("basis", torch.zeros(LANDMARKS * 3, kk))  # [identity | expression], orthonormal
        self.register_buffer("ridge", torch.full((kk,), 1e-2))  # NOISE / component variance
        self.register_buffer("offset", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(self.dim))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    # ----------------------------------------------------------------------- the per-frame fit
    def solve(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Frames ``x [N, 68, 2]`` -> centroid ``[N, 2]``, scale ``[N]``, rotation ``[N, 3, 3]`` and
        coefficients ``[N, K_id + K]``.

        The shape ``S = m + B c`` is never built: its moments with itself and with the frame are
        quadratic and linear in ``c`` with fixed tensors (``S^T S = m^T m + c . (m^T B + B^T m) +
        c^T (B^T B) c``; ``S^T x = m^T x + c . B^T x``, where ``B^T x`` is one product of the frame
        with the basis). With the pose fixed, the coefficients solve ``(I + diag(ridge) - W^T W) c
        = B^T d``: ``d`` are the back-projected offsets, ``B^T d = (B^T x) . R2 / s - (m^T B) . P``
        with ``P = R2^T R2``, and ``W = n . B_p`` the components along the viewing direction ``n``
        (what the projection loses); the solve starts from the diagonal and takes ``REFINE``
        Richardson steps, each a few products with the basis."""
        c = x.mean(-2)
        xc = x - c.unsqueeze(-2)
        n = x.shape[0]
        kk = self.basis.shape[1]
        b3 = self.basis.reshape(self.points, 3, kk)
        mm = self.mean3d.t() @ self.mean3d  # [3, 3]
        mb = torch.einsum("pc,pdk->kcd", self.mean3d, b3)  # m^T B_k [KK, 3, 3]
        bb = torch.einsum("pck,pdl->kcld", b3, b3).reshape(kk, kk * 9)  # B_k^T B_l
        flat = xc.flatten(1)  # [N, 136], (point, axis) pairs
        mx = torch.einsum("pc,npj->ncj", self.mean3d, xc)  # m^T x [N, 3, 2]
        bx = torch.einsum("pck,npj->nkcj", b3, flat.reshape(n, self.points, 2))  # B_k^T x [N, KK, 3, 2]
        diag = 1.0 / (1.0 + self.ridge)
        bview = b3.permute(1, 2, 0)  # [3, KK, 68]
        s, r = fit_pose(mm.expand(n, 3, 3), mx)
        coef = x.new_zeros(n, kk)
        for _ in range(self.iters):
            r2 = r[:, :2]  # [N, 2, 3]
            proj = torch.einsum("njc,njd->ncd", r2, r2).reshape(n, 9)  # R2^T R2
            rhs = (bx * r2.transpose(1, 2).unsqueeze(1)).sum((2, 3)) / s.unsqueeze(-1) \
                - proj @ mb.reshape(kk, 9).t()
            view = r[:, 2]
            coef = rhs * diag
            for _ in range(self.refine):
                along = (coef @ bview[0]) * view[:, :1] + (coef @ bview[1]) * view[:, 1:2] \
                    + (coef @ bview[2]) * view[:, 2:]  # W c [N, 68]
                lost = (along @ bview[0].t()) * view[:, :1] + (along @ bview[1].t()) * view[:, 1:2] \
                    + (along @ bview[2].t()) * view[:, 2:]  # W^T W c
                coef = coef + (rhs - (1.0 + self.ridge) * coef + lost) * diag
            sts = mm + (coef @ (mb + mb.transpose(1, 2)).reshape(kk, 9)).reshape(n, 3, 3) \
                + ((coef @ bb).reshape(n, kk, 9) * coef.unsqueeze(-1)).sum(1).reshape(n, 3, 3)
            sx = mx + (bx * coef[:, :, None, None]).sum(1)
            s, r = fit_pose(sts, sx)
        return c, s, r, coef

    def residual(self, x: Tensor, c: Tensor, s: Tensor, r: Tensor, coef: Tensor) -> Tensor:
        """What the pose and the components leave of frames ``x [N, 68, 2]``, back-projected into
        the model frame ``[N, 68, 3]``: the minimum-norm 3-D offsets that explain it."""
        shape = self.mean3d + (coef @ self.basis.t()).reshape(-1, self.points, 3)
        r2 = r[:, :2]
        seen = torch.einsum("npc,njc->npj", shape, r2)
        return torch.einsum("npj,njc->npc", (x - c.unsqueeze(-2)) / s[:, None, None] - seen, r2)

    # ----------------------------------------------------------------------- the map
    def raw(self, x: Tensor) -> Tensor:
        """``[..., 68, 2] -> [..., 6 + K]``: [t_x, t_y, log s, yaw, pitch, roll, expression]."""
        lead = x.shape[:-2]
        c, s, r, coef = self.solve(x.reshape(-1, self.points, 2))
        yaw, pitch, roll = angles(r)
        out = torch.cat([c, torch.stack([s.log(), yaw, pitch, roll], -1), coef[:, self.k_id:]], -1)
        return out.reshape(lead + (self.dim,))

    def context(self, obs: Tensor) -> Tensor:
        """The person's shape ``[B, 68, 3]`` from the reference frames ``obs[:, 0]``: its identity
        components plus its unexplained residual, without its expression."""
        c, s, r, coef = self.solve(obs[:, 0])
        back = self.residual(obs[:, 0], c, s, r, coef)
        ident = coef[:, :self.k_id] @ self.basis[:, :self.k_id].t()
        return self.mean3d + ident.reshape(-1, self.points, 3) + back

    def shapes(self, zf: Tensor, ctx: Tensor) -> Tensor:
        """The 3-D face of every frame ``[B, T, 68, 3]`` of raw states ``zf [B, T, 6 + K]`` on the
        shapes ``ctx [B, 68, 3]``: the person's shape plus the frame's expression (the expression
        components are orthogonal to the identity components: no state can change the person)."""
        expr = zf[..., self.pose_dim:] @ self.basis[:, self.k_id:].t()
        return ctx.unsqueeze(1) + expr.reshape(zf.shape[0], zf.shape[1], self.points, 3)

    def from_raw(self, z: Tensor, ctx: Tensor) -> Tensor:
        """Raw states ``[B, ..., 6 + K]`` on shapes ``ctx [B, 68, 3]`` -> landmarks ``[B, ..., 68, 2]``."""
        lead = z.shape[:-1]
        zf = z.reshape(z.shape[0], -1, self.dim)  # [B, T, D]
        rot = rotation(zf[..., 3], zf[..., 4], zf[..., 5])[..., :2, :]  # [B, T, 2, 3]
        x = torch.exp(zf[..., 2])[..., None, None] * (self.shapes(zf, ctx) @ rot.transpose(-1, -2)) \
            + zf[..., None, :2]
        return x.reshape(lead + (self.points, 2))

    def encode(self, x: Tensor) -> Tensor:
        """Landmarks ``[..., 68, 2]`` -> scaled state ``[..., 6 + K]``."""
        return (self.raw(x) - self.offset) / self.scale

    def encode_velocity(self, x: Tensor, v: Tensor) -> Tensor:
        """The state change of a frame ``x`` that moved by ``v`` (both ``[..., 68, 2]``)."""
        return self.encode(x) - self.encode(x - v)

    def decode(self, z: Tensor, ctx: Tensor) -> Tensor:
        """Scaled states ``[B, ..., 6 + K]`` on the shapes of :meth:`context` -> landmarks."""
        return self.from_raw(z * self.scale + self.offset, ctx)

    # ----------------------------------------------------------------------- fitting
    @torch.no_grad()
    def fit(self, frames: np.ndarray, windows: np.ndarray, vel_scale: float) -> Tensor:
        """Fit the components on ``windows [M, T, 68, 2]`` (augmented training windows, one clip
        each; their flips are added) and the state's offset and scale on the windows themselves;
        ``frames`` is unused (the components need the windows' clip grouping). Returns
        ``encode(windows)`` ``[M, T, 6 + K]``."""
        from suhmo.data.windows import hflip

        w = np.asarray(windows, np.float64)
        if w.ndim != 4 or w.shape[0] < 2 or w.shape[0] * w.shape[1] < self.k + self.k_id + 1:
            raise SuhmoError(f"pose3d space: {w.shape[:2]} training windows cannot fit "
                             f"{self.k_id} identity and {self.k} expression components")
        both = torch.as_tensor(np.concatenate([w, hflip(w)]))
        m3 = torch.as_tensor(unit_mean_face())
        back = self._offsets(both, m3)  # [2M, T, 68, 3]
        m3 = m3 + back.mean((0, 1))
        back = self._offsets(both, m3)  # again, about the corrected mean face
        per_window = back.mean(1).flatten(1)  # [2M, 204]
        u_id, var_id = _pca(per_window, self.k_id)
        per_frame = (back - back.mean(1, keepdim=True)).flatten(2).flatten(0, 1)
        per_frame = per_frame - (per_frame @ u_id) @ u_id.t()
        u_ex, var_ex = _pca(per_frame, self.k)
        self.mean3d.copy_(m3.float())
        self.basis.copy_(torch.cat([u_id, u_ex], 1).float())
        self.ridge.copy_((NOISE / torch.cat([var_id, var_ex]).clamp_min(1e-12)).float())
        wt = torch.as_tensor(np.asarray(windows, np.float32))
        raw = torch.cat([self.raw(chunk) for chunk in wt.split(256)])
        r = raw.double()
        step = (r[:, 1:] - r[:, :-1]).reshape(-1, self.dim).std(0).clamp_min(1e-6)
        self.offset.copy_(r.reshape(-1, self.dim).mean(0).float())
        self.scale.copy_((step * float(vel_scale)).float())
        self.fitted.fill_(True)
        return (raw - self.offset) / self.scale

    @staticmethod
    def _offsets(w: Tensor, m3: Tensor) -> Tensor:
        """The rigid fit of the mean face ``m3`` to every frame of ``w [M, T, 68, 2]`` and its
        residual back-projected into the model frame ``[M, T, 68, 3]``."""
        x = w.reshape(-1, LANDMARKS, 2)
        xc = x - x.mean(-2, keepdim=True)
        s, r = fit_pose((m3.t() @ m3).expand(len(x), 3, 3), torch.einsum("pc,npj->ncj", m3, xc))
        r2 = r[:, :2]
        u = xc / s[:, None, None] - torch.einsum("pc,njc->npj", m3, r2)
        back = u[..., 0:1] * r2[:, None, 0] + u[..., 1:2] * r2[:, None, 1]
        return back.reshape(w.shape[:2] + (LANDMARKS, 3))

    def round_trip_error(self, x: Tensor) -> Tensor:
        """RMS landmark distance per frame ``[B, T]`` of ``decode(encode(x), context(x))`` to
        ``x [B, T, 68, 2]`` (input units): how well a moving face is explained by its reference's
        shape, its pose and its expression."""
        return (self.decode(self.encode(x), self.context(x)) - x).pow(2).sum(-1).mean(-1).sqrt()


def _pca(rows: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The ``k`` leading principal directions ``[F, k]`` of ``rows [N, F]`` and their variances."""
    d = rows - rows.mean(0)
    _, sv, vt = torch.linalg.svd(d, full_matrices=False)
    return vt[:k].t(), sv[:k] ** 2 / max(len(rows) - 1, 1)


def pose3d_space(cfg) -> nn.Module:
    return Pose3DSpace(cfg.model.semantic_k)
