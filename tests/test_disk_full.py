"""A full disk at each write site is one ``Error:`` line naming the file, the free space and the
space needed; what was written before stays intact, and the work continues once there is room.

The filesystem is real: a small tmpfs mounted for the test (as root, where mounting is allowed,
as on CI), else the same commands run under ``RLIMIT_FSIZE`` (writes past the limit fail with
EFBIG, which suhmo reports the same way; ``SUHMO_TEST_FSIZE=1`` takes that way as root too).
"Freeing space" is a remount with a larger size, or lifting the limit.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


class SmallDisk:
    """A folder on which writes fail past ``size`` bytes: a tmpfs of that size, or (where
    mounting is not allowed) ``RLIMIT_FSIZE`` in the commands :meth:`run` starts."""

    def __init__(self, base: Path, size: int):
        self.dir = base / f"disk-{uuid.uuid4().hex[:6]}"
        self.dir.mkdir()
        self.size = size
        self.mounted = False
        if os.geteuid() == 0 and not os.environ.get("SUHMO_TEST_FSIZE"):  # set: try the RLIMIT_FSIZE way here
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(self.dir)],
                               capture_output=True)
            self.mounted = r.returncode == 0
        self.fsize = None if self.mounted else size

    def grow(self, size: int) -> None:
        """Free space: a larger tmpfs (its files stay), or no file-size limit."""
        self.size = size
        if self.mounted:
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self.dir)], check=True)
        else:
            self.fsize = None

    def _limit(self):
        fsize = self.fsize
        if fsize is None:
            return None

        def apply():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        return apply

    def run(self, prog: str, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT), SUHMO_HOME=str(self.dir.parent / "home"))
        code = f"import sys; from suhmo.cli import run_cli; from {prog} import cli; sys.exit(run_cli(cli, sys.argv[1:]))"
        return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True,
                              timeout=timeout, preexec_fn=self._limit())

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.dir)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    disks = []

    def make(size: int) -> SmallDisk:
        disks.append(SmallDisk(tmp_path, size))
        return disks[-1]

    yield make
    for d in disks:
        d.close()


def one_error(r: subprocess.CompletedProcess, names: str) -> str:
    """The single ``Error:`` line of a failed command, which names ``names``; no traceback."""
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-2000:]
    assert "Traceback" not in out, out[-4000:]
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out[-3000:]
    line = errors[0]
    assert names in line and "disk full" in line and "needed" in line, line
    assert "free" in line or "ulimit -f" in line, line
    return line


def _train(disk: SmallDisk, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return disk.run("suhmo.cli", "train", "--preset", "tiny", "--iterations", "4", "--set", "train.eval_every=2",
                    "--out", str(out), *extra)


def _rows(path: Path) -> list[int]:
    return [json.loads(ln)["step"] for ln in path.read_text().splitlines()]


@pytest.mark.slow
def test_training_on_a_full_disk_is_one_line_and_resumes(small_disk):
    """2 MiB: the first checkpoint does not fit. 6 MiB: the first evaluation's last.pt and
    best.pt fit, the second's last.pt does not; last.pt of step 2 stays loadable, and the run
    resumes to its end once the disk is larger, every evaluation logged once."""
    from suhmo.checkpoint import load_checkpoint

    tiny = small_disk(2 * MiB)
    r = _train(tiny, tiny.dir / "run")
    one_error(r, "last.pt")
    assert not (tiny.dir / "run" / "last.pt").exists()
    assert not [p for p in (tiny.dir / "run").iterdir() if p.name.endswith(".tmp")]
    if not tiny.mounted:
        # RLIMIT_FSIZE bounds each file, not the folder: the run goes through once it is lifted;
        # a disk that fills between two checkpoints needs a real small filesystem (below)
        tiny.grow(64 * MiB)
        r = _train(tiny, tiny.dir / "run")
        assert r.returncode == 0 and load_checkpoint(tiny.dir / "run" / "last.pt")["step"] == 4, r.stderr[-2000:]
        return

    disk = small_disk(6 * MiB)
    run = disk.dir / "run"
    r = _train(disk, run)
    line = one_error(r, str(run))
    assert load_checkpoint(run / "last.pt")["step"] == 2, line
    assert _rows(run / "metrics.jsonl") == [2]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    disk.grow(64 * MiB)
    r = _train(disk, run, "--resume")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert load_checkpoint(run / "last.pt")["step"] == 4
    assert _rows(run / "metrics.jsonl") == [2, 4]


def test_metrics_append_on_a_full_disk_keeps_the_file(small_disk):
    """An append that does not fit: DiskFullError naming metrics.jsonl; the file keeps exactly
    its lines (no half line), and the append works once there is room."""
    from suhmo.utils import DiskFullError, append_line

    disk = small_disk(1 * MiB)
    if not disk.mounted:
        pytest.skip("needs a tmpfs (root with mount allowed): append_line runs in this process")
    log = disk.dir / "metrics.jsonl"
    lines = [json.dumps({"step": k, "fd": 0.5}) for k in range(3)]
    for ln in lines:
        append_line(log, ln)
    before = log.read_bytes()
    with open(disk.dir / "filler", "wb", buffering=0) as f:  # take every free block
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    big = json.dumps({"step": 3, "pad": "x" * 20000})  # more than the slack of the file's last page
    with pytest.raises(DiskFullError) as e:
        append_line(log, big)
    assert "metrics.jsonl" in str(e.value) and "needed" in str(e.value)
    assert log.read_bytes() == before
    (disk.dir / "filler").unlink()
    append_line(log, big)
    assert log.read_text().splitlines() == lines + [big]


@pytest.mark.parametrize("ext", [".gif", ".mp4"])
def test_render_on_a_full_disk_is_one_line(small_disk, tmp_path, ext):
    """The animation does not fit: one line; the file already there is unchanged."""
    from suhmo.data import save_landmarks, synthesize

    data = tmp_path / "clips.npz"
    save_landmarks(data, synthesize(2, 4.0, 0))
    disk = small_disk(256 * 1024)
    target = disk.dir / f"anim{ext}"
    target.write_bytes(b"old animation")
    r = disk.run("suhmo.cli", "render", str(data), "--grid", "2", "--size", "512", "--motion-map",
                 "--out", str(target))
    one_error(r, target.name)
    assert target.read_bytes() == b"old animation"
    assert sorted(p.name for p in disk.dir.iterdir()) == [target.name]
    disk.grow(64 * MiB)
    r = disk.run("suhmo.cli", "render", str(data), "--grid", "2", "--size", "512", "--motion-map",
                 "--out", str(target))
    assert r.returncode == 0, r.stderr[-2000:]
    assert target.stat().st_size > 10000


def test_export_on_a_full_disk_names_the_file(small_disk):
    """A generation export (generator.pt, config.yaml) that does not fit: DiskFullError naming
    generator.pt with the bytes it needs; nothing half-written is left."""
    from suhmo.checkpoint import write_export
    from suhmo.config import make_config
    from suhmo.models import build_generator
    from suhmo.utils import DiskFullError

    disk = small_disk(64 * 1024)
    if not disk.mounted:
        pytest.skip("needs a tmpfs (root with mount allowed): the export runs in this process")
    cfg = make_config("tiny", overrides={"model.hidden_g": 256})
    state = build_generator(cfg).state_dict()
    need = sum(v.numel() * v.element_size() for v in state.values())
    with pytest.raises(DiskFullError) as e:
        write_export(disk.dir / "export", state, cfg)
    msg = str(e.value)
    assert "generator.pt" in msg and "needed" in msg, msg
    assert e.value.needed is not None and e.value.needed >= need
    assert list((disk.dir / "export").iterdir()) == []
    disk.grow(64 * MiB)
    write_export(disk.dir / "export", state, cfg)
    assert sorted(p.name for p in (disk.dir / "export").iterdir()) == ["config.yaml", "generator.pt"]


def test_mlflow_artifacts_on_a_full_disk_wait_in_the_outbox(small_disk, tmp_path):
    """The MLflow store (sqlite database and artifacts) on a small disk: an evaluation whose
    checkpoint does not fit there is recorded at once (the trial does not wait), the replay's
    failure is a disk-full line in the outbox's status, and once there is room every step is
    logged exactly once, also when the replay runs again."""
    from mlflow import MlflowClient

    import tracking
    from tracking.outbox import Outbox, OutboxLogger, replay

    disk = small_disk(2 * MiB)
    if not disk.mounted:
        pytest.skip("needs a tmpfs (root with mount allowed): MLflow runs in this process")
    disk.grow(16 * MiB)  # room for the database's migrations; shrunk again below
    uri = f"sqlite:///{(disk.dir / 'mlflow.db').as_posix()}"
    exp = tracking.setup_experiment(uri, "full")
    parent = tracking.start_search_run(uri, exp, space_file=None, cli_options={}, study_seed=0, run_name="full",
                                       objectives=[["fd", "min"]])
    used = sum(p.stat().st_size for p in disk.dir.rglob("*") if p.is_file())
    disk.grow(used + 3 * MiB)
    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(os.urandom(4 * MiB))  # more than the store has room for
    box_dir = tmp_path / "outbox" / "t0"
    logger = OutboxLogger(box_dir, tracking_uri=uri, experiment_id=exp, parent_run_id=parent, trial_id="t0",
                          trial_name="t0", config={"model.variant": "rnn"}, seed=0, objectives=[["fd", "min"]],
                          retry_s=(0.5,))
    logger.log_eval(1, {"fd": 2.0}, ckpt)
    logger.log_eval(2, {"fd": 3.0}, ckpt)  # not an improvement: no checkpoint staged
    logger.close("FINISHED", wait_s=0)
    box = Outbox(box_dir)
    with pytest.raises(Exception) as e:
        replay(box, uri, exp, parent, wait_s=60)
    from tracking.outbox import describe_error

    assert "disk full" in describe_error(e.value), describe_error(e.value)
    assert box.waiting(uri, parent) >= 2
    disk.grow(64 * MiB)
    assert replay(box, uri, exp, parent, wait_s=60) == 0
    assert replay(box, uri, exp, parent, wait_s=60) == 0  # nothing left, nothing doubled
    client = MlflowClient(uri)
    run_id = box.load_state(uri, parent)["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "fd")] == [1, 2]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    arts = [a.path for a in client.list_artifacts(run_id, "checkpoints/step_1")]
    assert arts == ["checkpoints/step_1/last.pt"], arts


@pytest.mark.slow
def test_data_pack_on_a_full_disk_is_one_line_and_continues(small_disk, tmp_path):
    """``suhmo data pack`` into a folder that fills up: one line naming the shard or the index,
    the committed clips intact, and the same command finishes the pack once there is room."""
    import numpy as np

    from suhmo.data import save_landmarks, synthesize
    from suhmo.data.packed import PackedDataset

    ls = synthesize(40, 20.0, 0)  # 20 k frames, 10.9 MB as float32
    src = tmp_path / "src.npz"
    save_landmarks(src, ls)
    disk = small_disk(4 * MiB)
    out = disk.dir / "packed"
    r = disk.run("suhmo.cli", "data", "pack", str(src), "--out", str(out), "--no-progress", "--shard-mb", "2")
    one_error(r, str(out))
    done = len(PackedDataset(out)) if (out / "clips.jsonl").exists() else 0
    assert done < len(ls)
    disk.grow(64 * MiB)
    r = disk.run("suhmo.cli", "data", "pack", str(src), "--out", str(out), "--no-progress", "--shard-mb", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    ds = PackedDataset(out)
    assert len(ds) == len(ls) and list(ds.meta["source_clip"]) == list(range(len(ls)))
    assert all(np.array_equal(np.asarray(ds.raw(i)), ls.clips[i]) for i in (0, len(ls) // 2, len(ls) - 1))
