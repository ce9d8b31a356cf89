"""Self-contained HTML report of a scored survey: figures, evaluation, retrieval, galleries.

:func:`write_report` writes ``index.html`` and its PNGs into ``figures/`` beside it. The
page links only those relative files: no external CSS, JavaScript, fonts or network.

Every number in the report goes through :func:`format_number` (a fixed number of
decimals), and the tables come from the ``format_*_table`` functions, which return
lists of rows of strings. The command line prints the same tables, so the terminal
and the report always show identical numbers. Importing this module is cheap:
matplotlib loads only when figures are drawn.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ifskeras import __version__
from ifskeras.discovery.evaluate import Comparison, Evaluation, Retrieval, class_display_name
from ifskeras.survey.lines import DEFAULT_LINES, pretty_line_name

__all__ = [
    "DECIMALS",
    "format_number",
    "format_estimate",
    "format_evaluation_table",
    "format_class_recall_table",
    "format_retrieval_table",
    "format_ratio_table",
    "write_report",
]

#: Decimals of every number printed by the report and the command line.
DECIMALS = 3
_NOT_AVAILABLE = "n/a"
_TOP_N = 20
_TOP_LINES = 3
_FIGURES = "figures"
_VERDICTS = ("better", "worse", "indistinguishable")
_CSS = """
body { font-family: sans-serif; margin: 0 auto; max-width: 1280px; padding: 0 1.5em 3em; color: #222;
       line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: .4em 1.2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; white-space: nowrap; }
th { background: #f0f0f0; }
table.numeric td, table.numeric th { text-align: right; }
table.numeric td:first-child, table.numeric th:first-child { text-align: left; }
.scroll { overflow-x: auto; }
.row { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
.row figure { flex: 1 1 480px; max-width: 620px; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #444; }
.note { color: #666; font-style: italic; }
.better { color: #1a7f37; font-weight: bold; }
.worse { color: #b42318; font-weight: bold; }
.indistinguishable { color: #555; }
"""
_SECTIONS = (
    ("summary", "Summary and provenance"),
    ("loss", "Loss curves"),
    ("scores", "Score distribution"),
    ("umap", "UMAP of the latent space"),
    ("bpt", "BPT diagram"),
    ("evaluation", "Evaluation against labels and baselines"),
    ("retrieval", "Latent-neighbour retrieval"),
    ("gallery", "Most anomalous galaxies"),
    ("neighbours", "Neighbours of anomalies"),
)


# --------------------------------------------------------------------------- formatting


def format_number(value: Any, decimals: int = DECIMALS) -> str:
    """A number as printed everywhere: ints as ints, floats with ``decimals`` decimals, NaN/None as 'n/a'.

    Examples
    --------
    >>> format_number(0.91234), format_number(48), format_number(float("nan"))
    ('0.912', '48', 'n/a')
    """
    if value is None:
        return _NOT_AVAILABLE
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return _NOT_AVAILABLE
    text = f"{value:.{decimals}f}"
    return "0." + "0" * decimals if text == "-0." + "0" * decimals else text


def format_estimate(estimate, decimals: int = DECIMALS) -> str:
    """``'value [low, high]'``, or the value alone when there is no interval."""
    value = format_number(estimate.value, decimals)
    if not (math.isfinite(estimate.low) and math.isfinite(estimate.high)):
        return value
    return f"{value} [{format_number(estimate.low, decimals)}, {format_number(estimate.high, decimals)}]"


def format_evaluation_table(
    evaluation: Evaluation, comparisons: Sequence[Comparison] | None = None
) -> list[list[str]]:
    """Header row and one row per score: AUROC, AP, precision/recall/enrichment@k with CIs, verdicts.

    The ``comparisons`` (from :func:`ifskeras.discovery.evaluate.compare_to_baselines`) add the
    AUROC difference model minus baseline and the verdict to each baseline's row; the
    model's own row reads ``'model'``.
    """
    level = f"{evaluation.confidence * 100:g}% CI"
    header = ["score", f"AUROC [{level}]", f"AP [{level}]"]
    for key in evaluation.k_values:
        k = evaluation.k_label(key)
        header += [f"P@{k} [{level}]", f"R@{k} [{level}]", f"enrichment@{k} [{level}]"]
    by_baseline = {c.baseline: c for c in comparisons or ()}
    models = {c.model for c in comparisons or ()}
    if comparisons:
        header += [f"\u0394AUROC vs model [{level}]", "verdict"]
    rows = [header]
    for name, m in evaluation.metrics.items():
        row = [name, format_estimate(m.auroc), format_estimate(m.average_precision)]
        for key in evaluation.k_values:
            row += [format_estimate(m.precision_at_k[key]), format_estimate(m.recall_at_k[key]),
                    format_estimate(m.enrichment_at_k[key])]
        if comparisons:
            if name in by_baseline:
                c = by_baseline[name]
                row += [format_estimate(c.delta_auroc), c.verdict]
            else:
                row += ["", "model" if name in models else ""]
        rows.append(row)
    return rows


def format_class_recall_table(evaluation: Evaluation) -> list[list[str]]:
    """Recall of every class among the top 1% / 5% of the whole sample, one row per score and fraction."""
    classes = list(evaluation.class_counts)
    header = ["score", "top"] + [f"{class_display_name(c)} (n={evaluation.class_counts[c]})" for c in classes]
    rows = [header]
    for name, m in evaluation.metrics.items():
        for fraction in evaluation.top_fractions:
            rows.append([name, f"{fraction * 100:g}%"] + [format_number(m.class_recall[c][fraction]) for c in classes])
    return rows


def format_retrieval_table(retrieval: Retrieval) -> list[list[str]]:
    """Same-class fraction among the k nearest latent neighbours per class, against chance."""
    header = ["class", "queries", f"same-class fraction of {retrieval.k} neighbours", "chance", "lift"]
    rows = [header]
    for label, r in retrieval.per_class.items():
        rows.append([class_display_name(label), format_number(r.n_queries), format_number(r.same_class_fraction),
                     format_number(r.chance), format_number(r.lift)])
    rows.append(["all labelled", format_number(retrieval.n_queries), format_number(retrieval.same_class_fraction),
                 format_number(retrieval.chance), format_number(retrieval.lift)])
    return rows


def format_ratio_table(retrieval: Retrieval) -> list[list[str]]:
    """Median |difference| of central line ratios: neighbours against random pairs."""
    header = ["line ratio", "neighbour pairs", "median |\u0394| neighbours", "median |\u0394| random pairs",
              "ratio (< 1: neighbours alike)"]
    rows = [header]
    for name, r in retrieval.ratios.items():
        rows.append([name, format_number(r.n_neighbour_pairs), format_number(r.neighbour_median),
                     format_number(r.random_median), format_number(r.ratio)])
    return rows


# --------------------------------------------------------------------------- report


def write_report(
    out_dir: str | os.PathLike,
    *,
    scores_table: Any,
    evaluation: Evaluation | None = None,
    comparisons: Sequence[Comparison] | None = None,
    retrieval: Retrieval | None = None,
    history: Mapping[str, Sequence[float]] | str | os.PathLike | None = None,
    galleries: Sequence[Mapping[str, Any]] = (),
    neighbours: Sequence[Mapping[str, Any]] = (),
    lines: Sequence[str] = DEFAULT_LINES,
    bpt: Mapping[str, Any] | None = None,
    title: str = "ifskeras anomaly report",
    provenance: Mapping[str, Any] | None = None,
    score_column: str = "anomaly_score",
    top_n: int = _TOP_N,
) -> Path:
    """Write ``out_dir/index.html`` with its figures in ``out_dir/figures/``; return the page's path.

    Parameters
    ----------
    out_dir : path
        Created if missing; existing files of the same names are overwritten.
    scores_table : astropy Table or mapping of str to array
        One row per galaxy with at least ``id`` and ``score_column``; optional ``split``,
        ``label``, ``anomaly_percentile``, ``err_<LINE>``, ``knn_score``,
        ``combined_score``, ``umap_x``, ``umap_y``.
    evaluation : Evaluation, optional
    comparisons : sequence of Comparison, optional
    retrieval : Retrieval, optional
    history : mapping or path of a CSV, optional
        Training history with ``epoch``, ``loss``, ``val_loss`` (and VAE loss terms).
    galleries : sequence of mappings
        Each ``{id, label, score, percentile, flux, reconstruction, valid, line_error}``
        with maps of shape (L, S, S) in flux units and ``line_error`` of shape (L,).
    neighbours : sequence of mappings
        Each ``{query_id, neighbour_ids, distances, flux, valid}`` and optionally
        ``labels``: ``flux`` and ``valid`` of shape (1 + k, L, S, S) hold the query
        first, then its ``k`` neighbours; ``labels`` has 1 + k entries.
    lines : sequence of str
        DAP names of the ``L`` lines, in map order.
    bpt : mapping, optional
        ``{log_nii_ha, log_oiii_hb}`` of central apertures (NaN below S/N 3), one per
        row of ``scores_table``; optional ``scores`` (default ``score_column``) and
        ``score_name``.
    title : str
    provenance : mapping, optional
        Model and records directories, versions, ... shown as given.
    score_column : str
        The score that ranks galaxies in the histogram, UMAP, BPT and top-N table.
    top_n : int
        Rows of the table of most anomalous galaxies.

    Returns
    -------
    Path of ``index.html``.
    """
    from ifskeras.discovery import figures

    out_dir = Path(out_dir)
    fig_dir = out_dir / _FIGURES
    fig_dir.mkdir(parents=True, exist_ok=True)
    columns = _columns(scores_table)
    if "id" not in columns or score_column not in columns:
        raise ValueError(
            f"scores_table needs columns 'id' and {score_column!r}. Received columns: {sorted(columns)}"
        )
    n = len(columns["id"])
    ids = np.asarray([_text(v) for v in columns["id"]], dtype=object)
    labels = np.asarray([_text(v) for v in columns["label"]], dtype=object) if "label" in columns else None
    score = np.asarray(columns[score_column], dtype=float)
    model_score = comparisons[0].model if comparisons else score_column

    body: list[str] = [f"<h1>{_esc(title)}</h1>", _nav()]

    # Summary and provenance.
    body.append(_section_head("summary"))
    summary = [["galaxies", format_number(n)], ["ranking score", score_column]]
    if "split" in columns:
        for split, count in _counts([_text(v) for v in columns["split"]]).items():
            summary.append([f"split {split or '(none)'}", format_number(count)])
    if labels is not None:
        for label, count in _counts(list(labels)).items():
            summary.append([f"class {class_display_name(label)}", format_number(count)])
    body.append(_table([["quantity", "value"], *summary]))
    prov = {"ifskeras version": __version__, **dict(provenance or {})}
    body.append("<h3>Provenance</h3>")
    body.append(_table([["item", "value"]] + [[str(k), _provenance_value(v)] for k, v in prov.items()]))

    # Loss curves.
    body.append(_section_head("loss"))
    if history is not None:
        path = figures.plot_loss_curves(history, fig_dir / "loss_curves.png")
        body.append(_figure_html(path, out_dir, "Training and validation loss per epoch."))
    else:
        body.append(_note("No training history was given."))

    # Score histogram.
    body.append(_section_head("scores"))
    path = figures.plot_score_histogram(score, fig_dir / "score_histogram.png", score_name=score_column,
                                        labels=None if labels is None else labels.astype(str))
    body.append(_figure_html(path, out_dir, f"Distribution of {score_column} with its 95th and 99th percentiles."))
    body.append(f"<h3>Top {int(min(top_n, n))} galaxies by {_esc(score_column)}</h3>")
    body.append(_table(_top_table(columns, ids, labels, score, score_column, top_n), numeric=True))

    # UMAP.
    body.append(_section_head("umap"))
    if "umap_x" in columns and "umap_y" in columns:
        ux, uy = columns["umap_x"], columns["umap_y"]
        path = figures.plot_umap_by_score(ux, uy, score, fig_dir / "umap_score.png", score_name=score_column)
        pair = [_figure_html(path, out_dir, f"UMAP of the latent vectors coloured by {score_column}.")]
        if labels is not None:
            path = figures.plot_umap_by_label(ux, uy, labels.astype(str), fig_dir / "umap_label.png")
            pair.append(_figure_html(path, out_dir, "UMAP of the latent vectors coloured by class."))
        body.append(_figure_row(pair))
    else:
        body.append(_note("The scores table has no umap_x / umap_y columns."))

    # BPT.
    body.append(_section_head("bpt"))
    if bpt is not None:
        bpt_scores = bpt.get("scores", score if len(bpt["log_nii_ha"]) == n else None)
        path = figures.plot_bpt(bpt["log_nii_ha"], bpt["log_oiii_hb"], fig_dir / "bpt.png", scores=bpt_scores,
                                score_name=str(bpt.get("score_name", score_column)))
        body.append(_figure_html(path, out_dir, "[NII] BPT diagram of the central apertures (S/N \u2265 3 in all four "
                                 "lines), with the Kauffmann et al. (2003) and Kewley et al. (2001) demarcations."))
    else:
        body.append(_note("No central-aperture line ratios were given."))

    # Evaluation.
    body.append(_section_head("evaluation"))
    if evaluation is not None:
        body.append(_evaluation_text(evaluation, comparisons))
        rows = format_evaluation_table(evaluation, comparisons)
        n_columns = len(rows[0])
        at_k = list(range(3, 3 + 3 * len(evaluation.k_values)))
        body.append("<h3>Ranking of positives above negatives</h3>")
        body.append(_table(rows, numeric=True, columns=[0, 1, 2, *range(3 + len(at_k), n_columns)]))
        body.append("<h3>Precision, recall and enrichment among the top k</h3>")
        body.append(_table(rows, numeric=True, columns=[0, *at_k]))
        path = figures.plot_roc_pr(evaluation.y_true, evaluation.score_values, fig_dir / "roc_pr.png",
                                   highlight=model_score)
        body.append(_figure_html(path, out_dir, "ROC and precision-recall curves of every evaluated score."))
        body.append("<h3>Recall of each class among the highest-scoring galaxies of the whole sample</h3>")
        body.append(_table(format_class_recall_table(evaluation), numeric=True))
        (out_dir / "evaluation.json").write_text(json.dumps(
            {"evaluation": evaluation.to_dict(), "comparisons": [c.to_dict() for c in comparisons or ()]},
            indent=2, allow_nan=False))
    else:
        body.append(_note("No labels were available: the scores were not evaluated."))

    # Retrieval.
    body.append(_section_head("retrieval"))
    if retrieval is not None:
        body.append(f"<p>For each labelled galaxy, the fraction of its {retrieval.k} nearest neighbours in latent "
                    f"space (of {format_number(retrieval.n_galaxies)} galaxies, itself excluded) that share its "
                    "class, against the fraction expected for random neighbours.</p>")
        body.append(_table(format_retrieval_table(retrieval), numeric=True))
        if retrieval.ratios:
            body.append("<p>Central line ratios: median absolute difference between each galaxy and its "
                        "neighbours, against random pairs of galaxies (pairs with a missing ratio skipped).</p>")
            body.append(_table(format_ratio_table(retrieval), numeric=True))
    else:
        body.append(_note("No retrieval test was run."))

    # Gallery.
    body.append(_section_head("gallery"))
    if not galleries:
        body.append(_note("No galleries were given."))
    for rank, item in enumerate(galleries, start=1):
        gid = _text(item["id"])
        caption = _gallery_caption(rank, item, score_column)
        path = figures.plot_gallery(item["flux"], item["reconstruction"], item["valid"], lines, item["line_error"],
                                    fig_dir / f"gallery_{rank:02d}_{_safe(gid)}.png", title=caption)
        body.append(_figure_html(path, out_dir, caption))

    # Neighbours.
    body.append(_section_head("neighbours"))
    if not neighbours:
        body.append(_note("No neighbour searches were given."))
    for number, item in enumerate(neighbours, start=1):
        query = _text(item["query_id"])
        neighbour_ids = [_text(v) for v in item["neighbour_ids"]]
        distances = [float(d) for d in item["distances"]]
        item_labels = [_text(v) for v in item["labels"]] if item.get("labels") is not None else None
        path = figures.plot_neighbours(item["flux"], item["valid"], lines,
                                       fig_dir / f"neighbours_{number:02d}_{_safe(query)}.png",
                                       ids=[query, *neighbour_ids], labels=item_labels, distances=distances)
        tags = [f", {class_display_name(t)}" for t in item_labels[1:]] if item_labels else [""] * len(neighbour_ids)
        parts = [f"{nid} (d = {format_number(d)}{tag})" for nid, d, tag in zip(neighbour_ids, distances, tags,
                                                                              strict=False)]
        caption = f"Query {query} and its {len(neighbour_ids)} nearest latent neighbours: " + ", ".join(parts) + "."
        body.append(_figure_html(path, out_dir, caption))

    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


# --------------------------------------------------------------------------- helpers


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    if value is None or value is np.ma.masked:
        return ""
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80] or "galaxy"


def _columns(table: Any) -> dict[str, np.ndarray]:
    if hasattr(table, "colnames"):
        out = {}
        for name in table.colnames:
            column = table[name]
            if getattr(column, "mask", None) is not None and np.any(column.mask):
                kind = column.dtype.kind
                fill = "" if kind in "USO" else (np.nan if kind in "fc" else None)
                column = column.filled(fill) if fill is not None else column.filled()
            out[name] = np.asarray(column)
    elif isinstance(table, Mapping):
        out = {str(k): np.asarray(v) for k, v in table.items()}
    else:
        raise TypeError(f"scores_table must be an astropy Table or a mapping of arrays. Received: {type(table)}")
    lengths = {name: len(v) for name, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"scores_table columns differ in length. Received: {lengths}")
    return out


def _counts(values: Sequence[str]) -> dict[str, int]:
    names, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
    return {str(names[i]): int(counts[i]) for i in np.lexsort((names, -counts))}


def _nav() -> str:
    items = "".join(f'<li><a href="#{key}">{_esc(name)}</a></li>' for key, name in _SECTIONS)
    return f"<nav><ul>{items}</ul></nav>"


def _section_head(key: str) -> str:
    return f'<h2 id="{key}">{_esc(dict(_SECTIONS)[key])}</h2>'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>'


def _table(rows: Sequence[Sequence[str]], *, numeric: bool = False, columns: Sequence[int] | None = None) -> str:
    """An HTML table of string cells (first row = header), optionally only some columns."""
    picked = [[row[i] for i in columns] for row in rows] if columns is not None else rows
    head = "".join(f"<th>{_esc(cell)}</th>" for cell in picked[0])
    body = []
    for row in picked[1:]:
        cells = []
        for cell in row:
            css = f' class="{cell}"' if cell in _VERDICTS else ""
            cells.append(f"<td{css}>{_esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    css = ' class="numeric"' if numeric else ""
    return f'<div class="scroll"><table{css}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _figure_html(path: Path, out_dir: Path, caption: str) -> str:
    src = _esc(path.relative_to(out_dir).as_posix())
    return (f'<figure><a href="{src}"><img src="{src}" alt="{_esc(caption)}"></a>'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _figure_row(figures_html: Sequence[str]) -> str:
    return '<div class="row">' + "".join(figures_html) + "</div>"


def _provenance_value(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _top_table(columns, ids, labels, score, score_column: str, top_n: int) -> list[list[str]]:
    order = np.argsort(-np.where(np.isfinite(score), score, -np.inf), kind="stable")[: max(0, int(top_n))]
    extra = [c for c in ("anomaly_score", "knn_score", "combined_score") if c in columns and c != score_column]
    if score_column == "anomaly_score" and "anomaly_percentile" in columns:
        percentile = np.asarray(columns["anomaly_percentile"], dtype=float)
    else:
        finite = np.isfinite(score)
        percentile = np.array([100.0 * np.sum(score[finite] <= s) / max(1, finite.sum()) for s in score])
    err_names = [c for c in columns if c.startswith("err_")]
    errors = np.column_stack([np.asarray(columns[c], dtype=float) for c in err_names]) if err_names else None
    header = ["rank", "id"] + (["split"] if "split" in columns else []) + (["class"] if labels is not None else [])
    header += [score_column, "percentile", *extra] + (["largest per-line errors"] if errors is not None else [])
    rows = [header]
    for rank, i in enumerate(order, start=1):
        row = [str(rank), ids[i]]
        if "split" in columns:
            row.append(_text(columns["split"][i]))
        if labels is not None:
            row.append(class_display_name(labels[i]))
        row += [format_number(score[i]), format_number(percentile[i])]
        row += [format_number(float(columns[c][i])) for c in extra]
        if errors is not None:
            worst = np.argsort(-np.nan_to_num(errors[i], nan=-np.inf), kind="stable")[:_TOP_LINES]
            row.append(", ".join(_pretty(err_names[j][4:]) for j in worst))
        rows.append(row)
    return rows


def _pretty(name: str) -> str:
    try:
        return pretty_line_name(name)
    except ValueError:
        return name


def _gallery_caption(rank: int, item: Mapping[str, Any], score_column: str) -> str:
    label = class_display_name(_text(item.get("label", "")))
    return (f"#{rank} {_text(item['id'])} ({label}): {score_column} {format_number(item.get('score'))}, "
            f"percentile {format_number(item.get('percentile'))}")


def _evaluation_text(evaluation: Evaluation, comparisons: Sequence[Comparison] | None) -> str:
    negative = ("every galaxy not positive (unlabelled included)" if evaluation.negative is None
                else ", ".join(evaluation.negative))
    scheme = "stratified by class (positives and negatives resampled separately)" if evaluation.stratified \
        else "over all evaluated galaxies together"
    text = (f"<p>Positives: {_esc(', '.join(evaluation.positive))} (n = {format_number(evaluation.n_positive)}); "
            f"negatives: {_esc(negative)} (n = {format_number(evaluation.n_negative)}); base rate "
            f"{format_number(evaluation.base_rate)}. Intervals: {evaluation.confidence * 100:g}% percentile "
            f"bootstrap over galaxies, {format_number(evaluation.n_bootstrap)} resamples {_esc(scheme)}, "
            f"seed {format_number(evaluation.seed)}. Enrichment@k is precision@k divided by the base rate.")
    if comparisons:
        text += (f" Each baseline is compared with <b>{_esc(comparisons[0].model)}</b> by the AUROC difference "
                 "(model minus baseline) on the same resamples: <i>better</i> or <i>worse</i> when its interval "
                 "excludes 0, <i>indistinguishable</i> otherwise.")
    return text + "</p>"
