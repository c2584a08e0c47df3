"""The Transformer generator's training-pass attention over a key/value cache written in place
(``generators.GBlock``; benchmarks/train_step.py), its backward written out."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor


class CachedAttention(torch.autograd.Function):
    """Causal attention of the queries ``q [B, h, n, dh]`` at positions past..past+n-1 over the
    keys and values of positions first..past+n-1, for the training pass (autograd).

    ``store = [K, V, dK, dV]``, each ``[B, h, T_total, dh]``, preallocated per pass: the forward
    writes the new keys and values ``k, v [B, h, n, dh]`` in place at past..past+n-1 and reads the
    cache from there. Concatenating a growing cache instead (the usual way to keep autograd's
    saved tensors intact) copies O(t) per step, O(T^2) per pass, forward and backward.

    The backward adds this call's key and value gradients for every position it read into
    ``dK, dV`` and returns (and clears) those of its own positions. That is complete: a
    position's later readers are the later steps, which depend on this step's output through
    the autoregressive chain, so autograd runs their backward first. The store ends the
    backward zeroed, so a graph kept with ``retain_graph`` can be back-propagated again.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, store: List[Tensor], past: int, first: int,
                mask: Optional[Tensor]) -> Tensor:
        K, V = store[0], store[1]
        end = past + k.shape[2]
        K[:, :, past:end] = k
        V[:, :, past:end] = v
        scale = q.shape[-1] ** -0.5
        scores = torch.matmul(q, K[:, :, first:end].transpose(-1, -2)).mul_(scale)  # [B, h, n, t]
        if mask is not None:
            scores.masked_fill_(~mask[:, first:end], float("-inf"))
        p = torch.softmax(scores, dim=-1)
        ctx.save_for_backward(q, p)
        ctx.store, ctx.span, ctx.scale = store, (past, first, end), scale
        return torch.matmul(p, V[:, :, first:end])

    @staticmethod
    def backward(ctx, dy: Tensor):
        q, p = ctx.saved_tensors
        K, V, dK, dV = ctx.store
        dy, q, p = dy.to(K.dtype), q.to(K.dtype), p.to(K.dtype)  # bf16 under train.amp; the cache is fp32
        past, first, end = ctx.span
        dV[:, :, first:end] += torch.matmul(p.transpose(-1, -2), dy)
        dp = torch.matmul(dy, V[:, :, first:end].transpose(-1, -2))
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))  # softmax backward
        dq = torch.matmul(ds, K[:, :, first:end]).mul_(ctx.scale)
        dK[:, :, first:end] += torch.matmul(ds.transpose(-1, -2), q).mul_(ctx.scale)
        dk, dv = dK[:, :, past:end].clone(), dV[:, :, past:end].clone()
        dK[:, :, past:end] = 0.0
        dV[:, :, past:end] = 0.0
        return dq, dk, dv, None, None, None, None
