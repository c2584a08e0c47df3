"""The pieces the hand-written recurrences share: the matrix product they run (:func:`linear`,
oneDNN's where torch's MKL one is slower on the CPU), their bf16 operands under ``train.amp``
(:func:`low`, :func:`amp_dtype`), the LSTM gates' tanh as ``2 sigmoid(2 y) - 1``
(:func:`double_g`, :func:`tanh_sigmoid`) and the LSTM cell's pointwise backward
(:func:`cell_backward`)."""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor


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


def low(t: Optional[Tensor], lowp: Optional[torch.dtype]) -> Optional[Tensor]:
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
    where oneDNN is up to 2x slower) and empty ones (which oneDNN refuses) stay with torch.
    Strided (transposed) operands are taken as they are; 2-D only."""
    if _use_onednn(a, w):
        return _LINEAR(a, w, bias, "none", [], "")
    return torch.mm(a, w.t()) if bias is None else torch.addmm(bias, a, w.t())


def streams_mm(a: Tensor, b: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
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


def double_g(w: Tensor, dim: int) -> Tensor:
    """A copy of LSTM weights or biases with ``4H`` along ``dim`` (gate order i, f, g, o) whose g
    gate's part is times 2 (exact: a power of two), so that the products give the g gate's
    pre-activation doubled, bit for bit, for :func:`tanh_sigmoid`."""
    w = w.clone()
    H = w.shape[dim] // 4
    w.narrow(dim, 2 * H, H).mul_(2.0)
    return w


def tanh_sigmoid(s: Tensor, one: Tensor, neg1: Tensor) -> Tensor:
    """``s = sigmoid(2 y)`` -> ``tanh(y) = 2 s - 1``, in place (``one``, ``neg1``: 0-dim 1 and -1).

    torch's CPU float tanh (MKL's high-accuracy vector tanh) costs ~2.6 ns per value at 1 thread on
    this project's AMD machine, its sigmoid ~0.5 and a multiply ~0.1: one window LSTM step's
    activations (``[256, 4H]`` gates and ``[256, H]`` cells, H = 256) 0.43 -> 0.23 ms
    (``benchmarks/lstm_pointwise.py --rows 256 --hidden 256 --threads 1``). It agrees
    with ``tanh`` within 2e-7 absolute (torch's tanh itself is within 6e-8 of the exact value;
    tests/test_kernels.py). Used by the recurrences' forward passes (``WindowLSTM``,
    ``RNNRollout``), whose backward reads only the activated values."""
    return torch.addcmul(neg1, s, one, value=2.0, out=s)


def tanh_into(c: Tensor, out: Tensor, one: Tensor, neg1: Tensor) -> Tensor:
    """``tanh(c)`` written into ``out`` by :func:`tanh_sigmoid` (the cell's tanh: ``c`` is not doubled
    by any weights, so it is doubled here)."""
    return tanh_sigmoid(torch.mul(c, 2.0, out=out).sigmoid_(), one, neg1)


def streams_addmm_(out: Tensor, a: Tensor, w: Tensor) -> None:
    """``out.baddbmm_(a, w.transpose(1, 2))`` (``out [S, n, m] += a [S, n, k] w [S, m, k]^T``) as one
    :func:`linear` per stream added in, where oneDNN runs them (the window LSTMs' forward step
    ``h_{k-1} W_hh^T``: 3-14 % faster than MKL's batched product at 64-512 rows, H = 256, 1 thread;
    in situ the small size's D-step window LSTM 2-4 %, its G-step one 4 %, CPU time alternated
    in one process), else ``torch.baddbmm`` (or, for bf16 operands into an fp32 ``out``,
    ``torch.bmm`` added in)."""
    if not _use_onednn(a[0], w[0]):
        if a.dtype == out.dtype:
            out.baddbmm_(a, w.transpose(1, 2))
        else:  # low-precision operands (train.amp), the sum in out's precision
            out.add_(torch.bmm(a, w.transpose(1, 2)))
        return
    for j in range(a.shape[0]):
        out[j].add_(linear(a[j], w[j]))


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
