"""Fréchet distance between Gaussians fitted to two feature sets.

    FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1^1/2 S2 S1^1/2)^1/2)

(Heusel et al. 2017, the FID; Unterthiner et al. 2018, the FVD). The paper's FID / FVD /
t-FID (Sec. 4.1) and every distance of the landmark stack use it.

The matrix square root is taken through symmetric eigen-decompositions: ``S1^1/2`` of the
PSD matrix S1, then the eigenvalues of the symmetric PSD matrix ``S1^1/2 S2 S1^1/2``,
clipped at 0. ``tr(sqrtm(S1 S2))`` equals the sum of their square roots, so there is no
complex ``sqrtm`` output to discard and no singular-matrix fallback to tune; rank-deficient
covariances (fewer samples than dimensions) are handled exactly.
"""

from __future__ import annotations

import numpy as np


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (N - 1 normalisation) of ``feats [N, D]``."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats: need [N >= 2, D] features, got shape {x.shape}")
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = xc.T @ xc / (x.shape[0] - 1)
    return mu, sigma


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (>= 0)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"frechet_distance: shape mismatch mu {mu1.shape}/{mu2.shape}, "
                         f"sigma {s1.shape}/{s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)
    return max(d, 0.0)


def frechet_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to ``f1 [N1, D]`` and ``f2 [N2, D]``."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))
