"""The scale beside every distance: a frozen face and real data under the model's protocol
(suhmo.metrics.scale), cached; `suhmo evaluate` prints both rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from suhmo.metrics import MetricOptions, compute
from suhmo.metrics import landmark as lm
from suhmo.metrics.scale import ROWS, format_scale, frozen_sample_fn, scale_rows, verdict


@pytest.fixture(scope="module")
def halves():
    from suhmo.data import normalize_set, synthesize

    return (normalize_set(synthesize(10, 6.0, 0), "bbox", 1.1).clips,
            normalize_set(synthesize(8, 6.0, 5), "bbox", 1.1).clips)


def test_scale_rows_are_the_protocol_applied_to_a_frozen_face_and_to_real_data(halves, tmp_path, monkeypatch):
    ref, other = halves
    opts = MetricOptions(real=list(ref), real_fps=25.0, num_samples=24, seed=3, cache_dir=tmp_path)
    scale = scale_rows(opts, list(other), 25.0)
    assert set(scale) == set(ROWS) and all(set(scale[r]) == set(lm.FD_KEYS) for r in ROWS)
    # frozen face = a generator that holds its reference pose, scored exactly as a model is
    frozen = compute(["landmark"], opts.replace(sample_fn=frozen_sample_fn))
    assert scale["frozen face"] == pytest.approx({k: frozen[k] for k in lm.FD_KEYS})
    # real data = windows of the other persons' clips, as many as the model's samples
    real = compute(["landmark"], opts.replace(sequences=lm.real_windows(list(other), 41, opts.stride)))
    assert scale["real data"] == pytest.approx({k: real[k] for k in lm.FD_KEYS})
    # real motion is far closer to the reference than no motion on the clip distances
    for k in ("fd_clip10", "fd_clip20", "fd_clip40"):
        assert scale["real data"][k] < 0.5 * scale["frozen face"][k], (k, scale)
    # cached like the reference statistics: the second call reads the file, computes nothing
    files = list((tmp_path / "metrics").glob("scale-*.npz"))
    assert len(files) == 1 and files[0].with_suffix(".json").is_file()
    monkeypatch.setattr("suhmo.metrics.compute", lambda *a, **k: pytest.fail("recomputed"))
    assert scale_rows(opts, list(other), 25.0) == scale
    # another protocol (seed) is another cache entry
    monkeypatch.undo()
    scale_rows(opts.replace(seed=4), list(other), 25.0)
    assert len(list((tmp_path / "metrics").glob("scale-*.npz"))) == 2


def test_verdict_and_table():
    scale = {"frozen face": {k: 10.0 for k in lm.FD_KEYS}, "real data": {k: 1.0 for k in lm.FD_KEYS}}
    model = {k: 5.0 for k in lm.FD_KEYS} | {"fd_clip40": 12.0, "apd": 0.1}
    assert verdict(model, scale) == ["fd_clip40"]
    lines = format_scale(model, scale)
    assert lines[0].split() == list(lm.FD_KEYS)
    assert [ln.split("  ")[0].strip() for ln in lines[1:]] == ["model", "frozen face", "real data"]
    assert lines[1].split()[-2] == "12"


def train_tiny(out, seconds: float = 4.0):
    """A 2-iteration tiny model on 8 synthetic clips of ``seconds`` s, trained into ``out``."""
    from suhmo.config import make_config
    from suhmo.train import Trainer

    cfg = make_config("tiny", overrides={"data.seq_len": 16, "windows.tau_max": 16, "data.synth_clips": 8,
                                         "data.synth_seconds": seconds, "train.iterations": 2,
                                         "train.eval_every": 2, "eval.samples": 8, "eval.frames": 16,
                                         "train.device": "cpu"})
    Trainer(cfg, out).fit()
    return out


def test_evaluate_prints_frozen_face_and_real_data_rows(tmp_path):
    from suhmo.cli import cli

    out = train_tiny(tmp_path / "run")
    args = ["evaluate", "--checkpoint", str(out / "last.pt"), "--samples", "8", "--device", "cpu"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rows = {ln.split("  ")[0].strip(): ln for ln in r.output.splitlines()}
    assert "frozen face" in rows and "real data" in rows and "model" in rows, r.output
    rec = json.loads((out / "eval.jsonl").read_text().splitlines()[-1])
    assert set(rec["scale"]) == set(ROWS)
    for k in lm.FD_KEYS:  # the printed model row is the one scored, beside the same protocol's rows
        assert np.isfinite(rec["scale"]["frozen face"][k]) and np.isfinite(rec["scale"]["real data"][k])
    assert f"{rec['results']['fd_clip40']:.4g}" in rows["model"]
    cached = list((tmp_path / "suhmo-home" / "cache" / "metrics").glob("scale-*.npz"))
    assert len(cached) == 1
    r2 = CliRunner().invoke(cli, args)
    assert r2.exit_code == 0 and [ln for ln in r2.output.splitlines() if ln.startswith("frozen face")] == \
        [ln for ln in r.output.splitlines() if ln.startswith("frozen face")]
