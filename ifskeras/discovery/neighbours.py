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
    "galaxy_groups",
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
    fitted: np.ndarray,
    queries: np.ndarray,
    k: int,
    query_ids: np.ndarray | None = None,
    *,
    fitted_groups: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
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
    fitted_groups, query_groups : arrays of shape (M,) and (Q,), optional
        The galaxy each point observes (MaNGA's MANGAID): a fitted point of the query's
        own group is never its neighbour, so a repeat observation of the same galaxy
        does not count as a close, independent one. Give both or neither.

    Returns
    -------
    distances, indices : arrays of shape (Q, k)
        Sorted by distance, as returned by ``NearestNeighbors.kneighbors``.

    Self is removed by index, not by distance, so exact duplicates stay neighbours
    unless they share the query's group.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.array([[0.0], [0.0], [3.0], [3.5]])
    >>> neighbours_excluding_self(z, z, 1)[1].ravel().tolist()
    [1, 0, 3, 2]
    >>> groups = np.array(["a", "a", "b", "c"])  # points 0 and 1 observe one galaxy
    >>> neighbours_excluding_self(z, z, 1, fitted_groups=groups, query_groups=groups)[1].ravel().tolist()
    [2, 2, 3, 2]
    """
    from sklearn.neighbors import NearestNeighbors

    if (fitted_groups is None) != (query_groups is None):
        raise ValueError("give both fitted_groups and query_groups, or neither")
    ids = np.arange(queries.shape[0]) if query_ids is None else np.asarray(query_ids)
    # Search past the points that will be dropped: self, and the other members of its group.
    extra = 1 if fitted_groups is None else int(np.unique(fitted_groups, return_counts=True)[1].max())
    n_search = min(k + extra, fitted.shape[0])
    distances, found = NearestNeighbors(n_neighbors=n_search).fit(fitted).kneighbors(queries, n_neighbors=n_search)
    excluded = found == ids[:, None]
    if fitted_groups is not None:
        excluded |= np.asarray(fitted_groups)[found] == np.asarray(query_groups)[:, None]
    # Stable: the first k points that are not excluded, in distance order. A query outside
    # the fitted set (-1) with no group excludes nothing and keeps the k nearest.
    order = np.argsort(excluded, axis=1, kind="stable")[:, :k]
    if order.shape[1] < k or np.take_along_axis(excluded, order, axis=1).any():
        raise ValueError(f"fewer than k={k} neighbours outside each query's own galaxy")
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(found, order, axis=1)


def knn_latent_scores(
    latents: np.ndarray, k: int = 10, *, fit_mask: np.ndarray | None = None, groups: np.ndarray | None = None
) -> np.ndarray:
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
    groups : array, shape (N,), optional
        The galaxy each row observes (MANGAID, or the plate-IFU when unknown): another
        observation of the same galaxy never counts as a neighbour.

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
    group_kwargs = {} if groups is None else {
        "fitted_groups": np.asarray(groups)[fit_index], "query_groups": np.asarray(groups)}
    _, neighbours = neighbours_excluding_self(z[fit_index], z, k, query_ids=position, **group_kwargs)
    # Distances recomputed from the vectors, independent of how scikit-learn's search computes them.
    distances = np.linalg.norm(z[:, None, :] - z[fit_index][neighbours], axis=-1)
    return distances.mean(axis=1)


def galaxy_groups(table: dict) -> np.ndarray:
    """The galaxy each row of a scores table observes: its ``mangaid``, else its plate-IFU.

    Scores written before ``mangaid`` was a column (or of files without a MANGAID card)
    fall back to the plate-IFU, i.e. every row its own galaxy.
    """
    ids = np.asarray(table["id"], dtype=str)
    if "mangaid" not in table:
        return ids
    mangaid = np.char.strip(np.asarray(table["mangaid"], dtype=str))
    return np.where(mangaid != "", np.char.add("mangaid:", mangaid), ids)


def nearest_neighbors(scores_dir: str | os.PathLike, galaxy_id: str, *, k: int = 10) -> list[tuple[str, str, float]]:
    """The k galaxies nearest to ``galaxy_id`` in latent space: (id, label, distance) rows.

    Reads the latents of a scores directory (:func:`ifskeras.discovery.score.load_scores`);
    ``k`` is clipped to the number of other galaxies; other observations of the same
    galaxy (same ``mangaid``) are not neighbours. Raises ``ScoringError`` for an
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
    groups = galaxy_groups(table)
    k_eff = min(k, int(np.sum(groups != groups[query])))
    if k_eff < 1:
        raise ScoringError(f"{scores_dir}: no galaxy other than {galaxy_id} (and its repeat observations)")
    distances, neighbours = neighbours_excluding_self(
        latents, latents[query : query + 1], k_eff, query_ids=[query],
        fitted_groups=groups, query_groups=groups[query : query + 1])
    return [(ids[j], str(table["label"][j]), float(d)) for j, d in zip(neighbours[0], distances[0])]
