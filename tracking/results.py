"""Seeds x repeats in MLflow: tagging repeat runs, mean +/- std over seeds, Table-1-style results.

A *repeat* (``suhmo-search repeat``) re-trains the best configurations of a finished search
with fresh seeds, as child runs of the SAME parent run, tagged

    repeat_of=<trial id of the original trial>   config_key=<hash of the config without the seed>
    repeat_batch=<name of the repeat>            repeat_seed_index=<0..S-1>

After training, each repeat run is scored at 40 and 80 generated frames (the metric stack
scores the LAST 40 generated frames, paper Table 1). Those metrics are logged with the
suffixes ``_g40`` and ``_g80`` (``fd_clip40_g80`` = fd_clip40 of frames 41-80), at the step
of the checkpoint that was scored, so ``suhmo best-export --metric fd_clip40_g80`` can pick it.
(MLflow metric names may not contain ``@``.)

A results table (``suhmo-search results``) has one row per method or configuration (tag
``method``, else ``config_key``) and, per metric, one column for 40 and one for 80 generated
frames; a cell is ``mean ± std (n)`` over the runs (seeds) of the row.

Only :func:`config_key`, :func:`aggregate`, :func:`format_markdown` and :func:`mean_std`
are pure Python (``experiments/`` uses them for tables trained in-process); the rest talk
to MLflow.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from suhmo.utils import SuhmoError, atomic_write_text

REPEAT_OF_TAG = "repeat_of"
CONFIG_KEY_TAG = "config_key"
REPEAT_BATCH_TAG = "repeat_batch"
SEED_INDEX_TAG = "repeat_seed_index"
METHOD_TAG = "method"
FRAME_SUFFIX = "_g{frames}"  # fd_clip40 at 80 generated frames -> fd_clip40_g80
TABLE_FRAMES = (40, 80)
DEFAULT_METRICS = ("fd_frame", "fd_clip40", "fd_motion", "apd", "drift", "motion_energy")
# config fields that do not change what is trained (threads, progress bar, device) or are the seed
_NOT_CONFIG = {"seed", "train.seed", "train.threads", "train.progress", "train.device"}


def frame_key(metric: str, frames: int) -> str:
    """``fd_clip40`` at ``80`` generated frames -> ``fd_clip40_g80``."""
    return metric + FRAME_SUFFIX.format(frames=int(frames))


def _param_str(v: Any) -> str:
    """A value as MLflow stores it as a param (tracking.store.param_value)."""
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)


def config_key(flat: dict[str, Any]) -> str:
    """12-hex hash of a flat dotted config (or an MLflow run's params) WITHOUT the seed.

    Values are compared as MLflow stores them (strings), so the key computed from a trial's
    resolved config equals the key computed from its logged params.
    """
    items = sorted((str(k), _param_str(v)) for k, v in flat.items() if k not in _NOT_CONFIG)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std (ddof=1; 0 for one value), n) of the finite values; NaN mean when none."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), 0
    m = sum(v) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    return m, sd, n


def format_cell(mean: float, std: float, n: int, digits: int = 3) -> str:
    if n == 0 or not math.isfinite(mean):
        return "-"
    return f"{mean:.{digits}g} ± {std:.2g} ({n})"


# ---------------------------------------------------------------------- aggregation (pure)
def aggregate(rows: Iterable[dict], metrics: Sequence[str] = DEFAULT_METRICS,
              frames: Sequence[int] = TABLE_FRAMES, *, suffixed: bool = True) -> list[dict]:
    """Group runs into table rows.

    ``rows``: ``{"group": label, "metrics": {key: value}, **extra}`` per run (seed). Returns,
    in first-seen order, ``{"group", "n", "runs", "cells": {column: {"mean","std","n"}}}``;
    with ``suffixed`` the columns are ``<metric>_g<frames>`` for each frame count, else the
    metric names themselves.
    """
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r["group"]), []).append(r)
    cols = [frame_key(m, f) for m in metrics for f in frames] if suffixed else list(metrics)
    out = []
    for label, runs in groups.items():
        cells = {}
        for c in cols:
            m, sd, n = mean_std([r["metrics"].get(c, float("nan")) for r in runs])
            cells[c] = {"mean": m, "std": sd, "n": n}
        out.append({"group": label, "n": len(runs), "runs": [r.get("run") for r in runs], "cells": cells,
                    **{k: v for k, v in runs[0].items() if k not in ("group", "metrics", "run")}})
    return out


def format_markdown(table: list[dict], metrics: Sequence[str] = DEFAULT_METRICS,
                    frames: Sequence[int] = TABLE_FRAMES, *, suffixed: bool = True,
                    row_title: str = "method") -> str:
    """Markdown in the layout of the paper's Table 1: metric columns, 40 and 80 frames each."""
    if suffixed:
        header = [row_title] + [f"{m} @{f}" for m in metrics for f in frames]
        cols = [frame_key(m, f) for m in metrics for f in frames]
    else:
        header, cols = [row_title] + list(metrics), list(metrics)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        cells = [format_cell(**row["cells"][c]) if c in row["cells"] else "-" for c in cols]
        lines.append(f"| {row['group']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- MLflow side
# tracking.store (mlflow) is imported in the functions below: the pure functions above
# serve experiments/ and launch/ without loading MLflow
def _client(tracking_uri: str):
    from tracking.store import mlflow_client

    return mlflow_client(tracking_uri)


def tag_run(tracking_uri: str, run_id: str, tags: dict[str, Any]) -> None:
    """Set string tags on a run (open or closed)."""
    from tracking.store import set_tags

    set_tags(_client(tracking_uri), run_id, tags)


def log_scores(tracking_uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log the post-training scores (``*_g40``/``*_g80``) of a run at ``step`` (a closed run too)."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    client = _client(tracking_uri)
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i:i + 1000])


def log_parent_artifacts(tracking_uri: str, parent_run_id: str, folder: str, files: dict[str, str],
                         tags: Optional[dict] = None) -> None:
    """Write text ``files`` {name: content} under ``folder/`` of the parent run (+ tags)."""
    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="suhmo-repeat-") as tmp:
        for name, text in files.items():
            atomic_write_text(Path(tmp) / name, text)
        client.log_artifacts(parent_run_id, tmp, folder)
    if tags:
        tag_run(tracking_uri, parent_run_id, tags)


def close_unfinished(tracking_uri: str, experiment_id: str, parent_run_id: str, batch: str) -> int:
    """Close (KILLED) runs of repeat ``batch`` that their worker left RUNNING; returns how many."""
    from tracking.search_run import close_run
    from tracking.store import child_runs

    client = _client(tracking_uri)
    n = 0
    for r in child_runs(client, experiment_id, parent_run_id):
        if r.data.tags.get(REPEAT_BATCH_TAG) == batch and r.info.status in ("RUNNING", "SCHEDULED"):
            close_run(tracking_uri, r.info.run_id, "KILLED", "repeat worker ended without closing its run")
            n += 1
    return n


def search_runs(tracking_uri: str, experiment: str, search_run_id: Optional[str] = None):
    """(experiment, parent run, child runs) of the latest search of ``experiment``."""
    from tracking.store import child_runs, resolve_search

    client = _client(tracking_uri)
    exp, parent = resolve_search(client, tracking_uri, experiment, search_run_id)
    return exp, parent, child_runs(client, exp.experiment_id, parent.info.run_id)


def repeat_groups(children: list) -> dict[str, list]:
    """``config_key`` -> the repeat runs (tag ``repeat_of``) of that configuration."""
    groups: dict[str, list] = {}
    for r in children:
        t = r.data.tags
        if t.get(REPEAT_OF_TAG) and t.get(CONFIG_KEY_TAG):
            groups.setdefault(t[CONFIG_KEY_TAG], []).append(r)
    return groups


def _label(run, by: str) -> str:
    t, p = run.data.tags, run.data.params
    if by == "method" and t.get(METHOD_TAG):
        return t[METHOD_TAG]
    key = t.get(CONFIG_KEY_TAG) or config_key(p)
    variant = p.get("model.variant") or t.get("variant") or "?"
    of = f" of {t[REPEAT_OF_TAG]}" if t.get(REPEAT_OF_TAG) else ""
    return f"{variant} {key}{of}"


def results_table(tracking_uri: str, experiment: str, *, metrics: Sequence[str] = DEFAULT_METRICS,
                  frames: Sequence[int] = TABLE_FRAMES, group_by: str = "method",
                  include_search_trials: bool = False, search_run_id: Optional[str] = None) -> dict:
    """Table-1 layout of a search's runs in MLflow -> ``{"experiment", "parent_run_id", "rows", ...}``.

    Rows group runs by tag ``method`` (``group_by="method"``, falling back to the config key)
    or by ``config_key``. By default only repeat runs are used when the search has any (the
    original trials are single seeds, selected for being good); ``include_search_trials``
    adds them (they have ``_g40``/``_g80`` scores only if something logged them).
    """
    if group_by not in ("method", "config_key"):
        raise SuhmoError(f"--group-by {group_by!r}: choose method or config_key")
    exp, parent, children = search_runs(tracking_uri, experiment, search_run_id)
    repeats = [r for r in children if r.data.tags.get(REPEAT_OF_TAG)]
    use_all = include_search_trials or not repeats
    runs = [r for r in (children if use_all else repeats) if r.info.status == "FINISHED"]
    rows = [{"group": _label(r, group_by), "run": r.info.run_id, "metrics": dict(r.data.metrics)} for r in runs]
    table = aggregate(rows, metrics, frames)
    return {"experiment": exp.name, "parent_run_id": parent.info.run_id, "parent_run_name": parent.info.run_name,
            "metrics": list(metrics), "frames": list(frames), "group_by": group_by,
            "runs_used": "all trial runs" if use_all else "repeat runs",
            "rows": table}
