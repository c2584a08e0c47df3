"""A still portrait moved by generated head motion: a piecewise-affine warp of the photo.

The generator moves 68 landmarks in its normalised frame. Their motion relative to the
reference frame is taken back to the photo's pixels and the photo is warped to follow it,
triangle by triangle, over a Delaunay triangulation of control points:

    the 68 landmarks            follow the generated motion;
    10 forehead points          (above the brows) follow the face's similarity motion, so that
                                forehead and hair move with the head;
    a halo of 16 points         around the head follows up to half of that similarity motion
                                (less towards the neck), so that the background near the head
                                bends smoothly and the body stays;
    points on the image border  stay where they are, and so do points on a rectangle inset
    and on a frame inside it    by 4% of the image: the band along the border never moves.

Every output pixel is mapped back to the photo by the affine map of the triangle it falls in
(one ``cv2.remap`` per frame). Each eye moves as a whole (its shape kept, so it never
smears), a landmark's own deformation beyond the head's similarity motion is capped at
``MAX_DEFORM`` face heights, and a frame whose target triangles would still fold over has
the offending landmarks' deformation shrunk until no triangle flips. When the mouth opens
wider than in the photo, the gap between the inner lips turns dark, as a mouth's interior is,
and the photo's own mouth interior (its teeth) is carried unstretched by the upper lip.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from suhmo.utils import SuhmoError

PORTRAIT_DIR = Path(__file__).with_name("portrait")
PORTRAIT = PORTRAIT_DIR / "astronaut.jpg"
PORTRAIT_LANDMARKS = PORTRAIT_DIR / "astronaut_landmarks.csv"

BROWS = np.arange(17, 27)
INNER_LIPS = np.arange(60, 68)
UPPER_INNER_LIP = np.arange(60, 65)  # corners and upper inner lip: what the upper teeth follow
EYES = (np.arange(36, 42), np.arange(42, 48))
MAX_DEFORM = 0.15  # largest non-rigid move of a landmark, in face heights (chin to brows)
N_HALO = 16
FRAME_INSET = 0.04  # the still band along the image border, in image sizes
MOUTH_RGB = np.array([52, 18, 24], np.float32)  # the dark red of an open mouth's interior


# ---------------------------------------------------------------------- inputs
def bundled_portrait() -> tuple[np.ndarray, np.ndarray]:
    """The portrait shipped with the package (NASA, public domain; see portrait/ATTRIBUTION.md)
    -> (RGB ``[512, 512, 3]`` uint8, landmarks ``[68, 2]`` pixels)."""
    return load_photo(PORTRAIT), load_landmarks_px(PORTRAIT_LANDMARKS)


def load_photo(path: str | Path) -> np.ndarray:
    """A photo file -> RGB ``[H, W, 3]`` uint8."""
    from suhmo.utils import check_regular_file

    path = check_regular_file(path, "photo")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SuhmoError(f"{path}: not a readable image (JPEG, PNG, ...)")
    if min(img.shape[:2]) < 32:
        raise SuhmoError(f"{path}: image of {img.shape[1]}x{img.shape[0]} pixels is too small to animate")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_landmarks_px(path: str | Path) -> np.ndarray:
    """``LM.npy`` or ``LM.csv`` holding ``[68, 2]`` pixel coordinates (x, y) of the photo."""
    from suhmo.utils import check_regular_file

    path = check_regular_file(path, "landmark file")
    try:
        if path.suffix.lower() == ".csv":
            pts = np.loadtxt(path, delimiter=",", comments="#", dtype=np.float64)
        else:
            pts = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SuhmoError(f"{path}: not a readable landmark array ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(pts, np.ndarray) or pts.shape != (68, 2):
        raise SuhmoError(f"{path}: landmarks must be a [68, 2] array of pixel coordinates, got "
                         f"{list(getattr(pts, 'shape', [])) or type(pts).__name__}")
    if not np.isfinite(pts).all():
        raise SuhmoError(f"{path}: landmarks contain NaN or inf")
    return pts.astype(np.float32)


def check_landmarks_in(landmarks: np.ndarray, shape: tuple[int, ...], where: str) -> None:
    h, w = shape[:2]
    if landmarks.min() < 0 or landmarks[:, 0].max() > w - 1 or landmarks[:, 1].max() > h - 1:
        raise SuhmoError(f"{where}: landmarks fall outside the {w}x{h} photo (they must be pixels of it)")
    ext = landmarks.max(0) - landmarks.min(0)
    if ext.min() < 8:
        raise SuhmoError(f"{where}: the face spans {ext[0]:.0f}x{ext[1]:.0f} pixels; too small to animate")


# ---------------------------------------------------------------------- geometry
def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) ``src -> dst`` as a
    ``[2, 3]`` matrix (Umeyama's closed form)."""
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    a = (s * d).sum()
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()
    n = (s ** 2).sum()
    c, sn = a / max(n, 1e-12), b / max(n, 1e-12)
    R = np.array([[c, -sn], [sn, c]])
    return np.hstack([R, (md - R @ ms)[:, None]])


def apply(M: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ M[:, :2].T + M[:, 2]


def delaunay(points: np.ndarray, w: int, h: int) -> np.ndarray:
    """Delaunay triangles of ``points [N, 2]`` as vertex indices ``[M, 3]``."""
    sub = cv2.Subdiv2D((0, 0, w + 1, h + 1))
    for p in points:
        sub.insert((float(p[0]), float(p[1])))
    index = {(round(float(x), 3), round(float(y), 3)): i for i, (x, y) in enumerate(points)}
    tris = []
    for t in sub.getTriangleList():
        ids = [index.get((round(float(t[k]), 3), round(float(t[k + 1]), 3))) for k in (0, 2, 4)]
        if None not in ids:
            tris.append(ids)
    return np.asarray(tris, np.int64)


def signed_areas(pts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = pts[tris[:, 0]], pts[tris[:, 1]], pts[tris[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


def polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


@dataclass
class Controls:
    """Control points of one photo: 68 landmarks, forehead, halo, border (in that order)."""

    points: np.ndarray  # [N, 2] float64, pixels of the photo
    n_forehead: int
    n_halo: int

    @property
    def forehead(self) -> slice:
        return slice(68, 68 + self.n_forehead)

    @property
    def halo(self) -> slice:
        return slice(68 + self.n_forehead, 68 + self.n_forehead + self.n_halo)


def _rectangle(x0: float, y0: float, x1: float, y1: float, spacing: float) -> np.ndarray:
    """Points along a rectangle at most ``spacing`` apart, corners included once."""
    W, H = x1 - x0, y1 - y0
    tw = np.linspace(0, 1, max(2, int(np.ceil(W / spacing))) + 1)[:-1]
    th = np.linspace(0, 1, max(2, int(np.ceil(H / spacing))) + 1)[:-1]
    return np.concatenate([np.stack([x0 + tw * W, y0 + 0 * tw], 1), np.stack([x1 + 0 * th, y0 + th * H], 1),
                           np.stack([x1 - tw * W, y1 + 0 * tw], 1), np.stack([x0 + 0 * th, y1 - th * H], 1)])


def control_points(landmarks: np.ndarray, w: int, h: int) -> Controls:
    lm = np.asarray(landmarks, np.float64)
    up = lm[27] - lm[8]  # chin -> top of the nose bridge
    face_h = np.linalg.norm(up)
    up = up / max(face_h, 1e-6)
    forehead = lm[BROWS] + up * 0.55 * face_h
    head = np.vstack([lm, forehead])
    c = head.mean(0)
    half = (head.max(0) - head.min(0)) / 2
    ang = np.arange(N_HALO) * (2 * np.pi / N_HALO)
    halo = c + np.stack([np.cos(ang) * half[0] * 1.45, np.sin(ang) * half[1] * 1.35], 1)
    # two fixed frames: the image border and one inset by FRAME_INSET; the band between them
    # is triangulated by fixed points only, so it stays exactly as in the photo
    inset = max(2.0, FRAME_INSET * min(w, h))
    halo = np.clip(halo, inset + 3, [w - 1 - inset - 3, h - 1 - inset - 3])
    # points closer together than the band is wide: no triangle reaches across the band
    spacing = 1.5 * inset
    pts = np.vstack([lm, forehead, halo, _rectangle(0, 0, w - 1, h - 1, spacing),
                     _rectangle(inset, inset, w - 1 - inset, h - 1 - inset, spacing)])
    # points that coincide would break the triangulation: nudge duplicates apart
    _, first = np.unique(np.round(pts, 2), axis=0, return_index=True)
    dup = np.setdiff1d(np.arange(len(pts)), first)
    pts[dup] += 0.05 * (1 + np.arange(len(dup)))[:, None]
    return Controls(pts, len(forehead), len(halo))


# ---------------------------------------------------------------------- the warp
class PortraitWarper:
    """Warps one photo so that its landmarks ``[68, 2]`` (pixels) move to given positions."""

    def __init__(self, image: np.ndarray, landmarks: np.ndarray):
        self.image = np.ascontiguousarray(image)
        self.h, self.w = image.shape[:2]
        self.ctrl = control_points(landmarks, self.w, self.h)
        self.src = self.ctrl.points
        self.tris = delaunay(self.src, self.w, self.h)
        self.src_area = signed_areas(self.src, self.tris)
        keep = np.abs(self.src_area) > 1e-6
        self.tris, self.src_area = self.tris[keep], self.src_area[keep]
        self.mouth_area = polygon_area(self.src[INNER_LIPS])
        self.ys, self.xs = np.indices((self.h, self.w), np.float32)
        self.face_h = float(np.linalg.norm(self.src[8] - self.src[BROWS].mean(0)))
        # the halo above the head follows half of its motion, the halo below (neck, shoulders:
        # the body does not turn with the head) none of it
        below = (self.src[self.ctrl.halo, 1] - self.src[:68, 1].mean()) / max(np.ptp(self.src[:68, 1]), 1.0)
        self.halo_weight = 0.5 * np.clip(0.3 - 2 * below, 0.0, 1.0)

    def targets(self, lm_t: np.ndarray) -> np.ndarray:
        """All control points for landmarks at ``lm_t`` (pixels), with no triangle folded over."""
        src, ctrl = self.src, self.ctrl
        lm0 = src[:68]
        lm_t = np.array(lm_t, np.float64)
        M = similarity(lm0, lm_t)
        for eye in EYES:  # each eye keeps its shape (turned and scaled with the head): it never smears
            e = apply(M, lm0[eye])
            lm_t[eye] = e + (lm_t[eye].mean(0) - e.mean(0))
        rigid = apply(M, lm0)
        residual = lm_t - rigid  # the face's own deformation, at most MAX_DEFORM of its height
        norm = np.linalg.norm(residual, axis=1, keepdims=True)
        cap = MAX_DEFORM * self.face_h * abs(M[0, 0] + 1j * M[1, 0])
        residual *= np.minimum(1.0, cap / np.maximum(norm, 1e-9))
        moved = src.copy()
        moved[ctrl.forehead] = apply(M, src[ctrl.forehead])
        moved[ctrl.halo] = src[ctrl.halo] + self.halo_weight[:, None] * (apply(M, src[ctrl.halo]) - src[ctrl.halo])
        alpha = np.ones(68)
        for _ in range(8):
            moved[:68] = rigid + alpha[:, None] * residual
            bad = self._folded(moved)
            if not bad.any():
                return moved
            verts = np.unique(self.tris[bad])
            alpha[verts[verts < 68]] *= 0.5
        # still folded: the head's displacement itself is too large for the frame; shrink it
        disp = moved - src
        lo, hi = 0.0, 1.0
        for _ in range(12):
            mid = (lo + hi) / 2
            if self._folded(src + mid * disp).any():
                hi = mid
            else:
                lo = mid
        return src + lo * disp

    def _folded(self, pts: np.ndarray) -> np.ndarray:
        area = signed_areas(pts, self.tris)
        return (np.sign(area) != np.sign(self.src_area)) | (np.abs(area) < 0.05 * np.abs(self.src_area))

    def warp(self, lm_t: np.ndarray) -> np.ndarray:
        """The photo with its landmarks moved to ``lm_t [68, 2]`` -> RGB ``[H, W, 3]`` uint8."""
        dst = self.targets(lm_t)
        moving = np.abs(dst - self.src).max(1) > 1e-3
        tris = self.tris[moving[self.tris].any(1)]  # the others map every pixel to itself
        out = self.image.copy()
        if len(tris):
            # only the box around the triangles that move is remapped
            corners = np.vstack([dst[tris.ravel()], self.src[tris.ravel()]])
            x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 1, 0)
            x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, [self.w, self.h])
            tri_id = np.full((y1 - y0, x1 - x0), len(tris), np.int32)
            for k, t in enumerate(tris):
                cv2.fillConvexPoly(tri_id, np.round(dst[t] - [x0, y0]).astype(np.int32), int(k))
            # per triangle, the affine map from output pixels back to the photo
            A = np.zeros((len(tris) + 1, 2, 3), np.float32)
            A[-1] = [[1, 0, 0], [0, 1, 0]]  # pixels of no moving triangle: identity
            for k, t in enumerate(tris):
                A[k] = cv2.getAffineTransform(dst[t].astype(np.float32), self.src[t].astype(np.float32))
            c = A.reshape(-1, 6).T.copy()  # the six coefficients, each [triangles + 1]
            xs, ys = self.xs[y0:y1, x0:x1], self.ys[y0:y1, x0:x1]
            map_x = c[0][tri_id] * xs + c[1][tri_id] * ys + c[2][tri_id]
            map_y = c[3][tri_id] * xs + c[4][tri_id] * ys + c[5][tri_id]
            out[y0:y1, x0:x1] = cv2.remap(self.image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return self._mouth(out, dst[INNER_LIPS])

    def _mouth(self, frame: np.ndarray, inner: np.ndarray) -> np.ndarray:
        """A mouth opened wider than in the photo: the gap between the inner lips is dark, with
        the photo's own mouth interior (the teeth, when it shows them) carried unstretched by the
        upper lip, as upper teeth are; faded in with the extra opening."""
        area = polygon_area(inner)
        extra = (area - self.mouth_area) / max(area, 1e-6)
        if area < 4.0 or extra <= 0.05:
            return frame
        alpha = min(1.0, 3.0 * (extra - 0.05))
        x0, y0 = np.floor(inner.min(0)).astype(int) - 2
        x1, y1 = np.ceil(inner.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        if x1 <= x0 or y1 <= y0:
            return frame
        size, off = (x1 - x0, y1 - y0), np.array([x0, y0], np.float64)

        def polygon_mask(pts: np.ndarray) -> np.ndarray:
            m = np.zeros((y1 - y0, x1 - x0), np.float32)
            cv2.fillPoly(m, [np.round((pts - off) * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
            return m

        M = similarity(self.src[UPPER_INNER_LIP], inner[UPPER_INNER_LIP - INNER_LIPS[0]])
        M_box = M.copy()
        M_box[:, 2] -= off
        teeth = cv2.warpAffine(self.image, M_box, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        carried = polygon_mask(apply(M, self.src[INNER_LIPS]))[..., None]
        interior = MOUTH_RGB * (1 - carried) + teeth.astype(np.float32) * carried
        mask = cv2.GaussianBlur(polygon_mask(inner), (3, 3), 0)[..., None] * alpha
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = (roi * (1 - mask) + interior * mask).round().clip(0, 255).astype(np.uint8)
        return frame


# ---------------------------------------------------------------------- motion -> frames
def motion_to_pixels(motion: np.ndarray, landmarks: np.ndarray, cfg) -> np.ndarray:
    """Generated motion ``[T, 68, 2]`` (normalised frame, frame 0 the photo's normalised pose)
    -> the photo's landmarks moved the same way, ``[T, 68, 2]`` pixels."""
    from suhmo.data import normalize_clip

    _, p = normalize_clip(np.asarray(landmarks)[None], cfg.data.normalize, cfg.data.bbox_scale)
    centre = np.asarray(p.centre).reshape(-1, 2)[0]
    px = (np.asarray(motion, np.float64) - 0.5) * p.side + centre
    return (np.asarray(landmarks, np.float64) + (px - px[0])).astype(np.float32)


def animate(image: np.ndarray, landmarks: np.ndarray, motion_px: np.ndarray, *,
            size: int | None = None) -> np.ndarray:
    """Frames ``[T, H', W', 3]`` of ``image`` following ``motion_px [T, 68, 2]`` (pixels);
    ``size`` scales the longer side (the warp runs at the output size)."""
    landmarks = np.asarray(landmarks, np.float32)
    motion_px = np.asarray(motion_px, np.float32)
    if size is not None and size != max(image.shape[:2]):
        f = size / max(image.shape[:2])
        w, h = max(8, round(image.shape[1] * f)), max(8, round(image.shape[0] * f))
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
        sx, sy = w / image.shape[1], h / image.shape[0]
        image = cv2.resize(image, (w, h), interpolation=interp)
        scale = np.array([sx, sy], np.float32)
        landmarks, motion_px = landmarks * scale, motion_px * scale
    warper = PortraitWarper(image, landmarks)
    return np.stack([warper.warp(m) for m in motion_px])


def portrait_motion(sample_fn, cfg, landmarks: np.ndarray, frames: int, seed: int) -> np.ndarray:
    """Motion of the photo's landmarks ``[68, 2]`` (pixels) -> ``[frames + 1, 68, 2]`` pixels, frame 0
    the photo's own landmarks. ``sample_fn(refs [K, 68, 2], frames, seed) -> [K, frames + 1, 68, 2]``
    samples in the model's frame (``suhmo.generate.sample`` bound to a generator, or a trainer's)."""
    from suhmo.generate import as_normalised

    ref = as_normalised(np.asarray(landmarks, np.float32)[None], cfg)[0]
    motion = np.asarray(sample_fn(ref[None], int(frames), int(seed)))[0]
    if not np.isfinite(motion).all():
        raise SuhmoError("the model generated non-finite landmarks (NaN or inf): nothing to animate")
    return motion_to_pixels(motion, landmarks, cfg)


def generate_portrait_motion(G, cfg, landmarks: np.ndarray, frames: int, seed: int,
                             init_vel: float | None = None) -> np.ndarray:
    """:func:`portrait_motion` by generator ``G`` (the same motion as ``suhmo generate`` from
    these landmarks with the same seed)."""
    import torch

    from suhmo.generate import sample

    r = cfg.eval.init_vel if init_vel is None else init_vel
    # one pair of sequences, frame by frame: products too small to share between threads, and
    # on a busy machine a second thread makes each step wait (6 s instead of 0.2 s for 120 frames)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return portrait_motion(lambda refs, n, s: sample(G, refs, n, s, init_vel=r), cfg, landmarks, frames, seed)
    finally:
        torch.set_num_threads(threads)


def crop_to_face(image: np.ndarray, landmarks: np.ndarray, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A square crop about the face, ``scale`` times its larger extent (inside the image),
    and the landmarks in the crop's pixels."""
    lm = np.asarray(landmarks, np.float32)
    h, w = image.shape[:2]
    side = int(min(h, w, round(scale * float((lm.max(0) - lm.min(0)).max()))))
    cx, cy = (lm.max(0) + lm.min(0)) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    y0 = int(np.clip(round(cy - side / 2 - 0.1 * side), 0, h - side))  # a little more room above: hair
    return image[y0:y0 + side, x0:x0 + side].copy(), lm - np.array([x0, y0], np.float32)


def animate_portrait(sample_fn, cfg, *, frames: int = 40, seed: int = 0, size: int = 160,
                     crop: bool = True) -> np.ndarray:
    """The bundled portrait (cropped about the face unless ``crop`` is off) moved by
    ``sample_fn`` (see :func:`portrait_motion`) -> RGB frames ``[frames + 1, size, size, 3]``."""
    image, lm = bundled_portrait()
    if crop:
        image, lm = crop_to_face(image, lm)
    motion = portrait_motion(sample_fn, cfg, lm, frames, seed)
    return animate(image, lm, motion, size=size)
