"""``suhmo data``: check, synthesise and prepare landmark datasets."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group("data")
def data() -> None:
    """Landmark datasets: validate (check), convert to the packed format (pack), make synthetic
    ones (synth), extract from videos (prepare)."""


@data.command("check")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True,
              help="Training frame rate; other rates are resampled.")
@click.option("--min-len", type=click.IntRange(min=1), default=45, show_default=True,
              help="Shortest allowed clip in frames (a training window: obs_len + seq_len).")
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line holding the summary.")
def check(file: Path, fps: float, min_len: int, as_json: bool) -> None:
    """Validate a canonical landmark .npz FILE (or a packed dataset folder) and print a summary."""
    from suhmo.data import load_landmarks
    from suhmo.data.loading import check_data_path
    from suhmo.data.stats import summarize

    check_data_path(file)
    ls = load_landmarks(file, fps=fps, min_len=min_len, notify=lambda m: click.echo(f"notice: {m}"))
    if ls.lazy:  # a packed set: every clip is read once, one at a time
        from suhmo.data.packed_clips import verify_clips

        verify_clips(ls, progress=not as_json)
    s = summarize(ls)

    def rng(k: str, fmt: str = "{:.3f}") -> str:
        d = s[k]
        return f"median {fmt.format(d['median'])}, range {fmt.format(d['min'])} .. {fmt.format(d['max'])}"

    click.echo(f"{file}: OK")
    click.echo(f"  clips      {s['clips']}  ({s['persons']} person(s)"
               + (f", {s['groups']} co-occurrence group(s)" if "groups" in s else "") + ")")
    click.echo(f"  frames     {s['frames']} at {s['fps']:g} fps = {s['duration_s']:.1f} s")
    click.echo(f"  clip len   {rng('clip_frames', '{:.0f}')} frames")
    click.echo(f"  speed      {rng('speed')} (bbox-normalised units / s, mean over points)")
    click.echo(f"  roll       {rng('roll_range', '{:.1f}')} deg (5-95 % range of the eye-line angle)")
    click.echo(f"  yaw        {rng('yaw_range')} (range of nose-tip offset / eye-corner distance)")
    click.echo(f"  pitch      {rng('pitch_range')} (same, vertical)")
    click.echo(f"  mouth      {rng('mouth_range')} (range of inner-lip opening / eye-corner distance)")
    if as_json:
        click.echo(json.dumps(s, sort_keys=True))


@data.command("pack")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path), metavar="IN.npz...")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder of the packed dataset (created; an existing one is continued).")
@click.option("--fps", type=click.FloatRange(min=1), default=25.0, show_default=True,
              help="Frame rate of the packed clips; clips at other rates are resampled.")
@click.option("--shard-mb", type=click.IntRange(min=1, max=1 << 16), default=256, show_default=True,
              help="Size of a shard file, MiB.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def pack(inputs: tuple[Path, ...], out: Path, fps: float, shard_mb: int, progress: bool) -> None:
    """Convert landmark .npz files into a packed dataset folder: memory-mapped shards, read by
    random access with memory flat in the corpus size (README, "Large datasets"). Memory is
    bounded by one clip; an interrupted pack continues when run again."""
    import time

    from suhmo.data.packed import pack_npz

    t0 = time.perf_counter()
    w = pack_npz(list(inputs), out, fps=fps, shard_bytes=shard_mb << 20, progress=progress, echo=click.echo)
    click.echo(f"wrote {out}: {w.num_clips} clips, {w.num_frames} frames at {fps:g} fps "
               f"({w.num_frames * 544 / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")


@data.command("synth")
@click.option("--clips", type=click.IntRange(min=1), default=48, show_default=True, help="Number of clips.")
@click.option("--seconds", type=click.FloatRange(min=0.2), default=8.0, show_default=True,
              help="Clip length, s.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fps", type=click.FloatRange(min=1), default=25.0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output canonical .npz.")
def synth(clips: int, seconds: float, seed: int, fps: float, out: Path) -> None:
    """Write procedural talking-head landmark clips (the embedded default dataset)."""
    from suhmo.data import save_landmarks, synthesize

    ls = synthesize(clips, seconds, seed, fps=fps)
    save_landmarks(out, ls)
    click.echo(f"wrote {out}: {len(ls)} clips x {seconds:g} s at {fps:g} fps ({ls.num_frames} frames)")


@data.command("prepare")
@click.argument("video_dir", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output: a packed dataset folder, written video by video (a rerun continues it); "
                   "or a .npz file, written at the end (small data).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Videos processed in parallel, one process each.")
@click.option("--fps", type=click.FloatRange(min=1), default=25.0, show_default=True,
              help="Output frame rate (linear resampling).")
@click.option("--min-len", type=click.IntRange(min=3), default=45, show_default=True,
              help="Drop clips shorter than this many frames (after resampling).")
@click.option("--max-gap", type=click.FloatRange(min=0), default=0.2, show_default=True,
              help="Interpolate detection gaps up to this many seconds; split at longer ones.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def prepare(video_dir: Path, out: Path, workers: int, fps: float, min_len: int, max_gap: float,
            progress: bool) -> None:
    """Extract 68-point landmarks from the videos in VIDEO_DIR (MediaPipe Face Mesh, in its own venv).

    One line per video: its clips, or why it was skipped (no face, too short, unreadable).
    Into a folder, each video is written as soon as it is done; after an interruption, the
    same command skips the videos already done and continues."""
    from suhmo.data.prepare import prepare_to_pack, prepare_videos

    if out.suffix.lower() == ".npz":
        from suhmo.data import save_landmarks

        ls, reports = prepare_videos(video_dir, fps=fps, min_len=min_len, max_gap_s=max_gap, workers=workers,
                                     progress=progress, echo=click.echo)
        save_landmarks(out, ls)
        used = sum(r.reason is None for r in reports)
        click.echo(f"wrote {out}: {len(ls)} clips, {ls.num_frames} frames at {fps:g} fps from {used} "
                   f"video(s)" + (f"; {len(reports) - used} skipped" if used < len(reports) else ""))
        return
    s = prepare_to_pack(video_dir, out, fps=fps, min_len=min_len, max_gap_s=max_gap, workers=workers,
                        progress=progress, echo=click.echo)
    used = sum(r.reason is None for r in s.reports)
    unread = sum(r.reason in ("unreadable", "failed") for r in s.reports)
    skipped = len(s.reports) - used - unread
    parts = [f"{used} video(s) added"]
    if skipped:
        parts.append(f"{skipped} without a clip")
    if unread:
        parts.append(f"{unread} unreadable (tried again on a rerun)")
    if s.already:
        parts.append(f"{s.already} already done")
    click.echo(f"wrote {out}: {s.clips} clips, {s.frames} frames at {fps:g} fps; " + ", ".join(parts))
