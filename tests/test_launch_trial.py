"""The trial's tracking hook (launch.trainable.TrialRun) on real MLflow (sqlite in a temp dir):
the run's final status from how the training ended, StopIteration turned into a real error,
samples and the animated portrait rendered only for a new best of the first objective. No Ray: the hook is driven
directly, as suhmo_trial drives it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow import MlflowClient

import tracking
from launch.trainable import PORTRAIT_SIZE, SetupClock, TrialRun
from suhmo.config import make_config
from suhmo.utils import SuhmoError

OBJ = [["fd", "min"], ["apd", "max"]]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlruns")
    uri = f"sqlite:///{(d / 'mlflow.db').as_posix()}"
    exp = tracking.setup_experiment(uri, "trial hooks")
    parent = tracking.start_search_run(uri, exp, space_file=None, cli_options={}, study_seed=0, run_name="s",
                                       objectives=OBJ)
    return {"tracking_uri": uri, "experiment_id": exp, "parent_run_id": parent, "objectives": OBJ}


def _run(meta, tid: str, step: int):
    cfg = make_config("tiny", overrides={"train.iterations": 10})
    run = TrialRun(meta, cfg, tid, f"trial_{tid}")
    run.trainer = SimpleNamespace(step=step)  # what watch() records: the trainer's step at the end
    return run


def _status(meta, run_id):
    r = MlflowClient(meta["tracking_uri"]).get_run(run_id)
    return r.info.status, r.data.tags.get("error_reason", "")


def test_outcomes_of_a_trial(search):
    with _run(search, "done", 10) as run:
        pass
    assert _status(search, run.run_id) == ("FINISHED", "")
    with pytest.raises(SystemExit):  # Tune ends a stopped trial from tune.report
        with _run(search, "asha", 4) as run:
            raise SystemExit(0)
    status, reason = _status(search, run.run_id)
    assert status == "KILLED" and "stopped early at iteration 4" in reason
    with pytest.raises(SystemExit):
        with _run(search, "last", 10) as run:  # stopped at its last report: it did finish
            raise SystemExit(0)
    assert _status(search, run.run_id)[0] == "FINISHED"
    with pytest.raises(SuhmoError, match="StopIteration escaped"):
        with _run(search, "stopit", 2) as run:
            raise StopIteration("from a generator")
    assert _status(search, run.run_id)[0] == "FAILED"
    with pytest.raises(ValueError):
        with _run(search, "bad", 2) as run:
            raise ValueError("diverged")
    assert _status(search, run.run_id) == ("FAILED", "ValueError: diverged")


def test_samples_are_made_for_a_new_best_of_the_first_objective_only(search, tmp_path):
    calls = []
    run = _run(search, "samples", 0)
    run.refs = np.zeros((2, 68, 2), np.float32)
    run.trainer = SimpleNamespace(step=0, sample_fn=lambda refs, frames, seed: calls.append(frames) or
                                  np.full((2, frames + 1, 68, 2), 0.5, np.float32))
    with run:
        run.log_eval(1, {"fd": 5.0, "apd": 0.1}, None)  # first value: a new best
        run.log_eval(2, {"fd": 6.0, "apd": 0.9}, None)  # apd improved, fd (the first objective) did not
        run.log_eval(3, {"fd": 4.0, "apd": 0.0}, None)
    assert len(calls) == 4  # the samples and the portrait of each new best
    c = MlflowClient(search["tracking_uri"])
    arts = {a.path for a in c.list_artifacts(run.run_id, "evals/step_1")}
    assert any(p.endswith("samples.gif") for p in arts), arts
    # the bundled portrait moved by the new best, beside the landmark GIF and at the top of the run
    assert "evals/step_1/portrait.gif" in arts and "evals/step_3/portrait.gif" in {
        a.path for a in c.list_artifacts(run.run_id, "evals/step_3")}
    assert not any(a.path.endswith("portrait.gif") for a in c.list_artifacts(run.run_id, "evals/step_2"))
    gif = Path(c.download_artifacts(run.run_id, "portrait.gif", str(tmp_path)))
    from PIL import Image

    with Image.open(gif) as im:
        assert im.format == "GIF" and im.size == (PORTRAIT_SIZE, PORTRAIT_SIZE)


def test_setup_clock_adds_up_its_phases(monkeypatch):
    """The set-up phases of a trial, reported with its first result (benchmarks/search.py)."""
    import launch.trainable as trainable

    now = iter([100.0, 100.5, 101.0, 103.0, 103.25])
    monkeypatch.setattr(trainable.time, "time", lambda: next(now))
    clock = SetupClock()
    clock.mark("config")
    clock.mark("data")
    clock.mark("config")  # a phase met twice adds up
    clock.mark("trainer_init")
    assert clock.result() == {"time_entry_wall": 100.0, "time_setup_config_s": 2.5, "time_setup_data_s": 0.5,
                              "time_setup_trainer_init_s": 0.25}


def test_reset_collects_the_previous_trials_cycles_and_freezes_the_rest():
    import gc
    import weakref

    from launch.trainable import reset_process_state

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cycle collector frees it
    gone = weakref.ref(a)
    del a, b
    try:
        reset_process_state(1, 0)
        assert gone() is None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_import_for_the_trial_loads_what_the_trial_loads_later(tmp_path):
    """Before the reset's freeze: torch._dynamo always, MLflow and its sqlite store only when the
    search tracks (a fresh interpreter: this one has loaded everything already)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from launch.trainable import import_for_the_trial\n"
        "assert 'torch._dynamo' not in sys.modules and 'mlflow' not in sys.modules\n"
        "import_for_the_trial(None)\n"
        "assert 'torch._dynamo' in sys.modules and 'mlflow' not in sys.modules\n"
        f"import_for_the_trial({('sqlite:///' + (tmp_path / 'm.db').as_posix())!r})\n"
        "assert 'mlflow.store.tracking.sqlalchemy_store' in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_a_portrait_that_cannot_be_drawn_does_not_fail_the_trial(search, capsys):
    run = _run(search, "nan_portrait", 10)
    run.trainer = SimpleNamespace(step=10, sample_fn=lambda refs, frames, seed:
                                  np.full((len(refs), frames + 1, 68, 2), np.nan, np.float32))
    with run:
        run.log_eval(10, {"fd": 1.0, "apd": 0.1}, None)
    assert _status(search, run.run_id) == ("FINISHED", "")
    assert "no portrait at step 10" in capsys.readouterr().err
    assert not any(a.path == "portrait.gif" for a in MlflowClient(search["tracking_uri"]).list_artifacts(run.run_id))
