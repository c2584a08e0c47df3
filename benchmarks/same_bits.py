"""Bit for bit: the outputs and gradients of an older checkout against this one, under one seed.

Each side is a worker process that imports ``suhmo`` from its checkout and, for every case
(a generator variant and the model options that change its arithmetic), writes to one file:

- the generator's training pass (``G(obs, n)``: future and reconstruction) and the gradient of
  every weight from a fixed weighting of both, and the same with ``obs`` requiring a gradient
  (the training pass that autograd records step by step), with the gradient of ``obs``;
- ``G.generate`` and the exported module (``G.export_module()``, scripted) on the same inputs;
- the D loss and the G loss of one batch and the gradient of every weight of D and G from them;
- the weights of G, D and the moving average G_ema after a few iterations of the real ``Trainer``;
- the numpy face geometry: centring and scale, Procrustes alignment, the generalised Procrustes
  mean, and the landmark metric stack's basis and states fitted on the embedded synthetic data.

The driver compares the two files entry by entry with ``torch.equal`` (NaNs equal where both
are NaN) and prints the entries that differ; exit status 1 if any does. A renovation that moves
code without changing its arithmetic leaves every entry equal.

Commands:
  git archive <old-commit> | tar -x -C /tmp/old       # the old checkout (any path)
  python benchmarks/same_bits.py /tmp/old
  python benchmarks/same_bits.py /tmp/old --cases rnn,transformer --iters 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
CPU = {"model.space": "semantic", "model.semantic_k": 4, "model.revert": True, "model.noise_g": 4,
       "windows.family": "texp", "windows.texp_mean": 6.0, "data.seq_len": 12,
       "windows.tau_max": 12, "model.d_semantic": True, "model.d_anchor": True, "loss.w_motion": 0.5}
CASES = {  # name: overrides of the tiny preset
    "rnn": {"model.variant": "rnn"},
    "rnn_cpu": {"model.variant": "rnn", **CPU, "model.noise_rho": 0.5},
    "rnn_delta": {"model.variant": "rnn", "model.delta": True},
    "rnn_centred": {"model.variant": "rnn", "model.g_centred": True, "model.revert": True},
    "rnn_unpaired": {"model.variant": "rnn", "model.pair_g": False, "model.noise_g": 3},
    "rnn_paper_d": {"model.variant": "rnn", "model.d_centred": False},
    "transformer": {"model.variant": "transformer"},
    "transformer_cpu": {"model.variant": "transformer", **CPU},
    "transformer_delta": {"model.variant": "transformer", "model.delta": True},
    "transformer_window": {"model.variant": "transformer", "model.attn_window_g": 3, "model.g_centred": True},
    "hitdvae": {"model.variant": "hitdvae"},
    "actor": {"model.variant": "actor"},
}


def _grads(module, loss) -> dict:
    params = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
    grads = __import__("torch").autograd.grad(loss, [p for _, p in params], allow_unused=True, retain_graph=True)
    return {k: g for (k, _), g in zip(params, grads) if g is not None}


def _generator_case(cfg, out: dict, batch) -> None:
    """The generator by itself: training pass, its gradients, generation, the exported module."""
    import torch

    from suhmo.models import build_generator

    torch.manual_seed(1)
    G = build_generator(cfg)
    space = getattr(G, "space", None)
    if space is not None and hasattr(space, "fit"):
        space.fit(batch.reshape(-1, 68, 2).numpy(), batch.numpy(), cfg.model.vel_scale)
    O, n = cfg.data.obs_len, cfg.data.seq_len
    obs, v0 = batch[:, :O], 0.01 * torch.randn(batch.shape[0], 68, 2)
    for grad_obs in (False, True):
        x = obs.clone().requires_grad_(grad_obs)
        torch.manual_seed(2)
        o = G(x, n, v0)
        w1, w2 = torch.randn_like(o.future), torch.randn_like(o.recon)
        loss = (o.future * w1).sum() + (o.recon * w2).sum()
        tag = f"G.train{'_obs' if grad_obs else ''}"
        out[f"{tag}.future"], out[f"{tag}.recon"] = o.future.detach(), o.recon.detach()
        out.update({f"{tag}.grad.{k}": g for k, g in _grads(G, loss).items()})
        if grad_obs:
            out[f"{tag}.grad_obs"] = torch.autograd.grad(loss, x)[0]
    torch.manual_seed(3)
    out["G.generate"] = G.generate(obs, 2 * n, v0).future
    if hasattr(G, "export_module"):
        torch.manual_seed(3)
        out["G.export"] = torch.jit.script(G.export_module())(obs, v0, 2 * n)


def _loss_case(cfg, out: dict, batch) -> None:
    """One D loss and one G loss on a batch, and every weight's gradient from each."""
    import torch

    from suhmo import losses
    from suhmo.models import WindowSampler, build_discriminator, build_generator

    torch.manual_seed(4)
    G, D = build_generator(cfg), build_discriminator(cfg)
    space = getattr(G, "space", None)
    if space is not None and hasattr(space, "fit"):
        space.fit(batch.reshape(-1, 68, 2).numpy(), batch.numpy(), cfg.model.vel_scale)
    O = cfg.data.obs_len
    o = G(batch[:, :O], batch.shape[1] - O)
    fake = torch.cat([batch[:, :O], o.future], 1)
    plan = WindowSampler(cfg.windows, fake.shape[1] - 2).sample(fake.shape[1] - 2, torch.Generator().manual_seed(5))
    try:  # the D and the G step's losses: the objective's since D scores and the losses take scores
        from suhmo.objectives import d_step_loss, g_step_loss
    except ImportError:
        d_step_loss, g_step_loss = losses.discriminator_loss, losses.generator_loss
    ld, _ = d_step_loss(D, batch, fake, plan, cfg, space)
    lg, _ = g_step_loss(D, fake, batch, o, plan, cfg, 0.5, space)
    out["loss.d"], out["loss.g"] = ld.detach(), lg.detach()
    out.update({f"loss.d.grad.{k}": g for k, g in _grads(D, ld).items()})
    out.update({f"loss.g.grad.{k}": g for k, g in _grads(G, lg).items()})


def _trainer_case(cfg, out: dict) -> None:
    import tempfile

    from suhmo.train import Trainer

    with tempfile.TemporaryDirectory() as d:
        tr = Trainer(cfg, d, metrics_fn=lambda sample_fn, step: {}, resume=False)
        tr.fit()
        for net in ("G", "D", "G_ema"):
            m = getattr(tr, net, None)
            if m is not None:
                out.update({f"train.{net}.{k}": v for k, v in m.state_dict().items()})


def _geometry_case(out: dict) -> None:
    import numpy as np
    import torch

    from suhmo.data import load_dataset
    from suhmo.config import make_config
    from suhmo.metrics import landmark

    ls = load_dataset(make_config("tiny"))
    frames = np.concatenate([c[::7] for c in ls.clips])
    c, s, xn = landmark.centre_scale(frames.astype(np.float64))
    m = landmark.mean_shape_gpa(frames)
    aligned, roll = landmark.align_shapes(xn, m)
    windows = landmark.real_windows(ls.clips[:6])
    ref = landmark.LandmarkReference.fit(windows)
    arrays = {"c": c, "s": s, "xn": xn, "gpa": m, "aligned": aligned, "roll": roll,
              "state": ref.basis.state(windows[:4].astype(np.float64)), **ref.to_arrays()}
    out.update({f"geometry.{k}": torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})


def worker(checkout: str, cases: list[str], iters: int, path: str) -> None:
    sys.path.insert(0, checkout)
    import torch

    import suhmo
    from suhmo.config import make_config
    from suhmo.data import BatchSampler, load_dataset

    assert Path(suhmo.__file__).resolve().is_relative_to(Path(checkout).resolve()), suhmo.__file__
    torch.set_num_threads(1)
    out: dict = {}
    _geometry_case(out)
    for name in cases:
        cfg = make_config("tiny", overrides={**CASES[name], "train.iterations": iters, "train.eval_every": 10**6,
                                             "train.progress": False})
        batch = torch.as_tensor(BatchSampler(load_dataset(cfg), cfg, seed=0).next())
        case: dict = {}
        _generator_case(cfg, case, batch)
        if name.startswith(("rnn", "transformer")):
            _loss_case(cfg, case, batch)
        _trainer_case(cfg, case)
        out.update({f"{name}/{k}": v.detach().clone() for k, v in case.items()})
    torch.save(out, path)


def _same(a, b) -> bool:
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        return torch.equal(torch.nan_to_num(a, nan=0.0), torch.nan_to_num(b, nan=0.0)) and torch.equal(a.isnan(), b.isnan())
    return torch.equal(a, b)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old", help="path to the older checkout (its suhmo/ is imported)")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--iters", type=int, default=3, help="Trainer iterations per case")
    p.add_argument("--worker", nargs=2, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    cases = a.cases.split(",")
    if a.worker:
        worker(a.worker[0], cases, a.iters, a.worker[1])
        return 0
    import torch

    with tempfile.TemporaryDirectory() as d:
        files = {}
        for side, checkout in (("old", Path(a.old).resolve()), ("new", HERE)):
            files[side] = f"{d}/{side}.pt"
            subprocess.run([sys.executable, __file__, str(a.old), "--cases", a.cases, "--iters", str(a.iters),
                            "--worker", str(checkout), files[side]], check=True, cwd=checkout,
                           env={**os.environ, "PYTHONPATH": str(checkout)})
        old, new = torch.load(files["old"]), torch.load(files["new"])
    differ = sorted(k for k in old.keys() & new.keys() if not _same(old[k], new[k]))
    missing = sorted(old.keys() ^ new.keys())
    for k in differ:
        print(f"differs: {k} (max |old - new| {float((old[k].double() - new[k].double()).abs().max()):.3g})")
    for k in missing:
        print(f"only in {'old' if k in old else 'new'}: {k}")
    print(f"{len(old.keys() & new.keys()) - len(differ)} of {len(old.keys() | new.keys())} entries bit for bit equal "
          f"({len(cases)} cases: {a.cases})")
    return 1 if differ or missing else 0


if __name__ == "__main__":
    sys.exit(main())
