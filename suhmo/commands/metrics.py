"""``suhmo metrics``: the metric registry, reference statistics and the degradation check."""

from __future__ import annotations

import json
from pathlib import Path

import click

from suhmo.config import PRESETS

_DATA_HELP = "Canonical landmark .npz (pixels or normalised), or a packed dataset folder (suhmo data pack)."


def _config(preset: str, config_path, overrides, data_path: str):
    from suhmo.config import make_config

    cfg = make_config(preset, yaml_path=config_path, overrides=list(overrides))
    cfg.data.path = str(data_path)
    return cfg


def _options(f):
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Config override (data.normalize, data.bbox_scale, ...); repeatable.")(f)
    f = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                     help="YAML config whose data.* settings shape the real data.")(f)
    f = click.option("--preset", type=click.Choice(list(PRESETS)), default="paper",
                     show_default=True, help="Config preset.")(f)
    return f


@click.group("metrics")
def metrics() -> None:
    """Metric protocols: list them, build reference statistics, check them on real data."""


@metrics.command("list")
def list_cmd() -> None:
    """Show the registry of metric protocols and the keys each one returns."""
    from suhmo.metrics import ALIASES, REGISTRY

    for m in REGISTRY.values():
        det = f" [needs {m.detector} detector file]" if m.detector else " [no weights]"
        click.echo(f"{m.name:10s} {m.description}{det}")
        click.echo(f"{'':10s} keys: {', '.join(m.keys)}")
    for a, names in ALIASES.items():
        click.echo(f"{a:10s} alias of {', '.join(names)}")


@metrics.command("ref")
@click.option("--data", "data_path", type=click.Path(), required=True, help=_DATA_HELP)
@click.option("--split", type=click.Choice(["eval", "all"]), default="eval", show_default=True,
              help="eval: the held-out persons the trainer evaluates on (data.test_fraction); all: every clip.")
@click.option("--metrics", "names", default="landmark", show_default=True,
              help="Comma-separated protocols whose real statistics to build (see `suhmo metrics list`).")
@click.option("--stride", type=click.IntRange(min=1), default=5, show_default=True,
              help="Frames between the starts of consecutive real windows.")
@click.option("--detectors", "detector_dir", type=click.Path(file_okay=False), default=None,
              help="Folder with the detector files (default: $SUHMO_DETECTORS or $SUHMO_HOME/detectors).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@_options
def ref_cmd(data_path, split, names, stride, detector_dir, device, preset, config_path, overrides) -> None:
    """Build (or find) the cached real-data statistics of DATA for the given protocols."""
    import numpy as np

    from suhmo.data import load_dataset
    from suhmo.metrics import MetricOptions, REGISTRY, MetricContext, expand_names, preprocessing_of
    from suhmo.metrics import landmark as lm
    from suhmo.data import SPLIT_SEED
    from suhmo.utils import pick_device

    cfg = _config(preset, config_path, overrides, data_path)
    ls = load_dataset(cfg)
    if split == "eval":
        ls = ls.split_by_person(cfg.data.test_fraction, seed=SPLIT_SEED)[1]
    opts = MetricOptions(real=ls.clips, real_fps=float(ls.fps), preprocessing=preprocessing_of(cfg),
                         stride=stride, detector_dir=Path(detector_dir) if detector_dir else None,
                         device=str(pick_device(device)))
    ctx = MetricContext(opts)
    windows = ctx.real_windows()
    for name in expand_names(names):
        if name == "landmark":
            from suhmo.metrics.reference import cache_path

            ref = ctx.landmark()
            path = cache_path(ctx.key(lm.VERSION, {"stack": "landmark"}), opts.cache_dir, "landmark")
            click.echo(f"landmark: {ref.num_windows} windows, real speed {ref.speed:.5f}/frame -> {path}")
        else:
            from suhmo.metrics import fid_features, fvd_features, scored_part, tfid_features

            m = REGISTRY[name]
            feat = {"fid": fid_features, "tfid40": tfid_features}.get(
                name, lambda c, s, L=int(name[3:] or 40): fvd_features(c, s, L))
            mu, _ = ctx.detector_stats(name, m.detector, lambda w: feat(ctx, scored_part(w, lm.SCORED_FRAMES)))
            click.echo(f"{name}: {len(windows)} windows, {np.asarray(mu).size}-d features cached")
    click.echo(f"{split} split of {data_path}: {len(ls.clips)} clips, {len(windows)} windows of "
               f"{lm.SCORED_FRAMES + 1} frames (stride {stride})")


@metrics.command("sanity")
@click.option("--data", "data_path", type=click.Path(), required=True, help=_DATA_HELP)
@click.option("--stride", type=click.IntRange(min=1), default=5, show_default=True,
              help="Frames between the starts of consecutive windows.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the degradations.")
@click.option("--json", "as_json", is_flag=True, help="Last line: {\"metrics\": {NAME: {condition: d}}}.")
@_options
def sanity_cmd(data_path, stride, seed, as_json, preset, config_path, overrides) -> None:
    """Split DATA by person; score the held-out half and degraded copies of it against the
    reference half. Every distance must rank the real held-out half closest."""
    from suhmo.data import load_dataset
    from suhmo.metrics import sanity as sn

    cfg = _config(preset, config_path, overrides, data_path)
    ls = load_dataset(cfg)
    strata = None
    for key in ("origin", "kind"):
        if key in ls.meta:
            strata = [str(x) for x in ls.meta[key]]
            break
    res = sn.run_sanity(ls.clips, ls.persons(), strata=strata, stride=stride, seed=seed)
    s = res["split"]
    click.echo(f"{data_path}: reference {s['reference']['persons']} persons / {s['reference']['windows']} "
               f"windows, held-out {s['held_out']['persons']} persons / {s['held_out']['windows']} windows "
               f"(speed {s['reference']['speed']:.5f} vs {s['held_out']['speed']:.5f} per frame)")
    head = f"{'distance':18s}" + "".join(f"{c:>10s}" for c in sn.CONDITIONS) + "  real closest"
    click.echo(head)
    for name, row in res["metrics"].items():
        ok = all(row["real"] < row[c] for c in sn.DEGRADATIONS)
        click.echo(f"{name:18s}" + "".join(f"{row[c]:10.3f}" for c in sn.CONDITIONS) + ("  yes" if ok else "  NO"))
    click.echo("diagnostics (single-number summaries, not required to separate every degradation):")
    for name, row in res["diagnostics"].items():
        click.echo(f"{name:18s}" + "".join(f"{row[c]:10.3f}" for c in sn.CONDITIONS))
    bad = sn.failures(res)
    click.echo("every distance ranks real closest" if not bad else f"NOT closest: {'; '.join(bad)}")
    if as_json:
        click.echo(json.dumps({"metrics": res["metrics"], "diagnostics": res["diagnostics"],
                               "split": res["split"], "ok": not bad}, sort_keys=True))
