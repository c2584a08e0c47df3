"""``suhmo train``: train a SUHMo model on one machine."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import click

from suhmo.config import PRESETS


@click.command("train")
@click.option("--variant", type=click.Choice(["rnn", "transformer", "actor", "hitdvae"]), default=None,
              help="Generator variant (model.variant): the SUHMo GANs rnn, transformer or the VAE baselines actor, hitdvae; default: the preset's (rnn).")
@click.option("--data", "data_path", type=click.Path(), default=None,
              help="Canonical landmark .npz or packed dataset folder (data.path); default: the embedded synthetic data.")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Training iterations (train.iterations); default: the preset's.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Output folder; default: $SUHMO_HOME/train/<timestamp>. A folder holding last.pt resumes.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="paper", show_default=True,
              help="Base configuration: paper sizes, a CPU-sized model, or a smoke-test model.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file of config values, applied over the preset.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value, e.g. --set optim.lr_g=1e-4 (repeatable).")
@click.option("--seed", type=int, default=None, help="Random seed (train.seed); default: the config's.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Device (train.device); default: the config's (auto = cuda when available).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Continue from OUT/last.pt when it exists.")
def train(variant, data_path, iterations, out_dir, preset, config_path, overrides, seed, device, resume):
    """Train SUHMo; writes config.yaml, last.pt, best.pt and metrics.jsonl into OUT.

    Ctrl-C stops cleanly after writing a checkpoint; run the same command again to resume.
    """
    from suhmo import paths
    from suhmo.config import make_config
    from suhmo.train import Trainer
    from suhmo.data.loading import check_data_path
    from suhmo.utils import SuhmoError, check_output_path

    flags = {"model.variant": variant, "data.path": data_path, "train.iterations": iterations,
             "train.seed": seed, "train.device": device}
    cfg = make_config(preset, yaml_path=config_path, overrides=list(overrides), validate=False)
    for key, value in flags.items():
        if value is not None:
            cfg.set(key, value, where=f"--{key.split('.')[1]}")
    if data_path is not None:
        check_data_path(data_path, "landmark .npz or packed folder (--data)")
    out = Path(out_dir) if out_dir else paths.home() / "train" / time.strftime("%Y%m%d-%H%M%S")
    check_output_path(out, "--out", folder=True)
    if not resume and (out / "last.pt").exists():
        raise SuhmoError(f"--out {out}: holds last.pt; use --resume or another folder")
    if resume and (out / "last.pt").exists():
        _resume_on_saved_data(cfg, out / "last.pt", explicit=_explicit_data_keys(data_path, config_path, overrides))
    cfg.validate()

    stop = {"flag": False}

    def on_sigint(signum, frame):  # first Ctrl-C: stop after a checkpoint; second: abort
        if stop["flag"]:
            raise KeyboardInterrupt
        stop["flag"] = True
        click.echo("\nstopping after the current iteration (Ctrl-C again to abort)", err=True)

    trainer = Trainer(cfg, out, should_stop=lambda: stop["flag"], resume=resume)
    start = trainer.step
    click.echo(f"training {cfg.model.variant} on {trainer.train_set.name}: {len(trainer.train_set)} train / "
               f"{len(trainer.eval_set)} eval clips, device {trainer.device}, into {out}")
    if start:
        click.echo(f"resuming from {out / 'last.pt'} at iteration {start}")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        metrics = trainer.fit()
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    status = "stopped" if trainer.step < cfg.train.iterations else "done"
    click.echo(f"{status} at iteration {trainer.step}/{cfg.train.iterations}")
    if metrics:
        click.echo("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    click.echo(f"checkpoint: {out / 'last.pt'}")
    if (out / "best.pt").is_file():
        click.echo(f"best ({cfg.train.select_metric}): {out / 'best.pt'}")


def _explicit_data_keys(data_path, config_path, overrides) -> set[str]:
    """``data.*`` fields this command line sets: --data, --set data.X=..., a --config data: section."""
    keys = {"path"} if data_path is not None else set()
    for o in overrides:
        k = o.split("=", 1)[0].strip()
        if k.startswith("data."):
            keys.add(k[len("data."):])
    if config_path:
        from suhmo.config import load_yaml

        doc = load_yaml(config_path) or {}
        if isinstance(doc, dict):
            for k, v in doc.items():
                if k == "data" and isinstance(v, dict):
                    keys.update(v)
                elif isinstance(k, str) and k.startswith("data."):
                    keys.add(k[len("data."):])
    return keys


def _resume_on_saved_data(cfg, last: Path, explicit: set[str]) -> None:
    """A resumed run keeps the data it started with: the data fields this command line does not
    set are taken from the checkpoint (without --data a run on FILE.npz must not fall back to the
    synthetic set); a field it sets to another value is refused by the Trainer."""
    from suhmo.checkpoint import load_checkpoint
    from suhmo.train import DATA_IDENTITY

    saved = load_checkpoint(last).get("config", {})
    saved_data = saved.get("data", {}) if isinstance(saved, dict) else {}
    adopted = []
    for k in DATA_IDENTITY:
        if k in saved_data and k not in explicit and getattr(cfg.data, k) != saved_data[k]:
            cfg.set(f"data.{k}", saved_data[k], where=f"{last} (data.{k})")
            adopted.append(k)
    if adopted and "path" in adopted and saved_data.get("path"):
        click.echo(f"resuming on the run's data {saved_data['path']}")

