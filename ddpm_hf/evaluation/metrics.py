"""Sample-quality metrics from a classifier's view of a set of images (``ddpm_hf.classifier.predict``).

- classifier Inception Score exp(E_x KL(p(y|x) ‖ p(y))) (Salimans et al. 2016; at most the number of classes);
- the share of confident predictions (max p(y|x) ≥ 0.9), reported beside the two others, never alone;
- the class histogram;
- the Fréchet distance between Gaussians fitted to penultimate features ("classifier-FID"; Heusel et al. 2017, eq. 6).
"""

from __future__ import annotations

import numpy as np


def inception_score(probs: np.ndarray) -> float:
    """Classifier Inception Score exp(E_x KL(p(y|x) ‖ p(y))), with p(y) the mean of p(y|x) over the inputs.

    Args:
        probs: (N, C) rows of class probabilities.

    Returns:
        A value in [1, C]: 1 when every row is the same, C for confident predictions spread evenly over C classes.
    """
    p = np.asarray(probs, dtype=np.float64)
    marginal = p.mean(0, keepdims=True)
    terms = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(np.where(p > 0, marginal, 1))), 0.0)
    return float(np.exp(terms.sum(1).mean()))


def confident_share(probs: np.ndarray, threshold: float = 0.9) -> float:
    """Share of inputs whose most likely class has probability ≥ ``threshold``.

    Args:
        probs: (N, C) rows of class probabilities.
        threshold: confidence level.

    Returns:
        A share in [0, 1].
    """
    return float((np.asarray(probs).max(1) >= threshold).mean())


def class_histogram(probs: np.ndarray) -> np.ndarray:
    """How many inputs fall in each class by arg-max.

    Args:
        probs: (N, C) rows of class probabilities (or logits).

    Returns:
        (C,) int64 counts summing to N.
    """
    probs = np.asarray(probs)
    return np.bincount(probs.argmax(1), minlength=probs.shape[1]).astype(np.int64)


def _sqrtm_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(eigenvalues.clip(min=0))) @ eigenvectors.T


def frechet_distance_from_moments(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance² between N(μ1, Σ1) and N(μ2, Σ2): ‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^{1/2}).

    Tr((Σ1Σ2)^{1/2}) is computed as Tr((Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}) (the two matrices are similar), which needs only
    symmetric eigendecompositions in float64.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) covariances.

    Returns:
        The distance (≥ 0 up to rounding).
    """
    mu1, mu2, sigma1, sigma2 = (np.asarray(a, dtype=np.float64) for a in (mu1, mu2, sigma1, sigma2))
    root1 = _sqrtm_psd(sigma1)
    cross = np.sqrt(np.linalg.eigvalsh(root1 @ sigma2 @ root1).clip(min=0)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * cross)


def frechet_distance(features1: np.ndarray, features2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted (mean, unbiased covariance) to two feature sets.

    Args:
        features1, features2: (N1, D) and (N2, D) features, N1, N2 ≥ 2.

    Returns:
        The distance; 0 for identical sets.
    """
    f1, f2 = np.asarray(features1, dtype=np.float64), np.asarray(features2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(f"features must be (N, D) with the same D and N >= 2, got {f1.shape} and {f2.shape}")
    return frechet_distance_from_moments(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def quality(judged: tuple[np.ndarray, np.ndarray], reference: tuple[np.ndarray, np.ndarray]) -> dict:
    """The metrics of a set of images from its classifier ``(probs, features)``, Fréchet distance to ``reference``.

    Returns:
        Dict with ``fid``, ``inception_score``, ``confident_share`` (p ≥ 0.9) and ``histogram`` (list of counts).
    """
    (probs, features), reference_features = judged, reference[1]
    return {
        "fid": frechet_distance(features, reference_features),
        "inception_score": inception_score(probs),
        "confident_share": confident_share(probs, 0.9),
        "histogram": class_histogram(probs).tolist(),
    }
