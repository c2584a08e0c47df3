"""``suhmo evaluate``: score a trained generator with the metric registry."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("evaluate")
@click.option("--checkpoint", type=click.Path(), required=True,
              help="Checkpoint (last.pt / best.pt), training folder, or exported model folder.")
@click.option("--data", "data_path", type=click.Path(), default=None,
              help="Real landmark .npz or packed folder to compare with (default: the model's data.path, or its synthetic set).")
@click.option("--split", type=click.Choice(["eval", "all"]), default="eval", show_default=True,
              help="eval: the held-out persons the trainer evaluates on; all: every clip of the data.")
@click.option("--metrics", "names", default="landmark", show_default=True,
              help="Comma-separated protocols or aliases (`suhmo metrics list`), e.g. landmark,paper.")
@click.option("--frames", type=click.Choice(["40", "80"]), default="40", show_default=True,
              help="Generated frames per sequence; the last 40 are scored (paper Table 1).")
@click.option("--horizon", type=click.IntRange(min=41, max=6000), default=200, show_default=True,
              help="Generated frames of the fidelity protocol (--metrics landmark,fidelity): pose memory "
                   "up to 200 frames, frozen/broken windows and 8-s block speeds over all of them.")
@click.option("--samples", type=click.IntRange(min=2), default=256, show_default=True,
              help="Generated sequences per run.")
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Repeated runs (seeds SEED, SEED+1, ...); mean and std are reported.")
@click.option("--seed", type=int, default=None, help="Evaluation seed (default: the model's eval.seed).")
@click.option("--stride", type=click.IntRange(min=1), default=5, show_default=True,
              help="Frames between the starts of consecutive real windows.")
@click.option("--motion-mode", type=click.Choice(["ema", "ramp"]), default="ema", show_default=True,
              help="t-FID motion maps: ema (paper) or ramp 0.2->0.8 (authors' code).")
@click.option("--lines", is_flag=True, help="Rasterise contour lines instead of one pixel per landmark.")
@click.option("--detectors", "detector_dir", type=click.Path(file_okay=False), default=None,
              help="Folder with inception-2015-12-05.pt / i3d_torchscript.pt (default: $SUHMO_DETECTORS).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="JSON-lines file to append to (default: eval.jsonl next to the checkpoint).")
def evaluate(checkpoint, data_path, split, names, frames, horizon, samples, runs, seed, stride, motion_mode, lines,
             detector_dir, device, out_path) -> None:
    """Generate sequences from CHECKPOINT and score them; print a table, append JSON lines."""
    from suhmo import generate as gen
    from suhmo.data import load_dataset
    from suhmo.metrics import append_jsonl, compute_report, expand_names, options_from_config
    from suhmo.data import SPLIT_SEED
    from suhmo.utils import pick_device

    names = expand_names(names)  # fail on a typo before loading anything
    dev = pick_device(device)
    G, cfg = gen.load_model(checkpoint, dev)
    # each run generates SAMPLES sequences; the metrics hold their motion features beside them
    gen.check_generation_size(cfg, 4 * samples, int(frames), f"--samples {samples} x --frames {frames}")
    if data_path is not None:
        cfg.data.path = str(data_path)
    ls = load_dataset(cfg)
    if split == "eval":
        ls = ls.split_by_person(cfg.data.test_fraction, seed=SPLIT_SEED)[1]
    opts = options_from_config(
        cfg, ls, sample_fn=gen.make_sample_fn(G, cfg, dev), frames=int(frames), num_samples=samples,
        runs=runs, seed=cfg.eval.seed if seed is None else seed, stride=stride, motion_mode=motion_mode,
        lines=lines, detector_dir=Path(detector_dir) if detector_dir else None, device=str(dev),
        horizon=int(horizon))
    rep = compute_report(names, opts)
    res = rep["results"]
    click.echo(f"{checkpoint}: {rep['protocol']} on {ls.name} ({split} split, {len(ls.clips)} clips), "
               f"{rep['seconds']:.1f} s")
    click.echo(f"{'metric':20s}{'mean':>14s}{'std':>12s}")
    for k, v in res.items():
        if k.endswith("_std"):
            continue
        std = res.get(f"{k}_std")
        click.echo(f"{k:20s}{v:14.4f}" + (f"{std:12.4f}" if std is not None else f"{'-':>12s}"))
    scale = _scale(cfg, opts, split, res)
    ck = Path(checkpoint)
    target = Path(out_path) if out_path else (ck if ck.is_dir() else ck.parent) / "eval.jsonl"
    append_jsonl(target, {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "checkpoint": str(ck.resolve()),
                          "data": ls.name, "split": split, **rep, "scale": scale})
    click.echo(f"appended to {target}")


# the fidelity keys shown beside the frozen-face and real-data rows
FIDELITY_TABLE = ("pose_mem_err", "speed_p10", "speed_p50", "speed_p90", "id_drift", "frozen_frac",
                  "broken_frac")


def _scale_protocols(res: dict) -> list[str]:
    return ["fidelity"] if "pose_mem_err" in res else []


def _scale(cfg, opts, split: str, res: dict) -> dict:
    """Print the distances beside a frozen face and real data under the same protocol
    (suhmo.metrics.scale; cached like the reference statistics) and return those rows."""
    from suhmo.data import load_dataset
    from suhmo.metrics import landmark as lm
    from suhmo.metrics.scale import format_scale, scale_rows, verdict
    from suhmo.data import SPLIT_SEED

    if not any(k in res for k in lm.FD_KEYS):
        return {}
    train_set, held_out = load_dataset(cfg).split_by_person(cfg.data.test_fraction, seed=SPLIT_SEED)
    other = train_set if split == "eval" else held_out
    scale = scale_rows(opts, other.clips, float(other.fps), names=_scale_protocols(res))
    click.echo("")
    click.echo(f"scale (same protocol; real data = {len(other.clips)} clips of the "
               f"{'training' if split == 'eval' else 'held-out'} persons):")
    for line in format_scale(res, scale):
        click.echo(line)
    if "pose_mem_err" in res:
        click.echo("")
        for line in format_scale(res, scale, keys=FIDELITY_TABLE):
            click.echo(line)
    worse = verdict(res, scale)
    if worse:
        click.echo(f"no better than a frozen face on: {', '.join(worse)}")
    return scale
