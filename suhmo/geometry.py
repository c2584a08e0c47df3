"""Face geometry: centring, scale (the face's RMS radius), Procrustes alignment and the
similarity transform that places a shape back, for frames of landmarks ``[..., P, 2]`` (P = 68;
x right, y down).

The one place these are written; the models (``models.space``, ``models.step.step_input``), the
losses (the discriminators' centred features) and the metrics (``metrics.landmark``'s basis,
``metrics.sanity``'s perturbations) all use them. The numpy functions serve the fits and the
metrics, in float64; the torch ones (suffix ``_t``) run inside the models and are
TorchScript-compatible (the exported generator scripts them), with one fast form:
:class:`CentreScale`, the centring and scale with its backward written out, which
:func:`centre_scale_t` runs in eager mode.

Definitions, for a frame ``x`` of P points:

- centroid ``c = mean_p x_p``; centred shape ``x - c``;
- RMS radius ``s = sqrt(mean_p |x_p - c|^2)`` (the face radius), clamped at 1e-9 where it divides;
- unit shape ``(x - c) / s``: centred, unit RMS radius;
- the rotation that maps a unit shape ``u`` onto a reference ``m`` (Procrustes, in the plane):
  ``th = atan2(sum_p u_p x m_p, sum_p u_p . m_p)``;
- the frame from its pose and shape: ``x = c + exp(log s) R(roll) u`` (:func:`place_t`).
"""

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor


# ---------------------------------------------------------------------------------- numpy
def face_radius(x: np.ndarray) -> np.ndarray:
    """The RMS radius ``[...]`` of frames ``x [..., P, 2]`` about their centroids (not clamped)."""
    xc = x - x.mean(axis=-2, keepdims=True)
    return np.sqrt((xc**2).sum(-1).mean(-1))


def centre_scale(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x [..., P, 2]`` -> centroid ``[..., 2]``, RMS radius ``[...]`` (clamped at 1e-9), unit
    shape ``[..., P, 2]``."""
    c = x.mean(axis=-2)
    xc = x - c[..., None, :]
    s = np.sqrt((xc**2).sum(-1).mean(-1))
    s = np.maximum(s, 1e-9)
    return c, s, xc / s[..., None, None]


def align_shapes(xn: np.ndarray, mean_shape: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Rotate unit-scale centred shapes onto ``mean_shape``; returns (aligned, roll angle)."""
    dot = (xn * mean_shape).sum((-1, -2))
    cross = (xn[..., 0] * mean_shape[..., 1] - xn[..., 1] * mean_shape[..., 0]).sum(-1)
    th = np.arctan2(cross, dot)  # rotation that maps xn onto the mean shape
    c, s = np.cos(th)[..., None], np.sin(th)[..., None]
    x, y = xn[..., 0], xn[..., 1]
    aligned = np.stack([c * x - s * y, s * x + c * y], axis=-1)
    return aligned, -th


def mean_shape_gpa(frames: np.ndarray, iters: int = 4) -> np.ndarray:
    """Generalised Procrustes mean of ``frames [M, P, 2]``: centred, unit RMS radius."""
    _, _, xn = centre_scale(np.asarray(frames, np.float64))
    m = xn.mean(0)
    for _ in range(iters):
        m = m - m.mean(0)
        m = m / np.sqrt((m**2).sum(-1).mean())
        aligned, _ = align_shapes(xn, m)
        m = aligned.mean(0)
    m = m - m.mean(0)
    return m / np.sqrt((m**2).sum(-1).mean())


def shape_pca(frames: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Procrustes PCA of ``frames [N, P, 2]`` (float64): ``(m, d, vt)``, the generalised Procrustes
    mean ``m [P, 2]``, each frame's unit shape aligned to it less ``m``, flat, ``d [N, 2P]``, and
    the principal directions of ``d`` (about its mean) as the rows of ``vt [min(N, 2P), 2P]``,
    largest first. The shape basis of the semantic space and of the landmark metrics."""
    m = mean_shape_gpa(frames)
    _, _, xn = centre_scale(frames)
    aligned, _ = align_shapes(xn, m)
    d = (aligned - m).reshape(len(frames), -1)
    _, _, vt = np.linalg.svd(d - d.mean(0), full_matrices=False)
    return m, d, vt


# ---------------------------------------------------------------------------------- torch
def centroid_t(x: Tensor) -> Tensor:
    """``x [..., P, 2]`` -> centroid ``[..., 2]``."""
    return x.mean(-2)


def centre_flat_t(pos: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Flattened frames ``pos [..., 2P]`` (x, y interleaved) -> the centred frames ``[..., 2P]``
    (same layout) and the centroid's ``x``, ``y`` ``[..., 1]``."""
    cx = pos[..., 0::2].mean(-1, keepdim=True)
    cy = pos[..., 1::2].mean(-1, keepdim=True)
    rel = torch.stack([pos[..., 0::2] - cx, pos[..., 1::2] - cy], -1).flatten(-2)
    return rel, cx, cy


def centre_scale_t(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``x [..., P, 2]`` -> centroid ``[..., 2]``, RMS radius ``[...]`` (clamped at 1e-9), unit shape
    ``[..., P, 2]``: :func:`centre_scale` in torch. In eager mode (float32/64) the fast form,
    :class:`CentreScale` (the same values within float rounding, fewer and faster operations);
    scripted, this reference expression."""
    if not torch.jit.is_scripting():
        if x.dtype == torch.float32 or x.dtype == torch.float64:
            return _centre_scale_fast(x)
    c = x.mean(-2)
    xc = x - c.unsqueeze(-2)
    s = xc.pow(2).sum(-1).mean(-1).sqrt().clamp_min(1e-9)
    return c, s, xc / s.unsqueeze(-1).unsqueeze(-1)


@torch.jit.unused
def _centre_scale_fast(x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    return CentreScale.apply(x)


def rotate_t(x: Tensor, angle: Tensor) -> Tensor:
    """Rotate ``x [..., P, 2]`` by ``angle [...]`` (radians, counter-clockwise in x-right/y-down axes)."""
    co = torch.cos(angle).unsqueeze(-1)
    si = torch.sin(angle).unsqueeze(-1)
    px, py = x[..., 0], x[..., 1]
    return torch.stack([co * px - si * py, si * px + co * py], -1)


def place_t(shape: Tensor, centroid: Tensor, log_scale: Tensor, roll: Tensor) -> Tensor:
    """The similarity transform that undoes :func:`centre_scale_t` and the alignment: a unit shape
    ``[..., P, 2]`` rotated by ``roll [...]``, scaled by ``exp(log_scale) [...]`` and moved to
    ``centroid [..., 2]``."""
    face = rotate_t(shape, roll) * log_scale.exp().unsqueeze(-1).unsqueeze(-1)
    return face + centroid.unsqueeze(-2)


# ------------------------------------------------------------- points as single elements
WORD = {2: torch.int32, 4: torch.int64, 8: torch.complex128}  # twice a float's size: one (x, y) point
COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def points(t: Tensor) -> Tensor:
    """``t [..., 2k]`` (last dim contiguous) as ``[..., k]`` of a dtype twice as wide: one element
    per point ``(x, y)``. Moving whole points is then one strided copy of elements, and a
    complex view (float32 -> complex64) adds and subtracts both coordinates in one element,
    the same float operations on each (``torch.cat`` along the last dimension copies 2-float
    runs one by one, and a broadcast over the 68 points of a ``[..., 68, 2]`` tensor runs
    2-element inner loops)."""
    return t.view(WORD[t.element_size()])


class CentreScale(torch.autograd.Function):
    """The fast form of :func:`centre_scale_t`: frames ``x [..., P, 2]`` -> centroid ``[..., 2]``,
    RMS radius ``s [...]`` (clamped at 1e-9), unit shape ``(x - centroid) / s [..., P, 2]``, with
    the backward written out. The points as complex elements (:func:`points`): the centroid is a
    mean over the last, contiguous dimension and the centring one broadcast of whole elements,
    where the ``[..., P, 2]`` form reduces and broadcasts over a middle dimension with 2-element
    inner loops (forward and backward: ~3.5 ms against ~1.2 ms per encoding of a cpu-preset
    batch, 1 thread). Equal to the reference expression within float rounding
    (tests/test_kernels.py)."""

    @staticmethod
    def forward(ctx, x: Tensor):
        shape = x.shape
        P = shape[-2]
        cplx = COMPLEX[x.dtype]
        pts = x.reshape(-1, 2 * P).view(cplx)  # [N, P]
        c = pts.mean(-1, keepdim=True)  # [N, 1]
        xc = torch.view_as_real(pts - c).view(-1, 2 * P)  # [N, 2P], new
        r = torch.linalg.vecdot(xc, xc).div_(P).sqrt_()  # [N]
        keep = r >= 1e-9  # clamp_min passes the gradient where the input is not below the bound
        s = r.clamp_min_(1e-9)
        xn = xc.div_(s.unsqueeze(-1))
        ctx.save_for_backward(xn, s, keep)
        ctx.shape = shape
        return torch.view_as_real(c).view(*shape[:-2], 2), s.view(shape[:-2]), xn.view(shape)

    @staticmethod
    def backward(ctx, gc: Tensor, gs: Tensor, gxn: Tensor):
        xn, s, keep = ctx.saved_tensors
        shape = ctx.shape
        P = shape[-2]
        N = xn.shape[0]
        gxn = gxn.reshape(N, 2 * P)
        # xn = xc / s, s = sqrt(mean |xc|^2): d xc = gxn / s + xn (gs - <gxn, xn> / s) / P
        coef = (gs.reshape(N) - torch.linalg.vecdot(gxn, xn).div_(s)).mul_(keep).div_(P)
        gxc = torch.div(gxn, s.unsqueeze(-1)).addcmul_(xn, coef.unsqueeze(-1))
        cplx = COMPLEX[xn.dtype]
        pts = gxc.view(cplx)  # [N, P]
        # xc = x - mean(x): d x = d xc - mean(d xc) + gc / P
        shift = pts.mean(-1, keepdim=True).sub_(gc.reshape(N, 2).contiguous().view(cplx).div(P))
        pts.sub_(shift)
        return gxc.view(shape)


def sub_centroid_into(pos: Tensor, centroid: Tensor, out: Tensor) -> None:
    """``out = pos - centroid`` for ``pos, out [..., P, 2]`` and ``centroid [..., 2]``, where the
    dtype allows as one broadcast of whole points (complex elements: the same float subtraction
    on each coordinate), else by torch's broadcast."""
    cplx: Optional[torch.dtype] = COMPLEX.get(pos.dtype)
    if cplx is not None and pos.stride(-1) == 1 and pos.stride(-2) == 2:
        torch.sub(pos.view(cplx).squeeze(-1), centroid.view(cplx), out=out.view(cplx).squeeze(-1))
    else:
        torch.sub(pos, centroid.unsqueeze(-2), out=out)
