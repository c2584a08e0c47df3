"""Hand-written backward passes of the models (custom ``torch.autograd.Function``s).

Each one computes what autograd would, with fewer copies; each is justified by a benchmark and
checked against autograd by ``torch.autograd.gradcheck`` (tests/test_kernels.py):

- ``CachedAttention``: causal attention over a preallocated key/value cache written in place,
  for the Transformer generator's training pass (``generators.GBlock``; benchmarks/train_step.py).
- ``WindowLSTM`` (+ ``lstm_cell_backward``): one LSTM over every window of a window plan, all
  windows advancing together, for the RNN sequence discriminators, D_s and D_s^j as two streams
  of one recurrence (``discriminators.lstm_window_states``; benchmarks/lstm_pointwise.py), with
  the input projection of the covered frames inside (``discriminators.projected_window_states``).
- ``RNNRollout``: the RNN generator's training pass over all its steps as one node, the
  backward through time written out and each weight's gradient formed once for all steps
  (``generators.RNNCore._rollout_fused``; tests/test_step_equivalence.py checks it against the
  step loop, benchmarks/old_new.py times it).
- ``SequenceFeatures``, ``MotionL2``, ``CentreScale``: the discriminators' per-frame features,
  eq. 11's L2 and the semantic encoding's shape normalisation, whose autograd graphs were
  dozens of full-size operations on ``[B, T, 68, 2]`` tensors with 2-element inner loops
  (concatenations along the last dimension, broadcasts over the 68 points); written out with
  each point as one element of twice the float's size (:func:`_points`), forward and backward
  (tests/test_kernels.py).

The larger matrix products inside these passes go through :func:`linear` (oneDNN's product
where torch's MKL one is slower on the CPU, the same float32 maths summed in another order).
The recurrences' forward passes form tanh as ``2 sigmoid(2 y) - 1`` (:func:`_tanh_sigmoid`;
torch's CPU tanh is ~5x the cost of its sigmoid), the g gate's pre-activation doubled by its
weight rows (:func:`_double_g`, exact). Under ``train.amp`` the two recurrences (``WindowLSTM``,
``RNNRollout``) take their products' operands in bf16 (``lowp``, :func:`_low`; the products'
results bf16-rounded, as under autocast) and keep states, pointwise work and gradient buffers in
fp32: mixed precision inside the nodes that autocast cannot see into (benchmarks/old_new.py
``--amp``).

The paper's concepts (eq. 4, 5, 13-17) live in ``generators``, ``windows`` and ``layers``.
"""

from __future__ import annotations

import functools
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


_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None
_LINEAR_MIN_MACS = 1 << 23  # below ~8M multiply-adds oneDNN's fixed cost per call loses to MKL's


def _use_onednn(a: Tensor, w: Tensor) -> bool:
    return (_LINEAR is not None and a.device.type == "cpu" and w.dtype == a.dtype
            and (a.dtype == torch.float32 or a.dtype == torch.bfloat16 and _native_bf16())
            and a.shape[0] * a.shape[1] * w.shape[0] >= _LINEAR_MIN_MACS and not torch.is_grad_enabled())


def cpu_native_bf16() -> bool:
    """This CPU multiplies bf16 matrices in hardware: x86 AVX512-BF16 or AMX, or an ARM CPU whose
    bf16 oneDNN supports (BF16 extension)."""
    import platform

    cpu = getattr(torch, "cpu", None)
    x86 = any(getattr(cpu, name, lambda: False)() for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    if x86:
        return True
    if platform.machine().lower() in ("aarch64", "arm64"):
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


# bf16 products by oneDNN only where the CPU has them (elsewhere oneDNN's reference path is slow); asked once
_native_bf16 = functools.lru_cache(maxsize=None)(cpu_native_bf16)


def _low(t: Optional[Tensor], lowp: Optional[torch.dtype]) -> Optional[Tensor]:
    """``t`` as a matrix product's operand in ``lowp`` (``train.amp``: bf16), or as it is (None)."""
    return t if lowp is None or t is None else t.to(lowp)


def amp_dtype(t: Tensor) -> Optional[torch.dtype]:
    """bf16 when autocast to bf16 is on for ``t``'s device (``train.amp``), else None (fp16 products
    would need loss scaling, which the trainer does not do: the recurrences stay fp32 then)."""
    dev = t.device.type
    on = torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev) == torch.bfloat16
    return torch.bfloat16 if on else None


def linear(a: Tensor, w: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``a [M, K] @ w[N, K]^T (+ bias [N])``, new, for the products inside the hand-written passes.

    On the CPU in float32 (or bf16, where the CPU multiplies it natively: ``train.amp``) outside
    autograd recording this is oneDNN's matrix product (the
    ``mkldnn._linear_pointwise`` operator that torch.compile emits for ``nn.Linear``), else
    ``torch.addmm``/``mm``: the same float32 products, summed in another order. torch's own
    float32 ``mm`` is MKL's, and MKL on this project's AMD machine (EPYC, Zen 4) runs the shapes
    of the window LSTMs' projections at 50-75 GFLOP/s against oneDNN's 80-90 at 1 thread,
    measured each shape by itself (``benchmarks/vs_reference.py``'s small size, sampled windows,
    D step: the projection ``[2624, 410] x [410, 1024]`` 32 -> 25 ms per stream, its weight
    gradient 30 -> 27 ms; G step: the input gradient ``[1312, 1024] x [1024, 410]`` 21 -> 13 ms;
    the RNN generator's backward step ``[32, 1024] x [1024, 784]`` 0.84 -> 0.60 ms). Which
    library is faster depends on the shape: where MKL is (``[4H, n] x [n, H]``) the caller forms
    the transposed product. Small products (under ``_LINEAR_MIN_MACS``: the 64-wide models' steps,
    where oneDNN was up to 2x slower) and empty ones (which oneDNN refuses) stay with torch.
    Strided (transposed) operands are taken as they are; 2-D only."""
    if _use_onednn(a, w):
        return _LINEAR(a, w, bias, "none", [], "")
    return torch.mm(a, w.t()) if bias is None else torch.addmm(bias, a, w.t())


def _streams_mm(a: Tensor, b: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    """``torch.bmm(a, b)`` (``[S, n, k] x [S, k, m]``) as one :func:`linear` per stream where oneDNN
    runs them (the window LSTMs' backward step ``dG_k W_hh``, ``n`` = 32-256 rows: ~10 % faster
    than MKL's batched product on this project's AMD machines), else ``torch.bmm``; the result in
    ``dtype`` (None: the operands')."""
    if not _use_onednn(a[0], b[0].t()):
        out = torch.bmm(a, b)
        return out if dtype is None else out.to(dtype)
    out = a.new_empty(a.shape[0], a.shape[1], b.shape[2], dtype=dtype)
    for j in range(a.shape[0]):
        out[j].copy_(linear(a[j], b[j].t()))
    return out


def _double_g(w: Tensor, dim: int) -> Tensor:
    """A copy of LSTM weights or biases with ``4H`` along ``dim`` (gate order i, f, g, o) whose g
    gate's part is times 2 (exact: a power of two), so that the products give the g gate's
    pre-activation doubled, bit for bit, for :func:`_tanh_sigmoid`."""
    w = w.clone()
    H = w.shape[dim] // 4
    w.narrow(dim, 2 * H, H).mul_(2.0)
    return w


def _tanh_sigmoid(s: Tensor, one: Tensor, neg1: Tensor) -> Tensor:
    """``s = sigmoid(2 y)`` -> ``tanh(y) = 2 s - 1``, in place (``one``, ``neg1``: 0-dim 1 and -1).

    torch's CPU float tanh (MKL's high-accuracy vector tanh) costs ~2.6 ns per value at 1 thread on
    this project's AMD machine, its sigmoid ~0.5 and a multiply ~0.1: one window LSTM step's
    activations (``[256, 4H]`` gates and ``[256, H]`` cells, H = 256) 0.43 -> 0.23 ms
    (``benchmarks/lstm_pointwise.py --rows 256 --hidden 256 --threads 1``, 2026-12-03). It agrees
    with ``tanh`` within 2e-7 absolute (torch's tanh itself is within 6e-8 of the exact value;
    tests/test_kernels.py). Used by the recurrences' forward passes (``WindowLSTM``,
    ``RNNRollout``), whose backward reads only the activated values."""
    return torch.addcmul(neg1, s, one, value=2.0, out=s)


def _tanh_into(c: Tensor, out: Tensor, one: Tensor, neg1: Tensor) -> Tensor:
    """``tanh(c)`` written into ``out`` by :func:`_tanh_sigmoid` (the cell's tanh: ``c`` is not doubled
    by any weights, so it is doubled here)."""
    return _tanh_sigmoid(torch.mul(c, 2.0, out=out).sigmoid_(), one, neg1)


def _streams_addmm_(out: Tensor, a: Tensor, w: Tensor) -> None:
    """``out.baddbmm_(a, w.transpose(1, 2))`` (``out [S, n, m] += a [S, n, k] w [S, m, k]^T``) as one
    :func:`linear` per stream added in, where oneDNN runs them (the window LSTMs' forward step
    ``h_{k-1} W_hh^T``: 3-14 % faster than MKL's batched product at 64-512 rows, H = 256, 1 thread;
    in situ the small size's D-step window LSTM 2-4 %, its G-step one 4 %, CPU time alternated
    in one process, 2026-12-03), else ``torch.baddbmm`` (or, for bf16 operands into an fp32 ``out``,
    ``torch.bmm`` added in)."""
    if not _use_onednn(a[0], w[0]):
        if a.dtype == out.dtype:
            out.baddbmm_(a, w.transpose(1, 2))
        else:  # low-precision operands (train.amp), the sum in out's precision
            out.add_(torch.bmm(a, w.transpose(1, 2)))
        return
    for j in range(a.shape[0]):
        out[j].add_(linear(a[j], w[j]))


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
        # tanh(y) = 2 sigmoid(2 y) - 1 (_tanh_sigmoid)
        if x is None:
            torch.index_select(xp, 1, rows_x, out=gates_all.view(S, -1, B, G4))
            gates_all[..., 2 * H:3 * H].mul_(2.0)
        else:  # each stream's projection of the frames, gathered from it
            x2 = _low(x.reshape(T * B, F), lowp)
            w_ih2, bias2 = _low(_double_g(w_ih, 1), lowp), _low(_double_g(bias, 1), lowp)
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
        w_g = _low(_double_g(w_hh, 1), lowp)
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
                _streams_addmm_(g_[k], hp, w_g)
            g_[k].sigmoid_()  # i, f, o; and the g gate's sigmoid(2 y)
            _tanh_sigmoid(gg_[k], one, neg1)
            if k == 0:
                c = torch.mul(gi_[k], gg_[k], out=c_[k])
            else:
                c = torch.mul(gf_[k], c_[k - 1][:, :n], out=c_[k])
                c.addcmul_(gi_[k], gg_[k])
            tc = _tanh_into(c, tc_[k], one, neg1)
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
        w_lp = _low(w_hh, lowp)
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
                dh_next = _streams_mm(_low(dg_[k], lowp), w_lp, dg_[k].dtype)
        if need_x:  # every step's gate gradients back to their input frames at once
            dxp.index_add_(1, rows_x, dgates_all.view(S, -1, B, G4))
        dw = None
        if need_w:  # formed as [H, 4H] per stream, oneDNN's faster orientation of this product, then transposed
            dw = w_hh.new_empty(S, G4, H)
            dg_lp = _low(dgates_all[:, rows[0]:], lowp)
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
        d2_lp, x2 = _low(d2, lowp), _low(x.reshape(T * B, F), lowp)
        dx = dw = db = None
        if needs[0]:
            w_lp = _low(w_ih, lowp)
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


def lstm_cell_backward(dh: Tensor, gates: Tensor, tc: Tensor, c_prev: Optional[Tensor], dc_next: Optional[Tensor],
                       dgates: Tensor, tmp: Optional[Tensor] = None) -> Tensor:
    """Pointwise backward of one LSTM step on ``n`` rows (of each stream: ``[..., n, 4H]``): writes
    the gradients of the gates before their nonlinearities into ``dgates [..., n, 4H]`` and
    returns dc_k (``[..., n, H]``, new).

    ``gates``: the activated gates (i, f, g, o), ``tc = tanh(c_k)``, ``c_prev = c_{k-1}`` (None:
    zero), ``dc_next``: dc from step k+1 for its first rows (None: none), ``tmp``: ``[..., n, 4H]``
    scratch (None: allocated). The gates' local derivatives (sigmoid' = s - s^2 for i, f, o,
    tanh' = 1 - t^2 for g) are formed in one ``[..., n, 4H]`` pass and applied in another, after
    the four products that each gate's gradient starts from: 11 operations, where applying
    them gate by gate took 15 (``benchmarks/lstm_pointwise.py`` times the forms).
    The recurrences call :func:`cell_backward` on views of their buffers split once per call.
    """
    H = gates.shape[-1] // 4
    tmp = torch.empty_like(gates) if tmp is None or tmp.shape != gates.shape else tmp
    return cell_backward(dh, gates.chunk(4, -1), gates, tc, c_prev, dc_next, dgates.chunk(4, -1), dgates, tmp,
                         tmp[..., 2 * H:3 * H], gates.new_ones(()))


def cell_backward(dh: Tensor, g4, gates: Tensor, tc: Tensor, c_prev: Optional[Tensor], dc_next: Optional[Tensor],
                  d4, dgates: Tensor, tmp: Tensor, tmp_g: Tensor, one: Tensor) -> Tensor:
    """:func:`lstm_cell_backward` on views given: ``g4 = (i, f, g, o)`` of the activated ``gates``,
    ``d4`` the same of ``dgates``, ``tmp`` the ``[..., n, 4H]`` scratch and ``tmp_g`` its g slot,
    ``one`` a 0-dim 1."""
    i, f, g, o = g4
    di, df, dg, do = d4
    # dc_k = dc from step k+1 + dh_k * o * (1 - tanh(c_k)^2)
    dc = torch.mul(dh, o)
    dc.addcmul_(dc, torch.mul(tc, tc, out=tmp_g), value=-1.0)
    if dc_next is not None:
        dc.narrow(-2, 0, dc_next.shape[-2]).add_(dc_next)
    # the gradients w.r.t. the activated gates: i <- dc g, f <- dc c_{k-1}, g <- dc i, o <- dh tanh(c_k)
    torch.mul(dc, g, out=di)
    if c_prev is None:
        df.zero_()
    else:
        torch.mul(dc, c_prev, out=df)
    torch.mul(dc, i, out=dg)
    torch.mul(dh, tc, out=do)
    # times the local derivatives: s - s^2 (i, f, o), 1 - t^2 (g)
    torch.addcmul(gates, gates, gates, value=-1.0, out=tmp)
    torch.addcmul(one, g, g, value=-1.0, out=tmp_g)
    dgates.mul_(tmp)
    return dc


class RNNRollout(torch.autograd.Function):
    """The RNN generator's training pass (``generators.RNNCore``: LSTM cell with BP, the deep-output
    head ``Linear -> LayerNorm -> LeakyReLU`` x 2 ``-> Linear``, the Euler integrator with optional
    reversion) over all ``O + n_future - 1`` steps as one autograd node, with backpropagation
    through time written out.

    Autograd records some 25 nodes per step for this loop, each run by its engine in the
    backward; at the cpu preset's sizes (32 rows, 64 units) that bookkeeping, not the
    arithmetic, is the cost. Here the forward runs without recording and writes every step's
    activations into buffers ``[T, B, ...]``; the backward runs the steps in reverse with the
    ATen backward kernels of each operation (``native_layer_norm_backward``,
    ``leaky_relu_backward``, ``lstm_cell_backward``), and forms the gradients of every weight
    once for all steps, one product over the stacked steps instead of one per step plus its
    accumulation. The same noise draws in the same order; equal to autograd over the loop
    within float rounding (tests/test_step_equivalence.py).

    Inputs: ``x [B, O, D]`` observed states and ``v0 [B, D]`` (no gradient), ``h0, c0 [B, H]``,
    ``rate [D]`` or None, the cell's ``w [F + (2H | H), 4H]`` (``[W_ih | W_hh]^T``) and ``b``, the
    head's ``W1, b1, g1, be1, W2, b2, g2, be2, W3, b3``, and ``meta = (n_future, vel_scale,
    pair, noise_fn, noise, eps1, eps2, slope, lowp)``, ``lowp`` (``train.amp``: ``torch.bfloat16``, else
    None) the operands' type of the cell's products, forward and backward, as in ``WindowLSTM``
    (the head's smaller products stay fp32). Returns the states ``[B, O + n_future - 1, D]``:
    the reconstructions of the observed frames 1..O-1, then the future ones.
    """

    @staticmethod
    def forward(ctx, x, v0, h0, c0, rate, w, b, W1, b1, g1, be1, W2, b2, g2, be2, W3, b3, meta):
        n_future, vs, pair, noise_fn, N, eps1, eps2, slope, lowp = meta
        B, O, D = x.shape
        H, M = h0.shape[1], W1.shape[0]
        T = O + n_future - 1
        F = 2 * D + N
        new = x.new_empty
        INP, GATES = new(T, B, F + (2 * H if pair else H)), new(T, B, 4 * H)
        CELLS, TC, Y0 = new(T, B, H), new(T, B, H), new(T, B, H + F)
        A1, N1, L1, A2, N2, L2 = (new(T, B, M) for _ in range(6))
        S1, S2 = new(2, T, B, 1), new(2, T, B, 1)  # LayerNorm mean and rstd per step
        DX0 = new(T, B, D) if rate is not None else None  # x0 - pos: the reversion's input
        P = new(B, T, D)
        # every step's views of the buffers, formed once (indexing them step by step costs more than the steps' own work)
        inp_, gates_, cells_, tc_, y0_ = INP.unbind(0), GATES.unbind(0), CELLS.unbind(0), TC.unbind(0), Y0.unbind(0)
        h_ = Y0[:, :, :H].unbind(0)
        fpos_, fvel_, fn_ = Y0[:, :, H:H + D].unbind(0), Y0[:, :, H + D:H + 2 * D].unbind(0), Y0[:, :, H + 2 * D:].unbind(0)
        gi_, gf_, gg_, go_ = (GATES[:, :, k * H:(k + 1) * H].unbind(0) for k in range(4))
        a1_, n1_, l1_, a2_, n2_, l2_ = A1.unbind(0), N1.unbind(0), L1.unbind(0), A2.unbind(0), N2.unbind(0), L2.unbind(0)
        m1_, r1_, m2_, r2_ = S1[0].unbind(0), S1[1].unbind(0), S2[0].unbind(0), S2[1].unbind(0)
        p_ = P.unbind(1)
        dx0_ = DX0.unbind(0) if DX0 is not None else None
        if pair:
            Q = INP.view(T, B // 2, 2, -1)
            ifeat_, ibp_, ibp1_, ih_ = (Q[..., :F].unbind(0), Q[:, :, :1, F:F + H].unbind(0),
                                        Q[:, :, 1:, F:F + H].unbind(0), Q[..., F + H:].unbind(0))
        else:
            ifeat_, ih_ = INP[:, :, :F].unbind(0), INP[:, :, F:].unbind(0)
        lnf, lrelu = torch.ops.aten.native_layer_norm.out, torch.ops.aten.leaky_relu.out
        x0 = x[:, 0]
        xs = x.unbind(1)
        pos, vel, h, c = x0, v0, h0, c0
        n = x.new_zeros(B, N)
        w1t, w2t, w3t = W1.t(), W2.t(), W3.t()
        wg, bg = _double_g(w, 1), _double_g(b, 0)  # tanh(y) = 2 sigmoid(2 y) - 1 (_tanh_sigmoid)
        wg_lp = _low(wg, lowp)
        one, neg1 = x.new_ones(()), x.new_full((), -1.0)
        for t in range(T):
            if t < O:  # teacher forcing
                pos = xs[t]
                if t > 0:
                    vel = xs[t] - xs[t - 1]
            fpos_[t].copy_(pos)
            torch.mul(vel, vs, out=fvel_[t])
            if N > 0:
                n = noise_fn(n, t)
                fn_[t].copy_(n)
            feat = y0_[t].narrow(1, H, F)
            if pair:  # [feat | BP(h) | h], BP = max over the pair, broadcast to both rows
                hp = h.view(B // 2, 2, H)
                ifeat_[t].copy_(feat.view(B // 2, 2, F))
                torch.amax(hp, 1, keepdim=True, out=ibp_[t])
                ibp1_[t].copy_(ibp_[t])
                ih_[t].copy_(hp)
            else:
                ifeat_[t].copy_(feat)
                ih_[t].copy_(h)
            if lowp is None:  # the g gate's pre-activation doubled (_double_g)
                torch.addmm(bg, inp_[t], wg, out=gates_[t])
            else:
                torch.add(bg, torch.mm(inp_[t].to(lowp), wg_lp), out=gates_[t])
            gates_[t].sigmoid_()
            _tanh_sigmoid(gg_[t], one, neg1)
            c = torch.mul(gf_[t], c, out=cells_[t]).addcmul_(gi_[t], gg_[t])
            h = torch.mul(go_[t], _tanh_into(c, tc_[t], one, neg1), out=h_[t])
            lnf(torch.addmm(b1, y0_[t], w1t, out=a1_[t]), (M,), g1, be1, eps1, out0=n1_[t], out1=m1_[t], out2=r1_[t])
            lrelu(n1_[t], slope, out=l1_[t])
            lnf(torch.addmm(b2, l1_[t], w2t, out=a2_[t]), (M,), g2, be2, eps2, out0=n2_[t], out1=m2_[t], out2=r2_[t])
            lrelu(n2_[t], slope, out=l2_[t])
            out = torch.addmm(b3, l2_[t], w3t)
            if rate is not None:  # eq. 4 with reversion: x + v - k (x - x0) = x + (v + k (x0 - x))
                vel = torch.addcmul(out, rate, torch.sub(x0, pos, out=dx0_[t]))
            else:  # eq. 4
                vel = out
            pos = torch.add(pos, vel, out=p_[t])
        ctx.meta = (O, T, D, H, M, F, vs, pair, slope, lowp)
        ctx.save_for_backward(c0, rate, w, W1, g1, be1, W2, g2, be2, W3, INP, GATES, CELLS, TC, Y0, A1, N1, L1, A2, N2,
                              L2, S1, S2, DX0 if DX0 is not None else x.new_zeros(0))
        return P

    @staticmethod
    def backward(ctx, dP):
        (c0, rate, w, W1, g1, be1, W2, g2, be2, W3, INP, GATES, CELLS, TC, Y0, A1, N1, L1, A2, N2, L2, S1, S2,
         DX0) = ctx.saved_tensors
        O, T, D, H, M, F, vs, pair, slope, lowp = ctx.meta
        w_lp = _low(w, lowp)
        B = dP.shape[0]
        nlb = torch.ops.aten.native_layer_norm_backward  # its weight gradients: formed once, after the loop
        lrb = torch.ops.aten.leaky_relu_backward.grad_input
        mask = [True, False, False]
        new = dP.new_empty
        DG, DA1, DN1, DA2, DN2, DOUT = new(T, B, 4 * H), new(T, B, M), new(T, B, M), new(T, B, M), new(T, B, M), new(T, B, D)
        dg_, da1_, dn1_, da2_, dn2_, dout_ = DG.unbind(0), DA1.unbind(0), DN1.unbind(0), DA2.unbind(0), DN2.unbind(0), DOUT.unbind(0)
        cells_, tc_ = CELLS.unbind(0), TC.unbind(0)
        g4_ = list(zip(*(GATES[:, :, j * H:(j + 1) * H].unbind(0) for j in range(4))))
        d4_ = list(zip(*(DG[:, :, j * H:(j + 1) * H].unbind(0) for j in range(4))))
        gates_ = GATES.unbind(0)
        a1_, n1_, a2_, n2_ = A1.unbind(0), N1.unbind(0), A2.unbind(0), N2.unbind(0)
        m1_, r1_, m2_, r2_ = S1[0].unbind(0), S1[1].unbind(0), S2[0].unbind(0), S2[1].unbind(0)
        dp_ = dP.unbind(1)
        if pair:  # amax's backward: the maxima of a pair share the gradient; which rows they are, for all steps at once
            Q = INP.view(T, B // 2, 2, -1)
            MAX = (Q[..., F + H:] == Q[..., F:F + H]).to(dP.dtype)  # [T, B/2, 2, H]
            max_, nmax_ = MAX.unbind(0), MAX.sum(2, keepdim=True).unbind(0)
        tmp = new(B, 4 * H)
        tmp_g, one = tmp[:, 2 * H:3 * H], dP.new_ones(())
        dpos_c = dvel_c = None  # gradients of step t+1's position and velocity inputs, when they were step t's outputs
        dh_c = None  # of h_t, from step t+1's cell input
        dc_c = None
        for t in range(T - 1, -1, -1):
            g_nxt = dp_[t] if dpos_c is None else dp_[t] + dpos_c
            dvel = dout_[t]
            if dvel_c is None:
                dvel.copy_(g_nxt)
            else:
                torch.add(g_nxt, dvel_c, out=dvel)
            dpos = g_nxt if rate is None else torch.addcmul(g_nxt, rate, dvel, value=-1.0)
            # the head, output to input
            lrb(dvel @ W3, n2_[t], slope, False, grad_input=dn2_[t])
            da2_[t].copy_(nlb(dn2_[t], a2_[t], (M,), m2_[t], r2_[t], g2, be2, mask)[0])
            lrb(da2_[t] @ W2, n1_[t], slope, False, grad_input=dn1_[t])
            da1_[t].copy_(nlb(dn1_[t], a1_[t], (M,), m1_[t], r1_[t], g1, be1, mask)[0])
            dy0 = da1_[t] @ W1  # [B, H + F]: of [h_t | feat_t]
            dh = dy0[:, :H] if dh_c is None else dy0[:, :H].add_(dh_c)
            dc = cell_backward(dh, g4_[t], gates_[t], tc_[t], cells_[t - 1] if t > 0 else c0, dc_c, d4_[t], dg_[t],
                               tmp, tmp_g, one)
            dc_c = dc.mul_(g4_[t][1])  # of c_{t-1}
            # dG_t w^T, [B, in]: of [feat | BP(h_{t-1}) | h_{t-1}]
            dinp = linear(dg_[t], w) if lowp is None else linear(dg_[t].to(lowp), w_lp).float()
            if pair:
                dh_c = dinp[:, F + H:]
                dbp = dinp[:, F:F + H].view(B // 2, 2, H).sum(1, keepdim=True)
                dh_c.view(B // 2, 2, H).addcmul_(max_[t], dbp.div_(nmax_[t]))
            else:
                dh_c = dinp[:, F:]
            if t >= O:  # position and velocity came from step t-1
                dfeat = dinp[:, :2 * D].add_(dy0[:, H:H + 2 * D])
                dpos_c = dfeat[:, :D].add_(dpos)
                dvel_c = dfeat[:, D:].mul_(vs)
            else:
                dpos_c = dvel_c = None
        TB = T * B
        # formed as [4H, in]: oneDNN's faster orientation
        dw = linear(_low(DG.view(TB, -1), lowp).t(), _low(INP.view(TB, -1), lowp).t()).t().to(w.dtype)
        db = DG.view(TB, -1).sum(0)
        dW1 = DA1.view(TB, M).t() @ Y0.view(TB, -1)
        dW2 = DA2.view(TB, M).t() @ L1.view(TB, M)
        dW3 = DOUT.view(TB, D).t() @ L2.view(TB, M)
        xh1 = (A1 - S1[0]).mul_(S1[1])  # the normalised inputs of the LayerNorms
        xh2 = (A2 - S2[0]).mul_(S2[1])
        dg1, dbe1 = (DN1 * xh1).view(TB, M).sum(0), DN1.view(TB, M).sum(0)
        dg2, dbe2 = (DN2 * xh2).view(TB, M).sum(0), DN2.view(TB, M).sum(0)
        drate = (DOUT * DX0).view(TB, D).sum(0) if rate is not None and ctx.needs_input_grad[4] else None
        return (None, None, dh_c.contiguous(), dc_c, drate, dw, db, dW1, DA1.view(TB, M).sum(0), dg1, dbe1, dW2,
                DA2.view(TB, M).sum(0), dg2, dbe2, dW3, DOUT.view(TB, D).sum(0), None)


def _points(t: Tensor) -> Tensor:
    """``t [..., 2k]`` (last dim contiguous) as ``[..., k]`` of a dtype twice as wide: one element
    per point ``(x, y)``. Moving whole points is then one strided copy of elements, and a
    complex view (float32 -> complex64) adds and subtracts both coordinates in one element,
    the same float operations on each (``torch.cat`` along the last dimension copies 2-float
    runs one by one, and a broadcast over the 68 points of a ``[..., 68, 2]`` tensor runs
    2-element inner loops)."""
    return t.view(_WORD[t.element_size()])


_WORD = {2: torch.int32, 4: torch.int64, 8: torch.complex128}  # twice the size: one (x, y) pair
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}


class SequenceFeatures(torch.autograd.Function):
    """``losses.sequence_features`` with ``model.d_centred`` (its default path): positions
    ``seq [B, T, 68, 2]`` and optional semantic states ``z [B, T, Z]`` -> ``[B, T-2, 410 (+ 2Z)]``,
    per frame ``[pos - centroid | vs * vel | va * acc]`` interleaved per landmark (68 x 6), then
    ``centroid - 0.5``, then ``z_t`` and ``vs * (z_t - z_{t-1})``.

    The values are those of the autograd expression, bit for bit (the same float operations):
    the three landmark parts are formed as contiguous planes and moved into the interleaved
    layout by one permuted copy of point elements (:func:`_points`), the rest written into the
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
        centroid = pos.mean(-2)  # [B, Tf, 2]
        cplx = _COMPLEX.get(seq.dtype)
        if cplx is not None:  # one complex element per point: the broadcast over the points in whole elements
            torch.sub(pos.view(cplx).squeeze(-1), centroid.view(cplx), out=planes[0].view(cplx).squeeze(-1))
        else:
            torch.sub(pos, centroid.unsqueeze(-2), out=planes[0])
        torch.mul(vel[:, 1:], vs, out=planes[1])
        torch.sub(vel[:, 1:], vel[:, :-1], out=planes[2]).mul_(va)
        words = _points(out[..., :408]).unflatten(-1, (68, 3))  # [B, Tf, 68, 3]
        words.copy_(_points(planes).squeeze(-1).permute(1, 2, 3, 0))
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
        _points(planes).squeeze(-1).copy_(_points(g[..., :408]).unflatten(-1, (68, 3)).permute(3, 0, 1, 2))
        gp, gv, ga = planes.unbind(0)
        # pos - centroid and centroid - 0.5, centroid = mean over the 68 points: d pos = gp + (gc - sum gp) / 68
        gc = torch.sub(g[..., 408:410], gp.sum(-2)).div_(68)
        a = torch.mul(gv, vs).add_(ga, alpha=va)  # d vel_t (feature t's vel, x_{t+2} - x_{t+1}), acc's share included
        b = ga.mul_(va)  # acc_t = vel_t - vel_{t-1}: its share on vel_{t-1} (x_{t+1} - x_t), negated
        dseq = g.new_empty(B, Tf + 2, 68, 2)
        cplx = _COMPLEX.get(g.dtype)
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


class CentreScale(torch.autograd.Function):
    """``space._centre_scale_t``: frames ``x [..., P, 2]`` -> centroid ``[..., 2]``, RMS radius ``s
    [...]`` (clamped at 1e-9), unit shape ``(x - centroid) / s [..., P, 2]``, with the backward
    written out. The points as complex elements (:func:`_points`): the centroid is a mean over
    the last, contiguous dimension and the centring one broadcast of whole elements, where the
    ``[..., P, 2]`` form reduces and broadcasts over a middle dimension with 2-element inner loops
    (forward and backward: ~3.5 ms against ~1.2 ms per encoding of a cpu-preset batch, 1 thread).
    Equal to the autograd expression within float rounding (tests/test_kernels.py)."""

    @staticmethod
    def forward(ctx, x: Tensor):
        shape = x.shape
        P = shape[-2]
        cplx = _COMPLEX[x.dtype]
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
        cplx = _COMPLEX[xn.dtype]
        pts = gxc.view(cplx)  # [N, P]
        # xc = x - mean(x): d x = d xc - mean(d xc) + gc / P
        shift = pts.mean(-1, keepdim=True).sub_(gc.reshape(N, 2).contiguous().view(cplx).div(P))
        pts.sub_(shift)
        return gxc.view(shape)
