"""Landmark tracks -> clean clips: the pure steps of ``suhmo data prepare``, plain numpy.

Per video: map 478 Face Mesh points per frame to the iBUG 68 layout with :data:`LAYOUT_68`
(each point one mesh vertex or the midpoint of two; the table of
``../shared/data/real_dev_landmarks.npz``'s ``layout``) -> interpolate detection gaps of at
most ``max_gap_s`` seconds, split at longer gaps -> split at shot cuts (most points jump by a
large fraction of the face size between two frames) -> resample to ``fps`` -> drop clips
shorter than ``min_len`` frames (:func:`track_to_clips`, with a :class:`VideoReport` of what
each step did).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from suhmo.data.dataset import DataError, check_resampled_size, resample_clip


# iBUG/300-W 68-point (0-based) <- MediaPipe Face Mesh vertex (midpoint when two).
LAYOUT_68: tuple[tuple[int, ...], ...] = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (149,), (176,), (152,), (377,), (378,),
    (365,), (397,), (288,), (323,), (454,), (356,),  # jaw 0-16
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),  # brows 17-26
    (168,), (197,), (5,), (4,), (75,), (97,), (2,), (326,), (305,),  # nose 27-35
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),  # eyes
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (405,), (314,), (17,), (84,), (91,),  # outer lips
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),  # inner lips 60-67
)
MESH_POINTS = 478



def parse_layout(text: str) -> tuple[tuple[int, ...], ...]:
    """Parse a ``layout`` string such as the dev npz's (``"... [[127], [234], [132, 58], ...]"``)."""
    start = text.find("[[")
    if start < 0:
        raise DataError(f"layout string has no [[...]] table: {text[:60]!r}")
    table = ast.literal_eval(text[start:text.rfind("]]") + 2])
    out = tuple(tuple(int(v) for v in row) for row in table)
    if len(out) != 68 or any(not 1 <= len(r) <= 2 for r in out):
        raise DataError(f"layout table has {len(out)} rows; expected 68 rows of 1 or 2 vertices")
    return out


def _layout_matrix() -> np.ndarray:
    m = np.zeros((68, MESH_POINTS), dtype=np.float32)
    for i, row in enumerate(LAYOUT_68):
        m[i, list(row)] = 1.0 / len(row)
    return m


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """``[..., 478, >=2]`` Face Mesh points -> ``[..., 68, 2]`` (x, y) in the same units."""
    mesh = np.asarray(mesh, dtype=np.float32)
    if mesh.shape[-2] != MESH_POINTS:
        raise DataError(f"expected {MESH_POINTS} Face Mesh points, got {mesh.shape[-2]}")
    return np.einsum("kp,...pc->...kc", _layout_matrix(), mesh[..., :2]).astype(np.float32)


def fill_gaps(track: np.ndarray, max_gap: int) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Fill missed detections (frames that are all NaN) of ``track [T, 68, 2]``.

    Interior gaps of at most ``max_gap`` frames are linearly interpolated; longer gaps split
    the track; leading and trailing gaps are dropped. Returns ``([(start_frame, segment)],
    number of interpolated frames)``.
    """
    track = np.asarray(track, dtype=np.float32)
    ok = np.isfinite(track).all(axis=(1, 2))
    segments: list[tuple[int, np.ndarray]] = []
    n_interp = 0
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return segments, 0
    # split where the gap between consecutive detections is too long
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1)
    for run in np.split(idx, breaks + 1):
        a, b = int(run[0]), int(run[-1]) + 1
        seg = track[a:b].copy()
        miss = ~ok[a:b]
        if miss.any():
            t = np.arange(b - a)
            good = ~miss
            flat = seg.reshape(len(seg), -1)
            for j in range(flat.shape[1]):
                flat[miss, j] = np.interp(t[miss], t[good], flat[good, j])
            seg = flat.reshape(seg.shape)
            n_interp += int(miss.sum())
        segments.append((a, seg))
    return segments, n_interp


def find_cuts(clip: np.ndarray, *, jump: float = 0.25, share: float = 0.8) -> np.ndarray:
    """Frame indices t where a shot cut (or a face switch) happens between t-1 and t: at least
    ``share`` of the points move by more than ``jump`` x the face size (the diagonal of the
    frame-(t-1) landmark bounding box)."""
    clip = np.asarray(clip, dtype=np.float64)
    if len(clip) < 2:
        return np.zeros(0, dtype=np.int64)
    size = np.linalg.norm(clip.max(1) - clip.min(1), axis=-1)[:-1]  # [T-1]
    move = np.linalg.norm(np.diff(clip, axis=0), axis=-1)  # [T-1, 68]
    frac = (move > jump * np.maximum(size, 1e-9)[:, None]).mean(1)
    return np.flatnonzero(frac >= share) + 1


def split_at_cuts(clip: np.ndarray, **kw) -> list[np.ndarray]:
    cuts = find_cuts(clip, **kw)
    return [p for p in np.split(np.asarray(clip), cuts) if len(p)]


@dataclass
class VideoReport:
    video: str
    frames: int = 0
    src_fps: float = 0.0
    detected: int = 0
    interpolated: int = 0
    cuts: int = 0
    kept: list[int] = field(default_factory=list)  # frames per kept clip (after resampling)
    dropped_short: int = 0
    longest: int = 0  # frames of the longest clip, kept or not (after resampling)
    min_len: int = 0
    error: Optional[str] = None  # the video could not be read (or its detection failed)
    failed: bool = False  # error came from an unexpected exception, not from an unreadable file

    @property
    def reason(self) -> Optional[str]:
        """Why the video gave no clip: "unreadable", "failed", "no face", "too short"; None if it gave some."""
        if self.error:
            return "failed" if self.failed else "unreadable"
        if self.kept:
            return None
        return "no face" if self.detected == 0 else "too short"

    def line(self) -> str:
        reason = self.reason
        if reason in ("unreadable", "failed"):
            return f"{self.video}: skipped, {reason} ({self.error})"
        if reason == "no face":
            return f"{self.video}: skipped, no face in any of its {self.frames} frames"
        rate = self.detected / max(self.frames, 1)
        if reason == "too short":
            return (f"{self.video}: skipped, too short: face in {rate:.0%} of {self.frames} frames @ "
                    f"{self.src_fps:g} fps, longest clip {self.longest} frames < {self.min_len} (--min-len)")
        return (f"{self.video}: {self.frames} frames @ {self.src_fps:g} fps, face in {rate:.0%}, "
                f"{self.interpolated} interpolated, {self.cuts} cut(s), {len(self.kept)} clip(s) kept "
                f"({sum(self.kept)} frames), {self.dropped_short} too short")


def track_to_clips(track: np.ndarray, src_fps: float, *, fps: float = 25.0, min_len: int = 45,
                   max_gap_s: float = 0.2, cut_jump: float = 0.25, cut_share: float = 0.8,
                   report: Optional[VideoReport] = None) -> list[np.ndarray]:
    """Raw per-frame detections ``[T, 68, 2]`` (NaN = missed) -> clean clips at ``fps``."""
    max_gap = int(round(max_gap_s * src_fps))
    segments, n_interp = fill_gaps(track, max_gap)
    out = []
    n_cuts = dropped = longest = 0
    for _, seg in segments:
        parts = split_at_cuts(seg, jump=cut_jump, share=cut_share)
        n_cuts += len(parts) - 1
        for p in parts:
            check_resampled_size([len(p)], [src_fps], fps, "video track")
            r = resample_clip(p, src_fps, fps)
            longest = max(longest, len(r))
            if len(r) >= min_len:
                out.append(r)
            else:
                dropped += 1
    if report is not None:
        report.detected = int(np.isfinite(track).all(axis=(1, 2)).sum())
        report.interpolated, report.cuts, report.dropped_short = n_interp, n_cuts, dropped
        report.kept = [len(c) for c in out]
        report.longest, report.min_len = longest, int(min_len)
    return out
