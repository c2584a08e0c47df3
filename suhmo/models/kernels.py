"""Hand-written backward passes of the models (custom ``torch.autograd.Function``s).

Each one computes what autograd would, with fewer copies; each is justified by a benchmark and
checked against autograd by ``torch.autograd.gradcheck`` (tests/test_kernels.py):

- ``CachedAttention``: causal attention over a preallocated key/value cache written in place,
  for the Transformer generator's training pass (``generators.GBlock``; benchmarks/train_step.py).
- ``WindowLSTM`` (+ ``lstm_cell_backward``): one LSTM over every window of a window plan, all
  windows advancing together, for the RNN sequence discriminators
  (``discriminators.lstm_window_states``; benchmarks/lstm_pointwise.py).

The paper's concepts (eq. 4, 5, 13-17) live in ``generators``, ``windows`` and ``layers``.
"""

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


def _track_index(tracks, device) -> tuple[Tensor, dict]:
    """Index tensors of a plan's recurrence: the input frame of every (step, track) block, step
    after step (``starts[:active[k]] + k``), and per step k where windows end, ``(window
    indices, track indices)``; built once per plan and device, not once per step (kept on
    ``tracks``: the D and the G step of an iteration run the same plan)."""
    cache = tracks.__dict__.setdefault("_index", {})
    if str(device) not in cache:
        rows_x = [t + k for k, n_tr in enumerate(tracks.active) for t in tracks.starts[:n_tr]]
        ends = {k: (torch.tensor([w for w, _ in e], device=device), torch.tensor([t for _, t in e], device=device))
                for k, e in enumerate(tracks.ends) if e}
        cache[str(device)] = (torch.tensor(rows_x, dtype=torch.long, device=device), ends)
    return cache[str(device)]


class WindowLSTM(torch.autograd.Function):
    """The recurrence of ``lstm_window_states`` with a hand-written backward, for ``S`` LSTMs
    (*streams*: ``xp [S, T, B, 4H]``, ``w_hh [S, 4H, H]``) over the same plan at once.

    Autograd over a Python loop would zero-fill and accumulate a full-size gradient for every
    slice ``h[:n]`` and keep ~10 activations per unit; here the forward keeps, per row and
    step, the activated gates (4H) and the cell state (H) (and h_{k-1} when ``w_hh`` needs a
    gradient); the backward writes the gates' gradients into one buffer and forms
    ``dW_hh = sum_k dG_k^T h_{k-1}`` from it as one product. Rows are laid out step after step, track
    after track within a step, B rows per track, one such layout per stream. The streams share
    every operation of a step (one batched product, one set of pointwise operations): the
    sequence discriminators D_s and D_s^j read the same features with the same plan, and as
    two streams of one recurrence they take one call instead of two
    (``discriminators.rnn_window_scores_together``).
    """

    @staticmethod
    def forward(ctx, xp: Tensor, w_hh: Tensor, tracks) -> Tensor:
        S, T, B, G4 = xp.shape
        H = G4 // 4
        active = tracks.active
        rows = [n * B for n in active]
        offs = [0]
        for r in rows:
            offs.append(offs[-1] + r)
        dev = xp.device
        rows_x, ends = _track_index(tracks, dev)
        gates_all = xp.new_empty(S, offs[-1], G4)
        # every step's input projections gathered at once: row block k holds xp[:, starts[:active[k]] + k]
        torch.index_select(xp, 1, rows_x, out=gates_all.view(S, -1, B, G4))
        cells = xp.new_empty(S, offs[-1], H)
        tanh_cells = xp.new_empty(S, offs[-1], H)  # tanh(c_k), formed for h_k and reused by backward
        keep_h = ctx.needs_input_grad[1]
        h_prev = xp.new_empty(S, offs[-1] - rows[0], H) if keep_h else None
        n_windows = sum(len(e) for e in tracks.ends)
        out = xp.new_empty(S, n_windows, B, H)
        w_t = w_hh.transpose(1, 2)
        h = xp.new_zeros(0)
        for k, n_tr in enumerate(active):
            a, n = offs[k], rows[k]
            gates = gates_all[:, a:a + n]
            if k > 0:  # h_{-1} = 0, c_{-1} = 0
                hp = h[:, :n]
                if keep_h:
                    h_prev[:, a - rows[0]:a - rows[0] + n].copy_(hp)
                gates.baddbmm_(hp, w_t)
            gates[..., :2 * H].sigmoid_()
            gates[..., 2 * H:3 * H].tanh_()
            gates[..., 3 * H:].sigmoid_()
            i, f, g, o = gates.chunk(4, -1)
            c = cells[:, a:a + n]
            if k == 0:
                torch.mul(i, g, out=c)
            else:
                torch.mul(f, cells[:, offs[k - 1]:offs[k - 1] + n], out=c)
                c.addcmul_(i, g)
            h = torch.mul(torch.tanh(c, out=tanh_cells[:, a:a + n]), o)
            if k in ends:
                wins, trs = ends[k]
                out.index_copy_(1, wins, h.view(S, n_tr, B, H).index_select(1, trs))
        ctx.tracks, ctx.offs, ctx.rows, ctx.index = tracks, offs, rows, (rows_x, ends)
        ctx.save_for_backward(w_hh, gates_all, cells, tanh_cells, h_prev if keep_h else xp.new_zeros(0))
        ctx.shape = (S, T, B, G4)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        w_hh, gates_all, cells, tanh_cells, h_prev = ctx.saved_tensors
        tracks, offs, rows = ctx.tracks, ctx.offs, ctx.rows
        S, T, B, G4 = ctx.shape
        H = G4 // 4
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        rows_x, ends = ctx.index
        grad_out = grad_out.contiguous()
        dxp = gates_all.new_zeros(S, T, B, G4) if need_x else None
        dgates_all = torch.empty_like(gates_all)  # saved tensors stay intact (retain_graph, gradcheck)
        scratch = gates_all.new_empty(S, rows[0], H)  # one [S, n, H] temporary, reused at every step
        dh_next = dc_next = None  # gradients w.r.t. h_k and c_k coming from step k+1
        for k in range(len(rows) - 1, -1, -1):
            a, n, n_tr = offs[k], rows[k], tracks.active[k]
            # dh_k: from step k+1 (its rows are the first ones: tracks end, none start) + the windows ending here
            if dh_next is not None and dh_next.shape[1] == n:
                dh = dh_next
            else:
                dh = gates_all.new_zeros(S, n, H)
                if dh_next is not None:
                    dh[:, :dh_next.shape[1]] = dh_next
            if k in ends:
                wins, trs = ends[k]
                dh.view(S, n_tr, B, H).index_add_(1, trs, grad_out.index_select(1, wins))
            dgates = dgates_all[:, a:a + n]
            c_prev = cells[:, offs[k - 1]:offs[k - 1] + n] if k > 0 else None  # c_{-1} = 0
            dc = lstm_cell_backward(dh, gates_all[:, a:a + n], tanh_cells[:, a:a + n], c_prev, dc_next, dgates,
                                    scratch[:, :n])
            if k > 0:
                dc_next = dc.mul_(gates_all[:, a:a + n, H:2 * H])  # dc_{k-1} = dc_k * f_k
                dh_next = torch.bmm(dgates, w_hh)
        if need_x:  # every step's gate gradients back to their input frames at once
            dxp.index_add_(1, rows_x, dgates_all.view(S, -1, B, G4))
        dw = torch.bmm(dgates_all[:, rows[0]:].transpose(1, 2), h_prev) if need_w else None
        return dxp, dw, None


def lstm_cell_backward(dh: Tensor, gates: Tensor, tc: Tensor, c_prev: Optional[Tensor], dc_next: Optional[Tensor],
                       dgates: Tensor, tmp: Tensor) -> Tensor:
    """Pointwise backward of one LSTM step on ``n`` rows (of each stream: ``[..., n, 4H]``): writes
    the gradients of the gates before their nonlinearities into ``dgates [..., n, 4H]`` and
    returns dc_k (``[..., n, H]``, new).

    ``gates``: the activated gates (i, f, g, o), ``tc = tanh(c_k)``, ``c_prev = c_{k-1}`` (None:
    zero), ``dc_next``: dc from step k+1 for its first rows (None: none), ``tmp``: ``[..., n, H]``
    scratch. In place where it can be: sigmoid' = s - s^2, tanh' = 1 - t^2, no temporaries
    beyond dc (``benchmarks/lstm_pointwise.py`` times it against the textbook expressions).
    """
    i, f, g, o = gates.chunk(4, -1)
    # dc_k = dc from step k+1 + dh_k * o * (1 - tanh(c_k)^2)
    dc = torch.mul(dh, o)
    dc.addcmul_(dc, torch.mul(tc, tc, out=tmp), value=-1.0)
    if dc_next is not None:
        dc.narrow(-2, 0, dc_next.shape[-2]).add_(dc_next)
    di, df, dg, do = dgates.chunk(4, -1)
    _sigmoid_grad(torch.mul(dc, g, out=di), i, tmp)
    torch.mul(dc, i, out=dg).addcmul_(dg, torch.mul(g, g, out=tmp), value=-1.0)
    _sigmoid_grad(torch.mul(dh, tc, out=do), o, tmp)
    if c_prev is None:
        df.zero_()
    else:
        _sigmoid_grad(torch.mul(dc, c_prev, out=df), f, tmp)
    return dc


def _sigmoid_grad(d: Tensor, s: Tensor, tmp: Tensor) -> Tensor:
    """``d *= s * (1 - s)`` in place, as ``d * s - (d * s) * s``, with ``tmp`` as scratch."""
    d.mul_(s)
    return d.sub_(torch.mul(d, s, out=tmp))
