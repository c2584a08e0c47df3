"""The hostile-input catalogue: bad data files, configs, search spaces, CLI values and
checkpoints, each of which must end in a non-zero exit and exactly one ``Error:`` line that
names what is wrong and where, with no traceback, no pre-existing file changed, and bounded
memory and time.

All hostile files are built in one temporary folder; the cases run in ONE subprocess
(``tests/hostile_runner.py``: torch imported once, ``RLIMIT_AS`` capped, a 30 s alarm per
case), so the whole catalogue takes well under a minute. Landmark files are bounded by
``SUHMO_MAX_DATA_BYTES``, set low here so that a zip bomb of 100 MB unpacked (built in a
second) stands for the 3 GB one of the issue; the forged 10^10-frame header is refused by
the default limit itself.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
AS_LIMIT = 4 << 30  # address space of the runner: torch needs ~0.7 GB of it
RSS_LIMIT = 1536 << 20  # peak resident memory of the runner after any case
CASE_SECONDS = 20.0
DATA_LIMIT = 64 << 20  # SUHMO_MAX_DATA_BYTES in the runner


# ---------------------------------------------------------------------- hostile files
def _npy(shape, dtype="<f4", data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def _good_arrays() -> dict:
    from suhmo.data import synthesize

    ls = synthesize(2, 3.0, 0, fps=25.0)
    lengths = [len(c) for c in ls.clips]
    return {"flat": np.concatenate(ls.clips).astype(np.float32),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "fps": np.float32(25.0)}


def _savez(path: Path, **arrays) -> str:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
    return str(path)


def _with(base: dict, **changes) -> dict:
    out = dict(base)
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


def build_files(d: Path) -> dict[str, str]:
    """Every hostile (and a few good) input files in ``d``; name -> path."""
    f: dict[str, str] = {}
    good = _good_arrays()
    n = len(good["flat"])
    f["good"] = _savez(d / "good.npz", **good)
    (d / "folder.npz").mkdir()
    f["folder"] = str(d / "folder.npz")
    os.mkfifo(d / "pipe.npz")
    f["fifo"] = str(d / "pipe.npz")
    os.mkfifo(d / "pipe.yaml")
    f["fifo_yaml"] = str(d / "pipe.yaml")
    os.mkfifo(d / "pipe.npy")
    f["fifo_npy"] = str(d / "pipe.npy")
    os.mkfifo(d / "pipe.pt")
    f["fifo_pt"] = str(d / "pipe.pt")
    (d / "empty.npz").write_bytes(b"")
    f["empty"] = str(d / "empty.npz")
    (d / "text.npz").write_text("flat,offsets,fps\n1,2,3\n")
    f["text"] = str(d / "text.npz")
    raw = Path(f["good"]).read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    f["truncated"] = str(d / "truncated.npz")
    f["pickle_member"] = _savez(d / "pickle.npz", **good, person=np.array([{"a": 1}, None], dtype=object))
    f["no_fps"] = _savez(d / "no_fps.npz", **_with(good, fps=None))
    f["no_offsets"] = _savez(d / "no_offsets.npz", **_with(good, offsets=None))
    f["xyz"] = _savez(d / "xyz.npz", **_with(good, flat=np.zeros((n, 68, 3), np.float32)))
    f["str_flat"] = _savez(d / "str_flat.npz", **_with(good, flat=np.full((n, 68, 2), "a")))
    bad_off = good["offsets"].copy()
    bad_off[1] = bad_off[2]
    f["non_increasing"] = _savez(d / "non_increasing.npz", **_with(good, offsets=bad_off))
    short_end = good["offsets"].copy()
    short_end[-1] -= 1
    f["offsets_end"] = _savez(d / "offsets_end.npz", **_with(good, offsets=short_end))
    f["float_offsets"] = _savez(d / "float_offsets.npz", **_with(good, offsets=good["offsets"].astype(np.float32)))
    nan = good["flat"].copy()
    nan[good["offsets"][1] + 3, 10, 0] = np.nan
    f["nan"] = _savez(d / "nan.npz", **_with(good, flat=nan))
    inf = good["flat"].copy()
    inf[5, 0, 1] = np.inf
    f["inf"] = _savez(d / "inf.npz", **_with(good, flat=inf))
    f["neg_fps"] = _savez(d / "neg_fps.npz", **_with(good, fps=np.float32(-25)))
    f["str_fps"] = _savez(d / "str_fps.npz", **_with(good, fps=np.array("fast")))
    f["short"] = _savez(d / "short.npz", **_with(good, flat=good["flat"][:60],
                                                 offsets=np.array([0, 30, 60], np.int64)))
    f["zeros"] = _savez(d / "zeros.npz", **_with(good, flat=np.zeros_like(good["flat"])))
    f["constant"] = _savez(d / "constant.npz", **_with(good, flat=np.full_like(good["flat"], 5.0)))
    line = good["flat"].copy()
    line[good["offsets"][1]:, :, 1] = 0.5  # clip 1 collapsed onto a horizontal line
    f["line"] = _savez(d / "line.npz", **_with(good, flat=line))
    # a zip bomb: 100 MB of zeros in a ~100 KB archive (over the runner's 64 MB limit)
    bomb_frames = (100 << 20) // (68 * 2 * 4)
    with zipfile.ZipFile(d / "bomb.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("flat.npy", "w", force_zip64=True) as m:
            m.write(_npy((bomb_frames, 68, 2)))
            chunk = bytes(68 * 2 * 4 * 4096)
            for _ in range(bomb_frames // 4096):
                m.write(chunk)
            m.write(bytes(68 * 2 * 4 * (bomb_frames % 4096)))
        z.writestr("offsets.npy", _npy((2,), "<i8", np.array([0, bomb_frames], np.int64).tobytes()))
        z.writestr("fps.npy", _npy((), "<f4", np.float32(25).tobytes()))
    f["bomb"] = str(d / "bomb.npz")
    # 1.7 KB declaring 10^10 x 68 x 2 float32 (5 TB)
    with zipfile.ZipFile(d / "forged.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("flat.npy", _npy((10 ** 10, 68, 2)))
        z.writestr("offsets.npy", _npy((2,), "<i8", np.array([0, 10 ** 10], np.int64).tobytes()))
        z.writestr("fps.npy", _npy((), "<f4", np.float32(25).tobytes()))
    f["forged"] = str(d / "forged.npz")
    # a header declaring more frames than the member holds (small: within every limit)
    with zipfile.ZipFile(d / "short_member.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("flat.npy", _npy((1000, 68, 2), "<f4", bytes(10 * 68 * 2 * 4)))
        z.writestr("offsets.npy", _npy((2,), "<i8", np.array([0, 1000], np.int64).tobytes()))
        z.writestr("fps.npy", _npy((), "<f4", np.float32(25).tobytes()))
    f["short_member"] = str(d / "short_member.npz")
    # a corrupt member: bytes flipped inside the compressed data
    corrupt = bytearray(raw)
    mid = len(corrupt) // 3
    corrupt[mid:mid + 64] = bytes(64)
    (d / "corrupt.npz").write_bytes(bytes(corrupt))
    f["corrupt"] = str(d / "corrupt.npz")
    np.save(d / "single.npy", good["flat"])
    f["single_npy"] = str(d / "single.npy")

    # reference poses
    pose = good["flat"][0]
    np.save(d / "pose.npy", pose)
    f["pose"] = str(d / "pose.npy")
    np.save(d / "pose_str.npy", np.full((68, 2), "x"))
    f["pose_str"] = str(d / "pose_str.npy")
    np.save(d / "pose_xyz.npy", np.zeros((68, 3), np.float32))
    f["pose_xyz"] = str(d / "pose_xyz.npy")
    nanpose = pose.copy()
    nanpose[3, 0] = np.nan
    np.save(d / "pose_nan.npy", nanpose)
    f["pose_nan"] = str(d / "pose_nan.npy")
    np.save(d / "pose_obj.npy", np.array([pose, None], dtype=object), allow_pickle=True)
    f["pose_obj"] = str(d / "pose_obj.npy")

    # checkpoints
    from suhmo.config import make_config

    cfg = make_config("tiny")
    torch.save({"format": "suhmo-checkpoint", "version": 1}, d / "bare.pt")
    f["ck_bare"] = str(d / "bare.pt")
    (d / "garbage.pt").write_bytes(os.urandom(2048))
    f["ck_garbage"] = str(d / "garbage.pt")
    torch.save({"format": "suhmo-checkpoint", "version": 99, "step": 0, "config": cfg.to_dict(), "G": {}},
               d / "future.pt")
    f["ck_future"] = str(d / "future.pt")
    torch.save({"format": "suhmo-checkpoint", "version": 1, "step": 0, "config": cfg.to_dict(), "G": {}},
               d / "no_weights.pt")
    f["ck_no_weights"] = str(d / "no_weights.pt")
    torch.save({"format": "suhmo-checkpoint", "version": 1, "step": 0, "config": {"model": 5}, "G": {}},
               d / "bad_config.pt")
    f["ck_bad_config"] = str(d / "bad_config.pt")
    torch.save({"format": "suhmo-checkpoint", "version": 1, "step": "x", "config": cfg.to_dict(), "G": {}},
               d / "str_step.pt")
    f["ck_str_step"] = str(d / "str_step.pt")
    torch.save(_Evil(), d / "evil.pt")  # unpickling would run code: weights_only refuses it
    f["ck_evil"] = str(d / "evil.pt")
    torch.save([1, 2, 3], d / "list.pt")
    f["ck_list"] = str(d / "list.pt")
    (d / "export").mkdir()
    torch.save({"w": "not a tensor"}, d / "export" / "generator.pt")
    (d / "export" / "config.yaml").write_text(cfg.to_yaml())
    f["export_bad"] = str(d / "export")
    (d / "nothing").mkdir()
    f["empty_dir"] = str(d / "nothing")
    # a training folder whose last.pt is a bare dict (resume)
    (d / "run_bare").mkdir()
    torch.save({"format": "suhmo-checkpoint", "version": 1}, d / "run_bare" / "last.pt")
    f["run_bare"] = str(d / "run_bare")

    # configs and search spaces
    def text(name: str, body: str) -> str:
        (d / name).write_text(body)
        return str(d / name)

    f["cfg_tag"] = text("tag.yaml", "train:\n  iterations: !!python/object/apply:os.system ['echo pwned']\n")
    f["cfg_list"] = text("list.yaml", "- 1\n- 2\n")
    f["cfg_bad_yaml"] = text("bad.yaml", "train: {iterations: 3\n")
    f["cfg_unknown"] = text("unknown.yaml", "trian:\n  iterations: 3\n")
    f["cfg_binary"] = str(d / "binary.yaml")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    space = {"base": {"preset": "tiny"}, "params": {"optim.lr_g": {"type": "loguniform", "low": 1e-5,
                                                                   "high": 1e-3}},
             "objective": "fd_clip40:min"}

    def space_file(name: str, **change) -> str:
        import yaml

        s = json.loads(json.dumps(space))
        for k, v in change.items():
            if k == "base":
                s["base"].update(v)
            elif k == "params":
                s["params"] = v
            else:
                s[k] = v
        return text(name, yaml.safe_dump(s))

    f["sp_unknown_field"] = space_file("sp_unknown.yaml", params={"optim.lr_gg": {"type": "uniform", "low": 0,
                                                                                  "high": 1}})
    f["sp_threads"] = space_file("sp_threads.yaml", base={"train.threads": -3})
    f["sp_select"] = space_file("sp_select.yaml", base={"train.select_metric": "nonsense_metric"})
    f["sp_range"] = space_file("sp_range.yaml", params={"optim.lr_g": {"type": "loguniform", "low": 1e-3,
                                                                       "high": 1e-5}})
    f["sp_dist"] = space_file("sp_dist.yaml", params={"optim.lr_g": {"type": "gaussian", "low": 0, "high": 1}})
    f["sp_metric"] = space_file("sp_metric.yaml", objective="fid_clip40:min")
    f["sp_tag"] = text("sp_tag.yaml", "base: !!python/object/apply:os.system ['echo pwned']\n")
    f["sp_budget"] = space_file("sp_budget.yaml", budget={"num_samples": -2})
    (d / "a_file").write_text("I am a file")
    f["a_file"] = str(d / "a_file")

    # sizes the code computes from a file: a frame rate that resamples each frame into
    # thousands, a long (valid) clip that renders to terabytes, a checkpoint whose config
    # asks for a model of 10^17 parameters
    f["fps_tiny"] = _savez(d / "fps_tiny.npz", **_with(good, fps=np.float32(1e-4)))
    long_clip = np.tile(good["flat"][: good["offsets"][1]], (20000 // int(good["offsets"][1]) + 1, 1, 1))[:20000]
    f["long"] = _savez(d / "long.npz", flat=long_clip, offsets=np.array([0, len(long_clip)], np.int64),
                       fps=np.float32(25))
    wide = make_config("tiny", overrides={"model.hidden_g": 10 ** 8})
    torch.save({"format": "suhmo-checkpoint", "version": 1, "step": 0, "config": wide.to_dict(), "G": {}},
               d / "wide.pt")
    f["ck_wide"] = str(d / "wide.pt")
    _packed_files(d, f)
    return f


def _packed_files(d: Path, f: dict[str, str]) -> None:
    """Packed dataset folders (suhmo.data.packed) damaged the ways a copy or an edit damages
    them: a truncated shard, an index that points past its shard, a shard of another dataset."""
    import shutil

    from suhmo.data import synthesize
    from suhmo.data.packed import CLIPS_FILE, HEADER_BYTES, PackWriter, shard_name

    ls = synthesize(4, 3.0, 0)

    def pack(name: str) -> Path:
        with PackWriter(d / name, fps=25.0, shard_bytes=HEADER_BYTES + 150 * 544) as w:
            for i, c in enumerate(ls.clips):
                w.add(c, {"person": f"p{i}"})
        f[name] = str(d / name)
        return d / name

    with open(pack("pk_truncated") / shard_name(1), "rb+") as fh:
        fh.truncate(HEADER_BYTES + 544 * 10)
    index = pack("pk_index") / CLIPS_FILE
    lines = index.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["frames"] += 100_000
    index.write_text("\n".join(lines[:-1] + [json.dumps(rec)]) + "\n")
    other = pack("pk_other_source")
    shutil.copy(other / shard_name(1), pack("pk_foreign") / shard_name(1))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


# ---------------------------------------------------------------------- the cases
def cases(f: dict[str, str], d: Path) -> list[tuple[str, str, list[str], str]]:
    """``(id, program, argv, where)``: ``where`` must appear in the Error line."""
    out = d / "out"
    c: list[tuple[str, str, list[str], str]] = []

    def data_check(key: str, where: str | None = None):
        c.append((f"data-check-{key}", "suhmo", ["data", "check", f[key]], where or Path(f[key]).name))

    for key in ("folder", "fifo", "empty", "text", "truncated", "pickle_member", "no_fps", "no_offsets", "xyz",
                "str_flat", "non_increasing", "offsets_end", "float_offsets", "nan", "inf", "neg_fps",
                "str_fps", "short", "zeros", "constant", "line", "bomb", "forged", "short_member", "corrupt",
                "single_npy"):
        data_check(key)
    c.append(("data-check-missing", "suhmo", ["data", "check", str(d / "missing.npz")], "missing.npz"))
    for key in ("pk_truncated", "pk_index", "pk_foreign"):  # packed folders: the shard is named
        data_check(key, "shard-00001.f32" if key != "pk_index" else "shard-0000")
    c.append(("train-pk_truncated", "suhmo", ["train", "--preset", "tiny", "--data", f["pk_truncated"],
                                              "--iterations", "1", "--out", str(out / "pk")], "shard-00001.f32"))
    # clip named for content errors
    c += [("data-check-zeros-clip", "suhmo", ["data", "check", f["zeros"]], "clip 0"),
          ("data-check-line-clip", "suhmo", ["data", "check", f["line"]], "clip 1"),
          ("data-check-nan-clip", "suhmo", ["data", "check", f["nan"]], "clip 1")]

    tiny = ["--preset", "tiny", "--iterations", "2"]
    c += [
        ("train-data-missing", "suhmo", ["train", *tiny, "--data", str(d / "nope.npz"), "--out", str(out / "a")],
         "nope.npz"),
        ("train-data-fifo", "suhmo", ["train", *tiny, "--data", f["fifo"], "--out", str(out / "b")], "pipe.npz"),
        ("train-data-zeros", "suhmo", ["train", *tiny, "--data", f["zeros"], "--out", str(out / "c")], "zeros.npz"),
        ("train-data-bomb", "suhmo", ["train", *tiny, "--data", f["bomb"], "--out", str(out / "d")], "bomb.npz"),
        ("train-threads", "suhmo", ["train", *tiny, "--set", "train.threads=-3", "--out", str(out / "e")],
         "train.threads"),
        ("train-select-metric", "suhmo", ["train", *tiny, "--set", "train.select_metric=nonsense_metric",
                                          "--out", str(out / "f")], "nonsense_metric"),
        ("train-unknown-key", "suhmo", ["train", *tiny, "--set", "optim.lr_gg=1e-4"], "optim.lr_gg"),
        ("train-bad-value", "suhmo", ["train", *tiny, "--set", "optim.lr_g=fast"], "optim.lr_g"),
        ("train-negative-lr", "suhmo", ["train", *tiny, "--set", "optim.lr_g=-1"], "optim.lr_g"),
        ("train-config-fifo", "suhmo", ["train", *tiny, "--config", f["fifo_yaml"]], "pipe.yaml"),
        ("train-config-tag", "suhmo", ["train", *tiny, "--config", f["cfg_tag"]], "tag.yaml"),
        ("train-config-list", "suhmo", ["train", *tiny, "--config", f["cfg_list"]], "list.yaml"),
        ("train-config-bad-yaml", "suhmo", ["train", *tiny, "--config", f["cfg_bad_yaml"]], "bad.yaml"),
        ("train-config-unknown", "suhmo", ["train", *tiny, "--config", f["cfg_unknown"]], "trian"),
        ("train-config-binary", "suhmo", ["train", *tiny, "--config", f["cfg_binary"]], "binary.yaml"),
        ("train-out-under-file", "suhmo", ["train", *tiny, "--out", f["a_file"] + "/run"], "a_file"),
        ("train-out-is-file", "suhmo", ["train", *tiny, "--out", f["a_file"]], "a_file"),
        ("train-iterations-zero", "suhmo", ["train", "--iterations", "0"], "--iterations"),
        ("train-resume-bare", "suhmo", ["train", *tiny, "--out", f["run_bare"]], "last.pt"),
    ]
    gen = ["generate", "--frames", "4", "--samples", "2"]
    ck_ok_ref = ["--reference", f["pose"], "--out", str(out / "m.npz")]
    for key in ("ck_bare", "ck_garbage", "ck_future", "ck_no_weights", "ck_bad_config", "ck_str_step", "ck_evil",
                "ck_list", "fifo_pt"):
        c.append((f"generate-{key}", "suhmo", [*gen, "--checkpoint", f[key], *ck_ok_ref], Path(f[key]).name))
    c += [
        ("generate-ck-missing", "suhmo", [*gen, "--checkpoint", str(d / "gone.pt"), *ck_ok_ref], "gone.pt"),
        ("generate-export-bad", "suhmo", [*gen, "--model", f["export_bad"], *ck_ok_ref], "generator.pt"),
        ("generate-empty-dir", "suhmo", [*gen, "--model", f["empty_dir"], *ck_ok_ref], "nothing"),
        ("generate-out-under-file", "suhmo", [*gen, "--checkpoint", f["ck_no_weights"], "--reference", f["pose"],
                                             "--out", f["a_file"] + "/m.npz"], "a_file"),
        ("generate-out-ext", "suhmo", [*gen, "--checkpoint", f["ck_no_weights"], *ck_ok_ref[:2], "--out",
                                      str(out / "m.txt")], "m.txt"),
        ("generate-two-refs", "suhmo", [*gen, "--checkpoint", f["ck_no_weights"], "--reference", f["pose"],
                                       "--reference-from", f["good"], "--out", str(out / "h.npz")], "--reference"),
        ("generate-frames-zero", "suhmo", ["generate", "--frames", "0", "--checkpoint", f["ck_bare"], *ck_ok_ref],
         "--frames"),
    ]
    c += [
        ("render-missing", "suhmo", ["render", str(d / "absent.npz"), "--out", str(out / "r.gif")], "absent.npz"),
        ("animate-frames-x-size", "suhmo", ["animate", "--model", f["ck_real"], "--frames", "5000", "--size", "2048",
                                            "--out", str(out / "a.mp4")], "--frames 5000 at 2048 px"),
        ("render-bmp", "suhmo", ["render", f["good"], "--out", str(out / "x.bmp")], ".png"),
        ("render-out-under-file", "suhmo", ["render", f["good"], "--out", f["a_file"] + "/x.gif"], "a_file"),
        ("render-zeros", "suhmo", ["render", f["zeros"], "--out", str(out / "z.gif")], "zeros.npz"),
        ("render-fifo", "suhmo", ["render", f["fifo"], "--out", str(out / "p.gif")], "pipe.npz"),
        ("render-bomb", "suhmo", ["render", f["bomb"], "--out", str(out / "b.gif")], "bomb.npz"),
        ("render-forged", "suhmo", ["render", f["forged"], "--out", str(out / "f.gif")], "forged.npz"),
        ("render-clip-range", "suhmo", ["render", f["good"], "--clip", "7", "--out", str(out / "c.gif")], "--clip"),
        ("evaluate-bare", "suhmo", ["evaluate", "--checkpoint", f["ck_bare"]], "bare.pt"),
        ("metrics-ref-bomb", "suhmo", ["metrics", "ref", "--data", f["bomb"]], "bomb.npz"),
    ]
    # generation from a model that loads needs a real generator: one with matching weights
    c += [
        ("generate-ref-from-abc", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference-from",
                                           f["good"] + ":abc", "--out", str(out / "i.npz")], "abc"),
        ("generate-ref-from-range", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference-from",
                                             f["good"] + ":9", "--out", str(out / "j.npz")], "clip index 9"),
        ("generate-ref-str-real", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference", f["pose_str"],
                                           "--out", str(out / "k.npz")], "pose_str.npy"),
        ("generate-ref-xyz", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference", f["pose_xyz"],
                                      "--out", str(out / "l.npz")], "pose_xyz.npy"),
        ("generate-ref-nan", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference", f["pose_nan"],
                                      "--out", str(out / "n.npz")], "pose_nan.npy"),
        ("generate-ref-obj", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference", f["pose_obj"],
                                      "--out", str(out / "o.npz")], "pose_obj.npy"),
        ("generate-ref-fifo", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference", f["fifo_npy"],
                                       "--out", str(out / "q.npz")], "pipe.npy"),
        ("generate-ref-from-bomb", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference-from", f["bomb"],
                                            "--out", str(out / "s.npz")], "bomb.npz"),
        ("generate-real-out-under-file", "suhmo", [*gen, "--checkpoint", f["ck_real"], "--reference", f["pose"],
                                                  "--out", f["a_file"] + "/t.npz"], "a_file"),
    ]
    # sizes computed from files and flags, refused before anything is allocated
    c += [
        ("data-check-fps-tiny", "suhmo", ["data", "check", f["fps_tiny"]], "fps_tiny.npz"),
        ("data-check-target-fps", "suhmo", ["data", "check", f["good"], "--fps", "1e7"], "good.npz"),
        ("data-synth-huge", "suhmo", ["data", "synth", "--clips", "1000000", "--seconds", "100000",
                                      "--out", str(out / "synth.npz")], "1000000 clips"),
        ("train-data-fps-tiny", "suhmo", ["train", *tiny, "--data", f["fps_tiny"], "--out", str(out / "g")],
         "fps_tiny.npz"),
        ("train-batch-size", "suhmo", ["train", *tiny, "--set", "train.batch_size=100000000",
                                       "--out", str(out / "h")], "train.batch_size"),
        ("train-seq-len", "suhmo", ["train", *tiny, "--set", "data.seq_len=1000000000",
                                    "--set", "windows.tau_max=10", "--out", str(out / "i")], "data.seq_len"),
        ("train-width", "suhmo", ["train", *tiny, "--set", "model.hidden_g=100000000", "--out", str(out / "j")],
         "model.hidden_g"),
        ("train-num-windows", "suhmo", ["train", *tiny, "--set", "windows.num_windows=1000000000",
                                        "--out", str(out / "n")], "windows.num_windows=1000000000"),
        ("train-eval-samples", "suhmo", ["train", *tiny, "--set", "eval.samples=1000000000",
                                         "--out", str(out / "k")], "eval.samples"),
        ("train-eval-frames", "suhmo", ["train", *tiny, "--set", "eval.frames=1000000000",
                                        "--out", str(out / "l")], "eval.frames"),
        ("train-synth-seconds", "suhmo", ["train", *tiny, "--set", "data.synth_seconds=1000000000",
                                          "--out", str(out / "m")], "synthetic data"),
        ("generate-frames-samples", "suhmo", ["generate", "--frames", "100000000", "--samples", "64",
                                              "--checkpoint", f["ck_real"], "--reference", f["pose"],
                                              "--out", str(out / "u.npz")], "--frames 100000000"),
        ("generate-samples-huge", "suhmo", ["generate", "--frames", "4", "--samples", "10000000000",
                                            "--checkpoint", f["ck_real"], "--reference", f["pose"],
                                            "--out", str(out / "v.npz")], "--samples 10000000000"),
        ("generate-ck-wide", "suhmo", [*gen, "--checkpoint", f["ck_wide"], *ck_ok_ref], "model.hidden_g"),
        ("evaluate-samples-huge", "suhmo", ["evaluate", "--checkpoint", f["ck_real"], "--samples", "1000000000",
                                            "--out", str(out / "e.jsonl")], "--samples 1000000000"),
        ("evaluate-ck-wide", "suhmo", ["evaluate", "--checkpoint", f["ck_wide"], "--out", str(out / "w.jsonl")],
         "model.hidden_g"),
        ("render-long-size", "suhmo", ["render", f["long"], "--size", "2048", "--out", str(out / "long.gif")],
         "20000 frames"),
        ("render-long-png", "suhmo", ["render", f["long"], "--size", "2048", "--out", str(out / "long.png")],
         "20000 frames"),
    ]
    store = ["--storage", str(d / "store")]
    c += [
        ("search-validate-unknown", "suhmo-search", ["validate", f["sp_unknown_field"]], "optim.lr_gg"),
        ("search-validate-threads", "suhmo-search", ["validate", f["sp_threads"]], "train.threads"),
        ("search-validate-select", "suhmo-search", ["validate", f["sp_select"]], "nonsense_metric"),
        ("search-validate-range", "suhmo-search", ["validate", f["sp_range"]], "optim.lr_g"),
        ("search-validate-dist", "suhmo-search", ["validate", f["sp_dist"]], "gaussian"),
        ("search-validate-metric", "suhmo-search", ["validate", f["sp_metric"]], "fid_clip40"),
        ("search-validate-tag", "suhmo-search", ["validate", f["sp_tag"]], "sp_tag.yaml"),
        ("search-validate-budget", "suhmo-search", ["validate", f["sp_budget"]], "num_samples"),
        ("search-validate-fifo", "suhmo-search", ["validate", f["fifo_yaml"]], "pipe.yaml"),
        ("search-validate-missing", "suhmo-search", ["validate", str(d / "nospace.yaml")], "nospace.yaml"),
        ("search-run-cpus", "suhmo-search", ["run", "--cpus-per-trial", "0", "--dry-run", *store],
         "--cpus-per-trial"),
        ("search-run-gpus", "suhmo-search", ["run", "--gpus-per-trial", "lots", "--dry-run", *store],
         "--gpus-per-trial"),
        ("search-run-budget", "suhmo-search", ["run", "--time-budget", "ten minutes", "--dry-run", *store],
         "--time-budget"),
        ("search-run-experiment", "suhmo-search", ["run", "--experiment", "../evil", "--dry-run", *store],
         "--experiment"),
        ("search-run-objectives", "suhmo-search", ["run", "--objectives", "nonsense:min", "--dry-run", *store],
         "nonsense"),
        ("search-run-space-select", "suhmo-search", ["run", "--space", f["sp_select"], "--dry-run", *store],
         "nonsense_metric"),
        ("search-resume-missing", "suhmo-search", ["resume", "no-such-search", *store], "no-such-search"),
        ("search-status-missing", "suhmo-search", ["status", "no-such-search", *store], "no-such-search"),
        ("best-export-no-db", "suhmo", ["best-export", "--tracking-uri", f"sqlite:///{d}/none/mlflow.db",
                                        "--out", str(out / "best")], "mlflow.db"),
    ]
    return c


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    files = build_files(d)
    files["ck_real"] = _real_checkpoint(d)
    todo = cases(files, d)
    spec = {"root": str(d), "cases": [{"id": i, "prog": p, "argv": a} for i, p, a, _ in todo]}
    (d.parent / "cases.json").write_text(json.dumps(spec))
    env = dict(os.environ, SUHMO_HOME=str(d.parent / "home"), SUHMO_MAX_DATA_BYTES=str(DATA_LIMIT),
               PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "hostile_runner.py"), str(d.parent / "cases.json"),
                           str(d.parent / "results.json"), str(AS_LIMIT)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["id"]: r for r in json.loads((d.parent / "results.json").read_text())}
    cat = {i: (results[i], where) for i, _, _, where in todo}
    cat["__process__"] = (proc.stdout + proc.stderr, None)
    return cat


def _real_checkpoint(d: Path) -> str:
    """A checkpoint whose generator loads: a tiny model's weights, no training."""
    from suhmo.checkpoint import save_checkpoint
    from suhmo.config import make_config
    from suhmo.models import build_generator

    cfg = make_config("tiny")
    path = d / "real.pt"
    save_checkpoint(path, {"step": 0, "config": cfg.to_dict(), "G": build_generator(cfg).state_dict()})
    return str(path)


def _ids() -> list[str]:
    # the case ids, without building files: cases() only formats paths
    fake = {k: f"/x/{k}" for k in _FILE_KEYS}
    return [i for i, _, _, _ in cases(fake, Path("/x"))]


_FILE_KEYS = ("good", "folder", "fifo", "fifo_yaml", "fifo_npy", "fifo_pt", "empty", "text", "truncated",
              "pickle_member", "no_fps", "no_offsets", "xyz", "str_flat", "non_increasing", "offsets_end",
              "float_offsets", "nan", "inf", "neg_fps", "str_fps", "short", "zeros", "constant", "line", "bomb",
              "forged", "short_member", "corrupt", "single_npy", "pose", "pose_str", "pose_xyz", "pose_nan",
              "pose_obj", "ck_bare", "ck_garbage", "ck_future", "ck_no_weights", "ck_bad_config", "ck_str_step",
              "ck_evil", "ck_list", "export_bad", "empty_dir", "run_bare", "cfg_tag", "cfg_list", "cfg_bad_yaml",
              "cfg_unknown", "cfg_binary", "sp_unknown_field", "sp_threads", "sp_select", "sp_range", "sp_dist",
              "sp_metric", "sp_tag", "sp_budget", "a_file", "ck_real", "fps_tiny", "long", "ck_wide",
              "pk_truncated", "pk_index", "pk_foreign", "pk_other_source")


def test_catalogue_is_large():
    ids = _ids()
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", _ids())
def test_hostile_input_is_one_clean_error(catalogue, case):
    r, where = catalogue[case]
    shown = (f"{case}: rc={r['rc']}\nstdout:\n{r['stdout'][-1500:]}\nstderr:\n{r['stderr'][-3000:]}\n"
             f"{r['traceback'] or ''}")
    assert r["traceback"] is None, shown
    assert "Traceback" not in r["stderr"] + r["stdout"], shown
    assert r["rc"] != 0, shown
    errors = [ln for ln in (r["stderr"] + r["stdout"]).splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, shown
    if where is not None:
        assert where in errors[0], f"{where!r} not named in: {errors[0]}"
    assert r["changed"] == [], f"{case} changed pre-existing files: {r['changed']}"
    assert r["wall_s"] < CASE_SECONDS, shown
    assert r["maxrss_bytes"] < RSS_LIMIT, f"{case}: peak RSS {r['maxrss_bytes'] / 2**20:.0f} MiB"
    assert "pwned" not in r["stdout"] + r["stderr"]


def test_no_hostile_file_ran_code(catalogue):
    """YAML python tags and a pickled __reduce__ would run `echo pwned` if they were honoured."""
    output, _ = catalogue["__process__"]
    assert "pwned" not in output

