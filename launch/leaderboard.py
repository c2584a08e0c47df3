"""What a search did, read back from its experiment folder without a running Ray: one
:class:`TrialRow` per trial through Tune's public result API
(``ray.tune.ExperimentAnalysis``), the leaderboard (ranked on the first objective, the
Pareto set for several), the scale of the distances, and what to run next."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from launch.plan import SearchPlan, latest_state_file, storage_opt
from launch.rayenv import quiet_ray
from launch.space import SearchSpace, format_duration
from launch.trainable import sampled_values, stored_checkpoints
from suhmo import hints
from suhmo.metrics import landmark as lm
from suhmo.selection import METRIC_MODES, Criterion, criteria_of, pareto_front, rank

def trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def _short(key: str) -> str:
    return key.split(".")[-1]


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def describe_config(config: dict, keys: Optional[list[str]] = None) -> str:
    vals = sampled_values(config)
    vals.pop("train.seed", None)
    keys = keys or list(vals)
    return " ".join(f"{_short(k)}={_fmt_value(vals[k])}" for k in keys if k in vals)


def error_reason(text: str) -> str:
    """The one-line cause in a Ray error file (the innermost ``SomeError: message``)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    oom = next((ln for ln in lines if "killed due to the node running low on memory" in ln), None)
    if oom is not None:  # Ray's memory monitor: its message ends in a page of advice, not the cause
        why = next((ln for ln in lines if ln.startswith("OOM kill reason:")), "")
        return f"OutOfMemoryError: killed by Ray's memory monitor ({why[len('OOM kill reason:'):].strip() or oom})"
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if ":" in ln and head.replace(".", "").replace("_", "").isalnum() and \
                (head.endswith("Error") or head.endswith("Exception") or head.endswith("Interrupt")):
            name, msg = ln.split(":", 1)
            return f"{name.split('.')[-1]}:{msg}"
    return lines[-1] if lines else ""


@dataclass
class TrialRow:
    trial_id: str
    name: str
    status: str  # Tune: PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    state: str  # finished | stopped | error | running | pending | interrupted
    config: dict
    step: int  # trainer iterations done (last report)
    iterations: int
    evaluations: int
    best: dict[str, tuple[float, int]]  # metric -> (best value, step)
    last: dict[str, float]  # metrics of the last evaluation
    node_ip: Optional[str]
    error: Optional[str]
    seed: Optional[int]
    path: Optional[str]
    time_total_s: float = 0.0
    first_result: Optional[dict] = None


def read_trials(exp_dir: Path, objectives: list[list[str]], iterations: Optional[int] = None) -> list[TrialRow]:
    """Trials of an experiment, read through Tune's result API (``ExperimentAnalysis``: the
    newest experiment state and every trial's results; no running Ray needed)."""
    exp_dir = Path(exp_dir)
    if latest_state_file(exp_dir) is None:
        return []
    quiet_ray()
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(exp_dir))
    frames = analysis.trial_dataframes
    rows = []
    for trial in analysis.trials:
        tid, tdir = trial.trial_id, Path(trial.path)
        history = _records(frames.get(tid))
        last = history[-1] if history else (trial.last_result or {})
        history, last = _with_unprocessed_reports(tdir, history, last)
        best: dict[str, tuple[float, int]] = {}
        for obj in criteria_of(objectives):
            h = obj.best_of(history, lambda h: h.get(obj.metric))
            if h is not None:
                best[obj.metric] = (h[obj.metric], h.get("step", 0))
        err = None
        if trial.run_metadata.error_filename:
            ef = tdir / trial.run_metadata.error_filename
            err = error_reason(ef.read_text()) if ef.is_file() else "error (no error file)"
        status = trial.status
        if status == "PENDING" and history:
            status = "RUNNING"  # the result API restores RUNNING trials as PENDING; this one has reported
        step = int(last.get("step", 0) or 0)
        total = int(last.get("iterations", iterations or 0) or 0)
        if status == "ERROR":
            state = "error"
        elif status == "TERMINATED":
            state = "finished" if total and step >= total else "stopped"
        elif status == "RUNNING":
            state = "running"
        elif status == "PAUSED":
            state = "interrupted"
        else:
            state = "pending"
        config = trial.config or {}
        rows.append(TrialRow(
            trial_id=tid, name=f"trial_{tid}", status=status, state=state, config=config, step=step,
            iterations=total, evaluations=len(history), best=best,
            last={k: v for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            node_ip=last.get("node_ip"), error=err, seed=config.get("train.seed"), path=str(tdir),
            time_total_s=float(last.get("time_total_s", 0) or 0), first_result=history[0] if history else None))
    return rows


def _records(frame) -> list[dict]:
    """The rows of a trial's result DataFrame as dicts: what the trial reported (not the cells
    a row did not report, nor the flattened ``config/...`` columns)."""
    if frame is None or frame.empty:
        return []
    return [{k: v for k, v in row.items()
             if not (isinstance(v, float) and math.isnan(v)) and not str(k).startswith("config/")}
            for row in frame.to_dict("records")]


def _with_unprocessed_reports(tdir: Path, history: list, last: dict) -> tuple[list, dict]:
    """Add the evaluations of a checkpoint the trial persisted after its last result the driver
    recorded (a search interrupted between a report and its processing): the leaderboard then
    shows what the trial (and MLflow) reached, not the driver's stale view."""
    stored = stored_checkpoints(tdir)
    done = int(last.get("step", 0) or 0)
    if not stored or stored[-1][0] <= done:
        return history, last
    log = stored[-1][1] / "metrics.jsonl"
    extra = []
    if log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > done:
                extra.append(row)
    if not extra:
        return history, last
    return history + extra, {**last, **extra[-1]}


def rank_rows(rows: list[TrialRow], objectives: list[list[str]]) -> list[TrialRow]:
    """Best first on the first objective's best value; errored trials and trials without a value last."""
    m = objectives[0][0]
    return rank(rows, objectives[0], lambda r: r.best[m][0] if m in r.best else None,
                demote=lambda r: r.state == "error")


def pareto_set(rows: list[TrialRow], objectives: list[list[str]]) -> list[TrialRow]:
    """Non-dominated trials on the objective values of their last evaluation (what Optuna was told)."""
    return pareto_front([r for r in rows if r.state != "error"], objectives, lambda r: r.last)


def format_table(rows: list[TrialRow], objectives: list[list[str]], param_keys: list[str],
                 *, show_error: bool = True, extra_metrics: tuple = ()) -> str:
    """Leaderboard / status table: trial, state, config, objectives, other metrics, iterations."""
    multi = len(objectives) > 1
    pareto = {r.trial_id for r in pareto_set(rows, objectives)} if multi else set()
    header = ["#", "trial", "state", "it"]
    shorts = [_short(k) for k in param_keys]  # the full key where two share a last part (actor.beta, hitdvae.beta)
    header += [sh if shorts.count(sh) == 1 else k for sh, k in zip(shorts, param_keys)]
    for m, mode in objectives:
        header.append(f"best {m} ({mode})")
        if multi:
            header.append(f"last {m}")
    header += list(extra_metrics)
    if multi:
        header.append("pareto")
    header.append("node")
    if show_error:
        header.append("error")
    table = []
    for i, r in enumerate(rows, 1):
        line = [str(i), r.name, r.state, f"{r.step}/{r.iterations or '?'}"]
        vals = sampled_values(r.config)
        line += [_fmt_value(vals[k]) if k in vals else "-" for k in param_keys]
        for m, _ in objectives:
            line.append(f"{r.best[m][0]:.4g} @{r.best[m][1]}" if m in r.best else "-")
            if multi:
                line.append(f"{r.last[m]:.4g}" if m in r.last else "-")
        for em in extra_metrics:
            line.append(f"{r.last[em]:.3g}" if em in r.last else "-")
        if multi:
            line.append("*" if r.trial_id in pareto else "")
        line.append(r.node_ip or "-")
        if show_error:
            line.append((r.error or "")[:90])
        table.append(line)
    widths = [max(len(h), *(len(row[j]) for row in table)) if table else len(h) for j, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    return "\n".join(out)


def _other_metrics(rows: list[TrialRow], objectives: list[list[str]], limit: int = 4) -> tuple:
    objs = {m for m, _ in objectives}
    seen = []
    for r in rows:
        for k in r.last:
            if k in METRIC_MODES and k not in objs and k not in seen:
                seen.append(k)
    return tuple(seen[:limit])


def summary_counts(rows: list[TrialRow]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r.state] = out.get(r.state, 0) + 1
    return out


@dataclass
class SearchOutcome:
    plan: SearchPlan
    rows: list[TrialRow]
    wall_s: float
    interrupted: bool
    budget_hit: bool
    progress: Any = None  # the progress callback (timings for benchmarks)


def param_columns(space: SearchSpace, limit: int = 6) -> list[str]:
    return [k for k in space.searched_keys()][:limit]


def render_report(outcome: SearchOutcome, echo: Callable[[str], None] = print) -> None:
    """Leaderboard, best config / Pareto set, and what to run next."""
    plan = outcome.plan
    space = plan.resolved_space()
    rows = rank_rows(outcome.rows, plan.objectives)
    counts = summary_counts(rows)
    echo("")
    echo(f"leaderboard of {plan.experiment} ({len(rows)} trials: "
         + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"; {format_duration(outcome.wall_s)} wall)")
    echo(format_table(rows, plan.objectives, param_columns(space), show_error=any(r.error for r in rows),
                      extra_metrics=_other_metrics(rows, plan.objectives)))
    for line in scale_lines(space, rows, plan.objectives):
        echo(line)
    if len(plan.objectives) > 1:
        front = pareto_set(rows, plan.objectives)
        echo("")
        echo("Pareto set (" + ", ".join(f"{m} {mode}" for m, mode in plan.objectives) + ", last evaluation):")
        for r in front:
            echo(f"  {r.name}  " + "  ".join(f"{m}={r.last[m]:.4g}" for m, _ in plan.objectives)
                 + f"  {describe_config(r.config)}")
    elif rows and plan.objectives[0][0] in rows[0].best:
        top = rows[0]
        m = plan.objectives[0][0]
        echo("")
        echo(f"best: {top.name}  {m}={top.best[m][0]:.4g} at iteration {top.best[m][1]}  seed {top.seed}")
        echo(f"      {describe_config(top.config)}")
    if outcome.interrupted:
        echo("")
        echo(f"search interrupted; its state is saved. Continue it with:\n"
             f"  {hints.suhmo_search()} resume {plan.experiment}" + storage_opt(plan))
        return
    errored = sum(r.state == "error" for r in rows)
    if errored:
        echo("")
        echo(f"{errored} trial(s) errored (reasons above); after fixing the cause, "
             f"`{hints.suhmo_search()} resume {plan.experiment}{storage_opt(plan)}` retries them from their last checkpoint")
    if outcome.budget_hit:
        echo(f"time budget {format_duration(plan.time_budget_s)} reached: {len(rows)} of {plan.num_samples} trials ran")
    evaluated = any(r.evaluations > 0 and r.state != "error" for r in rows)
    echo("")
    if not evaluated:
        echo("no trial reached an evaluation: there is no checkpoint to export yet")
    echo("next:")
    S, SS = hints.suhmo(), hints.suhmo_search()  # runnable as printed, venv activated or not
    if plan.tracking_uri:
        echo(f"  {SS} ui{_tracking_opt(plan)}                 # browse the trials in MLflow")
        if evaluated:
            echo(f"  {S} best-export --experiment {plan.experiment} --out best-model{_tracking_opt(plan)}")
            echo(f"  {S} generate --model best-model --reference best-model/reference.npy --out motion.npz")
            echo(f"  {S} render motion.npz --grid 4 --motion-map --out motion.gif")
    echo(f"  {SS} status {plan.experiment}{storage_opt(plan)}")


def scale_lines(space: SearchSpace, rows: list, objectives) -> list[str]:
    """Each distance objective beside a frozen face and real data under the trials' data and
    evaluation protocol (suhmo.metrics.scale; cached like the reference statistics)."""
    fds = [m for m, _ in objectives if m in lm.FD_KEYS]
    if not fds:
        return []
    try:
        from suhmo.metrics.scale import scale_for_config

        scale = scale_for_config(space.base_config())
    except Exception as e:  # noqa: BLE001 - the leaderboard stands without its scale
        return [f"(no scale for {', '.join(fds)}: {e})"]
    out = []
    for m in fds:
        frozen, real = scale["frozen face"][m], scale["real data"][m]
        best = Criterion.of(m).best_of(r.best[m][0] for r in rows if m in r.best)
        line = f"scale of {m} (same data and protocol): frozen face {frozen:.4g}, real data {real:.4g}"
        if best is not None:
            line += f"; best trial {best:.4g}" + (", worse than a frozen face" if best >= frozen else "")
        out.append(line)
    others = [k for k in lm.FD_KEYS if k not in fds and any(k in r.last for r in rows)]
    if others:  # the other distances the table shows
        out.append("scale of the other distances (frozen face / real data): "
                   + ", ".join(f"{k} {scale['frozen face'][k]:.4g} / {scale['real data'][k]:.4g}" for k in others))
    return out


def _tracking_opt(plan: SearchPlan) -> str:
    try:
        import tracking

        if plan.tracking_uri == tracking.default_tracking_uri():
            return ""
    except Exception:  # noqa: BLE001
        pass
    return f" --tracking-uri {plan.tracking_uri}"
