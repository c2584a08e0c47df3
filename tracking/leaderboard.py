"""The leaderboard of a search in MLflow: its trial runs ranked on the first objective's best
value at a checkpoint (:func:`suhmo.selection.rank`), as the JSON and Markdown artifacts of
the search's parent run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from suhmo.selection import rank
from suhmo.utils import atomic_write_text


def leaderboard_rows(children: list, objectives: list[tuple[str, str]]) -> list[dict]:
    """One row per trial run (ids, variant, status, per objective its best value and step),
    best first."""
    rows = []
    for r in children:
        m, t = r.data.metrics, r.data.tags
        row = {"run_id": r.info.run_id, "run_name": r.info.run_name, "trial_id": t.get("trial_id"),
               "variant": t.get("variant"), "status": r.info.status}
        for metric, _ in objectives:
            row[f"best_{metric}"] = m.get(f"best_{metric}")
            step = m.get(f"best_{metric}_step")
            row[f"best_{metric}_step"] = int(step) if step is not None else None
        rows.append(row)
    if objectives:
        key = f"best_{objectives[0][0]}"
        rows = rank(rows, objectives[0], lambda r: r[key])
    return rows


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no trials)\n"
    cols = list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.5g}"
        return "" if v is None else str(v)

    lines = ["| rank | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def log_leaderboard(client, parent_run_id: str, run_name: str, rows: list[dict],
                    objectives: list[tuple[str, str]], summary: dict) -> None:
    """``search/leaderboard.{json,md}`` and ``search/summary.json`` of the parent run."""
    with tempfile.TemporaryDirectory(prefix="suhmo-lb-") as tmp:
        d = Path(tmp)
        atomic_write_text(d / "leaderboard.json", json.dumps(rows, indent=2, default=str))
        title = "objective " + ", ".join(f"{m} ({mode})" for m, mode in objectives) if objectives else ""
        atomic_write_text(d / "leaderboard.md", f"# Leaderboard {run_name}\n\n{title}\n\n" + markdown_table(rows))
        atomic_write_text(d / "summary.json", json.dumps(summary, indent=2, default=str))
        client.log_artifacts(parent_run_id, str(d), "search")
