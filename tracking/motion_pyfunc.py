"""The MLflow pyfunc model of an exported generator, logged as code by ``suhmo best-export``.

MLflow copies this file into the model and runs it at load time, so it imports only numpy,
torch and MLflow's ``PythonModel``: no suhmo and no tracking code. The model's artifacts:

    generator   the TorchScript generator of the export (``generator.ts``)
    sampling    JSON: how ``suhmo.generate.sample`` turns one reference into a pair (the
                test-time partner's flip / rescale / translation ranges, the flip permutation),
                the initial-velocity range and how pixel poses are normalised

``predict({"reference": [K, 68, 2]}, params={"frames", "samples", "seed"})`` returns
``[K * samples, frames + 1, 68, 2]`` float32 in the model's [0, 1] frame, frame 0 the
reference, references repeated ``samples`` times in a row: for one reference, exactly the
motion of ``suhmo generate --reference POSE.npy --samples S --seed SEED``. The numpy steps
below mirror ``suhmo.data.test_partner``, ``suhmo.generate.sample`` and
``suhmo.generate.as_normalised`` draw for draw; tests/test_tracking_pyfunc.py checks that
both give the same motion.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from mlflow.pyfunc import PythonModel

MAX_FRAMES = 10000
MAX_SEQUENCES = 4096
MAX_TOTAL_FRAMES = 1_000_000  # sequences x frames of one request: ~0.5 GB of output


def normalise(pose: np.ndarray, mode: str, scale: float) -> np.ndarray:
    """One pose ``[68, 2]``: kept if inside [0, 1], else normalised like the data layer."""
    pose = np.asarray(pose, np.float32)
    if pose.min() >= 0.0 and pose.max() <= 1.0:
        return pose
    p = pose.astype(np.float64)
    if mode == "bbox":
        lo, hi = p.min(0), p.max(0)
        rel, extent = p - (lo + hi) / 2, hi - lo
    else:  # centred on the rigid points (nose bridge, nose base, eyes)
        rel = p - p[27:48].mean(axis=0)
        extent = 2 * np.abs(rel).max(0)
    side = float(max(extent.max(), 1e-6) * scale)
    return (rel / side + 0.5).astype(np.float32)


def partners(refs: np.ndarray, rng: np.random.Generator, s: dict) -> np.ndarray:
    """The test-time second sample of each reference ``[K, 68, 2]``: random flip with the
    left/right index swap, rescale about the centre and a translation inside [0, upper]."""
    x = np.array(refs[:, None], dtype=np.float32, copy=True)  # [K, 1, 68, 2]
    k = x.shape[0]
    flip = rng.random(k) < s["flip_p"]
    scale = rng.uniform(s["scale_low"], s["scale_high"], size=k).astype(np.float32)
    u = rng.random((k, 2)).astype(np.float32)
    if flip.any():
        f = np.array(x[flip][..., s["flip_perm"], :], copy=True)
        f[..., 0] = 1 - f[..., 0]
        x[flip] = f
    x = 0.5 + scale[:, None, None, None] * (x - 0.5)
    lo, hi = x.min(axis=(1, 2)), x.max(axis=(1, 2))
    room_lo, room_hi = -lo, s["upper"] - hi
    shift = np.where(room_hi >= room_lo, room_lo + u * (room_hi - room_lo), (room_lo + room_hi) / 2)
    return (x + shift[:, None, None, :]).astype(np.float32, copy=False)[:, 0]


class MotionModel(PythonModel):
    """Head motion from reference poses with the TorchScript generator."""

    def load_context(self, context):
        self.generator = torch.jit.load(context.artifacts["generator"], map_location="cpu").eval()
        with open(context.artifacts["sampling"]) as f:
            s = json.load(f)
        s["flip_perm"] = np.asarray(s["flip_perm"], np.int64)
        self.sampling = s

    def predict(self, context, model_input, params=None):
        params = params or {}
        frames, samples, seed = (int(params.get(k, self.sampling["defaults"][k]))
                                 for k in ("frames", "samples", "seed"))
        refs = model_input["reference"] if isinstance(model_input, dict) else model_input
        refs = np.asarray(refs, np.float32)
        if refs.ndim == 2:
            refs = refs[None]
        if refs.ndim != 3 or refs.shape[1:] != (68, 2) or len(refs) == 0:
            raise ValueError(f"reference: expected [K, 68, 2] poses, got {list(refs.shape)}")
        if not np.isfinite(refs).all():
            raise ValueError("reference: poses contain NaN or inf")
        n = len(refs) * samples
        if not 1 <= frames <= MAX_FRAMES or samples < 1 or n > MAX_SEQUENCES or n * (frames + 1) > MAX_TOTAL_FRAMES:
            raise ValueError(f"frames={frames}, samples={samples} for {len(refs)} reference(s): need "
                             f"1 <= frames <= {MAX_FRAMES}, samples >= 1, at most {MAX_SEQUENCES} sequences "
                             f"and {MAX_TOTAL_FRAMES} frames in all")
        s = self.sampling
        refs = np.stack([normalise(r, s["normalize"], s["bbox_scale"]) for r in refs])
        return self.sample(np.repeat(refs, samples, axis=0), frames, seed)

    def sample(self, refs: np.ndarray, frames: int, seed: int) -> np.ndarray:
        """``[K, 68, 2]`` normalised references -> ``[K, frames + 1, 68, 2]`` (frame 0 the reference)."""
        s = self.sampling
        rng = np.random.default_rng(seed)
        k = len(refs)
        pairs = np.stack([refs, partners(refs, rng, s)], axis=1).reshape(2 * k, 68, 2)  # rows (2i, 2i+1)
        r = float(s["init_vel"])
        if r > 0:
            v0 = rng.uniform(-r, r, size=(2 * k, 1, 2)).astype(np.float32)
            v0 = np.broadcast_to(v0, (2 * k, 68, 2)).copy()
        else:
            v0 = np.zeros((2 * k, 68, 2), np.float32)
        out = np.empty((k, frames + 1, 68, 2), np.float32)
        chunk = int(s["chunk"])
        # generators with latent noise draw it from torch's global RNG, seeded as suhmo does
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for lo in range(0, k, chunk):
                hi = min(k, lo + chunk)
                obs = torch.from_numpy(pairs[2 * lo:2 * hi, None].copy())
                fut = self.generator(obs, torch.from_numpy(v0[2 * lo:2 * hi]), frames)
                out[lo:hi] = torch.cat([obs, fut.to(obs.dtype)], dim=1)[0::2].float().numpy()
        return out


try:  # logged as code: MLflow runs this file and takes the model set here
    from mlflow.models import set_model

    set_model(MotionModel())
except ImportError:  # an MLflow without models-from-code: the class is still importable
    pass
