"""Nearest neighbours in latent space: the one place that searches them.

:func:`neighbours_excluding_self` is the search every other function builds on: it
fits scikit-learn's ``NearestNeighbors`` (Euclidean) on a set of latent vectors and
returns each query's ``k`` nearest members of that set, the query itself excluded.
On top of it:

- :func:`knn_latent_scores`: mean distance to the ``k`` nearest (training) neighbours,
  the latent k-NN anomaly score of ``ifskeras score`` and a baseline of the evaluation;
- :func:`nearest_neighbors`: the neighbours of one galaxy of a scores directory
  (``ifskeras neighbors``, the report's neighbour montages);
- :func:`ifskeras.discovery.retrieval.neighbour_retrieval` uses the search directly.
"""

from __future__ import annotations

import difflib
import os

import numpy as np

from ifskeras.discovery.score import ScoringError, load_scores

__all__ = [
    "as_latents",
    "neighbours_excluding_self",
    "knn_latent_scores",
    "nearest_neighbors",
]


def as_latents(latents: np.ndarray) -> np.ndarray:
    """Latent vectors as a finite float64 array of shape (N, D); ``ValueError`` otherwise."""
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"latents must have shape (N, D). Received: shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("latents contain non-finite values.")
    return z


def neighbours_excluding_self(
    fitted: np.ndarray, queries: np.ndarray, k: int, query_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and indices (into ``fitted``) of the k nearest neighbours of each query, itself excluded.

    Parameters
    ----------
    fitted : array, shape (M, D)
        The candidate neighbours, at least ``k + 1`` of them.
    queries : array, shape (Q, D)
    k : int
    query_ids : int array, shape (Q,), optional
        Query ``i`` is the fitted point ``query_ids[i]`` (default ``i``), or -1 if it is
        not in the fitted set.

    Returns
    -------
    distances, indices : arrays of shape (Q, k)
        Sorted by distance, as returned by ``NearestNeighbors.kneighbors``.

    Self is removed by index, not by distance, so exact duplicates stay neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[0.0], [0.0], [3.0], [3.5]])
    >>> neighbours_excluding_self(z, z, 1)[1].ravel().tolist()
    [1, 0, 3, 2]
    """
    from sklearn.neighbors import NearestNeighbors

    ids = np.arange(queries.shape[0]) if query_ids is None else np.asarray(query_ids)
    distances, found = NearestNeighbors(n_neighbors=k + 1).fit(fitted).kneighbors(queries, n_neighbors=k + 1)
    is_self = found == ids[:, None]
    # Drop self where found; otherwise drop the (k+1)-th neighbour.
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(found.shape[0]), drop] = False
    shape = (found.shape[0], k)
    return distances[keep].reshape(shape), found[keep].reshape(shape)


def knn_latent_scores(latents: np.ndarray, k: int = 10, *, fit_mask: np.ndarray | None = None) -> np.ndarray:
    """Mean Euclidean distance to the ``k`` nearest latent neighbours, the galaxy itself excluded.

    Higher = more anomalous, like every score of :mod:`ifskeras.discovery.metrics`.

    Parameters
    ----------
    latents : array, shape (N, D)
    k : int
    fit_mask : bool array, shape (N,), optional
        Galaxies the neighbours are drawn from (e.g. the training split); default all.
        A galaxy inside the fitted set never counts itself (excluded by index, so exact
        duplicates of it still count).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.r_[np.random.default_rng(0).normal(size=(30, 4)), [[20.0, 0, 0, 0]]]
    >>> int(np.argmax(knn_latent_scores(z, k=5)))
    30
    """
    z = as_latents(latents)
    if fit_mask is None:
        fit_index = np.arange(z.shape[0])
    else:
        mask = np.asarray(fit_mask, dtype=bool)
        if mask.shape != (z.shape[0],):
            raise ValueError(f"fit_mask must have shape ({z.shape[0]},). Received: shape {mask.shape}")
        fit_index = np.flatnonzero(mask)
    if not 1 <= k < fit_index.size:
        raise ValueError(f"k must satisfy 1 <= k < number of fitted galaxies ({fit_index.size}). Received: {k!r}")
    position = np.full(z.shape[0], -1)
    position[fit_index] = np.arange(fit_index.size)
    _, neighbours = neighbours_excluding_self(z[fit_index], z, k, query_ids=position)
    # Distances recomputed from the vectors, independent of how scikit-learn's search computes them.
    distances = np.linalg.norm(z[:, None, :] - z[fit_index][neighbours], axis=-1)
    return distances.mean(axis=1)


def nearest_neighbors(scores_dir: str | os.PathLike, galaxy_id: str, *, k: int = 10) -> list[tuple[str, str, float]]:
    """The k galaxies nearest to ``galaxy_id`` in latent space: (id, label, distance) rows.

    Reads the latents of a scores directory (:func:`ifskeras.discovery.score.load_scores`);
    ``k`` is clipped to the number of other galaxies. Raises ``ScoringError`` for an
    unknown id (suggesting close ones) or ``k < 1``.
    """
    table, latents, _ = load_scores(scores_dir)
    ids = list(table["id"])
    if galaxy_id not in ids:
        close = difflib.get_close_matches(galaxy_id, ids, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ScoringError(f"galaxy {galaxy_id!r} is not in {scores_dir} ({len(ids)} galaxies){hint}")
    if k < 1:
        raise ScoringError(f"k must be at least 1. Received: {k}")
    query = ids.index(galaxy_id)
    k_eff = min(k, len(ids) - 1)
    distances, neighbours = neighbours_excluding_self(latents, latents[query : query + 1], k_eff, query_ids=[query])
    return [(ids[j], str(table["label"][j]), float(d)) for j, d in zip(neighbours[0], distances[0])]
