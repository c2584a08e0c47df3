"""Train-iteration time of SUHMo (one D step + one G step, fakes generated once) on this CPU.

Rows: variant (rnn, transformer) x size (paper: batch 120, hidden 1024, seq 40, obs 5;
small: batch 32, hidden 256) x window mode (sampled: the paper's eq. 5 with the default
``windows.num_windows=4`` random (tau, t) per step; grid: the authors' fixed scales
[5, 10, 20, 40] on a tau/2 stride grid, 31 windows per stream).

Each row counts the matmul FLOPs of its iteration analytically (benchmarks/_flops.py) and
divides by the measured time (the best timed iteration of the row, after 1 warm-up); ``calib_gflops`` is a plain fp32 matmul measured just before
the row in the same process, so ``bound_ratio = seconds / (flops / calib)`` says how far the
iteration is from the GEMM-rate bound of the work it does. 2 threads
(``torch.set_num_threads(2)``), like the authors' reference figures (147 s RNN and 180 s
Transformer at the paper size; about 5 s at batch 32 / hidden 256).

Measured 2026-11-25 (2 threads, OMP_WAIT_POLICY=PASSIVE, shared machine at load ~4, i.e.
about one free core: calib ~100 GFLOP/s against ~200 quiet), paper size, s/iter (x bound):
RNN sampled 24.7 (1.42), RNN grid 54.9 (1.45), Transformer sampled 9.3 (1.58), Transformer
grid 16.6 (1.93); the code before the fused window LSTM, same run conditions: 25.9, 82.5,
11.1, 16.7. Small size: 0.80, 1.37, 0.55, 0.79 (before: 1.43, 4.03, 0.63, 1.19).

Quiet machine (load 1.2-1.9, calib ~200 GFLOP/s), same day, 410-value D features, paper size,
s/iter (x bound, speed-up over the authors): RNN sampled 13.5 (1.53, 10.9x), RNN grid 26.6
(1.49, 5.5x), Transformer sampled 5.2 (1.72, 35x), Transformer grid 9.1 (2.11, 19.8x).

Later the same day (load 1.3-1.9, calib ~197), after the window LSTM's backward kept tanh(c)
from its forward and dropped its temporaries, and the Transformer D embedded each frame once
(``--paper-iters 2 --decompose``), paper size, s/iter (x bound = x shape * x other, speed-up):
  RNN sampled          12.5  (1.39 = 1.20 * 1.17, 11.8x)   GEMMs 81 % of the time
  RNN grid             26.2  (1.42 = 1.07 * 1.33,  5.6x)   GEMMs 76 %
  Transformer sampled   5.02 (1.73 = 1.10 * 1.57, 35.9x)   GEMMs 71 %
  Transformer grid      7.47 (1.81 = 1.13 * 1.59, 24.1x)   GEMMs 71 %
Then the Transformer G's training pass wrote its keys and values in place (``kernels.CachedAttention``)
instead of concatenating a growing cache; old and new code alternated twice in one session
(``--sizes paper --variants transformer --paper-iters 2``): sampled 5.40 / 5.39 -> 5.07 / 4.96
s/iter (G forward 1.44 -> 1.09 s), grid 7.24 / 7.81 -> 7.01 / 6.89 (x bound 1.75 and 1.69).
Peak resident memory of the row (``peak_rss_mib``, the process's high-water mark from the row's
start; compare rows run alone), old -> new code, one row per process, paper size: Transformer
sampled 3580 -> 1890 MiB, grid 4809 -> 3134 MiB: the concatenated caches kept every step's
copy of the history for backward, O(T^2) memory.
With ``--decompose`` right after: Transformer sampled 4.80 (1.67 = 1.12 * 1.48, 37.6x), grid
7.18 (1.70 = 1.27 * 1.34, 25.1x); the products (the attention's matrix-vector ones now
included) take 79 % and 77 % of the time.
The 1.3x target is met by no row. Repeats of the RNN sampled row later in the session, on
the same code: 13.4, 13.2, 12.9 s (x bound 1.47-1.50): the machine's state moves these figures
by ~7 %. What is left (``gemm_decomposition``): the products run at
their shapes' own rates (x shape 1.07-1.20: 120-960-row products are slower than 1024^3 ones)
and the rest of the time is the elementwise work of 44 autoregressive steps and their
backward (x other 1.17-1.59). For the Transformer the products alone, in situ, take 3.8 s of
the 3.84 s that 1.3x allows (sampled windows, 79 % of 4.80 s), so the target would need the
LayerNorms, activations, softmaxes, cache traffic and optimiser updates (1.0 s) to vanish,
and most products are 120-row steps of the autoregressive G that cannot be batched further.

The ``authors``/``speedup`` columns divide by *stored* times of the authors' code (147.3, 180.2,
5.44, 4.99 s: measured once, in another session, on a quieter machine; full window grid
only), not by a run beside this one: read them as orders of magnitude. At the small size they
overstate the gain about twice: side by side, alternating in one run
(``benchmarks/vs_reference.py``, issue 17's start), ours was 3.8x (RNN, sampled windows),
2.1x (RNN, grid), 8.0x and 6.7x (Transformer) faster, not the 6.8x / 4.0x / 9x / 6.3x that
the small-size figures above give against the stored times. Use ``benchmarks/vs_reference.py``
for speed-ups and ``benchmarks/old_new.py`` for old-against-new code.

``--phases PRESET`` (issue 17) replaces the rows by the exclusive CPU time of each phase of the
real Trainer's iteration (``phase_breakdown``), as is and with ``model.d_semantic=true``: data
batch, window plan, G rollout, D and G loss forward, D features, motion features, space
encode/decode, backward + clip + Adam of D and of G, EMA. The two rows run one after the other,
not alternated: on a shared machine their totals move by 10-20 % from run to run; compare
checkouts with ``benchmarks/old_new.py``. ``cpu`` preset, 1 thread, load ~4.2, 2026-12-02
(run 2 of benchmarks/results/cpu_preset_speed_2026-12-02.txt), CPU ms/iteration, main at
a858017 -> branch perf17b (issue 17): total 402 -> 297 (with d_semantic 474 -> 358); G
backward+Adam 127 -> 101, D backward+Adam 67 -> 50, D loss 58 -> 44, G rollout 48 -> 35, G loss
39 -> 30, D features 19 -> 11, motion features 15 -> 3; with d_semantic space encode 30 -> 12.
(Alternated, ``old_new.py`` measures 1.18-1.25x for the same change.) The backward passes, half
the iteration, are step-by-step recurrences of small products: G's 68-step rollout and the
window LSTMs. Later, branch perf18 (benchmarks/results/cpu_preset_speed_2026-12-02b.txt, load
3.4; the preset now has d_semantic and w_motion): total 130 ms (a858017 with d_semantic and
without the motion term: 185); G backward+Adam 40, D backward+Adam 22, D loss 21, G loss 12, G
rollout 11, D features 6, space encode 5. Branch perf19 (benchmarks/results/cpu_preset_speed_2026-12-02c.txt,
load 7.2 and 11.3, which inflates every row): total 150 / 145 ms; D features 4.0, space encode 4.4
(the features and the encoding's shape normalisation with their backward written out).
``build_iteration`` (the rows, and ``vs_reference.py``'s "ours") builds the optimisers and the
process as the Trainer does where the checkout has them (fused Adam, ``speed.prepare_device``).

Commands:
  python benchmarks/train_step.py --phases cpu --threads 1 --iters 8
  python benchmarks/train_step.py --json                       # all rows
  python benchmarks/train_step.py --quick --json               # small size only
  python benchmarks/train_step.py --sizes paper --paper-iters 1 --json
  python benchmarks/train_step.py --sizes paper --paper-iters 2 --decompose --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

# Threads that wait at an OpenMP barrier sleep instead of spinning: on a shared, loaded machine
# a spinning thread holds the core its partner needs and every parallel op waits for a time
# slice (measured here under load ~5: 24.6 s vs 0.45 s for one small Transformer iteration).
# Must be set before torch loads libgomp; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _flops  # noqa: E402

from suhmo import losses, objectives  # noqa: E402
from suhmo.config import make_config  # noqa: E402
from suhmo.models import WindowSampler, build_discriminator, build_generator, num_feature_frames  # noqa: E402

SIZES = {
    "paper": {"train.batch_size": 120},
    "small": {"train.batch_size": 32, "model.hidden_g": 256, "model.mlp_g": 256, "model.emb_g": 256,
              "model.hidden_d": 256, "model.emb_d": 64, "model.frame_d_hidden": 256},
}
MODES = {
    "sampled": {},
    "grid": {"windows.family": "fixed", "windows.scales": [5, 10, 20, 40], "windows.starts": "grid"},
}
AUTHORS_S = {("rnn", "paper"): 147.3, ("transformer", "paper"): 180.2, ("rnn", "small"): 5.44,
             ("transformer", "small"): 4.99}


def calibrate(n: int = 1024, seconds: float = 0.6) -> float:
    """Best fp32 GEMM rate (GFLOP/s) of an n x n x n matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


# mkldnn::_linear_pointwise: oneDNN's products inside the hand-written passes (suhmo.models.kernels.linear)
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")


def _gemm_dims(op: str, shapes: list) -> tuple[int, int, int, int]:
    """``(batch, M, K, N)`` of one profiled matrix product from its input shapes."""
    if op == "mkldnn::_linear_pointwise":  # (a [M, K], w [N, K], bias, ...)
        (m, k), n = shapes[0], shapes[1][0]
        return 1, m, k, n
    if op in ("aten::bmm", "aten::baddbmm"):
        a, b = shapes[-2:] if op == "aten::bmm" else shapes[1:3]
        return a[0], a[1], a[2], b[2]
    a, b = (shapes[0], shapes[1]) if op == "aten::mm" else (shapes[1], shapes[2])
    return 1, a[0], a[1], b[1]


def shape_rate(batch: int, m: int, k: int, n: int, seconds: float = 0.15) -> float:
    """Best GFLOP/s of a plain, contiguous fp32 product of these dimensions, by itself."""
    a = torch.randn(batch, m, k) if batch > 1 else torch.randn(m, k)
    b = torch.randn(batch, k, n) if batch > 1 else torch.randn(k, n)
    out = torch.empty(batch, m, n) if batch > 1 else torch.empty(m, n)
    mm = torch.bmm if batch > 1 else torch.mm
    mm(a, b, out=out)
    best, t_end, flop = 0.0, time.perf_counter() + seconds, 2 * batch * m * k * n
    while time.perf_counter() < t_end or best == 0.0:
        t = time.perf_counter()
        mm(a, b, out=out)
        best = max(best, flop / (time.perf_counter() - t) / 1e9)
    return best


def profile_products(step) -> tuple[list[tuple[tuple[int, int, int, int], int, float]], float]:
    """One profiled call of ``step``: ``([(dims (batch, M, K, N), FLOPs, in-situ us)] per distinct
    product shape and operator, total self-CPU us of the call)``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    products = []
    for ev in prof.key_averages(group_by_input_shape=True):
        if ev.key in GEMM_OPS:
            dims = _gemm_dims(ev.key, ev.input_shapes)
            products.append((dims, 2 * dims[0] * dims[1] * dims[2] * dims[3] * ev.count, ev.self_cpu_time_total))
    return products, prof.key_averages().self_cpu_time_total


def gemm_decomposition(step, seconds: float, counted_flops: int, calib: float) -> dict:
    """Split the gap to the GEMM-rate bound into its two parts, by one profiled call of ``step``.

    The profiler lists every matrix product of the iteration with its shapes and in-situ time;
    each distinct shape is then timed by itself. ``shape_bound_seconds`` is what the iteration
    would take if its products ran at their own shapes' best rates and nothing else took any
    time (the counted FLOPs that are not plain products, the fused attention's, at ``calib``).
    So ``bound_ratio`` = ``shape_ratio`` (products of 120-960 rows run below the 1024^3 rate)
    x ``seconds / shape_bound_seconds`` (everything else: elementwise work, copies, in-situ
    cache effects). Transposed operands are timed contiguous, an approximation.
    """
    products, total_us = profile_products(step)
    rates = {dims: shape_rate(*dims) for dims in {d for d, _, _ in products}}
    gemm_flop = sum(f for _, f, _ in products)
    gemm_us = sum(us for _, _, us in products)
    bound_s = sum(f / rates[d] / 1e9 for d, f, _ in products)
    bound_s += max(counted_flops - gemm_flop, 0) / calib / 1e9
    plain_bound_s = counted_flops / calib / 1e9
    return {"gemm_time_share": round(gemm_us / total_us, 3),
            "gemm_gflops_in_situ": round(gemm_flop / (gemm_us / 1e6) / 1e9, 1) if gemm_us else None,
            "gemm_shapes": len(rates),
            "shape_bound_seconds": round(bound_s, 4),
            "shape_ratio": round(bound_s / plain_bound_s, 3),
            "other_ratio": round(seconds / bound_s, 3)}


def reset_peak_rss() -> None:
    """Start a new resident-memory high-water mark (Linux: ``/proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float | None:
    """Resident-memory high-water mark of this process since ``reset_peak_rss`` (VmHWM), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def fake_batch(batch: int, frames: int, gen: torch.Generator) -> torch.Tensor:
    """Plausible normalised landmark sequences: a random face drifting by a smooth random walk."""
    face = 0.3 + 0.4 * torch.rand(batch, 1, 68, 2, generator=gen)
    vel = 0.003 * torch.randn(batch, frames, 1, 2, generator=gen)
    jitter = 0.001 * torch.randn(batch, frames, 68, 2, generator=gen)
    return face + vel.cumsum(1) + jitter


def build_iteration(cfg, seed: int = 0, amp: bool = False):
    """``(step, batch)`` for ``cfg``: ``step(it, plan=None) -> ((total, G forward, D step,
    G step) seconds, plan)`` runs one training iteration (a fresh window plan unless given); with
    ``amp`` its forward passes and losses under bf16 autocast, as the Trainer runs ``train.amp``."""
    torch.manual_seed(seed)
    G, D = build_generator(cfg), build_discriminator(cfg)
    cpu = torch.device("cpu")
    try:  # the Trainer's optimiser (fused Adam) and process set-up (freed memory kept for reuse)
        from suhmo.train import _adam
        from suhmo.speed import prepare_device

        prepare_device(cpu)
        opt_g, opt_d = _adam(G.parameters(), cfg.optim.lr_g, cfg.optim, cpu), _adam(D.parameters(), cfg.optim.lr_d,
                                                                                        cfg.optim, cpu)
    except ImportError:  # an older checkout (benchmarks/old_new.py, --phases): what its Trainer had
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=(cfg.optim.beta1, cfg.optim.beta2))
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=(cfg.optim.beta1, cfg.optim.beta2))
    B, O, S = cfg.train.batch_size, cfg.data.obs_len, cfg.data.seq_len
    gen = torch.Generator().manual_seed(seed)
    real = fake_batch(B, O + S, gen)
    sampler = WindowSampler(cfg.windows, S)

    if amp:
        from suhmo.speed import amp_supported, autocast

        if not amp_supported(cpu):
            raise ValueError("amp: this CPU has no native bf16 products (AVX512-BF16 or AMX)")

        def cast():
            return autocast(cpu, True)
    else:
        cast = contextlib.nullcontext

    def step(it: int, plan=None) -> tuple:
        plan = sampler.plan(num_feature_frames(O + S), gen) if plan is None else plan
        t0 = time.perf_counter()
        with cast():
            out = G(real[:, :O], S)  # the fakes of this iteration, reused by both steps
        fake = torch.cat([real[:, :O], out.future], 1)
        t1 = time.perf_counter()
        with cast():
            d_loss, _ = objectives.d_step_loss(D, real, fake, plan, cfg)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        t2 = time.perf_counter()
        with cast():
            g_loss, _ = objectives.g_step_loss(D, fake, real, out, plan, cfg, losses.lambda_at(cfg.loss, it))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        t3 = time.perf_counter()
        return (t3 - t0, t1 - t0, t2 - t1, t3 - t2), plan

    return step, B


def run_row(variant: str, size: str, mode: str, iters: int, warmup: int, decompose: bool = False) -> dict:
    cfg = make_config("paper", overrides={"model.variant": variant, **SIZES[size], **MODES[mode]})
    step, B = build_iteration(cfg)
    times, flops, plans = [], [], []
    reset_peak_rss()  # the row's peak: weights, optimiser states and one iteration's activations
    for it in range(warmup + iters):
        t, plan = step(it)
        if it >= warmup:
            times.append(t)
            flops.append(_flops.train_iteration(cfg, B, plan))
            plans.append(plan)
    peak = peak_rss_mib()
    calib = calibrate()
    best = min(range(len(times)), key=lambda i: times[i][0])  # the machine is shared: contention only adds time
    sec = times[best][0]
    gflop = statistics.mean(flops) / 1e9
    achieved = flops[best] / sec / 1e9
    ref = AUTHORS_S[(variant, size)]
    # the best iteration's plan again, profiled: where its gap to the bound comes from
    extra = gemm_decomposition(lambda: step(warmup + iters, plans[best]), sec, flops[best], calib) if decompose else {}
    return {
        "variant": variant, "preset": size, "windows": mode, "batch": B,
        "seconds_per_iter": round(sec, 4),
        "gflops_per_iter": round(gflop, 2),
        "achieved_gflops": round(achieved, 2),
        "calib_gflops": round(calib, 2),
        "bound_ratio": round(calib / achieved, 3),
        "seconds_g_forward": round(times[best][1], 4),
        "seconds_d_step": round(times[best][2], 4),
        "seconds_g_step": round(times[best][3], 4),
        "authors_seconds": ref,
        "speedup_vs_authors": round(ref / sec, 2),
        "timed_iters": iters,
        "threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "peak_rss_mib": peak,
        **extra,
    }


# ------------------------------------------------------------------ per-phase breakdown
# (name shown, object, attribute): what ``--phases`` wraps in a real Trainer. Times are process
# CPU seconds (the machine is shared) and *exclusive*: a nested phase's time (the features inside
# a D loss, the space's encode inside G's rollout) is not counted again in its caller, so the
# phases add up to the iteration. Backward passes run inside the two optimiser updates.
def _phase_targets(tr) -> list:
    from suhmo import losses as L
    from suhmo import objectives as O

    return [
        ("data batch", tr.sampler, "next"),
        ("window plan", tr.windows, "sample"),
        ("G rollout (fwd)", tr.G, "forward"),
        ("D loss (fwd)", O, "d_step_loss"),
        ("G loss (fwd)", O, "g_step_loss"),
        ("D features", L, "sequence_features"),
        ("motion features", L, "motion_features"),
        ("space encode", tr.G.space, "encode"),
        ("space decode", tr.G.space, "decode"),
        ("R1 penalty", L, "frame_gradient_penalty"),
        ("EMA", O, "ema_update"),
    ]


def phase_breakdown(preset: str, overrides: dict, iters: int, warmup: int = 2) -> dict:
    """Exclusive CPU seconds per phase of ``iters`` iterations of the real Trainer on ``preset``;
    the two ``objectives.optimiser_step`` calls (backward + clip + Adam) are split into D and G by
    their module."""
    import resource
    import tempfile

    from suhmo.train import Trainer

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    cfg = make_config(preset, overrides={"train.iterations": 10**9, "train.eval_every": 10**9,
                                         "train.progress": False, **overrides})
    todo = [0]

    def should_stop() -> bool:
        todo[0] -= 1
        return todo[0] <= 0

    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d, metrics_fn=lambda sample_fn, step: {}, should_stop=should_stop, resume=False)
        totals: dict[str, float] = {}
        stack: list[list[float]] = []  # per open phase: [start, time of its nested phases]

        def timed(name, fn):
            def wrapper(*args, **kwargs):
                stack.append([cpu(), 0.0])
                try:
                    return fn(*args, **kwargs)
                finally:
                    start, inner = stack.pop()
                    spent = cpu() - start
                    totals[name] = totals.get(name, 0.0) + spent - inner
                    if stack:
                        stack[-1][1] += spent
            return wrapper

        from suhmo import objectives as O

        update = O.optimiser_step
        targets = _phase_targets(tr) + [("_update", O, "optimiser_step")]
        patched = [(obj, attr, getattr(obj, attr)) for _, obj, attr in targets]
        for name, obj, attr in targets:
            fn = getattr(obj, attr)
            if name == "_update":  # D or G by the module it updates
                def fn(net, opt, loss, clip, _u=update):
                    return timed("D backward+Adam" if net is tr.D else "G backward+Adam", _u)(net, opt, loss, clip)
                setattr(obj, attr, fn)
            else:
                setattr(obj, attr, timed(name, fn))
        todo[0] = warmup
        tr.fit()
        totals.clear()
        todo[0] = iters + 1  # the iterations run before should_stop ends the loop
        c0 = cpu()
        tr.fit()
        total = cpu() - c0
        n = iters + 1
        for obj, attr, fn in patched:  # the module functions as they were
            setattr(obj, attr, fn)
    phases = {k: v / n for k, v in totals.items()}
    phases["other (loop, losses' rest)"] = total / n - sum(phases.values())
    return {"preset": preset, "overrides": overrides, "iters": n, "cpu_s_per_iter": total / n, "phases": phases}


def print_phases(rows: list) -> None:
    names = list(dict.fromkeys(k for r in rows for k in r["phases"]))
    labels = [",".join(f"{k}={v}" for k, v in r["overrides"].items()) or r["preset"] for r in rows]
    print(f"{'phase (CPU ms/iter, exclusive)':<32}" + "".join(f"{lab:>24}" for lab in labels))
    for k in sorted(names, key=lambda k: -rows[0]["phases"].get(k, 0.0)):
        print(f"{k:<32}" + "".join(f"{1e3 * r['phases'].get(k, 0.0):>17.1f} ({100 * r['phases'].get(k, 0.0) / r['cpu_s_per_iter']:>3.0f}%)"
                                    for r in rows))
    print(f"{'total':<32}" + "".join(f"{1e3 * r['cpu_s_per_iter']:>17.1f}       " for r in rows))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quick", action="store_true", help="small size only")
    p.add_argument("--sizes", default="paper,small", help="comma list of paper, small")
    p.add_argument("--variants", default="rnn,transformer")
    p.add_argument("--modes", default="sampled,grid")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per small-size row")
    p.add_argument("--paper-iters", type=int, default=1, help="timed iterations per paper-size row")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--decompose", action="store_true",
                   help="profile one more iteration per row and time each matrix-product shape by itself: "
                        "x bound = (x shape) * (x other), see gemm_decomposition")
    p.add_argument("--phases", default=None, metavar="PRESET",
                   help="instead of the rows: CPU time per phase of the real Trainer on PRESET (e.g. cpu), "
                        "as is and with model.d_semantic=true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.phases:
        rows = [phase_breakdown(a.phases, over, a.iters) for over in ({}, {"model.d_semantic": True})]
        print(f"{a.phases} preset, {a.threads} thread(s), {rows[0]['iters']} iterations per row (rows not "
              f"alternated), load {os.getloadavg()[0]:.2f}")
        print_phases(rows)
        if a.json:
            print(json.dumps({"phases": rows}))
        return 0
    sizes = ["small"] if a.quick else [s for s in a.sizes.split(",") if s]
    for s in sizes:
        if s not in SIZES:
            p.error(f"--sizes: unknown size {s!r}; choose from {', '.join(SIZES)}")
    rows = []
    header = (f"{'variant':<12}{'size':<7}{'windows':<9}{'batch':>6}{'s/iter':>9}{'G fwd':>8}{'D step':>8}"
              f"{'G step':>8}{'GFLOP':>9}{'GFLOP/s':>9}{'calib':>8}{'x bound':>8}{'authors':>9}{'speedup':>8}"
              f"{'peak MiB':>9}")
    print(header, flush=True)
    for size in sizes:
        for variant in a.variants.split(","):
            for mode in a.modes.split(","):
                iters = a.paper_iters if size == "paper" else a.iters
                r = run_row(variant, size, mode, iters, warmup=1, decompose=a.decompose)
                rows.append(r)
                print(f"{variant:<12}{size:<7}{mode:<9}{r['batch']:>6}{r['seconds_per_iter']:>9.2f}"
                      f"{r['seconds_g_forward']:>8.2f}{r['seconds_d_step']:>8.2f}{r['seconds_g_step']:>8.2f}"
                      f"{r['gflops_per_iter']:>9.1f}{r['achieved_gflops']:>9.1f}{r['calib_gflops']:>8.1f}"
                      f"{r['bound_ratio']:>8.2f}{r['authors_seconds']:>9.1f}{r['speedup_vs_authors']:>8.1f}"
                      f"{r['peak_rss_mib'] or float('nan'):>9.0f}", flush=True)
    if a.decompose:
        print(f"\n{'variant':<12}{'size':<7}{'windows':<9}{'x bound':>8}{'= x shape':>10}{'* x other':>10}"
              f"{'GEMM share':>11}{'GEMM GFLOP/s':>13}{'shapes':>7}")
        for r in rows:
            print(f"{r['variant']:<12}{r['preset']:<7}{r['windows']:<9}{r['bound_ratio']:>8.2f}"
                  f"{r['shape_ratio']:>10.2f}{r['other_ratio']:>10.2f}{r['gemm_time_share']:>11.2f}"
                  f"{r['gemm_gflops_in_situ']:>13.1f}{r['gemm_shapes']:>7}")
    if a.json:
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
