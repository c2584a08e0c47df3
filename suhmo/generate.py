"""Sampling head motion from one reference pose, and loading trained generators.

At test time the generator still works on pairs (rows 2n, 2n+1), but only one pose is
given. As in the paper (Sec. 3.3, Fig. 2) the second sample of each pair is a transformed
copy of the reference (random flip with the left/right index swap, rescale, translation:
``suhmo.data.test_partner``); this partner is the source of diversity, since G has no
noise input. As in the authors' evaluation, each sequence may also start with a random
2-D translation velocity ``v0 ~ U(-r, r)^2`` shared by its 68 points. Generation observes
a single frame (obs_len = 1) and runs free for any number of frames, in O(T) work
(``Generator.generate``: LSTM cell state or Transformer key/value cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from suhmo.utils import SuhmoError

NUM_POINTS = 68


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Load a generator for sampling -> ``(G in eval mode, Config)``.

    ``path`` is a checkpoint file (``last.pt``/``best.pt``), a training folder holding
    ``best.pt`` or ``last.pt``, or an export folder with ``generator.pt`` (state dict) and
    ``config.yaml``.
    """
    from suhmo.checkpoint import generator_state, load_checkpoint
    from suhmo.config import Config, load_yaml
    from suhmo.models import build_generator, check_model_memory

    path = Path(path)
    if not path.exists():
        raise SuhmoError(f"{path}: no such checkpoint file or model folder")
    if path.is_dir():
        if (path / "generator.pt").is_file():
            cfg_path = path / "config.yaml"
            if not cfg_path.is_file():
                raise SuhmoError(f"{path}: export folder has generator.pt but no config.yaml")
            cfg = Config.from_dict(load_yaml(cfg_path), where=str(cfg_path))
            state = _load_state_dict(path / "generator.pt")
            where = path / "generator.pt"
        else:
            for name in ("best.pt", "last.pt"):
                if (path / name).is_file():
                    return load_model(path / name, device)
            raise SuhmoError(f"{path}: folder holds neither generator.pt (export) nor best.pt/last.pt")
    else:
        ck = load_checkpoint(path)
        cfg = Config.from_dict(ck["config"], where=f"{path} (config)")
        state, where = generator_state(ck), path
    check_model_memory(cfg, str(where), training=False)
    G = build_generator(cfg)
    try:
        G.load_state_dict(state)
    except RuntimeError as e:
        raise SuhmoError(f"{where}: generator weights do not match its config "
                         f"({str(e).splitlines()[0][:160]})") from None
    return G.to(torch.device(device)).eval(), cfg


def _load_state_dict(path: Path) -> dict:
    from suhmo.utils import check_regular_file

    check_regular_file(path, "generator state dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing message
        msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise SuhmoError(f"{path}: not a readable generator state dict ({msg})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SuhmoError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def check_refs(refs: np.ndarray, where: str = "reference") -> np.ndarray:
    """``[K, 68, 2]`` (or one ``[68, 2]`` pose) as float32, finite; else SuhmoError."""
    refs = np.asarray(refs, dtype=np.float32)
    if refs.ndim == 2:
        refs = refs[None]
    if refs.ndim != 3 or refs.shape[1:] != (NUM_POINTS, 2) or len(refs) == 0:
        raise SuhmoError(f"{where}: expected pose(s) of shape [68, 2] or [K, 68, 2], got {list(refs.shape)}")
    if not np.isfinite(refs).all():
        raise SuhmoError(f"{where}: pose contains NaN or inf")
    return refs


@torch.no_grad()
def generation_bytes(cfg, samples: int, frames: int, chunk: int = 256) -> int:
    """Memory :func:`sample` needs for ``samples`` sequences of ``frames`` frames under
    ``cfg``'s model, computed without allocating: the output, the pair rows of one chunk
    (future, the concatenation), a Transformer's key/value cache and a VAE decoder's attention."""
    K, F = int(samples), int(frames)
    frame = NUM_POINTS * 2 * 4
    rows = 2 * min(K, chunk)
    n = K * (F + 1) * frame + 3 * rows * (F + 1) * frame
    m = cfg.model
    if m.variant == "transformer":
        seen = min(F + 1, int(m.attn_window_g)) if m.attn_window_g else F + 1
        n += rows * (F + 1) * int(m.emb_g) * 4 * 2 * int(m.blocks_g) + rows * seen * 4 * int(m.heads_g)
    elif m.variant in ("actor", "hitdvae"):
        v = getattr(cfg, m.variant)
        n += rows * (F + 1) * int(v.width) * 4 * 4 * int(v.layers) + rows * int(v.heads) * (F + 1) ** 2 * 4
    return int(n)


def check_generation_size(cfg, samples: int, frames: int, what: str) -> None:
    """SuhmoError naming ``what`` (the flags or config fields) when :func:`generation_bytes`
    exceeds the memory this machine allows; checked before anything is allocated."""
    from suhmo.utils import check_memory

    check_memory(generation_bytes(cfg, samples, frames), what, "generate fewer or shorter sequences")


def sample(G, refs: np.ndarray, frames: int, seed: int, *, init_vel: float = 0.01,
           device: Optional[str | torch.device] = None, chunk: int = 256, cfg=None) -> np.ndarray:
    """Generate ``frames`` frames after each reference pose -> ``[K, frames + 1, 68, 2]``.

    Frame 0 of each output is its reference. Each reference ``refs[k]`` ([K, 68, 2], the
    normalised [0, 1] frame) is paired with ``test_partner`` (row 2k+1); only the real
    reference rows are returned. ``init_vel`` is the range r of the random initial
    translation velocity (0 = start at rest). Deterministic given ``seed``; references are
    processed ``chunk`` at a time. With G's ``cfg`` the memory it needs is checked first.
    """
    from suhmo.data import test_partner

    refs = check_refs(refs)
    if int(frames) < 1:
        raise SuhmoError(f"frames={frames}: must be >= 1")
    if cfg is not None:
        check_generation_size(cfg, len(refs), int(frames), f"{int(frames)} frames x {len(refs)} samples")
    if device is None:
        device = next(G.parameters()).device
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    K = len(refs)
    partners = test_partner(refs, rng)
    pairs = np.stack([refs, partners], axis=1).reshape(2 * K, NUM_POINTS, 2)  # rows (2k, 2k+1)
    if init_vel > 0:
        v0 = rng.uniform(-init_vel, init_vel, size=(2 * K, 1, 2)).astype(np.float32)
        v0 = np.broadcast_to(v0, (2 * K, NUM_POINTS, 2)).copy()
    else:
        v0 = None
    was_training = G.training
    G.eval()
    out = np.empty((K, int(frames) + 1, NUM_POINTS, 2), np.float32)
    # generators with noise inputs (model.noise_g, the VAE baselines) draw it from torch's global RNG: seeded
    # from ``seed`` in a forked RNG state, so that the caller's random stream is left as it was
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(int(seed))
            for lo in range(0, K, chunk):
                hi = min(K, lo + chunk)
                obs = torch.from_numpy(pairs[2 * lo:2 * hi, None]).to(device)  # [2k, 1, 68, 2]
                vel = torch.from_numpy(v0[2 * lo:2 * hi]).to(device) if v0 is not None else None
                fut = G.generate(obs, int(frames), init_vel=vel).future  # [2k, frames, 68, 2]
                seq = torch.cat([obs, fut.to(obs.dtype)], dim=1)[0::2]  # the real reference rows
                out[lo:hi] = seq.float().cpu().numpy()
    finally:
        G.train(was_training)
    return out


def make_sample_fn(G, cfg, device: Optional[str | torch.device] = None):
    """The trainer's ``sample_fn(refs, frames, seed)`` bound to ``G`` and ``cfg.eval.init_vel``."""

    def sample_fn(refs: np.ndarray, frames: int, seed: int) -> np.ndarray:
        return sample(G, refs, frames, seed, init_vel=cfg.eval.init_vel, device=device, cfg=cfg)

    return sample_fn


# ---------------------------------------------------------------------- reference poses
def as_normalised(clip: np.ndarray, cfg) -> np.ndarray:
    """A clip ``[T, 68, 2]`` in the [0, 1] frame: kept if already inside, else normalised
    like the data layer (``cfg.data.normalize``, ``cfg.data.bbox_scale``)."""
    from suhmo.data import normalize_clip

    clip = np.asarray(clip, dtype=np.float32)
    if clip.min() >= 0.0 and clip.max() <= 1.0:
        return clip
    return normalize_clip(clip, cfg.data.normalize, cfg.data.bbox_scale)[0]


def reference_from_pose_file(path: str | Path, cfg) -> np.ndarray:
    """``POSE.npy`` ``[68, 2]`` (pixels or normalised) -> normalised ``[68, 2]``."""
    from suhmo.utils import check_regular_file

    path = check_regular_file(path, "reference pose file")
    if path.stat().st_size > 1 << 20:  # a [68, 2] pose is about 1 KB
        raise SuhmoError(f"{path}: {path.stat().st_size} bytes, too large for a [68, 2] reference pose")
    try:
        pose = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SuhmoError(f"{path}: not a readable .npy array ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(pose, np.ndarray):
        pose.close()
        raise SuhmoError(f"{path}: reference pose must be a [68, 2] .npy array, got an .npz archive")
    if pose.shape != (NUM_POINTS, 2):
        raise SuhmoError(f"{path}: reference pose must be a [68, 2] array, got {list(pose.shape)}")
    if pose.dtype.kind not in "fiu":
        raise SuhmoError(f"{path}: reference pose must hold numbers (x, y), got dtype {pose.dtype}")
    pose = check_refs(pose, str(path))[0]
    return as_normalised(pose[None], cfg)[0]


def reference_from_dataset(spec: str, cfg) -> np.ndarray:
    """``DATA.npz[:CLIP]`` -> the normalised first frame of that clip (default clip 0)."""
    from suhmo.data import load_landmarks, normalize_clip

    path, clip_idx = spec, 0
    head, sep, tail = spec.rpartition(":")
    if sep and tail.strip().lstrip("-").isdigit():
        path, clip_idx = head, int(tail)
    elif sep and head and Path(head).exists() and not Path(spec).exists():
        raise SuhmoError(f"--reference-from {spec}: clip index {tail!r} is not a whole number "
                         f"(use DATA.npz or DATA.npz:CLIP, e.g. {head}:0)")
    ls = load_landmarks(path, fps=cfg.data.fps)
    if not 0 <= clip_idx < len(ls.clips):
        raise SuhmoError(f"{path}: clip index {clip_idx} out of range (the file has {len(ls.clips)} clips, "
                         f"0..{len(ls.clips) - 1})")
    clip = ls.clips[clip_idx]
    if "normalized" in ls.attrs:  # already in the model's frame (e.g. the output of suhmo generate)
        return np.asarray(clip[0], np.float32)
    # like load_dataset: the whole clip is normalised, so frame 0 sits where training saw it
    return normalize_clip(clip, cfg.data.normalize, cfg.data.bbox_scale)[0][0]


def reference_from_image(path: str | Path, cfg) -> np.ndarray:
    """Landmarks of the face in a still image (data layer) -> normalised ``[68, 2]``."""
    from suhmo.data import landmarks_from_image

    pose = check_refs(landmarks_from_image(path), str(path))[0]
    return as_normalised(pose[None], cfg)[0]
