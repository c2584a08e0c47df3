"""The degradation check: every landmark distance ranks held-out real data closest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from suhmo.metrics import sanity as sn


def _check_ordering(res: dict) -> None:
    assert set(res["metrics"]) == set(sn.DISTANCES)
    for name, row in res["metrics"].items():
        assert set(row) == set(sn.CONDITIONS)
        for cond in sn.DEGRADATIONS:
            assert row["real"] < row[cond], f"{name}: real {row['real']:.3f} >= {cond} {row[cond]:.3f}"
    assert sn.failures(res) == []


def test_degradations_do_what_they_say():
    from suhmo.data import normalize_set, synthesize

    clips = normalize_set(synthesize(2, 4.0, 3), "bbox", 1.1).clips
    sets = sn.degraded_sets(clips, stride=10, seed=0)
    real = sets["real"]
    assert all(len(sets[c]) == len(real) for c in sn.CONDITIONS)
    assert np.ptp(sets["frozen"], axis=1).max() == 0
    assert np.allclose(np.sort(sets["shuffled"][..., 0, 0], 1), np.sort(real[..., 0, 0], 1))
    assert not np.allclose(sets["shuffled"], real)
    dev = np.abs(sets["drift"] - real).mean((2, 3))
    assert dev[:, 0].max() == 0 and (dev[:, -1] > dev[:, 20]).all()  # grows from nothing
    assert len(np.unique(sets["collapse"][:, 0, 0, 0])) <= len(real) // 2
    speed = lambda w: np.abs(np.diff(w, axis=1)).mean()  # noqa: E731  (noise does not scale with 2x)
    assert speed(sets["fast"]) > 1.3 * speed(real) and speed(sets["slow"]) < 0.6 * speed(real)


def test_split_keeps_persons_together_and_balances():
    rng = np.random.default_rng(0)
    clips = [rng.normal(size=(n, 68, 2)).cumsum(0) * s for n, s in
             [(100, 1), (120, 1), (80, 3), (90, 3), (300, 1), (60, 2), (70, 2)]]
    persons = ["a", "b", "c", "d", "e", "a", "f"]
    ref, held = sn.balanced_person_split(clips, persons)
    assert sorted(ref + held) == list(range(7))
    assert {persons[i] for i in ref}.isdisjoint({persons[i] for i in held})
    frames = [sum(len(clips[i]) for i in side) for side in (ref, held)]
    assert max(frames) / min(frames) < 1.6
    with pytest.raises(ValueError, match="two persons"):
        sn.balanced_person_split(clips[:2], ["a", "a"])


def test_ordering_on_synthetic_data():
    from suhmo.data import normalize_set, synthesize

    ls = normalize_set(synthesize(24, 6.0, 0), "bbox", 1.1)
    _check_ordering(sn.run_sanity(ls.clips, ls.persons(), stride=5, seed=0))


def test_ordering_on_the_real_dev_set_via_cli(dev_data):
    from suhmo.cli import cli

    r = CliRunner().invoke(cli, ["metrics", "sanity", "--data", str(dev_data), "--json"])
    assert r.exit_code == 0, r.output
    assert "every distance ranks real closest" in r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    _check_ordering(res)
    assert res["split"]["reference"]["windows"] > 100 and res["split"]["held_out"]["windows"] > 100
