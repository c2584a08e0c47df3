"""Trainer reliability: owner-only files, resume on the run's own data, leftovers of a
crash cleaned, metrics.jsonl repaired so that every evaluated step appears exactly once."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
from click.testing import CliRunner

from suhmo.checkpoint import load_checkpoint

# a few iterations of a tiny model on 12-frame windows of a little data
SETS = {"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8, "data.synth_seconds": 3.0,
        "train.eval_every": 2, "eval.samples": 4, "eval.frames": 16}


def _args(out, iterations: int, *extra: str) -> list[str]:
    args = ["train", "--preset", "tiny", "--iterations", str(iterations), "--out", str(out), "--device", "cpu"]
    for k, v in SETS.items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def _train(out, iterations: int, *extra: str):
    from suhmo.cli import cli

    res = CliRunner().invoke(cli, _args(out, iterations, *extra))
    return res


@pytest.fixture
def data_file(tmp_path):
    from suhmo.data import save_landmarks, synthesize

    path = tmp_path / "mine.npz"
    save_landmarks(path, synthesize(8, 3.0, seed=7, fps=25.0))
    return path


def _steps(out) -> list[int]:
    return [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_written_files_are_the_owners_only(tmp_path):
    out = tmp_path / "run"
    res = _train(out, 2)
    assert res.exit_code == 0, res.output
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl"):
        assert stat.S_IMODE(os.stat(out / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(out).st_mode) & 0o077 == 0


def test_mlflow_database_is_created_owner_only(tmp_path):
    from tracking.search_run import setup_experiment

    db = tmp_path / "t" / "mlflow.db"
    setup_experiment(f"sqlite:///{db}", "modes")
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    assert db.stat().st_size > 0  # MLflow created its tables in the pre-created file


def test_resume_without_data_uses_the_runs_own_data(tmp_path, data_file):
    out = tmp_path / "run"
    res = _train(out, 2, "--data", str(data_file))
    assert res.exit_code == 0, res.output
    res = _train(out, 4)  # no --data: must not fall back to the synthetic set
    assert res.exit_code == 0, res.output
    assert f"resuming on the run's data {data_file}" in res.output
    assert str(data_file) in res.output  # "training rnn on <file>"
    assert load_checkpoint(out / "last.pt")["config"]["data"]["path"] == str(data_file)
    assert f"path: {data_file}" in (out / "config.yaml").read_text()


def test_resume_on_other_data_is_refused(tmp_path, data_file):
    from suhmo.cli import cli, run_cli

    out = tmp_path / "run"
    assert _train(out, 2).exit_code == 0  # synthetic data
    before = (out / "last.pt").read_bytes()
    assert run_cli(cli, _args(out, 4, "--data", str(data_file))) == 2
    assert (out / "last.pt").read_bytes() == before


def test_resume_on_another_file_names_both(tmp_path, data_file, capsys):
    from suhmo.cli import cli, run_cli
    from suhmo.data import save_landmarks, synthesize

    other = tmp_path / "other.npz"
    save_landmarks(other, synthesize(8, 3.0, seed=8, fps=25.0))
    out = tmp_path / "run"
    assert _train(out, 2, "--data", str(data_file)).exit_code == 0
    capsys.readouterr()
    assert run_cli(cli, _args(out, 4, "--data", str(other))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error:")
    assert str(data_file) in err[0] and str(other) in err[0] and "last.pt" in err[0]


def test_stale_temporaries_are_removed_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    assert _train(out, 2).exit_code == 0
    leftovers = [out / ".last.pt.abc123.tmp", out / ".best.pt.x.tmp", out / ".config.yaml.q.tmp"]
    for p in leftovers:
        p.write_bytes(b"half a checkpoint")
    keep = out / "notes.tmp"
    keep.write_text("mine")
    assert _train(out, 4).exit_code == 0
    assert not any(p.exists() for p in leftovers)
    assert keep.read_text() == "mine"


def test_a_kill_between_checkpoint_and_log_line_is_repaired(tmp_path):
    out = tmp_path / "run"
    assert _train(out, 4).exit_code == 0
    assert _steps(out) == [2, 4]
    # the kill fell after last.pt of step 4 was written, before its line was appended
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(lines[0] + "\n")
    at_kill = load_checkpoint(out / "last.pt")["metrics"]
    assert _train(out, 6).exit_code == 0
    assert _steps(out) == [2, 4, 6]
    row4 = json.loads((out / "metrics.jsonl").read_text().splitlines()[1])
    assert row4["step"] == 4 and row4["fd_clip40"] == pytest.approx(at_kill["fd_clip40"])


def test_duplicates_rows_past_the_checkpoint_and_a_torn_line_are_repaired(tmp_path):
    out = tmp_path / "run"
    assert _train(out, 4).exit_code == 0
    text = (out / "metrics.jsonl").read_text()
    lines = text.splitlines()
    # a line appended twice, a line of a step whose checkpoint never got written, a torn line
    ghost = json.dumps({**json.loads(lines[1]), "step": 6})
    (out / "metrics.jsonl").write_text(text + lines[1] + "\n" + ghost + "\n" + '{"step": 8, "fd_cl')
    assert _train(out, 8).exit_code == 0
    assert _steps(out) == [2, 4, 6, 8]
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["fd_clip40"]) for r in rows)
