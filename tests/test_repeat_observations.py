"""Repeat observations of one galaxy (same MANGAID) are never each other's latent neighbours."""

from __future__ import annotations

import numpy as np

from ifskeras.discovery.neighbours import galaxy_groups, knn_latent_scores, neighbours_excluding_self
from ifskeras.discovery.retrieval import neighbour_retrieval


def _survey_with_a_repeated_outlier():
    """Thirty ordinary galaxies and one outlier observed twice (rows 30 and 31, almost identical)."""
    rng = np.random.default_rng(0)
    latents = np.r_[rng.normal(size=(30, 4)), [[12.0, 0, 0, 0], [12.01, 0, 0, 0]]]
    groups = np.array([f"g{i}" for i in range(30)] + ["outlier", "outlier"])
    return latents, groups


def test_a_repeat_does_not_hide_an_outlier_from_the_knn_score():
    latents, groups = _survey_with_a_repeated_outlier()
    naive = knn_latent_scores(latents, k=1)
    grouped = knn_latent_scores(latents, k=1, groups=groups)
    # Counted as its own neighbour, the repeat makes the outlier look ordinary ...
    assert naive[30] < np.median(naive)
    # ... kept apart, both observations are the two most isolated galaxies.
    assert set(np.argsort(grouped)[-2:]) == {30, 31}
    np.testing.assert_allclose(grouped[:30], naive[:30])  # single observations unchanged


def test_groups_with_a_fitted_subset_and_errors():
    latents, groups = _survey_with_a_repeated_outlier()
    train = np.ones(32, bool)
    train[31] = False  # the repeat outside the fitted set: row 30 is still its only neighbour candidate
    grouped = knn_latent_scores(latents, k=2, fit_mask=train, groups=groups)
    assert grouped[31] > 10 and grouped[30] > 10
    distances, found = neighbours_excluding_self(latents, latents[30:31], 3, query_ids=[30],
                                                 fitted_groups=groups, query_groups=groups[30:31])
    assert not set(found.ravel()) & {30, 31} and found.shape == (1, 3)
    assert np.all(np.diff(distances) >= 0)


def test_retrieval_and_table_groups():
    latents, groups = _survey_with_a_repeated_outlier()
    labels = np.array(["SF"] * 30 + ["blueberry"] * 2)
    naive = neighbour_retrieval(latents, labels, k=1)
    grouped = neighbour_retrieval(latents, labels, k=1, groups=groups)
    assert naive.per_class["blueberry"].same_class_fraction == 1.0  # each repeat "retrieves" the other
    assert grouped.per_class["blueberry"].same_class_fraction == 0.0
    table = {"id": np.array(["1-1", "1-2", "2-1"]), "mangaid": np.array(["1-99", "1-99", " "])}
    groups = galaxy_groups(table)
    assert groups[0] == groups[1] != groups[2] and groups[2] == "2-1"
    assert list(galaxy_groups({"id": np.array(["a", "b"])})) == ["a", "b"]


def test_scores_carry_each_galaxys_mangaid(tiny_scores, tiny_survey):
    import csv

    from ifskeras.discovery.score import load_scores

    table, _, _ = load_scores(tiny_scores)
    with open(tiny_survey / "catalog.csv", newline="") as stream:
        truth = {row["plateifu"]: row["mangaid"] for row in csv.DictReader(stream)}
    assert [truth[galaxy] for galaxy in table["id"]] == list(table["mangaid"])
    assert len(set(galaxy_groups(table))) == len(table["id"])
