"""Self-contained HTML report of a scored survey: figures, evaluation, retrieval, galleries.

:func:`write_report` writes ``index.html`` and its PNGs into ``figures/`` beside it. The
page links only those relative files: no external CSS, JavaScript, fonts or network.

Every number and table in the page comes from :mod:`ifskeras.discovery.tables`, which
the command line prints too, so the terminal and the report always show identical
numbers; this module turns them into HTML. Importing it is cheap: matplotlib loads
only when figures are drawn.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ifskeras import __version__
from ifskeras.discovery.comparison import Comparison
from ifskeras.discovery.metrics import Evaluation, class_display_name
from ifskeras.discovery.ranking import (TOP_LINES, line_brightness, per_line_names, rank_basis_of,
                                       rank_score_explanation)
from ifskeras.discovery.retrieval import Retrieval
from ifskeras.discovery.tables import (
    as_text,
    format_class_recall_table,
    format_evaluation_table,
    format_number,
    format_ratio_table,
    format_retrieval_table,
    format_top_table,
)
from ifskeras.survey.lines import DEFAULT_LINES

__all__ = ["write_report"]

_TOP_N = 20
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
    evaluation_note: str | None = None,
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
        with maps of shape (L, S, S) in flux units and ``line_error`` of shape (L,);
        an optional ``line_z`` of shape (L,) (the line z-scores rank_score averages, NaN
        for lines it leaves out) is shown instead of ``line_error``, its ``TOP_LINES``
        highest highlighted; an optional ``line_z_label`` replaces its axis label.
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
    evaluation_note : str, optional
        Shown in the evaluation section when ``evaluation`` is None (default: that no
        labels were available), e.g. why labelled galaxies were not evaluated.

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
    ids = np.asarray([as_text(v) for v in columns["id"]], dtype=object)
    labels = np.asarray([as_text(v) for v in columns["label"]], dtype=object) if "label" in columns else None
    score = np.asarray(columns[score_column], dtype=float)
    model_score = comparisons[0].model if comparisons else score_column

    body: list[str] = [f"<h1>{_esc(title)}</h1>", _nav()]

    # Summary and provenance.
    body.append(_section_head("summary"))
    summary = [["galaxies", format_number(n)], ["ranking score", score_column]]
    if "split" in columns:
        for split, count in _counts([as_text(v) for v in columns["split"]]).items():
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
    if score_column == "rank_score":
        trend = line_brightness(columns, per_line_names(columns, rank_basis_of(columns))) is not None
        body.append(f"<p>{_esc(rank_score_explanation(rank_basis_of(columns), brightness_trend=trend))}</p>")
    path = figures.plot_score_histogram(score, fig_dir / "score_histogram.png", score_name=score_column,
                                        labels=None if labels is None else labels.astype(str))
    body.append(_figure_html(path, out_dir, f"Distribution of {score_column} with its 95th and 99th percentiles."))
    body.append(f"<h3>Top {int(min(top_n, n))} galaxies by {_esc(score_column)}</h3>")
    body.append(_table(format_top_table(columns, ids, labels, score, score_column, top_n), numeric=True))

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
        body.append(_note(evaluation_note or "No labels were available: the scores were not evaluated."))

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
        gid = as_text(item["id"])
        caption = _gallery_caption(rank, item, score_column)
        path = figures.plot_gallery(item["flux"], item["reconstruction"], item["valid"], lines,
                                    path=fig_dir / f"gallery_{rank:02d}_{_safe(gid)}.png", title=caption,
                                    **_gallery_bars(item))
        body.append(_figure_html(path, out_dir, caption))

    # Neighbours.
    body.append(_section_head("neighbours"))
    if not neighbours:
        body.append(_note("No neighbour searches were given."))
    for number, item in enumerate(neighbours, start=1):
        query = as_text(item["query_id"])
        neighbour_ids = [as_text(v) for v in item["neighbour_ids"]]
        distances = [float(d) for d in item["distances"]]
        item_labels = [as_text(v) for v in item["labels"]] if item.get("labels") is not None else None
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


def _gallery_bars(item: Mapping[str, Any]) -> dict:
    """The gallery's bar chart: the line z-scores rank_score averages when the item has them."""
    if item.get("line_z") is None:
        return {"line_values": item["line_error"]}
    label = item.get("line_z_label") or f"line z-score\n(rank_score: mean of\nthe {TOP_LINES} highest, orange)"
    return {"line_values": item["line_z"], "highlight": TOP_LINES, "values_label": label}


def _gallery_caption(rank: int, item: Mapping[str, Any], score_column: str) -> str:
    label = class_display_name(as_text(item.get("label", "")))
    return (f"#{rank} {as_text(item['id'])} ({label}): {score_column} {format_number(item.get('score'))}, "
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
