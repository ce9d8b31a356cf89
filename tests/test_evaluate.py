"""Tests of ifskeras.discovery.metrics, .bootstrap and .retrieval on hand-made cases with known answers."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ifskeras.discovery.bootstrap import weighted_metrics
from ifskeras.discovery.comparison import compare_to_baselines
from ifskeras.discovery.metrics import Evaluation, evaluate_scores
from ifskeras.discovery.retrieval import neighbour_retrieval

SEED = 7


def _labels(n_sf=8, n_sey=2, n_blue=0, n_other=0):
    return np.array(["SF"] * n_sf + ["Seyfert"] * n_sey + ["blueberry"] * n_blue + ["LINER"] * n_other)


def test_perfect_reversed_and_random_ranking():
    labels = _labels(8, 2)
    perfect = np.arange(10, dtype=float)  # positives are last, hence highest
    ev = evaluate_scores({"perfect": perfect, "reversed": -perfect}, labels, ks=(2,), n_bootstrap=50, seed=SEED)
    assert ev.metrics["perfect"].auroc.value == 1.0
    assert ev.metrics["perfect"].average_precision.value == 1.0
    assert ev.metrics["reversed"].auroc.value == 0.0
    assert ev.metrics["perfect"].precision_at_k["2"].value == 1.0
    assert ev.metrics["reversed"].precision_at_k["2"].value == 0.0

    rng = np.random.default_rng(SEED)
    big = np.array(["SF"] * 1800 + ["Seyfert"] * 200)
    ev = evaluate_scores({"random": rng.random(big.size)}, big, n_bootstrap=0)
    assert abs(ev.metrics["random"].auroc.value - 0.5) < 0.05


def test_precision_recall_enrichment_exact():
    # Ranked from the top: P, N, P, N, N, N, N, N, N, N (base rate 0.2).
    labels = np.array(["Seyfert", "SF", "blueberry", "SF", "SF", "SF", "SF", "SF", "SF", "SF"])
    score = -np.arange(10, dtype=float)
    ev = evaluate_scores({"s": score}, labels, ks=(1, 2, 3, "n_pos"), n_bootstrap=0)
    m = ev.metrics["s"]
    assert ev.k_values == {"1": 1, "2": 2, "3": 3, "n_pos": 2}
    assert m.precision_at_k["1"].value == 1.0
    assert m.precision_at_k["2"].value == 0.5
    assert m.precision_at_k["3"].value == pytest.approx(2 / 3)
    assert m.recall_at_k["1"].value == 0.5
    assert m.recall_at_k["3"].value == 1.0
    assert m.enrichment_at_k["2"].value == pytest.approx(0.5 / 0.2)
    assert ev.base_rate == pytest.approx(0.2)
    assert m.auroc.value == pytest.approx(roc_auc_score(labels != "SF", score))


def test_ties_count_their_expected_share():
    labels = _labels(8, 2)
    ev = evaluate_scores({"flat": np.ones(10)}, labels, ks=(5,), n_bootstrap=0)
    m = ev.metrics["flat"]
    assert m.precision_at_k["5"].value == pytest.approx(0.2)
    assert m.auroc.value == 0.5


def test_k_larger_than_sample_is_clipped():
    ev = evaluate_scores({"s": np.arange(10.0)}, _labels(8, 2), ks=(50, 100, "n_pos"), n_bootstrap=0)
    assert ev.k_values == {"10": 10, "n_pos": 2}
    assert ev.k_label("n_pos") == "n_pos=2"


def test_bootstrap_intervals_contain_point_and_are_reproducible():
    rng = np.random.default_rng(SEED)
    labels = np.array(["SF"] * 150 + ["Seyfert"] * 20 + ["blueberry"] * 10)
    score = rng.normal(size=labels.size) + 1.5 * (labels != "SF")
    kwargs = {"ks": (10, "n_pos"), "n_bootstrap": 300, "seed": SEED}
    ev = evaluate_scores({"s": score}, labels, **kwargs)
    again = evaluate_scores({"s": score}, labels, **kwargs)
    m = ev.metrics["s"]
    for estimate in (m.auroc, m.average_precision, *m.precision_at_k.values(), *m.recall_at_k.values(),
                     *m.enrichment_at_k.values()):
        assert estimate.low < estimate.high
        assert estimate.low <= estimate.value <= estimate.high
    assert again.metrics["s"] == m
    np.testing.assert_array_equal(again.bootstrap_auroc["s"], ev.bootstrap_auroc["s"])
    unstratified = evaluate_scores({"s": score}, labels, stratified=False, **kwargs)
    interval = unstratified.metrics["s"].auroc
    assert interval.low <= m.auroc.value <= interval.high


def test_vectorised_bootstrap_metrics_match_sklearn_with_weights():
    rng = np.random.default_rng(SEED)
    y = (rng.random(120) < 0.15).astype(np.int8)
    score = np.round(rng.normal(size=120) + y, 1)  # rounding makes ties
    weights = rng.multinomial(120, np.full(120, 1 / 120), size=25).astype(float)
    got = weighted_metrics(score, y, weights, {"5": 5})
    for b in range(25):
        assert got["auroc"][b] == pytest.approx(roc_auc_score(y, score, sample_weight=weights[b]), abs=1e-12)
        assert got["average_precision"][b] == pytest.approx(
            average_precision_score(y, score, sample_weight=weights[b]), abs=1e-12
        )


def test_negative_subset_and_class_recall():
    labels = np.array(["SF"] * 4 + ["LINER"] * 4 + ["Seyfert"] * 2)
    score = np.array([0, 1, 2, 3, 10, 11, 12, 13, 5, 6], dtype=float)
    vs_all = evaluate_scores({"s": score}, labels, ks=(2,), n_bootstrap=0)
    vs_sf = evaluate_scores({"s": score}, labels, negative=("SF",), ks=(2,), n_bootstrap=0)
    assert (vs_all.n_negative, vs_sf.n_negative) == (8, 4)
    assert vs_sf.metrics["s"].auroc.value == 1.0
    assert vs_all.metrics["s"].auroc.value == 0.5
    recall = vs_all.metrics["s"].class_recall
    assert set(recall) == {"SF", "LINER", "Seyfert"}
    # Top 5% of 10 galaxies = the single highest score, a LINER.
    assert recall["LINER"][0.05] == 0.25
    assert recall["Seyfert"][0.01] == 0.0


def test_missing_classes_raise_clear_errors():
    labels = np.array(["SF", "SF", "LINER"])
    with pytest.raises(ValueError, match="No positive galaxies.*'SF' \\(2\\).*'LINER' \\(1\\)"):
        evaluate_scores({"s": np.arange(3.0)}, labels)
    with pytest.raises(ValueError, match="No negative galaxies"):
        evaluate_scores({"s": np.arange(3.0)}, np.array(["Seyfert"] * 3))
    with pytest.raises(ValueError, match="No negative galaxies"):
        evaluate_scores({"s": np.arange(3.0)}, np.array(["Seyfert", "LINER", "LINER"]), negative="SF")
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_scores({"s": np.array([0.0, np.nan, 1.0])}, np.array(["SF", "Seyfert", "SF"]))
    with pytest.raises(ValueError, match="3 labels"):
        evaluate_scores({"s": np.arange(4.0)}, labels)
    with pytest.raises(ValueError, match="both positive and negative"):
        evaluate_scores({"s": np.arange(3.0)}, np.array(["SF", "Seyfert", "SF"]), negative=("Seyfert",))


def test_bytes_and_unlabelled_entries():
    labels = np.array([b"SF", b"", b"Seyfert", b"SF"])
    ev = evaluate_scores({"s": np.array([0.0, 1.0, 3.0, 2.0])}, labels, ks=(1,), n_bootstrap=0)
    assert ev.class_counts == {"SF": 2, "": 1, "Seyfert": 1}
    assert ev.n_negative == 3  # unlabelled counts as negative by default
    assert ev.to_dict()["class_counts"]["unlabelled"] == 1


def test_serialisation():
    labels = _labels(15, 3, 2)
    rng = np.random.default_rng(SEED)
    ev = evaluate_scores({"a": rng.random(20), "b": rng.random(20)}, labels, ks=(5, "n_pos"), n_bootstrap=20)
    assert isinstance(ev, Evaluation)
    payload = ev.to_dict()
    text = json.dumps(payload, allow_nan=False)
    assert '"auroc"' in text
    assert list(payload["metrics"]) == ["a", "b"]
    assert set(payload["metrics"]["a"]["precision_at_k"]) == {"5", "n_pos"}
    assert set(payload["metrics"]["a"]["class_recall"]["blueberry"]) == {"1pct", "5pct"}


def test_compare_to_baselines_verdicts():
    rng = np.random.default_rng(SEED)
    labels = np.array(["SF"] * 160 + ["Seyfert"] * 40)
    positive = labels == "Seyfert"
    good = rng.normal(size=200) + 3 * positive
    scores = {"model": good, "random": rng.random(200), "copy": good.copy(), "oracle": positive * 10.0 + good * 1e-3}
    ev = evaluate_scores(scores, labels, ks=(10,), n_bootstrap=300, seed=SEED)
    verdicts = {c.baseline: c for c in compare_to_baselines(ev, "model")}
    assert set(verdicts) == {"random", "copy", "oracle"}
    assert verdicts["random"].verdict == "better"
    assert verdicts["copy"].verdict == "indistinguishable"
    assert verdicts["copy"].delta_auroc.value == 0.0
    assert verdicts["oracle"].verdict == "worse"
    delta = verdicts["random"].delta_auroc
    assert delta.low <= delta.value <= delta.high
    json.dumps([c.to_dict() for c in verdicts.values()], allow_nan=False)
    with pytest.raises(ValueError, match="model_score"):
        compare_to_baselines(ev, "nope")

    no_ci = evaluate_scores(scores, labels, ks=(10,), n_bootstrap=0)
    assert {c.verdict for c in compare_to_baselines(no_ci, "model")} == {"indistinguishable"}


def test_neighbour_retrieval_on_clustered_latents():
    rng = np.random.default_rng(SEED)
    classes = ["SF", "Seyfert", "LINER"]
    labels = np.repeat(classes, 20)
    centres = {"SF": 0.0, "Seyfert": 20.0, "LINER": 40.0}
    latents = np.array([centres[c] for c in labels])[:, None] + rng.normal(size=(60, 4))
    labels = labels.copy()
    labels[:3] = ""  # unlabelled galaxies are neighbours but not queries
    true_class_ratio = np.array([centres[c] for c in np.repeat(classes, 20)]) / 20
    ratios = np.column_stack([true_class_ratio + rng.normal(0, 0.05, 60)] * 3)
    ratios[5, 1] = np.nan
    result = neighbour_retrieval(latents, labels, k=5, line_ratios=ratios)
    assert result.n_queries == 57
    assert result.same_class_fraction > 0.9
    assert result.lift > 2
    assert result.per_class["Seyfert"].same_class_fraction == 1.0
    assert result.per_class["Seyfert"].chance == pytest.approx(19 / 59)
    assert "" not in result.per_class
    for ratio in result.ratios.values():
        assert ratio.ratio < 0.5
    assert result.ratios[list(result.ratios)[1]].n_neighbour_pairs < 60 * 5
    json.dumps(result.to_dict(), allow_nan=False)

    no_labels = neighbour_retrieval(latents, None, k=3)
    assert no_labels.per_class == {} and no_labels.ratios == {}
    with pytest.raises(ValueError, match="k must satisfy"):
        neighbour_retrieval(latents, labels, k=60)
    with pytest.raises(ValueError, match="line_ratios"):
        neighbour_retrieval(latents, labels, line_ratios=ratios[:, :2])
