"""What fusing the window LSTM's elementwise backward would buy: one backward step's pointwise
work (the gates' and the cell's gradients, ``suhmo.models.kernels.WindowLSTM``) on
``[rows, 4H]``, three ways, side by side in one run:

- ``naive``: the textbook expressions, one temporary per operator;
- ``suhmo``: what the trainer runs (in place, one reused scratch buffer);
- ``compiled``: the textbook expressions through ``torch.compile`` (one fused C++ loop; needs a
  C++ compiler, and is skipped with a message when compiling fails).

Measured 2026-11-25 (2 threads, rows 480, H 1024, best of 50, two runs): naive 8.9 and 3.5 ms,
suhmo 1.9 and 2.0 ms, compiled 0.34 and 0.43 ms per step. A paper-size RNN iteration with 4
sampled windows runs about 17k track-rows per stream through this in the D step (B = 240)
and half that in the G step, two streams each: ~0.2 s of its 12.5 s in the trainer's
version, so fusing it would save ~0.16 s (~1.3 %). The rest of the time outside the matrix products is spread over many small
operators (``train_step.py --decompose``).
Measured 2026-12-02, branch perf19 (the gates' derivatives formed and applied in two [rows, 4H]
passes), the grid's widest step at the small size (``--rows 1472 --hidden 256``, 2 threads, load
~9): naive 8.95, suhmo 2.76, compiled 0.58 ms per step. In situ it buys little: the grid's D-step
window LSTM (forward+backward) with the cell backward compiled, 392 -> 383 ms (2 %), the products
dominate (benchmarks/results/cpu_preset_speed_2026-12-02c.txt); not shipped.

A last row times one forward step's activations, torch's tanh for the g gate and the cell
against ``2 sigmoid(2 y) - 1`` (``kernels.ops.tanh_sigmoid``, what the recurrences run since
2026-12-03): rows 256, hidden 256, 1 thread, load ~4: 0.43 -> 0.23 ms (512 rows: 0.86 -> 0.44).

  python benchmarks/lstm_pointwise.py [--rows 480] [--hidden 1024] [--no-compile] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/train_step.py
import torch  # noqa: E402

from suhmo.models.kernels.ops import lstm_cell_backward, tanh_into, tanh_sigmoid  # noqa: E402


def naive(dh, dc_next, gates, tc, c_prev):
    i, f, g, o = gates.chunk(4, 1)
    dc = dh * o * (1 - tc * tc) + dc_next
    di, df = dc * g * i * (1 - i), dc * c_prev * f * (1 - f)
    dg, do = dc * i * (1 - g * g), dh * tc * o * (1 - o)
    return torch.cat([di, df, dg, do], 1), dc * f


def make_suhmo(rows: int, hidden: int):
    scratch, dgates = torch.empty(rows, 4 * hidden), torch.empty(rows, 4 * hidden)

    def suhmo(dh, dc_next, gates, tc, c_prev):  # what WindowLSTM.backward runs per step
        dc = lstm_cell_backward(dh, gates, tc, c_prev, dc_next, dgates, scratch)
        return dgates, dc.mul_(gates[:, hidden:2 * hidden])

    return suhmo


def time_ms(fn, args, reps: int) -> float:
    for _ in range(3):
        fn(*args)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return 1000 * best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=480)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    n, H = a.rows, a.hidden
    gen = torch.Generator().manual_seed(0)
    args = (torch.randn(n, H, generator=gen), torch.randn(n, H, generator=gen), torch.rand(n, 4 * H, generator=gen),
            torch.rand(n, H, generator=gen), torch.randn(n, H, generator=gen))
    suhmo = make_suhmo(n, H)
    ref = naive(*args)
    got = suhmo(*args)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ref, got)), "the trainer's pointwise backward differs"
    rows = {"naive": time_ms(naive, args, a.reps), "suhmo": time_ms(suhmo, args, a.reps)}
    try:
        if a.no_compile:
            raise RuntimeError("--no-compile")
        compiled = torch.compile(naive, dynamic=False)
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(ref, compiled(*args)))
        rows["compiled"] = time_ms(compiled, args, a.reps)
    except Exception as e:  # noqa: BLE001 - no compiler here: say so, keep the other rows
        print(f"compiled: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    print(f"{'version':<10}{'ms/step':>9}{'vs suhmo':>10}   rows {n}, hidden {H}, {a.threads} threads")
    for name, ms in rows.items():
        print(f"{name:<10}{ms:>9.3f}{ms / rows['suhmo']:>10.2f}")
    # the forward's activations of one step: torch's tanh (MKL's vector tanh) for the g gate and the cell,
    # against 2 sigmoid(2 y) - 1 on pre-activations doubled by the weights (kernels.ops.tanh_sigmoid)
    pre, cell = torch.randn(n, 4 * H, generator=gen), torch.randn(n, H, generator=gen)
    buf, tc = pre.clone(), torch.empty(n, H)
    one, neg1 = torch.ones(()), torch.full((), -1.0)

    def act_tanh():
        buf[:, :2 * H].sigmoid_(), buf[:, 2 * H:3 * H].tanh_(), buf[:, 3 * H:].sigmoid_()
        torch.tanh(cell, out=tc)

    def act_sigmoid():
        buf.sigmoid_()
        tanh_sigmoid(buf[:, 2 * H:3 * H], one, neg1)
        tanh_into(cell, tc, one, neg1)

    fwd = {"tanh": time_ms(act_tanh, (), a.reps), "sigmoid": time_ms(act_sigmoid, (), a.reps)}
    print(f"forward activations, ms/step: torch.tanh {fwd['tanh']:.3f}, 2 sigmoid(2y) - 1 {fwd['sigmoid']:.3f}")
    if a.json:
        print(json.dumps({"rows": n, "hidden": H, "ms_per_step": {k: round(v, 4) for k, v in rows.items()},
                          "forward_ms_per_step": {k: round(v, 4) for k, v in fwd.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
