"""Real videos -> 68-point landmark clips, video by video, at scale.

A pool of spawned worker processes runs the pipeline one video each (:func:`process_video`):
detection (:mod:`suhmo.data.detect`), then gap filling, cut splitting, resampling and the
length filter (:mod:`suhmo.data.tracks`). :func:`prepare_videos` gathers the clips in memory
(small data); :func:`prepare_to_pack` has the parent, the only writer, commit each finished
video's clips to a packed dataset folder at once, and record the videos that gave no clip in
its ``skipped.jsonl``, so that a rerun after a kill redoes no finished video.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from suhmo.data.dataset import DataError, LandmarkSet
from suhmo.data.detect import DEFAULT_DETECTOR, detect_video, detector_name, load_detector
from suhmo.data.tracks import LAYOUT_68, VideoReport, track_to_clips

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".webm", ".m4v")


# ------------------------------------------------------------------------------ one video
@dataclass
class VideoTask:
    path: str
    key: str  # the video's path relative to VIDEO_DIR: its ``source`` in the output
    fps: float
    min_len: int
    max_gap_s: float
    detector: str


@dataclass
class VideoResult:
    key: str
    report: VideoReport
    clips: list[np.ndarray]
    meta: list[dict]


def process_video(task: VideoTask, progress: bool = False) -> VideoResult:
    """Detect, clean and split one video: its clips (pixels, at ``task.fps``), their metadata,
    and its report. Never raises for a bad video: the report says why it gave nothing."""
    rep = VideoReport(video=task.key)
    try:
        track, src_fps, wh = detect_video(task.path, progress=progress, detector=task.detector)
        rep.frames, rep.src_fps = len(track), src_fps
        clips = track_to_clips(track, src_fps, fps=task.fps, min_len=task.min_len, max_gap_s=task.max_gap_s,
                               report=rep)
    except DataError as e:
        rep.error = str(e).split(": ", 1)[-1] if str(e).startswith(task.path) else str(e)
        return VideoResult(task.key, rep, [], [])
    except Exception as e:  # a detector's own failure on one video must not stop the others
        rep.error, rep.failed = f"{type(e).__name__}: {e}", True
        return VideoResult(task.key, rep, [], [])
    person = Path(task.key).stem
    meta = [{"person": person, "source": task.key, "clip": i, "clips": len(clips), "frame_wh": list(wh),
             "src_fps": src_fps, "det_rate": rep.detected / max(rep.frames, 1), "n_interp": rep.interpolated,
             "origin": "video", "kind": "unknown"} for i in range(len(clips))]
    return VideoResult(task.key, rep, clips, meta)


def _worker_init(parent: int, log: str) -> None:
    """In a worker: write what goes to stderr (MediaPipe's native start-up messages, a crash's
    last words) to ``log`` instead of between the report lines, and exit when the parent dies
    (a killed ``suhmo data prepare`` leaves no worker running behind it)."""
    import os
    import threading
    import time

    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="suhmo-parent-watch").start()


def run_videos(tasks: list[VideoTask], *, workers: int = 1, progress: bool = True,
               echo: Callable[[str], None] = print, on_result: Optional[Callable[[VideoResult], None]] = None):
    """Process ``tasks`` with ``workers`` processes (spawned; 1: in this process), calling
    ``on_result`` in this process as each video finishes, in the order they finish, and
    printing its report line above a progress bar over the videos (with an ETA)."""
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    import multiprocessing as mp

    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="video", desc="prepare", disable=not progress, dynamic_ncols=True)

    def finish(res: VideoResult) -> None:
        if on_result is not None:
            on_result(res)
        with bar.external_write_mode():
            echo(res.report.line())
        bar.update(1)

    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                finish(process_video(t, progress=progress))
            return
        import tempfile

        fd, log = tempfile.mkstemp(prefix="suhmo-prepare-workers-", suffix=".log")
        os.close(fd)
        keep_log = False
        pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=mp.get_context("spawn"),
                                   initializer=_worker_init, initargs=(os.getpid(), log))
        try:
            queue = iter(tasks)
            running: dict = {}
            ahead = 2 * workers  # tasks handed out ahead of the results, not the whole list at once
            try:
                while True:
                    for t in queue:
                        running[pool.submit(process_video, t)] = t
                        if len(running) >= ahead:
                            break
                    if not running:
                        break
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    ok = [f for f in done if f.exception() is None]
                    for f in ok:
                        running.pop(f)
                        finish(f.result())
                    for f in done:
                        if f not in ok:
                            f.result()  # raises: the pool broke (or a bug in this module)
            except BrokenProcessPool:
                busy = sorted(t.key for t in running.values())
                keep_log = True
                raise DataError(f"a worker process died (out of memory, or the detector crashed) while on one "
                                f"of: {', '.join(busy[:4])}{' ...' if len(busy) > 4 else ''}; its messages are "
                                f"in {log}; rerun the same command: videos already written are kept") from None
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if not keep_log:
                os.unlink(log)
    finally:
        bar.close()


def list_videos(video_dir: str | Path) -> tuple[Path, list[tuple[Path, str]]]:
    """``(root, [(video, key)])``: the videos under ``video_dir`` (or the one video file), each
    with its path relative to the folder as its key, sorted by key."""
    root = Path(video_dir)
    if root.is_file():
        return root, [(root, root.name)]
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder")
    videos = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                    if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not videos:
        raise DataError(f"{root}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    return root, [(p, k) for k, p in videos]


def _attrs(detector: str) -> dict[str, np.ndarray]:
    layout = ("iBUG/300-W 68-point, 0-based; MediaPipe Face Mesh vertices (midpoint when two) "
              + str([list(r) for r in LAYOUT_68]))
    attrs = {"coords": np.asarray("pixels of the original video frame, x right, y down"),
             "layout": np.asarray(layout)}
    if detector != DEFAULT_DETECTOR:
        attrs["detector"] = np.asarray(detector)
    return attrs


def prepare_videos(video_dir: str | Path, *, fps: float = 25.0, min_len: int = 45,
                   max_gap_s: float = 0.2, progress: bool = True, workers: int = 1,
                   detector: Optional[str] = None,
                   echo: Callable[[str], None] = print) -> tuple[LandmarkSet, list[VideoReport]]:
    """Every video in ``video_dir`` (or one video file) -> a LandmarkSet in pixel coordinates,
    held in memory (the small-data path; :func:`prepare_to_pack` writes a packed folder)."""
    root, videos = list_videos(video_dir)
    name = detector_name(detector)
    load_detector(name)  # fail early, with the install hint
    tasks = [VideoTask(str(p), k, float(fps), int(min_len), float(max_gap_s), name) for p, k in videos]
    results: dict[str, VideoResult] = {}
    run_videos(tasks, workers=workers, progress=progress, echo=echo,
               on_result=lambda r: results.__setitem__(r.key, r))
    clips, metas = [], []
    for t in tasks:  # input order, whatever order the workers finished in
        clips += results[t.key].clips
        metas += results[t.key].meta
    if not clips:
        raise DataError(f"{root}: no clip of at least {min_len} frames with a detected face "
                        f"in {len(videos)} video(s)")
    keys = ("person", "source", "frame_wh", "src_fps", "det_rate", "n_interp", "origin", "kind")
    arrays = {k: np.asarray([m[k] for m in metas]) for k in keys}
    arrays["frame_wh"] = arrays["frame_wh"].astype(np.int32)
    arrays["src_fps"] = arrays["src_fps"].astype(np.float32)
    arrays["det_rate"] = arrays["det_rate"].astype(np.float32)
    arrays["n_interp"] = arrays["n_interp"].astype(np.int32)
    return (LandmarkSet(clips=clips, fps=float(fps), meta=arrays, path=None, attrs=_attrs(name)),
            [results[t.key].report for t in tasks])


# ------------------------------------------------------------------------ a packed folder
SKIPPED_FILE = "skipped.jsonl"


@dataclass
class PrepareSummary:
    out: Path
    videos: int = 0  # found under VIDEO_DIR
    already: int = 0  # done by an earlier run: not redone
    reports: list[VideoReport] = field(default_factory=list)  # this run's videos
    clips: int = 0  # in the packed folder at the end
    frames: int = 0


def _read_skipped(out: Path) -> dict[str, dict]:
    """The videos an earlier run finished without a clip (``skipped.jsonl``), by key; a torn
    last line (a kill during its write) is cut off, as the packed index's is."""
    import json

    path = out / SKIPPED_FILE
    if not path.exists():
        return {}
    done: dict[str, dict] = {}
    pos = 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
                done[str(rec["source"])] = rec
            except (ValueError, KeyError, TypeError):
                raise DataError(f"{path}: line {len(done) + 1}: not a skipped-video record") from None
            pos += len(raw)
    if pos < path.stat().st_size:
        with open(path, "rb+") as f:
            f.truncate(pos)
    return done


def _append_skipped(out: Path, rec: dict) -> None:
    """Commit one skipped-video record: a single write of one line on an O_APPEND descriptor, then fsync."""
    import json
    import os

    from suhmo.utils import FILE_MODE

    line = (json.dumps(rec, sort_keys=True) + "\n").encode()
    fd = os.open(out / SKIPPED_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        if os.write(fd, line) != len(line):
            raise DataError(f"{out / SKIPPED_FILE}: short write (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_to_pack(video_dir: str | Path, out: str | Path, *, fps: float = 25.0, min_len: int = 45,
                    max_gap_s: float = 0.2, workers: int = 1, progress: bool = True,
                    detector: Optional[str] = None, echo: Callable[[str], None] = print) -> PrepareSummary:
    """Every video in ``video_dir`` -> a packed dataset folder ``out`` (:mod:`suhmo.data.packed`),
    written as the videos finish, so that a killed run loses at most the videos in flight.

    Resuming: a rerun with the same ``out`` skips the videos already done: those whose clips
    are all committed (``source`` metadata = the path under ``video_dir``, ``clips`` = how many
    the video gave) and those recorded in ``out/skipped.jsonl`` (no face, too short). A video
    cut off between two of its clips is done again and only its missing clips are added.
    Unreadable videos are not recorded: each run tries them again (it costs one open) and
    prints their line. The options that change the clips (fps, min_len, max_gap_s, detector)
    must match those the folder was started with.
    """
    import json

    from suhmo.data.packed import PackWriter, is_packed, read_index

    root, videos = list_videos(video_dir)
    name = detector_name(detector)
    load_detector(name)  # fail early, with the install hint
    out = Path(out)
    settings = json.dumps({"min_len": int(min_len), "max_gap_s": float(max_gap_s), "detector": name},
                          sort_keys=True)
    if is_packed(out):
        info = read_index(out)
        before = (info.get("attrs") or {}).get("prepare")
        if before is not None and before != settings:
            raise DataError(f"{out}: started by suhmo data prepare with {before}, not {settings}; continue "
                            f"it with the same options, or write to another --out")
    attrs = {**_attrs(name), "prepare": np.asarray(settings)}
    summary = PrepareSummary(out=out, videos=len(videos))
    with PackWriter(out, fps=fps, attrs=attrs) as w:
        have: dict[str, set[int]] = {}
        total: dict[str, int] = {}
        for r in w.records:
            m = r["meta"]
            if "source" in m and "clip" in m:
                have.setdefault(str(m["source"]), set()).add(int(m["clip"]))
                total[str(m["source"])] = int(m.get("clips", 0))
        skipped = _read_skipped(out)
        todo = []
        for p, k in videos:
            if k in skipped or (k in have and len(have[k]) >= total[k]):
                summary.already += 1
            else:
                todo.append(VideoTask(str(p), k, float(fps), int(min_len), float(max_gap_s), name))
        if summary.already:
            n_skip = sum(k in skipped for _, k in videos)
            echo(f"{out}: continuing: {summary.already} of {len(videos)} video(s) already done, not redone "
                 f"({summary.already - n_skip} with clips, {n_skip} without: {SKIPPED_FILE}); {len(todo)} to do")

        def commit(res: VideoResult) -> None:
            summary.reports.append(res.report)
            reason = res.report.reason
            if reason in ("no face", "too short"):
                _append_skipped(out, {"source": res.key, "reason": reason, "report": res.report.line()})
                return
            done = have.get(res.key, set())
            for clip, meta in zip(res.clips, res.meta):
                if meta["clip"] not in done:
                    w.add(clip, meta, name=f"{res.key}: clip {meta['clip']}")

        run_videos(todo, workers=workers, progress=progress, echo=echo, on_result=commit)
        summary.clips, summary.frames = w.num_clips, w.num_frames
    if not summary.clips:
        raise DataError(f"{root}: no clip of at least {min_len} frames with a detected face in "
                        f"{len(videos)} video(s)")
    return summary
