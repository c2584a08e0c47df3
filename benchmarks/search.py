"""Search throughput and what ASHA saves, measured on this machine.

    .venv/bin/python benchmarks/search.py --json                 # the demo space, ASHA then FIFO
    .venv/bin/python benchmarks/search.py --num-samples 4 --json # quicker
    .venv/bin/python benchmarks/search.py --num-samples 4 --no-fifo --old /tmp/old   # an older checkout first

Runs the demo search (``search_spaces/demo.yaml``: ASHA, its trials and budget) and then
the same search with FIFO (same study seed, same number of trials) in one local Ray
session, with MLflow tracking into a temporary store (as ``suhmo-search run`` does).

Figures:
* ``trials_per_hour``: finished-or-stopped trials per hour of the ASHA search, wall clock
  including Ray start-up (``_tuning`` = from the first trial start to the end);
* per-trial overhead: seconds from the driver starting a trial to its first result,
  minus the trainer's own time up to that first report (``time_trainer_first_s``, measured
  inside the trial): worker start or reuse, config, data, MLflow run, checkpoint upload;
  ``setup_s`` is the in-trial part before the Trainer's loop starts; the parts of each trial's
  overhead (``overhead_by_trial``, printed as a table with the medians; see ``_parts``): the
  worker's start (a new process and its imports, or a reused one), the in-trial set-up phases,
  the first evaluation logged to MLflow, the checkpoint and ``tune.report`` to the driver;
* ASHA vs FIFO: total trainer iterations and trial-seconds (``time_total_s`` summed over
  trials), the saving of ASHA in percent, and the best objective each search reached.
* ``--old PATH``: the same search first with the code of an older checkout (``git archive
  <commit> | tar -x -C PATH``; a subprocess with its own Ray instance), then with this one, and
  the overheads side by side (a checkout without the timing keys shows totals only).
The last line of ``--json`` output is one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _search(space_name: str, scheduler: str, num_samples, storage: str, tracking_uri, tag: str, quiet: bool):
    from launch.leaderboard import rank_rows
    from launch.plan import make_plan
    from launch.runner import run_search
    from launch.space import load_space

    space = load_space(space_name)
    plan = make_plan(space, experiment=f"bench-{scheduler}-{tag}", storage=storage, num_samples=num_samples,
                     scheduler=scheduler, tracking_uri=tracking_uri)
    echo = (lambda s: None) if quiet else click.echo
    outcome = run_search(plan, echo=echo, shutdown=False)
    rows = rank_rows(outcome.rows, plan.objectives)
    return plan, outcome, rows


# The parts of a trial's overhead, in the order they happen (see ``_parts``).
PARTS = ("start", "imports", "config", "reset", "restore", "mlflow_start", "data", "trainer_init", "setup_other",
         "log_eval", "checkpoint", "report")


def _parts(first: dict, started: float, first_result: float) -> dict:
    """Where the overhead of one trial went (seconds), from its first result's timing keys and
    the driver's clock (one machine: the same wall clock):

    * ``start``: the driver starting the trial -> the trial function runs (a new worker process
      and its imports, or a reused one reset);
    * ``config`` ... ``trainer_init``: the in-trial set-up phases (:class:`launch.trainable.SetupClock`:
      imports (torch, torch._dynamo, MLflow and its store: in a new process), config, resetting a reused process (garbage collection, seeds), restoring a checkpoint, the MLflow run, the data, ``Trainer()`` with the semantic
      space's fit), ``setup_other`` the rest up to the training loop;
    * ``log_eval``: the first evaluation logged to MLflow (metrics, samples of the new best, checkpoint);
    * ``checkpoint``: the Tune checkpoint folder; ``report``: ``tune.report`` (checkpoint copied to
      the storage) -> the driver has the result.
    The parts add up to the overhead."""
    if "time_entry_wall" not in first:
        return {}
    setup = {k[len("time_setup_"):-2]: float(v) for k, v in first.items()
             if k.startswith("time_setup_") and k.endswith("_s") and k != "time_setup_s"}
    parts = {"start": first["time_entry_wall"] - started, **setup,
             "setup_other": first["time_setup_s"] - sum(setup.values()),
             "log_eval": first["time_log_eval_s"], "checkpoint": first["time_report_s"] - first["time_log_eval_s"],
             "report": first_result - first["time_report_wall"]}
    return {k: round(v, 3) for k, v in parts.items()}


def _summary(plan, outcome, rows) -> dict:
    metric, mode = plan.objectives[0]
    prog = outcome.progress
    overheads, setups, breakdown, pids = [], [], [], set()
    for r in sorted(rows, key=lambda r: prog.started.get(r.trial_id, float("inf"))):  # in start order
        first = r.first_result or {}
        if r.trial_id in prog.started and r.trial_id in prog.first_result and "time_trainer_first_s" in first:
            overheads.append(prog.first_result[r.trial_id] - prog.started[r.trial_id] - first["time_trainer_first_s"])
            setups.append(first.get("time_setup_s", float("nan")))
            parts = _parts(first, prog.started[r.trial_id], prog.first_result[r.trial_id])
            pid = first.get("pid")
            breakdown.append({"trial": r.trial_id, "overhead_s": round(overheads[-1], 3),
                              "worker": "reused" if pid in pids else "new", **parts})
            pids.add(pid)
    with_parts = [b for b in breakdown if "start" in b]
    starts = sorted(prog.started.values())
    tuning_s = (time.time() - starts[0]) if starts else outcome.wall_s
    ended = [r for r in rows if r.state in ("finished", "stopped")]
    best = rows[0].best.get(metric, (None, None))[0] if rows else None
    return {
        "trials": len(rows), "finished": sum(r.state == "finished" for r in rows),
        "stopped_early": sum(r.state == "stopped" for r in rows), "errored": sum(r.state == "error" for r in rows),
        "wall_s": round(outcome.wall_s, 1),
        "trials_per_hour": round(len(ended) / outcome.wall_s * 3600, 1),
        "trials_per_hour_tuning": round(len(ended) / max(tuning_s, 1e-9) * 3600, 1),
        "overhead_s_mean": round(statistics.mean(overheads), 2) if overheads else None,
        "overhead_s_median": round(statistics.median(overheads), 2) if overheads else None,
        "overhead_s_max": round(max(overheads), 2) if overheads else None,
        "overhead_s_first_trial": round(overheads[0], 2) if overheads else None,
        "setup_s_mean": round(statistics.mean(setups), 2) if setups else None,
        "trainer_iterations": int(sum(r.step for r in rows)),
        "trial_seconds": round(sum(r.time_total_s for r in rows), 1),
        f"best_{metric}": best,
        **{f"overhead_s_median_{kind}": round(statistics.median(v), 2) if v else None
           for kind in ("new", "reused") for v in [[b["overhead_s"] for b in breakdown if b["worker"] == kind]]},
        "overhead_parts_median": {k: round(statistics.median(b.get(k, 0.0) for b in with_parts), 3)
                                  for k in PARTS} if with_parts else None,  # None: code without the timing keys
        "overhead_by_trial": breakdown,
    }


def _print_parts(name: str, summary: dict) -> None:
    """One line per trial (in start order) with its overhead's parts, then the medians."""
    rows = summary.get("overhead_by_trial") or []
    if not rows:
        return
    click.echo(f"{name} overhead per trial (s), in start order:")
    w = {p: max(6, len(p)) for p in PARTS}
    click.echo(f"  {'trial':<10} {'worker':<7} {'total':>6} " + " ".join(f"{p:>{w[p]}}" for p in PARTS))
    for b in rows:
        click.echo(f"  {b['trial']:<10} {b['worker']:<7} {b['overhead_s']:6.2f} "
                   + " ".join(f"{b[p]:{w[p]}.2f}" if p in b else f"{'-':>{w[p]}}" for p in PARTS))
    med = summary["overhead_parts_median"] or {}
    click.echo(f"  {'median':<10} {'':<7} {summary['overhead_s_median']:6.2f} "
               + " ".join(f"{med[p]:{w[p]}.2f}" if p in med else f"{'-':>{w[p]}}" for p in PARTS))
    new, reused = (summary[f"overhead_s_median_{k}"] for k in ("new", "reused"))
    click.echo(f"  median overhead of trials on a new worker process {'-' if new is None else new} s, "
               f"on a reused one {'-' if reused is None else reused} s")


def _checkout(code: Path) -> Path:
    if not (code / "launch" / "runner.py").is_file() or not (code / "suhmo" / "train.py").is_file():
        raise click.UsageError(f"{code}: not a checkout of this project (no launch/runner.py, suhmo/train.py)")
    return code.resolve()


def _run_old(old: Path, args: list[str]) -> dict:
    """This benchmark with the code of ``old`` (a subprocess: its own Ray instance); its JSON line."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--code", str(old), "--json", *args]
    # Ray's workers start in the driver's folder and find launch/ there before PYTHONPATH
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(old)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=old, env=env)
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        click.echo(f"old| {line}")
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise click.ClickException(f"the search with the code of {old} failed (exit {proc.returncode}): "
                                   + (lines[-1] if lines else "no output")) from None


def side_by_side(old: dict, new: dict) -> list[str]:
    """Lines comparing the ASHA search's figures of two runs (old -> new)."""
    keys = [("overhead_s_median", "overhead per trial, median (s)"),
            ("overhead_s_median_new", "  trials on a new worker process"),
            ("overhead_s_median_reused", "  trials on a reused worker process"),
            ("overhead_s_first_trial", "overhead of the first trial (s)"),
            ("setup_s_mean", "in-trial set-up, mean (s)"),
            ("wall_s", "search wall time (s)"), ("trials_per_hour", "trials per hour")]
    a, b = old.get("asha", {}), new.get("asha", {})
    return [f"  {label:<38} {a.get(k)!s:>8} -> {b.get(k)!s:>8}" for k, label in keys]


@click.command()
@click.option("--space", "space_name", default="demo", show_default=True)
@click.option("--num-samples", type=click.IntRange(min=1), default=None, help="Default: the space's budget.")
@click.option("--no-fifo", is_flag=True, help="Skip the FIFO comparison search.")
@click.option("--no-tracking", is_flag=True, help="Measure without MLflow logging.")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line.")
@click.option("--quiet", is_flag=True, help="No per-trial progress lines.")
@click.option("--old", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="An older checkout: the same search with its code first, then with this one; "
                   "the two side by side.")
@click.option("--code", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, hidden=True,
              help="Run with the code of this checkout (what --old does in a subprocess).")
def main(space_name, num_samples, no_fifo, no_tracking, as_json, quiet, old, code):
    if code is not None:  # launch/, suhmo/, tracking/ from there (the workers: PYTHONPATH, see _run_old)
        root = _checkout(code)
        sys.path.insert(0, str(root))
        import launch

        if Path(launch.__file__).resolve().parents[1] != root:
            raise click.UsageError(f"--code {code}: launch/ is imported from {Path(launch.__file__).parent}")
    old_out = None
    if old is not None:
        old = _checkout(old)
        args = ["--space", space_name] + (["--num-samples", str(num_samples)] if num_samples else []) \
            + (["--no-fifo"] if no_fifo else []) + (["--no-tracking"] if no_tracking else []) \
            + (["--quiet"] if quiet else [])
        click.echo(f"old: {old} (load {_load()})")
        old_out = _run_old(old, args)
        click.echo(f"new: this checkout (load {_load()})")
    from launch.rayenv import start_ray
    from launch.space import load_space

    space = load_space(space_name)
    metric, mode = space.objectives[0].metric, space.objectives[0].mode
    tmp = Path(tempfile.mkdtemp(prefix="suhmo-bench-"))
    tracking_uri = None if no_tracking else f"sqlite:///{(tmp / 'mlflow.db').as_posix()}"
    tag = time.strftime("%H%M%S")
    t0 = time.time()
    start_ray(None, click.echo)  # before ray is imported here: it sets the loopback setting Ray reads at import
    ray_start_s = time.time() - t0
    import ray
    try:
        asha = _summary(*_search(space_name, "asha", num_samples, str(tmp / "store"), tracking_uri, tag, quiet))
        asha["wall_s_with_ray_start"] = round(asha["wall_s"] + ray_start_s, 1)
        fifo = None
        if not no_fifo:
            fifo = _summary(*_search(space_name, "fifo", num_samples, str(tmp / "store"), tracking_uri, tag, quiet))
    finally:
        ray.shutdown()
    out = {"space": space_name, "objective": f"{metric}:{mode}", "tracking": not no_tracking,
           "ray_start_s": round(ray_start_s, 1), "asha": asha}
    if fifo:
        out["fifo"] = fifo
        out["asha_saved_iterations_pct"] = round(100 * (1 - asha["trainer_iterations"] / fifo["trainer_iterations"]), 1)
        out["asha_saved_trial_seconds_pct"] = round(100 * (1 - asha["trial_seconds"] / fifo["trial_seconds"]), 1)
        out["asha_saved_wall_pct"] = round(100 * (1 - asha["wall_s"] / fifo["wall_s"]), 1)
    click.echo("")
    click.echo(f"ASHA: {asha['trials']} trials ({asha['stopped_early']} stopped early) in {asha['wall_s']} s "
               f"-> {asha['trials_per_hour']} trials/h; overhead per trial {asha['overhead_s_median']} s (median), "
               f"{asha['overhead_s_first_trial']} s for the first; best {metric} {asha[f'best_{metric}']}")
    _print_parts("ASHA", asha)
    if fifo:
        _print_parts("FIFO", fifo)
    if fifo:
        click.echo(f"FIFO: {fifo['trials']} trials in {fifo['wall_s']} s; best {metric} {fifo[f'best_{metric}']}")
        click.echo(f"ASHA used {asha['trainer_iterations']} vs {fifo['trainer_iterations']} trainer iterations "
                   f"({out['asha_saved_iterations_pct']}% saved), {asha['trial_seconds']} vs {fifo['trial_seconds']} "
                   f"trial-seconds ({out['asha_saved_trial_seconds_pct']}% saved)")
    if old_out is not None:
        out["old"] = old_out
        click.echo(f"old ({old}) -> new (this checkout), ASHA, one run (load {_load()}):")
        for line in side_by_side(old_out, out):
            click.echo(line)
    if as_json:
        click.echo(json.dumps(out))


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


if __name__ == "__main__":
    main()
