"""The discriminators' per-frame features and eq. 11's L2 as autograd nodes with their backward
written out (``losses.sequence_features``, ``losses.generator_loss``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from suhmo.geometry import COMPLEX, centroid_t, points, sub_centroid_into


class SequenceFeatures(torch.autograd.Function):
    """``losses.sequence_features`` with ``model.d_centred`` (its default path): positions
    ``seq [B, T, 68, 2]`` and optional semantic states ``z [B, T, Z]`` -> ``[B, T-2, 410 (+ 2Z)]``,
    per frame ``[pos - centroid | vs * vel | va * acc]`` interleaved per landmark (68 x 6), then
    ``centroid - 0.5``, then ``z_t`` and ``vs * (z_t - z_{t-1})``.

    The values are those of the autograd expression, bit for bit (the same float operations):
    the three landmark parts are formed as contiguous planes and moved into the interleaved
    layout by one permuted copy of point elements (``geometry.points``), the rest written into the
    same buffer, instead of two concatenations. The backward, which autograd ran as some 20
    full-size operations (zero-filled slice gradients, the concatenation's strided slices), is
    written out: the features are linear in the positions, ``d seq`` is a few shifted sums.
    Checked against the autograd expression by tests/test_kernels.py (values and gradients)."""

    @staticmethod
    def forward(ctx, seq: Tensor, z: Optional[Tensor], vs: float, va: float) -> Tensor:
        B, T = seq.shape[:2]
        Tf, Z = T - 2, (z.shape[-1] if z is not None else 0)
        seq = seq.contiguous()
        out = seq.new_empty(B, Tf, 410 + 2 * Z)
        planes = seq.new_empty(3, B, Tf, 68, 2)  # pos - centroid, vs * vel, va * acc
        vel = seq[:, 1:] - seq[:, :-1]
        pos = seq[:, 2:]
        centroid = centroid_t(pos)  # [B, Tf, 2]
        sub_centroid_into(pos, centroid, planes[0])
        torch.mul(vel[:, 1:], vs, out=planes[1])
        torch.sub(vel[:, 1:], vel[:, :-1], out=planes[2]).mul_(va)
        words = points(out[..., :408]).unflatten(-1, (68, 3))  # [B, Tf, 68, 3]
        words.copy_(points(planes).squeeze(-1).permute(1, 2, 3, 0))
        torch.sub(centroid, 0.5, out=out[..., 408:410])
        if z is not None:
            out[..., 410:410 + Z].copy_(z[:, 2:])
            torch.sub(z[:, 2:], z[:, 1:-1], out=out[..., 410 + Z:]).mul_(vs)
        ctx.meta = (vs, va, Z, z is not None)
        ctx.z_dtype = z.dtype if z is not None else None  # z may be narrower than seq (train.amp)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        vs, va, Z, has_z = ctx.meta
        g = g.contiguous() if g.storage_offset() % 2 == 0 else g.clone()  # whole points
        B, Tf = g.shape[:2]
        dseq = dz = None
        if has_z and ctx.needs_input_grad[1]:
            dz = g.new_empty(B, Tf + 2, Z)
            gdz = g[..., 410 + Z:] * vs
            torch.add(g[..., 410:410 + Z], gdz, out=dz[:, 2:])
            dz[:, :2].zero_()
            dz[:, 1:-1].sub_(gdz)
            dz = dz.to(ctx.z_dtype)
        if not ctx.needs_input_grad[0]:
            return dseq, dz, None, None
        planes = g.new_empty(3, B, Tf, 68, 2)
        points(planes).squeeze(-1).copy_(points(g[..., :408]).unflatten(-1, (68, 3)).permute(3, 0, 1, 2))
        gp, gv, ga = planes.unbind(0)
        # pos - centroid and centroid - 0.5, centroid = mean over the 68 points: d pos = gp + (gc - sum gp) / 68
        gc = torch.sub(g[..., 408:410], gp.sum(-2)).div_(68)
        a = torch.mul(gv, vs).add_(ga, alpha=va)  # d vel_t (feature t's vel, x_{t+2} - x_{t+1}), acc's share included
        b = ga.mul_(va)  # acc_t = vel_t - vel_{t-1}: its share on vel_{t-1} (x_{t+1} - x_t), negated
        dseq = g.new_empty(B, Tf + 2, 68, 2)
        cplx = COMPLEX.get(g.dtype)
        torch.add(gp, a, out=dseq[:, 2:])
        if cplx is not None:
            dseq[:, 2:].view(cplx).squeeze(-1).add_(gc.view(cplx))
        else:
            dseq[:, 2:].add_(gc.unsqueeze(-2))
        dseq[:, :2].zero_()
        dseq[:, 1:-1].sub_(a.add_(b))
        dseq[:, :-2].add_(b)
        return dseq, dz, None, None


class MotionL2(torch.autograd.Function):
    """Eq. 11's L2 as the training step forms it: the mean over points of the squared 2-D
    distance between the ``[pos | vel | acc]`` of ``fake`` and of ``real`` (``[B, T, 68, 2]``
    positions) over their last ``n`` feature frames (``n + 2`` positions), i.e. of the motion
    features of the difference (they are linear): ``(|pos|^2 + |vel|^2 + |acc|^2) / (3 B n 68)``.

    Autograd over ``_point_sq(motion_features(fake[:, -(n + 2):] - real[:, -(n + 2):]))`` runs
    the concatenation, its strided slices and a zero-filled full-size slice gradient per
    operation, forward and backward (~4.5 ms at the cpu preset, 1 thread); here three dot
    products forward and the gradient written out, a few shifted sums (~1.7 ms). ``real`` gets
    no gradient. Equal within float rounding (tests/test_kernels.py, test_step_equivalence.py)."""

    @staticmethod
    def forward(ctx, fake: Tensor, real: Tensor, n: int) -> Tensor:
        d = fake[:, -(n + 2):] - real[:, -(n + 2):]
        dv = d[:, 1:] - d[:, :-1]
        acc = dv[:, 1:] - dv[:, :-1]
        count = 3 * acc.numel() // 2
        pos, vel = d[:, 2:].reshape(-1), dv[:, 1:].reshape(-1)
        sq = torch.dot(pos, pos).add_(torch.dot(vel, vel)).add_(torch.dot(acc.view(-1), acc.view(-1))).div_(count)
        ctx.save_for_backward(d, dv, acc)
        ctx.meta = (n, count, fake.shape)
        return sq

    @staticmethod
    def backward(ctx, g: Tensor):
        d, dv, acc = ctx.saved_tensors
        n, count, shape = ctx.meta
        if not ctx.needs_input_grad[0]:
            return None, None, None
        k = g * (2.0 / count)
        ddv = torch.add(dv[:, 1:], acc).mul_(k)  # d/d dv_{t+1}: vel_t = dv_{t+1}, acc_t = dv_{t+1} - dv_t
        dacc = acc * k  # ... and minus this on dv_t
        dfake = d.new_empty(shape)
        dfake[:, :shape[1] - (n + 2)].zero_()
        dd = torch.mul(d, k, out=dfake[:, shape[1] - (n + 2):])  # pos_t = d_{t+2}; dv_i = d_{i+1} - d_i
        dd[:, :2].zero_()
        dd[:, 2:].add_(ddv)
        dd[:, 1:-1].sub_(ddv.add_(dacc))
        dd[:, :-2].add_(dacc)
        return dfake, None, None
