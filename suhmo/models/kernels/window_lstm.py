"""One LSTM over every window of a window plan, all windows advancing together, for the RNN
sequence discriminators (D_s and D_s^j as two streams of one recurrence,
``discriminators.lstm_window_states``; benchmarks/lstm_pointwise.py), with the input projection
of the covered frames inside (``discriminators.projected_window_states``); backpropagation
through time written out. Its reference is the autograd recurrence
``discriminators.reference_window_states``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from suhmo.models.kernels.ops import (cell_backward, double_g, linear, low, streams_addmm_, streams_mm, tanh_into,
                                      tanh_sigmoid)


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

    With ``x [T, B, F]`` (the covered frames' features), ``w_ih [S, 4H, F]`` and ``bias [S, 4H]``
    given instead of ``xp`` (None), the input projection ``xp = x W_ih^T + bias`` runs inside too
    (``discriminators.projected_window_states``), one product per stream by :func:`linear`, and
    its backward forms ``d x``, ``d W_ih`` and ``d bias`` from the per-frame gate gradients the
    same way: what autograd's batched product over the streams did, with oneDNN's products.

    ``lowp`` (``train.amp``: ``torch.bfloat16``) runs every matrix product, forward and backward,
    on operands rounded to that type (weights once per call, the step's ``h`` or gate gradients
    once per step); each product sums in fp32 and returns its result rounded to bf16, which is
    then added or stored into fp32 buffers: the gates, cell states, window outputs and pointwise
    work are fp32, the returned gradients fp32 tensors of bf16-rounded products (mixed precision
    as autocast's, here inside the recurrence, whose products are most of a small-size iteration).
    """

    @staticmethod
    def forward(ctx, xp: Optional[Tensor], w_hh: Tensor, tracks, x: Optional[Tensor] = None,
                w_ih: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                lowp: Optional[torch.dtype] = None) -> Tensor:
        if x is None:
            S, T, B, G4 = xp.shape
        else:
            (T, B, F), (S, G4) = x.shape, w_hh.shape[:2]
            xp = x  # the buffers below take its dtype and device
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
        # the g gate's pre-activations come doubled (its rows of the weights times 2, exact in floating point):
        # tanh(y) = 2 sigmoid(2 y) - 1 (tanh_sigmoid)
        if x is None:
            torch.index_select(xp, 1, rows_x, out=gates_all.view(S, -1, B, G4))
            gates_all[..., 2 * H:3 * H].mul_(2.0)
        else:  # each stream's projection of the frames, gathered from it
            x2 = low(x.reshape(T * B, F), lowp)
            w_ih2, bias2 = low(double_g(w_ih, 1), lowp), low(double_g(bias, 1), lowp)
            for j in range(S):
                xpj = linear(x2, w_ih2[j], bias2[j]).view(T, B, G4)
                if lowp is None:
                    torch.index_select(xpj, 0, rows_x, out=gates_all[j].view(-1, B, G4))
                else:
                    gates_all[j].view(-1, B, G4).copy_(xpj.index_select(0, rows_x))
        cells = xp.new_empty(S, offs[-1], H)
        tanh_cells = xp.new_empty(S, offs[-1], H)  # tanh(c_k), formed for h_k and reused by backward
        keep_h = ctx.needs_input_grad[1]
        # h_{k-1} of every step, kept for dW_hh: in the products' precision
        h_prev = xp.new_empty(S, offs[-1] - rows[0], H, dtype=lowp) if keep_h else None
        n_windows = sum(len(e) for e in tracks.ends)
        out = xp.new_empty(S, n_windows, B, H)
        w_g = low(double_g(w_hh, 1), lowp)
        h = xp.new_zeros(0)
        one, neg1 = xp.new_ones(()), xp.new_full((), -1.0)
        # every step's row block of every buffer as views, formed once (slicing step by step costs more than
        # the steps' own pointwise work at the cpu preset's sizes)
        g_ = gates_all.split(rows, 1)
        gi_, gf_, gg_, go_ = (gates_all[..., j * H:(j + 1) * H].split(rows, 1) for j in range(4))
        c_, tc_ = cells.split(rows, 1), tanh_cells.split(rows, 1)
        hprev_ = h_prev.split(rows[1:], 1) if keep_h else None
        K = len(active)
        for k, n_tr in enumerate(active):
            n = rows[k]
            if k > 0:  # h_{-1} = 0, c_{-1} = 0
                hp = h[:, :n] if n < h.shape[1] else h
                if keep_h and hp is not hprev_[k - 1]:
                    hp = hprev_[k - 1].copy_(hp)
                streams_addmm_(g_[k], hp, w_g)
            g_[k].sigmoid_()  # i, f, o; and the g gate's sigmoid(2 y)
            tanh_sigmoid(gg_[k], one, neg1)
            if k == 0:
                c = torch.mul(gi_[k], gg_[k], out=c_[k])
            else:
                c = torch.mul(gf_[k], c_[k - 1][:, :n], out=c_[k])
                c.addcmul_(gi_[k], gg_[k])
            tc = tanh_into(c, tc_[k], one, neg1)
            # h_k, in the products' precision (lowp: rounded as it is written), straight into step k+1's saved h_k
            if keep_h and k + 1 < K and rows[k + 1] == n:
                h = torch.mul(tc, go_[k], out=hprev_[k])
            else:
                h = torch.mul(tc, go_[k], out=tc.new_empty(tc.shape, dtype=lowp))
            if k in ends:  # the windows' outputs in full precision
                wins, trs = ends[k]
                hk = h if lowp is None else torch.mul(tc, go_[k])
                out.index_copy_(1, wins, hk.view(S, n_tr, B, H).index_select(1, trs))
        ctx.tracks, ctx.offs, ctx.rows, ctx.index = tracks, offs, rows, (rows_x, ends)
        ctx.save_for_backward(w_hh, gates_all, cells, tanh_cells, h_prev if keep_h else xp.new_zeros(0),
                              *((x, w_ih) if x is not None else ()))
        ctx.shape = (S, T, B, G4)
        ctx.projected, ctx.lowp = x is not None, lowp
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        w_hh, gates_all, cells, tanh_cells, h_prev, *proj = ctx.saved_tensors
        tracks, offs, rows = ctx.tracks, ctx.offs, ctx.rows
        S, T, B, G4 = ctx.shape
        H = G4 // 4
        need_x, need_w = ctx.needs_input_grad[0] or any(ctx.needs_input_grad[3:6]), ctx.needs_input_grad[1]
        rows_x, ends = ctx.index
        grad_out = grad_out.contiguous()
        dxp = gates_all.new_zeros(S, T, B, G4) if need_x else None
        dgates_all = torch.empty_like(gates_all)  # saved tensors stay intact (retain_graph, gradcheck)
        scratch = gates_all.new_empty(S, rows[0], G4)  # one [S, n, 4H] temporary, reused at every step
        scratch_ = {n: (scratch[:, :n], scratch[:, :n, 2 * H:3 * H]) for n in set(rows)}
        one = gates_all.new_ones(())
        dh_next = dc_next = None  # gradients w.r.t. h_k and c_k coming from step k+1
        g_, dg_ = gates_all.split(rows, 1), dgates_all.split(rows, 1)
        g4_ = list(zip(*(gates_all[..., j * H:(j + 1) * H].split(rows, 1) for j in range(4))))
        d4_ = list(zip(*(dgates_all[..., j * H:(j + 1) * H].split(rows, 1) for j in range(4))))
        c_, tc_ = cells.split(rows, 1), tanh_cells.split(rows, 1)
        lowp = ctx.lowp
        w_lp = low(w_hh, lowp)
        for k in range(len(rows) - 1, -1, -1):
            n, n_tr = rows[k], tracks.active[k]
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
            c_prev = c_[k - 1][:, :n] if k > 0 else None  # c_{-1} = 0
            dc = cell_backward(dh, g4_[k], g_[k], tc_[k], c_prev, dc_next, d4_[k], dg_[k], *scratch_[n], one)
            if k > 0:
                dc_next = dc.mul_(g4_[k][1])  # dc_{k-1} = dc_k * f_k
                dh_next = streams_mm(low(dg_[k], lowp), w_lp, dg_[k].dtype)
        if need_x:  # every step's gate gradients back to their input frames at once
            dxp.index_add_(1, rows_x, dgates_all.view(S, -1, B, G4))
        dw = None
        if need_w:  # formed as [H, 4H] per stream, oneDNN's faster orientation of this product, then transposed
            dw = w_hh.new_empty(S, G4, H)
            dg_lp = low(dgates_all[:, rows[0]:], lowp)
            for j in range(S):
                dw[j].copy_(linear(h_prev[j].t(), dg_lp[j].t()).t())
        if not ctx.projected:
            return dxp, dw, None, None, None, None, None
        return (None, dw, None) + (WindowLSTM._projection_backward(dxp, *proj, ctx.needs_input_grad[3:6], lowp)
                                   if need_x else (None, None, None)) + (None,)

    @staticmethod
    def _projection_backward(dxp: Tensor, x: Tensor, w_ih: Tensor, needs: tuple,
                             lowp: Optional[torch.dtype] = None) -> tuple:
        """``(d x, d W_ih, d bias)`` of ``xp = x W_ih^T + bias`` per stream from ``dxp [S, T, B, 4H]``
        (the products' operands in ``lowp`` when given, the gradients in the inputs' types)."""
        S, T, B, G4 = dxp.shape
        F = x.shape[-1]
        d2 = dxp.view(S, T * B, G4)
        d2_lp, x2 = low(d2, lowp), low(x.reshape(T * B, F), lowp)
        dx = dw = db = None
        if needs[0]:
            w_lp = low(w_ih, lowp)
            for j in range(S):
                part = linear(d2_lp[j], w_lp[j].t())  # [T B, F]
                if lowp is not None:
                    part = part.to(x.dtype)
                dx = part if dx is None else dx.add_(part)
            dx = dx.view(T, B, F)
        if needs[1]:
            dw = w_ih.new_empty(S, G4, F)
            for j in range(S):  # formed as [F, 4H], oneDNN's faster orientation of this product, then transposed
                dw[j].copy_(linear(x2.t(), d2_lp[j].t()).t())
        if needs[2]:
            db = d2.sum(1)
        return dx, dw, db
