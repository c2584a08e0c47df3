"""Click commands of the tracking layer.

``best_export`` plugs into ``suhmo`` as ``suhmo best-export`` (entry point in pyproject.toml);
``ui`` is added to ``suhmo-search`` by launch/ (``suhmo-search ui``).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import click


@click.command("best-export")
@click.option("--experiment", type=str, default=None,
              help="MLflow experiment; default: the experiment of the latest search in the store.")
@click.option("--tracking-uri", type=str, default=None,
              help="MLflow tracking URI; default: sqlite:///<SUHMO_HOME or ./suhmo-runs>/mlflow.db.")
@click.option("--search-run", type=str, default=None,
              help="Parent run id of the search to pick from; default: the latest search.")
@click.option("--metric", type=str, default=None,
              help="Select on this metric at each checkpoint; default: the search's first objective.")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None,
              help="Direction of --metric; default: the objective's mode (min for other metrics, max for apd).")
@click.option("--pareto", is_flag=True, default=False,
              help="Only consider checkpoints on the Pareto front of the search's objectives.")
@click.option("--mean-over-seeds", is_flag=True, default=False,
              help="Rank configurations by their mean over seeds, then take the best checkpoint of the best one.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Export folder; default: <SUHMO_HOME>/exports/<experiment>-<trial>-step<k>.")
@click.option("--register", type=str, default=None,
              help="Also create a version of this registered model in the MLflow Model Registry.")
@click.option("--alias", type=str, default="champion", show_default=True,
              help="Alias set on the new registry version (with --register).")
@click.option("--frames", type=click.IntRange(1, 2000), default=50, show_default=True,
              help="Frames of the sample rendered for the model card.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the rendered sample.")
def best_export(experiment, tracking_uri, search_run, metric, mode, pareto, mean_over_seeds, out_dir,
                register, alias, frames, seed) -> None:
    """Export the best checkpoint of a search as a self-contained model folder.

    The best checkpoint is chosen by the metric AT the checkpoint (best_<metric>, not the
    last value) over all trials of the latest search. The folder holds generator.pt,
    config.yaml, generator.ts (TorchScript), metrics.json, provenance.json, a model card
    README.md and a rendered sample; `suhmo generate --model DIR` works from it alone. The
    winner is also logged as an MLflow pyfunc model linked to its trial run (loadable and
    servable with torch and numpy only); --register makes it a Model Registry version.
    """
    from suhmo import hints
    from suhmo.paths import home
    from tracking.export import export_best, select_best

    t0 = time.perf_counter()
    sel = select_best(tracking_uri, experiment, metric=metric, mode=mode, pareto=pareto,
                      mean_over_seeds=mean_over_seeds, search_run_id=search_run)
    t_sel = time.perf_counter() - t0
    click.echo(f"best: {sel.describe()}")
    if out_dir is None:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in
                       f"{sel.experiment_name}-{sel.best.run_name}-step{sel.best.step}")
        out_dir = home() / "exports" / safe
    prov = export_best(sel, out_dir, register=register, alias=alias if register else None,
                       sample_frames=frames, seed=seed)
    click.echo(f"exported to {Path(out_dir).resolve()} (selection {t_sel:.1f} s, export {prov['export_s']:.1f} s)")
    written = sorted(p.name for p in Path(out_dir).iterdir() if p.is_file())
    click.echo("  " + "  ".join(written))
    scale = prov.get("scale")
    if scale and sel.metric in scale.get("frozen face", {}):
        v, frozen, real = sel.best.value, scale["frozen face"][sel.metric], scale["real data"][sel.metric]
        click.echo(f"  {sel.metric} {v:.4g}: frozen face {frozen:.4g}, real data {real:.4g}"
                   + ("  (worse than a frozen face: see README.md)" if v >= frozen else ""))
    click.echo(f"MLflow model: {prov['mlflow_model']['model_uri']} (pyfunc; linked to run {sel.best.run_name})")
    if register:
        r = prov["registry"]
        at = f" @{r['alias']}" if r.get("alias") else ""
        click.echo(f"registered: models:/{r['name']}/{r['version']}{at}")
    d = Path(out_dir).resolve()
    S = hints.suhmo()  # runnable as printed, venv activated or not
    click.echo(f"try: {S} generate --model {d} --reference {d / 'reference.npy'} --frames 120 "
               f"--samples 4 --out motion.npz && {S} render motion.npz --grid 4 --motion-map --out motion.gif")


@click.command("ui")
@click.option("--tracking-uri", type=str, default=None,
              help="MLflow store to browse; default: sqlite:///<SUHMO_HOME or ./suhmo-runs>/mlflow.db.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True,
              help="Port on 127.0.0.1.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(1, None), default=180.0, show_default=True,
              help="Seconds to wait for the server to answer.")
@click.option("--experiment", type=str, default=None,
              help="Experiment whose trials the printed address opens; default: that of the latest search.")
def ui(tracking_uri, port, timeout_s, experiment) -> None:
    """Start the MLflow UI on 127.0.0.1 (one worker, no job runner); Ctrl-C stops it.

    Prints the address of the runs page of the latest search: its trials, best first, with
    the objective and the searched hyperparameters as the first columns.
    """
    from suhmo.paths import home
    from tracking.store import latest_search_experiment
    from tracking.view import runs_page_url
    from tracking.ui import UIServer

    server = UIServer(tracking_uri, port)
    exp_id = _experiment_id(server.tracking_uri, experiment) if experiment else \
        latest_search_experiment(server.tracking_uri)
    uri = server.tracking_uri
    log_dir = Path(uri[len("sqlite:///"):]).parent if uri.startswith("sqlite:///") else home()
    server.log_path = log_dir / "mlflow-ui.log"
    click.echo(f"starting the MLflow UI for {server.tracking_uri} ...")

    def _terminate(signum, frame):  # SIGTERM to this command stops the server too
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        took = server.start(timeout_s)
        click.echo(f"MLflow UI: {runs_page_url(server.url, exp_id)}")
        click.echo(f"  (up in {took:.1f} s; home {server.url}; log {server.log_path}; Ctrl-C to stop)")
        while server.proc.poll() is None:
            time.sleep(0.5)
        click.echo(f"the MLflow UI exited (code {server.proc.returncode}); see {server.log_path}", err=True)
    except KeyboardInterrupt:
        t = time.perf_counter()
        server.stop()
        click.echo(f"\nMLflow UI stopped ({time.perf_counter() - t:.1f} s).")
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, old)


def _experiment_id(tracking_uri: str, name: str) -> str:
    from mlflow import MlflowClient

    from suhmo.utils import SuhmoError

    exp = MlflowClient(tracking_uri).get_experiment_by_name(name)
    if exp is None:
        raise SuhmoError(f"--experiment {name!r}: no such experiment at {tracking_uri}")
    return exp.experiment_id
