"""Baseline anomaly scores on the same galaxies as the model: PCA, IsolationForest, random.

All scores follow the convention of :mod:`ifskeras.discovery.metrics`: higher = more anomalous.
The latent k-NN score, computed by ``ifskeras score`` and evaluated as a baseline too,
lives with the other neighbour searches in :mod:`ifskeras.discovery.neighbours`.

Map baselines take *scaled* maps (the model's scaling already applied, e.g. asinh),
flattened to ``X`` of shape (N, L*S*S) (or (N, L, S, S), flattened here), with a
``valid`` mask of the same shape. Invalid or non-finite pixels are set to 0 in scaled
space before PCA, and reconstruction errors are averaged over valid pixels only.

Memory
------
PCA is fitted with scikit-learn's randomized SVD (``batch_size=None``), which on
float32 input keeps float32 and makes one centred copy of the training maps: about
2 x 0.8 GB for 10,000 galaxies of 19 x 32 x 32. With ``batch_size=n``,
``IncrementalPCA`` fits in batches of ``n`` galaxies instead (memory of a batch, but
slower). Projection and reconstruction of all galaxies always run in batches.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DEFAULT_PCA_COMPONENTS",
    "pca_reconstruction_error",
    "isolation_forest_scores",
    "random_scores",
]

#: Principal components kept by the map baselines.
DEFAULT_PCA_COMPONENTS = 32
_DEFAULT_TREES = 200
_TRANSFORM_BATCH = 1024


def pca_reconstruction_error(
    X_train: np.ndarray,
    X_all: np.ndarray,
    *,
    valid_train: np.ndarray | None = None,
    valid_all: np.ndarray | None = None,
    n_components: int = DEFAULT_PCA_COMPONENTS,
    batch_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Mean squared PCA reconstruction error over the valid pixels of each galaxy.

    Parameters
    ----------
    X_train : array, shape (N_train, P) or (N_train, L, S, S)
        Scaled maps the PCA is fitted on (e.g. the training split).
    X_all : array, shape (N, P) or (N, L, S, S)
        Scaled maps to score.
    valid_train, valid_all : bool arrays of the same shapes, optional
        1 = usable pixel; default: every finite pixel.
    n_components : int
        Components kept, ``1 <= n_components < min(N_train, P)``.
    batch_size : int, optional
        Fit with ``IncrementalPCA`` in batches of this many galaxies (bounded memory);
        default randomized PCA in one go (see the module docstring).
    seed : int

    Returns
    -------
    array, shape (N,)
        NaN for a galaxy without valid pixels.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 20)).astype("float32")
    >>> X[45] *= 10
    >>> int(np.argmax(pca_reconstruction_error(X[:40], X, n_components=3)))
    45
    """
    x_train, _ = _masked(X_train, valid_train, "X_train")
    x_all, m_all = _masked(X_all, valid_all, "X_all")
    _check_same_width(x_train, x_all)
    pca = _fit_pca(x_train, n_components, batch_size, seed)
    errors = np.empty(x_all.shape[0])
    for begin in range(0, x_all.shape[0], _TRANSFORM_BATCH):
        chunk = x_all[begin : begin + _TRANSFORM_BATCH]
        mask = m_all[begin : begin + _TRANSFORM_BATCH]
        recon = pca.inverse_transform(pca.transform(chunk))
        squared = np.where(mask, (recon - chunk) ** 2, 0.0).sum(axis=1)
        n_valid = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            errors[begin : begin + chunk.shape[0]] = np.where(n_valid > 0, squared / n_valid, np.nan)
    return errors


def isolation_forest_scores(
    X_train: np.ndarray,
    X_all: np.ndarray,
    *,
    valid_train: np.ndarray | None = None,
    valid_all: np.ndarray | None = None,
    n_components: int = DEFAULT_PCA_COMPONENTS,
    n_estimators: int = _DEFAULT_TREES,
    batch_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """IsolationForest on PCA features of the masked scaled maps; higher = more anomalous.

    PCA and the forest are fitted on ``X_train``; every galaxy of ``X_all`` is scored
    with ``-IsolationForest.score_samples`` (arguments as in
    :func:`pca_reconstruction_error`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 20)).astype("float32")
    >>> X[3] += 8
    >>> int(np.argmax(isolation_forest_scores(X, X, n_components=5)))
    3
    """
    x_train, _ = _masked(X_train, valid_train, "X_train")
    x_all, _ = _masked(X_all, valid_all, "X_all")
    _check_same_width(x_train, x_all)
    pca = _fit_pca(x_train, n_components, batch_size, seed)
    features_train = _transform(pca, x_train)
    features_all = _transform(pca, x_all)
    return _isolation_forest(features_train, features_all, n_estimators, seed)


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    """Uniform random scores: the chance baseline (AUROC about 0.5)."""
    if n < 0:
        raise ValueError(f"n must be >= 0. Received: {n!r}")
    return np.random.default_rng(seed).random(n)


# --------------------------------------------------------------------------- helpers


def _masked(X: np.ndarray, valid: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten to (N, P) float32, zero invalid and non-finite pixels; return data and mask."""
    x = np.asarray(X)
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N, P) or (N, L, S, S). Received: shape {x.shape}")
    x = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if valid is None:
        mask = finite
    else:
        v = np.asarray(valid)
        if v.shape[0] != x.shape[0] or v.size != x.size:
            raise ValueError(f"valid mask of {name} must match its shape {np.shape(X)}. Received: shape {v.shape}")
        mask = v.reshape(x.shape).astype(bool) & finite
    if not mask.all():
        x = np.where(mask, x, np.float32(0))
    return x, mask


def _check_same_width(x_train: np.ndarray, x_all: np.ndarray) -> None:
    if x_train.shape[1] != x_all.shape[1]:
        raise ValueError(
            f"X_train and X_all must have the same number of pixels. Received: {x_train.shape[1]} and {x_all.shape[1]}"
        )


def _fit_pca(x: np.ndarray, n_components: int, batch_size: int | None, seed: int):
    from sklearn.decomposition import PCA, IncrementalPCA

    limit = min(x.shape)
    if not 1 <= n_components < limit:
        raise ValueError(
            f"n_components must satisfy 1 <= n_components < min(N_train, P) = {limit}. Received: {n_components!r}"
        )
    if batch_size is None:
        return PCA(n_components=n_components, svd_solver="randomized", random_state=seed).fit(x)
    if batch_size < n_components:
        raise ValueError(f"batch_size must be >= n_components ({n_components}). Received: {batch_size!r}")
    pca = IncrementalPCA(n_components=n_components)
    # Equal batches of at least batch_size galaxies: a short last batch joins the others.
    n_batches = max(1, x.shape[0] // batch_size)
    for chunk in np.array_split(x, n_batches):
        pca.partial_fit(chunk)
    return pca


def _transform(pca, x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [pca.transform(x[b : b + _TRANSFORM_BATCH]) for b in range(0, x.shape[0], _TRANSFORM_BATCH)], axis=0
    )


def _isolation_forest(fit: np.ndarray, score: np.ndarray, n_estimators: int, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(fit)
    return -forest.score_samples(score)
