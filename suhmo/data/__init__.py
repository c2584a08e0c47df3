"""Landmark data: the canonical format, validation, normalisation, training windows,
pairing, augmentation, procedural talking heads and video -> landmarks.

Public API (docs/ARCHITECTURE.md, "Data"). MediaPipe (``prepare``) is imported only when a
video or image is processed.
"""

from suhmo.data.dataset import (
    DataError,
    LandmarkSet,
    ResampleNotice,
    resample_clip,
    save_landmarks,
)
from suhmo.data.split import SPLIT_SEED, load_split, split_persons
from suhmo.data.normalize import NormParams, denormalize_clip, normalize_clip, normalize_set
from suhmo.data.windows import (
    FLIP_PERM,
    BatchSampler,
    augment,
    hflip,
    motion_features,
    smooth_positions,
    test_partner,
)
from suhmo.data.synth import synthesize
from suhmo.data.loading import check_data_path, load_dataset, load_landmarks
from suhmo.data.detect import landmarks_from_image  # mediapipe imported on call
from suhmo.data.prepare import prepare_videos

__all__ = [
    "SPLIT_SEED", "load_split", "split_persons", "DataError", "LandmarkSet", "ResampleNotice", "load_landmarks", "save_landmarks", "resample_clip",
    "NormParams", "normalize_clip", "denormalize_clip", "normalize_set",
    "FLIP_PERM", "BatchSampler", "augment", "hflip", "motion_features", "smooth_positions",
    "test_partner", "synthesize", "load_dataset", "check_data_path", "landmarks_from_image", "prepare_videos",
]
