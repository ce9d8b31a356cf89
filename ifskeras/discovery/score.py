"""Scoring a survey with an exported SavedModel: anomaly scores, latents, UMAP, neighbours.

Only the SavedModel and the records are needed: the model is loaded with
``tf.saved_model.load`` (no ifskeras class involved), and records stream through its
``score`` endpoint in batches, so memory grows with the number of galaxies times the
latent size, never with the maps.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifskeras.common.files import atomic_directory
from ifskeras.common.progress import progress_bar
from ifskeras.discovery.ranking import LOG_SNR_PREFIX, RANK_RULE, integrated_log_snr, rank_scores

__all__ = [
    "ScoringError",
    "ScoreResult",
    "score_records",
    "load_scores",
    "load_model",
    "reads_ivar",
    "score_batch",
    "check_model_matches_records",
    "SCORES_CSV",
    "SCORES_FITS",
    "LATENTS_NPY",
    "SCORING_JSON",
]

SCORES_CSV = "scores.csv"
SCORES_FITS = "scores.fits"
LATENTS_NPY = "latents.npy"
SCORING_JSON = "scoring.json"
#: First SavedModel format whose ``score`` endpoint takes ivar (chi2 and nelbo scores).
NOISE_AWARE_FORMAT = 3
#: First SavedModel format whose ``score`` endpoint gives ``chi2_peak_per_line``.
PEAK_FORMAT = 4
#: Outputs of the ``score`` endpoint that go into the scores table (those the model gives).
TABLE_OUTPUTS = ("anomaly_score", "line_error", "latent_mean", "chi2_score", "chi2_per_line", "chi2_peak_per_line",
                 "nelbo_score", "nll_per_line", "latent_kl")
#: Per-line outputs of the ``score`` endpoint and the prefix of their ``PREFIX<LINE>`` table columns,
#: in table order (those the model gives).
LINE_OUTPUT_PREFIXES = {"line_error": "err_", "chi2_per_line": "chi2_", "chi2_peak_per_line": "peak_",
                        "nll_per_line": "nll_"}
#: Per-line outputs rank_score can be built from, the preferred first, and their table prefixes.
RANK_OUTPUTS = tuple((name, LINE_OUTPUT_PREFIXES[name])
                     for name in ("chi2_peak_per_line", "chi2_per_line", "line_error"))


class ScoringError(ValueError):
    """Scoring cannot run: a bad model directory, mismatched records, an unknown ID..."""


@dataclass
class ScoreResult:
    out_dir: Path
    n_galaxies: int
    splits: dict
    seconds: float
    samples_per_second: float


def check_model_matches_records(metadata: dict, manifest, *, model_dir, records_dir) -> None:
    """Refuse records whose lines or map size differ from what the model was trained on."""
    model_lines, record_lines = list(metadata["lines"]), list(manifest.lines)
    if model_lines != record_lines:
        raise ScoringError(
            f"model {model_dir} was trained on lines {', '.join(model_lines)} but records "
            f"{records_dir} hold {', '.join(record_lines)}; convert with --lines matching the model"
        )
    model_size, record_size = int(metadata["size"]), int(manifest.shape[-1])
    if model_size != record_size:
        raise ScoringError(
            f"model {model_dir} takes {model_size}x{model_size} maps but records {records_dir} hold "
            f"{record_size}x{record_size}; convert with --size {model_size}"
        )
    from ifskeras.records import records_grid

    # Models exported before the grid was recorded cannot be checked further.
    trained_on = metadata.get("records_grid")
    if trained_on:
        given = records_grid(manifest.preprocessing)
        differ = {name: (trained_on.get(name), given[name]) for name in given
                  if name in trained_on and trained_on.get(name) != given[name]}
        if differ:
            details = ", ".join(f"{name} {model!r} (records: {records!r})" for name, (model, records) in differ.items())
            raise ScoringError(
                f"model {model_dir} was trained on records of another grid: {details}; convert {records_dir}'s "
                "inputs with the options the model's records had (see the model's records_grid metadata)"
            )


def score_records(
    model_dir: str | os.PathLike | Sequence[str | os.PathLike],
    records_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    splits: tuple[str, ...] | None = None,
    batch_size: int = 64,
    k: int = 10,
    umap: bool = True,
    seed: int | None = 0,
    progress: bool = True,
) -> ScoreResult:
    """Score every galaxy of ``records_dir`` with the SavedModel in ``model_dir``.

    Writes to ``out_dir``: ``scores.csv`` and ``scores.fits`` (one row per galaxy with
    id, split, label, anomaly_score, anomaly_percentile, knn_score, knn_percentile,
    combined_score, chi2_score, chi2_percentile, [nelbo_score, nelbo_percentile, nelbo_kl],
    err_<LINE>, chi2_<LINE>, peak_<LINE>, [nll_<LINE>], latent_<i>, central line ratios,
    log_snr_<LINE> (each line's integrated signal-to-noise, log10), umap_x, umap_y; the
    bracketed ones for a VAE),
    ``latents.npy`` and ``scoring.json`` (which model and records were scored).

    The chi2 columns come from the ``score(flux, valid, ivar)`` endpoint of format-3
    models (the records' ivar, propagated into the model's scaled space; the tied DAP
    lines the model lists in ``chi2_excluded_lines`` are left out of ``chi2_score``),
    the nelbo columns from a VAE's. A format-2 model is scored as before, without
    them; ``scoring.json`` says which (``noise_aware_scores``). ``peak_<LINE>``, the
    highest 3 x 3-window mean chi2 that ``rank_score`` is built from, comes from format-4
    models; older ones rank on ``chi2_<LINE>`` (scoring.json: ``rank_basis``). Percentiles are
    against the train split, as ``anomaly_percentile``.

    ``model_dir`` may list several SavedModels trained on the same lines and grid (e.g.
    training seeds): an ensemble. The records are read once and run through each.
    ``rank_score`` is then the mean of the members' rank scores (each a z-score against
    its own training galaxies, so they are comparable), with ``rank_score_spread``, their
    standard deviation, beside it; ``anomaly_score``, the chi2 and nelbo scores and the
    per-line errors are the members' means; latents, ``knn_score`` and UMAP are the first
    model's (latent spaces of different trainings cannot be averaged).

    ``seed`` makes UMAP reproducible (and single-threaded); ``seed=None`` lets UMAP use
    every core.
    """
    from ifskeras.records import load_manifest, make_dataset, manifest_checksum, read_index, verify_records
    from ifskeras.survey.bpt import DEFAULT_APERTURE_RADIUS, RATIO_NAMES, central_line_ratios

    model_dirs = _model_dirs(model_dir)
    records_dir, out_dir = Path(records_dir), Path(out_dir)
    members = [load_model(path) for path in model_dirs]
    manifest = load_manifest(records_dir)
    verify_records(records_dir, checksums=True).raise_if_failed()
    for path, (_, member_metadata) in zip(model_dirs, members):
        check_model_matches_records(member_metadata, manifest, model_dir=path, records_dir=records_dir)
    _check_ensemble(model_dirs, [member_metadata for _, member_metadata in members])
    model_dir, metadata = model_dirs[0], members[0][1]
    available = [name for name in ("train", "val", "test") if manifest.examples(name) > 0]
    splits = tuple(splits or available)
    empty = [name for name in splits if name not in available]
    if empty:
        raise ScoringError(
            f"records {records_dir} have no galaxies in split(s) {', '.join(empty)}; "
            f"splits with galaxies: {', '.join(available) or 'none'}"
        )
    if k < 1:
        raise ScoringError(f"k must be at least 1. Received: {k}")
    lines = list(manifest.lines)
    # The central aperture is 3 native spaxels (1.5", an SDSS fibre) whatever the grid:
    # each galaxy's radius in grid pixels follows from its spaxels per pixel.
    index_rows = read_index(records_dir)
    spaxels_per_pixel = {row["id"]: float(row["spaxels_per_pixel"] or 1.0) for row in index_rows}
    # The galaxy each record observes (records written before MANGAIDs were indexed: unknown).
    mangaid_of = {row["id"]: (row.get("mangaid") or "").strip() for row in index_rows}
    total = sum(manifest.examples(name) for name in splits)

    columns: dict[str, list] = {"id": [], "split": [], "label": []}
    member_outputs: list[dict[str, list]] = [{} for _ in members]
    ratios, brightness = [], []
    started = time.perf_counter()
    with progress_bar(progress, "scoring", total) as bar:
        for split in splits:
            # ivar feeds the noise-aware scores (format 3) and the S/N cut of the central line ratios.
            dataset = make_dataset(records_dir, split, batch_size=batch_size, training=False, with_ivar=True)
            for batch in dataset:
                for (loaded, member_metadata), outputs in zip(members, member_outputs):
                    scored = score_batch(loaded, batch, noise_aware=reads_ivar(member_metadata))
                    for name, value in scored.items():
                        outputs.setdefault(name, []).append(value)
                n = int(batch["flux"].shape[0])
                ids = [v.decode() for v in batch["id"].numpy()]
                columns["id"].extend(ids)
                columns["split"].extend([split] * n)
                columns["label"].extend(v.decode() for v in batch["label"].numpy())
                radius = np.asarray([DEFAULT_APERTURE_RADIUS / spaxels_per_pixel[i] for i in ids])
                maps = [batch[name].numpy()[..., 0] for name in ("flux", "ivar", "valid")]
                ratios.append(central_line_ratios(*maps, lines, radius=radius))
                brightness.append(integrated_log_snr(*maps))
                bar.advance(n)
    seconds = time.perf_counter() - started
    n_galaxies = len(columns["id"])
    member_outputs = [{name: np.concatenate(values).astype(np.float64) for name, values in outputs.items()}
                      for outputs in member_outputs]
    outputs = _ensemble_mean(member_outputs)
    latents = member_outputs[0]["latent_mean"].astype(np.float32)
    ratios = {name: np.concatenate([r[name] for r in ratios]) for name in RATIO_NAMES}
    # Each line's brightness: rank_score takes out the trend of the line's errors with it.
    brightness = {f"{LOG_SNR_PREFIX}{line}": column for line, column in zip(lines, np.concatenate(brightness).T)}
    anomaly = outputs["anomaly_score"]
    split_array = np.asarray(columns["split"])
    reference = split_array == "train" if (split_array == "train").any() else np.ones(n_galaxies, bool)

    from ifskeras.discovery.neighbours import galaxy_groups, knn_latent_scores
    from ifskeras.survey.lines import tied_lines_among

    mangaids = [mangaid_of.get(galaxy, "") for galaxy in columns["id"]]
    groups = galaxy_groups({"id": np.asarray(columns["id"]), "mangaid": np.asarray(mangaids)})
    k_eff = min(k, len(np.unique(groups[reference])) - 1)
    if k_eff < 1:
        raise ScoringError(f"the latent k-NN score needs at least 2 reference galaxies; got {int(reference.sum())}")
    # Another observation of the same galaxy is never a neighbour: it would make a repeated
    # outlier look ordinary.
    knn = knn_latent_scores(latents, k=k_eff, fit_mask=reference, groups=groups)
    anomaly_pct = _percentile_of(anomaly, anomaly[reference])
    knn_pct = _percentile_of(knn, knn[reference])
    table = {
        "id": columns["id"],
        "mangaid": mangaids,
        "split": columns["split"],
        "label": columns["label"],
        "anomaly_score": anomaly,
        "anomaly_percentile": anomaly_pct,
        "knn_score": knn,
        "knn_percentile": knn_pct,
        # Rank average of the two scores: a galaxy must be unusual in both views to top it.
        "combined_score": 0.5 * (anomaly_pct + knn_pct),
    }
    # Noise-aware and likelihood scores, when the model gives them (format 3; nelbo: VAE).
    for prefix in ("chi2", "nelbo"):
        if f"{prefix}_score" in outputs:
            values = outputs[f"{prefix}_score"]
            table[f"{prefix}_score"] = values
            table[f"{prefix}_percentile"] = _percentile_of(values, values[reference])
    if "latent_kl" in outputs:  # the VAE's nelbo_score is sum(nll_<LINE>) + nelbo_kl
        table["nelbo_kl"] = outputs["latent_kl"]
    for name, prefix in LINE_OUTPUT_PREFIXES.items():
        if name in outputs:
            for index, line in enumerate(lines):
                table[f"{prefix}{line}"] = outputs[name][:, index]
    # The recommended ranking goes first among the scores (rule: ifskeras.discovery.ranking).
    excluded_lines = list(metadata.get("chi2_excluded_lines") or tied_lines_among(lines))
    ranking = _ensemble_ranking(member_outputs, lines, reference, excluded_lines, brightness)
    head = {name: table.pop(name) for name in ("id", "mangaid", "split", "label")}
    table = {**head, **ranking, **table}
    for index in range(latents.shape[1]):
        table[f"latent_{index}"] = latents[:, index].astype(np.float64)
    table.update(ratios)
    table.update(brightness)
    table["umap_x"], table["umap_y"] = _umap(latents, seed=seed) if umap else (np.full(n_galaxies, np.nan),) * 2

    provenance = {
        "model_dir": str(model_dir.resolve()),
        # Every model scored with (one: a single model; more: an ensemble, see score_records).
        "model_dirs": [str(path.resolve()) for path in model_dirs],
        "records_dir": str(records_dir.resolve()),
        "records_manifest_sha256": manifest_checksum(records_dir),
        "model_metadata": {k: metadata[k] for k in ("lines", "size", "scaling", "softening", "latent_dim", "model_class")},
        "model_format_version": int(metadata.get("format_version", 1)),
        # Format-2 models have no ivar signature: their scores carry no chi2 or nelbo columns.
        "noise_aware_scores": "chi2_score" in outputs,
        "chi2_excluded_lines": list(metadata.get("chi2_excluded_lines", [])),
        "rank_rule": RANK_RULE,
        # The per-line errors rank_score was built from: peak_ (format 4), chi2_ (3) or err_.
        "rank_basis": _rank_basis(member_outputs[0])[1],
        # Whether each line's trend with its log_snr_<LINE> was taken out (scores from before: no).
        "rank_brightness_trend": True,
        "rank_excluded_lines": excluded_lines,
        "splits": {name: int((split_array == name).sum()) for name in splits},
        "k": k,
        "umap_seed": seed,
        "n_galaxies": n_galaxies,
        "seconds": seconds,
    }
    with atomic_directory(out_dir) as staging:
        _write_csv(staging / SCORES_CSV, table)
        _write_fits(staging / SCORES_FITS, table, lines=lines)
        np.save(staging / LATENTS_NPY, latents)
        (staging / SCORING_JSON).write_text(json.dumps(provenance, indent=2))
    return ScoreResult(out_dir, n_galaxies, provenance["splits"], seconds, n_galaxies / max(seconds, 1e-9))


def _model_dirs(model_dir) -> list[Path]:
    paths = [model_dir] if isinstance(model_dir, (str, os.PathLike)) else list(model_dir)
    if not paths:
        raise ScoringError("no model to score with")
    paths = [Path(path) for path in paths]
    repeated = sorted({str(path) for path in paths if paths.count(path) > 1})
    if repeated:
        raise ScoringError(f"model(s) given twice: {', '.join(repeated)}; an ensemble needs distinct models")
    return paths


def _check_ensemble(model_dirs: list[Path], metadata: list[dict]) -> None:
    """Members must rank on the same quantity (peak chi2: format 4, chi2: 3, err: 2), same lines left out."""
    def ranking_basis(member: dict) -> tuple:
        gives_peak = int(member.get("format_version", 1)) >= PEAK_FORMAT
        return gives_peak, reads_ivar(member), tuple(sorted(member.get("chi2_excluded_lines") or []))

    first = ranking_basis(metadata[0])
    for path, member in zip(model_dirs[1:], metadata[1:]):
        if ranking_basis(member) != first:
            raise ScoringError(
                f"model {path} ranks on other errors than {model_dirs[0]} (SavedModel format "
                f"{member.get('format_version')} against {metadata[0].get('format_version')}, or other lines left "
                "out of chi2): re-export older models with `ifskeras export` so every member ranks alike"
            )


def _ensemble_mean(member_outputs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The members' mean of each output every member gives (nelbo only when all are VAEs)."""
    shared = set.intersection(*(set(outputs) for outputs in member_outputs))
    return {name: np.mean([outputs[name] for outputs in member_outputs], axis=0) for name in sorted(shared)}


def _ensemble_ranking(member_outputs: list[dict[str, np.ndarray]], lines: list[str], reference: np.ndarray,
                      excluded_lines: list[str], brightness: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each member's ``rank_score``; for several, their mean (re-percentiled) and standard deviation.

    ``brightness`` holds the ``log_snr_<LINE>`` columns, the same for every member.
    """
    rankings = []
    for outputs in member_outputs:
        name, prefix = _rank_basis(outputs)
        table = {f"{prefix}{line}": outputs[name][:, index] for index, line in enumerate(lines)} | brightness
        rankings.append(rank_scores(table, lines, reference, excluded_lines=excluded_lines))
    if len(rankings) == 1:
        return rankings[0]
    member_scores = np.stack([ranking["rank_score"] for ranking in rankings])
    score = member_scores.mean(axis=0)
    return {"rank_score": score, "rank_percentile": _percentile_of(score, score[reference]),
            "rank_score_spread": member_scores.std(axis=0)}


def _rank_basis(outputs: dict) -> tuple[str, str]:
    """The preferred per-line output a model gave, and its table prefix (see RANK_OUTPUTS)."""
    return next((name, prefix) for name, prefix in RANK_OUTPUTS if name in outputs)


def reads_ivar(metadata: dict) -> bool:
    """Whether the model's ``score`` endpoint takes ``ivar`` (format 3 on) and so gives chi2 scores."""
    return int(metadata.get("format_version", 1)) >= NOISE_AWARE_FORMAT


def score_batch(loaded, batch: dict, *, noise_aware: bool) -> dict[str, np.ndarray]:
    """One batch of records through the ``score`` endpoint: the outputs the scores table uses, as numpy.

    ``noise_aware`` calls ``score(flux, valid, ivar)`` (format 3), else the format-2
    ``score(flux, valid)``; outputs the model does not give are left out.
    """
    if noise_aware:
        out = loaded.score(batch["flux"], batch["valid"], batch["ivar"])
    else:
        out = loaded.score(batch["flux"], batch["valid"])
    return {name: out[name].numpy() for name in TABLE_OUTPUTS if name in out}


def load_model(model_dir: Path):
    """The SavedModel in ``model_dir`` and its metadata (from its ``metadata()`` endpoint)."""
    import tensorflow as tf

    if not (model_dir / "saved_model.pb").exists():
        raise ScoringError(f"{model_dir}: not a SavedModel directory (no saved_model.pb); "
                           "give the model/ folder of a run, or the output of `ifskeras export`")
    loaded = tf.saved_model.load(str(model_dir))
    if not hasattr(loaded, "metadata"):
        raise ScoringError(f"{model_dir}: a SavedModel, but not one exported by ifskeras (no metadata endpoint)")
    metadata = json.loads(loaded.metadata()["json"].numpy().decode())
    return loaded, metadata


def load_scores(scores_dir: str | os.PathLike) -> tuple[dict, np.ndarray, dict]:
    """(table as dict of numpy columns, latents [N, D], scoring.json) of a scores directory."""
    scores_dir = Path(scores_dir)
    missing = [name for name in (SCORES_CSV, LATENTS_NPY, SCORING_JSON) if not (scores_dir / name).exists()]
    if missing:
        raise ScoringError(f"{scores_dir}: not a scores directory (missing {', '.join(missing)}); run `ifskeras score` first")
    with open(scores_dir / SCORES_CSV, newline="") as stream:
        rows = list(csv.DictReader(stream))
    text_columns = {"id", "mangaid", "split", "label"}
    table = {}
    for name in rows[0].keys() if rows else []:
        values = [row[name] for row in rows]
        # NaN is written as an empty cell (what spreadsheets and TOPCAT expect).
        table[name] = np.asarray(values) if name in text_columns else np.asarray(
            [float(v) if v != "" else np.nan for v in values], dtype=np.float64)
    return table, np.load(scores_dir / LATENTS_NPY), json.loads((scores_dir / SCORING_JSON).read_text())


def _percentile_of(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Percentage of the reference distribution at or below each value."""
    ordered = np.sort(reference)
    return 100.0 * np.searchsorted(ordered, values, side="right") / len(ordered)


def _umap(latents: np.ndarray, *, seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    n = len(latents)
    if n < 4:
        return np.zeros(n), np.zeros(n)
    import warnings

    import umap

    with warnings.catch_warnings():
        # random_state forces one thread; umap says so in a warning we already document.
        warnings.filterwarnings("ignore", message=".*n_jobs value.*overridden.*")
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, random_state=seed,
                            n_jobs=1 if seed is not None else -1, init="spectral" if n > 20 else "random")
        embedding = reducer.fit_transform(latents)
    return embedding[:, 0].astype(np.float64), embedding[:, 1].astype(np.float64)


def _write_csv(path: Path, table: dict) -> None:
    names = list(table)
    columns = [table[name] for name in names]
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(names)
        for row in zip(*columns):
            writer.writerow([_format_cell(value) for value in row])


def _format_cell(value) -> str:
    if isinstance(value, str):
        return value
    value = float(value)
    return "" if np.isnan(value) else repr(value)


def _write_fits(path: Path, table: dict, *, lines: list[str]) -> None:
    from astropy.table import Table

    out = Table({name: np.asarray(values) for name, values in table.items()})
    out.meta["ORIGIN"] = "ifskeras"
    out.meta["NLINES"] = len(lines)
    for name in table:
        if name.startswith("err_"):
            out[name].description = f"masked squared reconstruction error of {name[4:]} (scaled flux)"
        if name.startswith("chi2_") and name not in ("chi2_score", "chi2_percentile"):
            out[name].description = f"mean chi-square of {name[5:]} per pixel (scaled flux, propagated ivar)"
        if name.startswith("peak_"):
            out[name].description = f"highest 3x3-window mean chi-square of {name[5:]} (rank_score's basis)"
        if name.startswith("nll_"):
            out[name].description = f"VAE expected negative log-likelihood of {name[4:]}'s valid pixels (nats)"
        if name.startswith(LOG_SNR_PREFIX):
            out[name].description = (f"log10 integrated S/N of {name[len(LOG_SNR_PREFIX):]}, sum(flux)/sqrt(sum(1/ivar)) "
                                      "over used pixels, clipped at 1")
    out["anomaly_score"].description = "masked mean squared reconstruction error (scaled flux)"
    if "chi2_score" in out.colnames:
        out["chi2_score"].description = "mean chi-square per pixel with propagated ivar, tied DAP lines left out"
    if "nelbo_score" in out.colnames:
        out["nelbo_score"].description = "VAE negative ELBO (nats): expected NLL over valid pixels + KL"
    if "nelbo_kl" in out.colnames:
        out["nelbo_kl"].description = "VAE KL(q(z|x) || N(0, I)) (nats): nelbo_score = sum of nll_<LINE> + this"
    out["knn_score"].description = "mean latent distance to the k nearest training galaxies"
    out["rank_score"].description = ("recommended ranking: mean of the 3 highest per-line robust z-scores of log "
                                     "peak chi2 (chi2 for format-3 models, err for format 2), brightness trend out")
    if "rank_score_spread" in out.colnames:
        out["rank_score_spread"].description = "population standard deviation of rank_score over the ensemble's models"
    out["rank_percentile"].description = "percentile of rank_score among the training galaxies"
    out.write(path, format="fits", overwrite=True)
