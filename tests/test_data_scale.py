"""The packed dataset format (suhmo.data.packed), data pack, lazy training windows and the
bounded, streamed metric statistics: corpora larger than memory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from suhmo.data import DataError, LandmarkSet, load_landmarks, normalize_clip, save_landmarks, synthesize
from suhmo.data.packed import (CLIPS_FILE, HEADER_BYTES, PackedDataset, PackWriter, pack_npz,
                               shard_name)
from suhmo.data.windows import WindowSet, window_starts

BIN = Path(sys.executable).parent


def _set(n=12, seconds=4.0, seed=0, fps=25.0) -> LandmarkSet:
    ls = synthesize(n, seconds, seed, fps=fps)
    ls.meta["person"] = np.array([f"p{i // 2}" for i in range(n)])
    return ls


@pytest.fixture
def npz(tmp_path) -> Path:
    p = tmp_path / "set.npz"
    save_landmarks(p, _set())
    return p


def test_pack_round_trip_and_lazy_normalisation(tmp_path, npz):
    ls = load_landmarks(npz)
    out = tmp_path / "packed"
    w = pack_npz([npz], out, progress=False, shard_bytes=200 * 544)  # several shards
    assert w.num_clips == len(ls) and len(list(out.glob("shard-*.f32"))) > 2
    packed = load_landmarks(out)
    assert packed.lazy and len(packed) == len(ls) and packed.num_frames == ls.num_frames
    assert list(packed.persons()) == list(ls.persons())
    for i in range(len(ls)):
        assert np.array_equal(packed.clips[i], ls.clips[i])
    from suhmo.data import normalize_set

    for mode in ("bbox", "centred"):
        lazy, eager = normalize_set(packed, mode), normalize_set(ls, mode)
        for i in range(len(ls)):  # normalised window by window, bit for bit as whole clips
            assert np.array_equal(lazy.clips[i], eager.clips[i])
            assert np.array_equal(lazy.clips.window(i, 7, 30), eager.clips[i][7:37])


def test_pack_resamples_and_keeps_metadata(tmp_path):
    ls = _set(4, 3.0, fps=30.0)
    p = tmp_path / "at30.npz"
    save_landmarks(p, ls)
    pack_npz([p], tmp_path / "pk", fps=25.0, progress=False)
    ds = PackedDataset(tmp_path / "pk")
    assert ds.fps == 25.0 and set(ds.meta["src_fps"]) == {30.0}
    assert list(ds.meta["person"]) == list(ls.meta["person"])
    assert ds.lengths[0] == len(load_landmarks(p, fps=25.0).clips[0])
    with pytest.raises(DataError, match="packed at 25 fps.*--fps 30"):
        load_landmarks(tmp_path / "pk", fps=30.0)


def test_split_and_batches_equal_the_npz_path(tmp_path, npz):
    from suhmo.config import make_config
    from suhmo.data import load_dataset
    from suhmo.data.loading import make_sampler

    pack_npz([npz], tmp_path / "pk", progress=False)
    batches = {}
    for path in (npz, tmp_path / "pk"):
        cfg = make_config("tiny", overrides={"data.path": str(path)})
        train, held = load_dataset(cfg).split_by_person(0.25, seed=0)
        s = make_sampler(train, cfg, seed=5)
        batches[str(path)] = (list(held.persons()), [s.next() for _ in range(3)],
                              train.frames_at([0, 17, train.num_frames - 1]))
    (p1, b1, f1), (p2, b2, f2) = batches.values()
    assert p1 == p2 and np.array_equal(f1, f2)
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2))


def test_training_on_packed_data_matches_npz(tmp_path, npz):
    from suhmo.config import make_config
    from suhmo.train import Trainer

    pack_npz([npz], tmp_path / "pk", progress=False)
    losses = []
    for i, path in enumerate((npz, tmp_path / "pk")):
        cfg = make_config("tiny", overrides={"data.path": str(path), "train.iterations": 4, "train.eval_every": 4,
                                             "eval.samples": 8, "model.space": "semantic"})
        res = Trainer(cfg, tmp_path / f"run{i}").fit()
        losses.append({k: v for k, v in res.items() if k.startswith(("loss_", "fd_"))})
    assert losses[0] == losses[1] and losses[0]


def test_interrupted_writer_loses_nothing_committed(tmp_path):
    ls = _set(6)
    out = tmp_path / "pk"
    with PackWriter(out, fps=25.0) as w:
        for i in range(4):
            w.add(ls.clips[i], {"person": f"p{i}", "source": f"v{i}"})
    # a crash during the next commit: frames written past the last clip, half an index line
    with open(out / shard_name(0), "ab") as f:
        f.write(ls.clips[4].tobytes()[:1000])
    with open(out / CLIPS_FILE, "ab") as f:
        f.write(b'{"shard": 0, "start": 9')
    ds = PackedDataset(out)  # readers ignore the uncommitted tail
    assert len(ds) == 4
    with PackWriter(out, fps=25.0) as w:  # the writer cuts it off and continues
        assert w.sources() == {"v0", "v1", "v2", "v3"}
        w.add(ls.clips[4], {"person": "p4", "source": "v4"})
    ds = PackedDataset(out)
    assert len(ds) == 5 and np.array_equal(np.asarray(ds.raw(4)), ls.clips[4])
    assert np.array_equal(np.asarray(ds.raw(3)), ls.clips[3])


def test_killed_pack_continues_without_duplicates(tmp_path):
    big = synthesize(400, 30.0, 3)  # 300 k frames: the pack runs long enough to be killed
    src = tmp_path / "big.npz"
    save_landmarks(src, big)
    out = tmp_path / "pk"
    cmd = [str(BIN / "suhmo"), "data", "pack", str(src), "--out", str(out), "--no-progress", "--shard-mb", "16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / CLIPS_FILE).exists() and (out / CLIPS_FILE).stat().st_size > 0:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = len(PackedDataset(out)) if (out / CLIPS_FILE).exists() else 0
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    ds = PackedDataset(out)
    assert len(ds) == len(big) and ds.num_frames == big.num_frames
    assert list(ds.meta["source_clip"]) == list(range(len(big)))  # each clip once, in order
    for i in (0, before, len(big) - 1):
        assert np.array_equal(np.asarray(ds.raw(i)), big.clips[i])
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert "already packed" in again.stdout and len(PackedDataset(out)) == len(big)


@pytest.mark.parametrize("fault, message", [
    ("truncated", "truncated shard"),
    ("foreign", "a shard of another dataset"),
    ("index_beyond", "truncated shard"),
    ("overlap", "inside the previous clip"),
    ("bad_json", "line 2: malformed clip record"),
    ("no_index", "a folder without dataset.json"),
    ("renamed", "header says shard 0"),
])
def test_hostile_packed_sets_are_one_line(tmp_path, npz, fault, message):
    out = tmp_path / "pk"
    pack_npz([npz], out, progress=False, shard_bytes=400 * 544)
    lines = (out / CLIPS_FILE).read_text().splitlines()
    if fault == "truncated":
        with open(out / shard_name(1), "rb+") as f:
            f.truncate(HEADER_BYTES + 544 * 10)
    elif fault == "foreign":
        pack_npz([npz], tmp_path / "other", progress=False, shard_bytes=400 * 544)
        shutil.copy(tmp_path / "other" / shard_name(1), out / shard_name(1))
    elif fault == "index_beyond":
        rec = json.loads(lines[-1])
        rec["frames"] += 10_000
        lines[-1] = json.dumps(rec)
    elif fault == "overlap":
        rec = json.loads(lines[1])
        rec["start"] = 3
        rec["shard"] = json.loads(lines[0])["shard"]
        lines[1] = json.dumps(rec)
    elif fault == "bad_json":
        lines[1] = "{not json"
    elif fault == "no_index":
        (out / "dataset.json").unlink()
    elif fault == "renamed":
        shutil.copy(out / shard_name(0), out / shard_name(1))
    if fault in ("index_beyond", "overlap", "bad_json"):
        (out / CLIPS_FILE).write_text("\n".join(lines) + "\n")
    res = subprocess.run([str(BIN / "suhmo"), "data", "check", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("Error:") and message in err[0], res.stderr


def test_edited_shard_with_nan_is_caught_by_data_check(tmp_path, npz):
    out = tmp_path / "pk"
    pack_npz([npz], out, progress=False)
    with open(out / shard_name(0), "rb+") as f:
        f.seek(HEADER_BYTES + 544 * 150)
        f.write(np.full(136, np.nan, np.float32).tobytes())
    res = subprocess.run([str(BIN / "suhmo"), "data", "check", str(out)], capture_output=True, text=True)
    assert res.returncode == 2 and "NaN or inf at frame" in res.stderr and "clip 1" in res.stderr


def test_memory_guard_applies_to_what_is_loaded(tmp_path, monkeypatch):
    ls = _set(12)
    p = tmp_path / "s.npz"
    save_landmarks(p, ls)
    pack_npz([p], tmp_path / "pk", progress=False)
    limit = ls.num_frames * 544 // 4  # a quarter of the data
    monkeypatch.setenv("SUHMO_MAX_DATA_BYTES", str(limit))
    with pytest.raises(DataError, match="over the .* limit"):
        load_landmarks(p)  # an .npz is loaded whole
    packed = load_landmarks(tmp_path / "pk")  # a packed set is mapped: the guard is per read
    assert packed.clips.window(0, 0, 10).shape == (10, 68, 2)
    monkeypatch.setenv("SUHMO_MAX_DATA_BYTES", str(544 * 50))
    with pytest.raises(DataError, match="limit on what is loaded at once"):
        packed.clips[0]


def test_window_sampling_is_bounded_seeded_and_complete_below_the_bound():
    lengths = np.array([100, 30, 260, 41, 90])
    c, s = window_starts(lengths, 41, 5, max_windows=None)
    expect = [(i, t) for i, n in enumerate(lengths) for t in range(0, n - 41 + 1, 5)]
    assert list(zip(c.tolist(), s.tolist())) == expect
    c2, s2 = window_starts(lengths, 41, 5, max_windows=10, seed=1)
    assert len(c2) == 10 and set(zip(c2.tolist(), s2.tolist())) <= set(expect)
    c3, s3 = window_starts(lengths, 41, 5, max_windows=10, seed=1)
    assert np.array_equal(c2, c3) and np.array_equal(s2, s3)


def test_streamed_reference_equals_the_direct_fit():
    from suhmo.metrics import landmark as lm
    from suhmo.metrics.frechet import feature_stats

    clips = synthesize(16, 8.0, 2).clips
    windows = lm.real_windows(clips)
    ref = lm.LandmarkReference.fit(WindowSet(clips, 41, 5, None), chunk=37)  # streamed, odd chunks
    seg = lm.scored_segment(windows).astype(np.float64)
    basis = lm.LandmarkBasis.fit(seg[:, 1:].reshape(-1, 68, 2))
    assert np.allclose(basis.pca_basis, ref.basis.pca_basis)
    basis.vel_std = np.maximum(np.diff(basis.state(seg), axis=1).reshape(-1, lm.STATE_DIM).std(0), 1e-9)
    assert np.allclose(basis.vel_std, ref.basis.vel_std, rtol=1e-10)
    for name, f in lm.raw_features(basis, seg).items():
        mean, std = f.mean(0), np.maximum(f.std(0), 1e-9)
        mu, sigma = feature_stats((f - mean) / std)
        assert np.allclose(ref.norm[name][0], mean, rtol=1e-9, atol=1e-12)
        assert np.allclose(ref.norm[name][1], std, rtol=1e-9)
        assert np.allclose(ref.gauss[name][1], sigma, rtol=1e-8, atol=1e-10)
        assert np.allclose(mu, 0, atol=1e-9)


def test_sampled_statistics_are_stable():
    """Two disjoint-seeded samples of 1024 windows out of ~9000 give reference statistics under
    which the same generated-like sequences score within a few percent of the full set's."""
    from suhmo.metrics import landmark as lm

    clips = synthesize(60, 32.0, 4).clips  # 48 k frames, ~9 k windows at stride 5
    full = lm.LandmarkReference.fit(WindowSet(clips, 41, 5, None))
    probe = lm.real_windows(synthesize(12, 8.0, 99).clips, 41, 5)  # other speakers as "generated"
    base = lm.fd_metrics(probe, full)
    for seed in (1, 2):
        ws = WindowSet(clips, 41, 5, max_windows=1024, seed=seed)
        assert len(ws) == 1024
        vals = lm.fd_metrics(probe, lm.LandmarkReference.fit(ws))
        for k in lm.FD_KEYS:
            assert abs(vals[k] - base[k]) <= 0.15 * base[k] + 0.5, (seed, k, vals[k], base[k])


def test_commands_accept_a_packed_folder(tmp_path, npz):
    out = tmp_path / "pk"
    res = subprocess.run([str(BIN / "suhmo"), "data", "pack", str(npz), "--out", str(out), "--no-progress"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "12 clips" in res.stdout, res.stderr
    env = {**os.environ, "SUHMO_HOME": str(tmp_path / "home")}
    check = subprocess.run([str(BIN / "suhmo"), "data", "check", str(out), "--json"], capture_output=True,
                           text=True, env=env)
    assert check.returncode == 0 and json.loads(check.stdout.splitlines()[-1])["clips"] == 12
    ref = subprocess.run([str(BIN / "suhmo"), "metrics", "ref", "--data", str(out), "--preset", "tiny"],
                         capture_output=True, text=True, env=env)
    assert ref.returncode == 0 and "windows" in ref.stdout, ref.stderr
    run = tmp_path / "run"
    tr = subprocess.run([str(BIN / "suhmo"), "train", "--preset", "tiny", "--data", str(out), "--out", str(run),
                         "--iterations", "2", "--set", "train.eval_every=2", "--set", "eval.samples=8"],
                        capture_output=True, text=True, env=env)
    assert tr.returncode == 0 and (run / "last.pt").is_file(), tr.stderr
    gen = subprocess.run([str(BIN / "suhmo"), "generate", "--checkpoint", str(run / "last.pt"), "--reference-from",
                          f"{out}:3", "--frames", "8", "--out", str(tmp_path / "m.npz")],
                         capture_output=True, text=True, env=env)
    assert gen.returncode == 0, gen.stderr
    ls = load_landmarks(npz)
    first = normalize_clip(ls.clips[3], "bbox", 1.1)[0][0]
    with np.load(tmp_path / "m.npz") as z:
        assert np.allclose(z["flat"][0], first, atol=1e-6)


@pytest.mark.slow
def test_private_memory_of_training_stays_flat_on_half_a_million_frames(tmp_path):
    """The cpu preset trains on a packed set of ~0.5 M frames (272 MB as float32) with a cold
    statistics cache holding far less private memory than the data, and about what it holds on
    a set 16x smaller: the data is mapped, the statistics read a bounded sample."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from memory import peak_private_memory

    from suhmo.data.packed import PackWriter

    base = synthesize(48, 8.0, 0)
    peaks = {}
    for name, copies in (("small", 6), ("large", 96)):
        out = tmp_path / name
        with PackWriter(out, fps=25.0, commit_every=5.0) as w:
            for k in range(copies):
                for i, c in enumerate(base.clips):
                    w.add(c, {"person": f"t{k}-{i}"})
        env = {**os.environ, "SUHMO_HOME": str(tmp_path / f"home-{name}"), "OMP_NUM_THREADS": "1"}
        peak, rc, _, tail = peak_private_memory(
            [str(BIN / "suhmo"), "train", "--preset", "cpu", "--data", str(out), "--out", str(tmp_path / f"r-{name}"),
             "--iterations", "4", "--set", "train.eval_every=2", "--set", "eval.samples=32",
             "--set", "train.progress=false"], env=env)
        assert rc == 0, tail
        peaks[name] = (peak, w.num_frames)
    (small, n_small), (large, n_large) = peaks["small"], peaks["large"]
    assert n_large >= 480_000
    assert large < 1.5e9, f"peak private memory {large / 1e9:.2f} GB on {n_large} frames"
    assert large < small * 1.25 + 150e6, f"{small / 1e9:.2f} GB on {n_small} frames, {large / 1e9:.2f} GB on {n_large}"


READER = """
import sys, numpy as np
from suhmo.config import make_config
from suhmo.data import load_dataset
from suhmo.data.loading import make_sampler
def private():
    with open('/proc/self/smaps_rollup') as f:
        return sum(int(l.split()[1]) * 1024 for l in f if l.startswith(('Pss_Anon:', 'Pss_Shmem:')))
def rss_file():
    with open('/proc/self/status') as f:
        return [int(l.split()[1]) * 1024 for l in f if l.startswith('RssFile:')][0]
cfg = make_config('tiny', overrides={'data.path': sys.argv[1], 'train.batch_size': 64})
ls = load_dataset(cfg)
sampler = make_sampler(ls, cfg, seed=0)
p0, f0 = private(), rss_file()
for _ in range(300):
    sampler.next()
for i in range(len(ls.clips)):  # every page of every shard
    ls.clips.window(i, 0, int(ls.lengths[i]))
print(private() - p0, rss_file() - f0, flush=True)
sys.stdin.read()
"""


def test_processes_reading_a_packed_set_share_one_copy(tmp_path):
    """Two processes that read every frame of a packed set (55 MB) hold it in the shared page
    cache (RssFile), not in their private memory: a node keeps one copy whatever the trials."""
    from suhmo.data.packed import PackWriter

    base = synthesize(48, 8.0, 0)
    with PackWriter(tmp_path / "pk", fps=25.0, commit_every=5.0) as w:
        for k in range(10):
            for i, c in enumerate(base.clips):
                w.add(c, {"person": f"t{k}-{i}"})
    size = w.num_frames * 544
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(tmp_path / "pk")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        grown = [tuple(map(int, p.stdout.readline().split())) for p in procs]
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(30)
    for private, mapped in grown:
        assert mapped > 0.9 * size, (mapped, size)  # the frames were read through the map
        assert private < 0.25 * size, (private, size)  # and not copied into the process
