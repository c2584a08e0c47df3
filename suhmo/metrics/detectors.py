"""Pretrained feature detectors for the paper's FID / t-FID / FVD, from LOCAL TorchScript files.

Nothing is downloaded. The files are looked up in ``suhmo.paths.detector_dir()``
(``$SUHMO_DETECTORS``, default ``$SUHMO_HOME/detectors``) or a folder given explicitly, and
loaded once per process. Calling conventions are those of the standard public files:

``inception-2015-12-05.pt`` (NVlabs stylegan2-ada-pytorch metrics; FID weights of the
    TF Inception-v3): ``model(images uint8 [N, 3, H, W], return_features=True) -> [N, 2048]``
    pool features; the model resizes to 299 internally.
``i3d_torchscript.pt`` (StyleGAN-V's FVD code, I3D on Kinetics-400):
    ``model(videos float [N, 3, T, 224, 224] in [-1, 1], rescale=False, resize=False,
    return_features=True) -> [N, 400]``.

Differences from the authors' code (paper-vs-code.md §5): their FVD took I3D logits of
{0, 1} videos flattened over time (1600-d at 40 frames); here the standard 400-d features of
[-1, 1] videos are used, so FVD values are comparable across clip lengths and with other
work, not digit-for-digit with the paper's tables.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from suhmo.utils import SuhmoError


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    filename: str
    origin: str
    dim: int


DETECTORS = {
    "inception": DetectorSpec(
        "inception", "inception-2015-12-05.pt",
        "the NVlabs stylegan2-ada-pytorch FID detector, published at "
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
        2048),
    "i3d": DetectorSpec(
        "i3d", "i3d_torchscript.pt",
        "the I3D detector of StyleGAN-V's FVD code (universome/stylegan-v, "
        "src/metrics/frechet_video_distance.py), published at "
        "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt",
        400),
}

_LOADED: dict = {}
_HASHES: dict = {}


def detector_path(name: str, detector_dir: Optional[Path] = None) -> Path:
    """The file of detector ``name``; SuhmoError naming file, folder and origin when missing."""
    from suhmo.paths import detector_dir as default_dir

    spec = DETECTORS[name]
    folder = Path(detector_dir) if detector_dir is not None else default_dir()
    path = folder / spec.filename
    if not path.is_file():
        raise SuhmoError(
            f"detector file {spec.filename} not found in {folder} (set SUHMO_DETECTORS or "
            f"--detectors to the folder holding it); it is {spec.origin}; suhmo downloads nothing, "
            f"fetch it yourself or use the weight-free 'landmark' metrics")
    return path


def file_digest(path: Path) -> str:
    """sha1 of a detector file (part of the reference-statistics cache key), memoised."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def load_detector(name: str, detector_dir: Optional[Path] = None, device: str = "cpu"):
    """The TorchScript module of detector ``name`` (loaded once per process and device)."""
    import torch

    path = detector_path(name, detector_dir)
    st = path.stat()
    key = (str(path), st.st_mtime_ns, str(device))
    if key not in _LOADED:
        try:
            model = torch.jit.load(str(path), map_location=device)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one user-facing message
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise SuhmoError(f"{path}: not a loadable TorchScript detector ({msg})") from None
        _LOADED[key] = model.eval()
    return _LOADED[key]


def inception_features(model, images: np.ndarray, *, batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """uint8 images ``[N, 3, H, W]`` -> pool features ``[N, 2048]`` (float64)."""
    import torch

    out = []
    with torch.no_grad():
        for lo in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[lo:lo + batch_size])).to(device)
            out.append(model(x, return_features=True).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, DETECTORS["inception"].dim))


def i3d_features(model, videos: np.ndarray, *, batch_size: int = 8, device: str = "cpu") -> np.ndarray:
    """uint8 videos ``[N, T, 3, H, W]`` (0/255) -> I3D features ``[N, 400]`` (float64).

    Converted to float ``[N, 3, T, H, W]`` in [-1, 1] as the StyleGAN-V convention expects.
    """
    import torch

    out = []
    with torch.no_grad():
        for lo in range(0, len(videos), batch_size):
            v = torch.from_numpy(np.ascontiguousarray(videos[lo:lo + batch_size])).to(device)
            v = v.permute(0, 2, 1, 3, 4).float() / 127.5 - 1.0
            out.append(model(v, rescale=False, resize=False, return_features=True).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, DETECTORS["i3d"].dim))
