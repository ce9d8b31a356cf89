"""From a scores directory to answers: evaluation against labels and baselines, and the report.

``ifskeras score`` writes a scores directory; everything here needs only that
directory, since it records which model and which records were scored.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifskeras.discovery.ranking import TOP_LINES
from ifskeras.discovery.score import ScoringError, load_model, load_scores
from ifskeras.discovery.tables import MODEL_SCORE_COLUMNS, unusual_line_z_scores

__all__ = [
    "MODEL_SCORES",
    "EvaluationBundle",
    "choose_positive",
    "ranking_column",
    "evaluate_run",
    "read_labels",
    "report_run",
    "render_neighbours_png",
    "scaled_feature_stream",
]

#: The model's scores, evaluated side by side (higher = more anomalous), when present:
#: rank_score (the recommended ranking), then the reconstruction, likelihood and latent scores.
MODEL_SCORES = MODEL_SCORE_COLUMNS
#: Baseline features use maps block-averaged to at most this many pixels a side,
#: which keeps PCA memory at about 80 kB per galaxy for 19 lines.
BASELINE_MAX_SIZE = 32


@dataclass
class EvaluationBundle:
    evaluation: object
    comparisons: list
    retrieval: object
    split: str
    n_galaxies: int


def ranking_column(table: dict) -> str:
    """The score that ranks galaxies: ``rank_score``, or ``anomaly_score`` in scores written before it."""
    return "rank_score" if "rank_score" in table else "anomaly_score"


def read_labels(table: dict, labels_csv: str | os.PathLike | None, label_column: str = "class") -> np.ndarray:
    """Each scored galaxy's label: from ``labels_csv`` (plateifu + ``label_column``), else from the records.

    Galaxies missing from the CSV get the empty label (unlabelled).
    """
    from ifskeras.records.inputs import load_labels
    from ifskeras.records.schema import RecordsError

    if labels_csv is None:
        return np.asarray(table["label"], dtype=str)
    try:
        by_id = load_labels(labels_csv, label_column)
    except RecordsError as error:
        hint = " (choose the label column with --label-column)" if "needs columns" in str(error) else ""
        raise ScoringError(f"{error}{hint}") from error
    return np.asarray([by_id.get(str(i), "") for i in table["id"]], dtype=str)


def choose_positive(labels: np.ndarray, positive=None, *, source: str = "the labels") -> tuple[str, ...]:
    """The positive classes to evaluate: ``positive``, or the default when it is None.

    Raises ``ScoringError`` when none of them labels any galaxy; the message lists the
    classes present with their counts and says how to choose (``--positive``).
    """
    from ifskeras.discovery.metrics import DEFAULT_POSITIVE, class_display_name, count_classes

    if isinstance(positive, str):
        positive = (positive,)
    chosen = tuple(DEFAULT_POSITIVE if positive is None else positive)
    labels = np.asarray(labels, dtype=str)
    if np.isin(labels, chosen).any():
        return chosen
    present = {name: n for name, n in count_classes(labels).items() if name}
    listing = ", ".join(f"{name} ({n})" for name, n in present.items()) or "none"
    what = ("the default positive classes (the synthetic survey's)" if positive is None
            else "the requested positive classes")
    example = list(present)[-1] if present else "CLASS"  # the rarest class: positives usually are
    raise ScoringError(
        f"no galaxy in {source} is labelled {' or '.join(chosen)}, {what}. Classes present: {listing}; "
        f"{int((labels == '').sum())} unlabelled. Choose the positive classes with --positive, "
        f"e.g. --positive {example} (and --negative for the classes to compare against)"
    )


def scaled_feature_stream(scores_dir: str | os.PathLike, ids: np.ndarray, *, batch_size: int = 256):
    """Yield (scaled flattened maps, valid) batches for ``ids`` in order, as the model scales them.

    Maps larger than BASELINE_MAX_SIZE are block-averaged (valid-weighted) first.
    """
    from ifskeras.records import read_examples

    _, _, provenance = load_scores(scores_dir)
    model_dir = Path(provenance["model_dir"])
    model, _ = load_model(model_dir)
    if not hasattr(model, "scale"):
        raise ScoringError(
            f"{model_dir}: exported by an older ifskeras without the `scale` endpoint the baselines need; "
            f"export it again (`ifskeras export RUN --out DIR`) and score with the new model"
        )
    records_dir = provenance["records_dir"]
    for start in range(0, len(ids), batch_size):
        batch = read_examples(records_dir, ids[start : start + batch_size])
        flux, valid = batch["flux"][..., 0], batch["valid"][..., 0]
        flux, valid = _block_average(flux, valid, BASELINE_MAX_SIZE)
        scaled = model.scale(flux.astype(np.float32))["scaled"].numpy() * valid
        yield scaled.reshape(len(flux), -1).astype(np.float32), valid.reshape(len(flux), -1).astype(bool)


def _block_average(flux: np.ndarray, valid: np.ndarray, max_size: int) -> tuple[np.ndarray, np.ndarray]:
    size = flux.shape[-1]
    factor = int(np.ceil(size / max_size))
    if factor <= 1 or size % factor:
        return flux, valid
    shape = flux.shape[:-2] + (size // factor, factor, size // factor, factor)
    weight = valid.reshape(shape).sum(axis=(-1, -3))
    total = (flux * valid).reshape(shape).sum(axis=(-1, -3))
    mean = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    return mean, (weight >= 0.5 * factor * factor).astype(np.float32)


def evaluate_run(
    scores_dir: str | os.PathLike,
    *,
    positive=None,
    negative=None,
    labels_csv=None,
    label_column: str = "class",
    split: str | None = None,
    baselines: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    write: bool = True,
) -> EvaluationBundle:
    """Evaluate the model's scores and the baselines on the same galaxies, with intervals.

    ``split=None`` evaluates every scored galaxy (the model never sees labels); baselines
    are always fitted on the train split, as the model was. Labels come from
    ``labels_csv`` when given, else from the records; ``positive=None`` means
    :data:`ifskeras.discovery.metrics.DEFAULT_POSITIVE` (see :func:`choose_positive`). Writes ``evaluation.json``
    and ``evaluation.csv`` into ``scores_dir`` when ``write``.
    """
    from ifskeras.discovery.baselines import isolation_forest_scores, pca_reconstruction_error, random_scores
    from ifskeras.discovery.comparison import compare_to_baselines
    from ifskeras.discovery.metrics import evaluate_scores
    from ifskeras.discovery.neighbours import galaxy_groups
    from ifskeras.discovery.retrieval import RETRIEVAL_RATIOS, neighbour_retrieval

    scores_dir = Path(scores_dir)
    table, latents, provenance = load_scores(scores_dir)
    labels = read_labels(table, labels_csv, label_column)
    if not np.any(labels != ""):
        raise ScoringError(
            f"{scores_dir}: no galaxy has a label; convert with --labels CSV or pass --labels to evaluate"
        )
    positive = choose_positive(labels, positive, source=str(labels_csv or scores_dir))
    selected = np.ones(len(labels), bool) if split is None else np.asarray(table["split"]) == split
    if not selected.any():
        raise ScoringError(f"{scores_dir}: no galaxies in split {split!r}")
    scores = {name: np.asarray(table[name], dtype=np.float64)[selected] for name in MODEL_SCORES if name in table}
    if baselines:
        ids = np.asarray(table["id"])
        train = np.asarray(table["split"]) == "train"
        train = train if train.any() else np.ones(len(ids), bool)
        features, valid = zip(*scaled_feature_stream(scores_dir, ids))
        features, valid = np.concatenate(features), np.concatenate(valid)
        n_components = int(min(32, max(2, train.sum() - 1)))
        scores["pca_error"] = pca_reconstruction_error(
            features[train], features, valid_train=valid[train], valid_all=valid, n_components=n_components, seed=seed
        )[selected]
        scores["isolation_forest"] = isolation_forest_scores(
            features[train], features, valid_train=valid[train], valid_all=valid, n_components=n_components, seed=seed
        )[selected]
        scores["random"] = random_scores(int(selected.sum()), seed=seed)
    evaluation = evaluate_scores(scores, labels[selected], positive=positive, negative=negative,
                                 n_bootstrap=n_bootstrap, seed=seed)
    comparisons = compare_to_baselines(evaluation, model_score=ranking_column(table)) if baselines else []
    ratios = np.stack([np.asarray(table[name], dtype=np.float64) for name in RETRIEVAL_RATIOS], axis=1)
    groups = galaxy_groups(table)[selected]
    retrieval = neighbour_retrieval(latents[selected], labels[selected], k=min(10, len(np.unique(groups)) - 1),
                                    line_ratios=ratios[selected], seed=seed, groups=groups)
    bundle = EvaluationBundle(evaluation, comparisons, retrieval, split or "all", int(selected.sum()))
    if write:
        from ifskeras.discovery.tables import format_evaluation_table

        payload = {
            "split": bundle.split, "n_galaxies": bundle.n_galaxies,
            "positive": list(positive),
            "evaluation": evaluation.to_dict(),
            "comparisons": [comparison.to_dict() for comparison in comparisons],
            "retrieval": retrieval.to_dict(),
        }
        (scores_dir / "evaluation.json").write_text(json.dumps(payload, indent=2, default=_json_default))
        with open(scores_dir / "evaluation.csv", "w", newline="") as stream:
            csv.writer(stream).writerows(format_evaluation_table(evaluation, comparisons))
    return bundle


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _gallery_items(scores_dir: Path, table: dict, provenance: dict, ids: list[str]) -> list[dict]:
    import tensorflow as tf

    from ifskeras.records import read_examples

    if not ids:
        return []
    batch = read_examples(provenance["records_dir"], ids)
    model = tf.saved_model.load(provenance["model_dir"])
    out = model.score(tf.constant(batch["flux"]), tf.constant(batch["valid"]))
    reconstruction = out["reconstruction"].numpy()[..., 0]
    line_error = out["line_error"].numpy()
    row_of = {galaxy: i for i, galaxy in enumerate(table["id"])}
    column = ranking_column(table)
    percentile = "rank_percentile" if column == "rank_score" else "anomaly_percentile"
    lines = provenance["model_metadata"]["lines"]
    line_z = (_line_z_by_map_order(table, lines, provenance.get("rank_excluded_lines"))
              if column == "rank_score" else None)
    # An ensemble's rank_score averages each model's z-scores; the bars are those of the models' mean errors.
    line_z_label = (f"line z-score of the\nmodels' mean errors\n(highest {TOP_LINES} orange)"
                    if len(provenance.get("model_dirs", [])) > 1 else None)
    items = []
    for j, galaxy in enumerate(ids):
        row = row_of[galaxy]
        items.append({
            "id": galaxy,
            "label": str(table["label"][row]),
            "score": float(table[column][row]),
            "percentile": float(table[percentile][row]),
            "flux": batch["flux"][j, ..., 0],
            "reconstruction": reconstruction[j],
            "valid": batch["valid"][j, ..., 0],
            "line_error": line_error[j],
            "line_z": None if line_z is None else line_z[row],
            "line_z_label": line_z_label,
        })
    return items


def _line_z_by_map_order(table: dict, lines: list[str], excluded_lines=None) -> np.ndarray | None:
    """[N, L] z-scores rank_score averages, in the maps' line order; NaN for lines it leaves out."""
    z, names = unusual_line_z_scores(table, excluded_lines)
    if z is None:
        return None
    out = np.full((len(table["id"]), len(lines)), np.nan)
    for k, name in enumerate(names):
        if name in lines:
            out[:, lines.index(name)] = z[:, k]
    return out


def _neighbour_items(scores_dir: Path, table: dict, provenance: dict, query_ids: list[str], k: int) -> list[dict]:
    from ifskeras.records import read_examples
    from ifskeras.discovery.neighbours import nearest_neighbors

    label_of = dict(zip(table["id"], table["label"]))
    items = []
    for query in query_ids:
        rows = nearest_neighbors(scores_dir, query, k=k)
        ids = [query] + [r[0] for r in rows]
        batch = read_examples(provenance["records_dir"], ids)
        items.append({
            "query_id": query,
            "neighbour_ids": [r[0] for r in rows],
            "distances": [r[2] for r in rows],
            "labels": [str(label_of[galaxy]) for galaxy in ids],
            "flux": batch["flux"][..., 0],
            "valid": batch["valid"][..., 0],
        })
    return items


def report_run(
    scores_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    run_dir: str | os.PathLike | None = None,
    bundle: EvaluationBundle | None = None,
    labels_csv: str | os.PathLike | None = None,
    label_column: str = "class",
    evaluation_note: str | None = None,
    top_n: int = 12,
    neighbour_queries: int = 3,
    k: int = 6,
    title: str = "ifskeras anomaly report",
) -> Path:
    """Write the HTML report of a scores directory; returns the path of index.html.

    The training history comes from ``run_dir`` (default: the run that exported the
    scored model, when its directory is the model's parent). Labels (class counts, UMAP
    colours, gallery captions) come from ``labels_csv`` when given, else the records.
    """
    from ifskeras.discovery.report import write_report

    scores_dir = Path(scores_dir)
    table, _, provenance = load_scores(scores_dir)
    if labels_csv is not None:
        table["label"] = read_labels(table, labels_csv, label_column)
    column = ranking_column(table)
    order = np.argsort(-np.asarray(table[column]), kind="stable")
    top_ids = [str(table["id"][i]) for i in order[:top_n]]
    history = None
    run_dir = Path(run_dir) if run_dir else Path(provenance["model_dir"]).parent
    if (run_dir / "history.json").exists():
        rows = json.loads((run_dir / "history.json").read_text())
        history = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else None
    bpt = {
        "log_nii_ha": np.asarray(table["log_nii_ha"]),
        "log_oiii_hb": np.asarray(table["log_oiii_hb"]),
        "scores": np.asarray(table[column]),
        "score_name": column.replace("_", " "),
    }
    return write_report(
        out_dir,
        scores_table=table,
        evaluation=bundle.evaluation if bundle else None,
        comparisons=bundle.comparisons if bundle else None,
        retrieval=bundle.retrieval if bundle else None,
        history=history,
        galleries=_gallery_items(scores_dir, table, provenance, top_ids),
        neighbours=_neighbour_items(scores_dir, table, provenance, top_ids[:neighbour_queries], k),
        lines=provenance["model_metadata"]["lines"],
        bpt=bpt,
        title=title,
        provenance={**provenance, "scores_dir": str(scores_dir.resolve()), "run_dir": str(run_dir)},
        score_column=column,
        top_n=top_n,
        evaluation_note=evaluation_note,
    )


def render_neighbours_png(scores_dir, galaxy_id: str, rows: list, png) -> Path:
    """A montage of a galaxy and its latent neighbours (Ha, [OIII], [NII], log [NII]/Ha)."""
    from ifskeras.discovery.figures import plot_neighbours
    from ifskeras.records import read_examples

    _, _, provenance = load_scores(scores_dir)
    ids = [galaxy_id] + [row[0] for row in rows]
    batch = read_examples(provenance["records_dir"], ids)
    return Path(plot_neighbours(
        batch["flux"][..., 0], batch["valid"][..., 0], provenance["model_metadata"]["lines"], png,
        ids=ids, labels=list(batch["label"]), distances=[0.0] + [row[2] for row in rows],
    ))
