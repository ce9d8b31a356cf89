"""Export a trained model as a TensorFlow SavedModel that loads without ifskeras.

Endpoints (maps are physical fluxes in 1e-17 erg/s/cm^2/spaxel, their inverse
variances and 0/1 valid masks, shape [batch, lines, size, size, 1], float32):

- ``reconstruct(flux)`` -> ``{"reconstruction"}`` in physical units;
- ``encode(flux)`` -> ``{"latent_mean"}`` (and ``"latent_scale"`` for a VAE);
- ``decode(latent)`` -> ``{"reconstruction", "scaled_reconstruction"}`` (and
  ``"likelihood_line_scale"`` for a VAE);
- ``score(flux, valid, ivar)`` -> the noise-aware scores (``chi2_score``,
  ``chi2_per_line``, ``chi2_peak_per_line``; for a VAE ``nelbo_score``, ``nll_per_line``, ``latent_kl``) on top
  of ``anomaly_score``, ``line_error``, ``line_valid_fraction``, ``latent_mean``,
  ``reconstruction``, ...; ``score(flux, valid)`` (a second signature of the same
  function) and ``score_flux(flux, valid)`` return the format-2 outputs, without ivar;
- ``scale(flux)`` -> ``{"scaled"}``: the model's flux scaling, elementwise, for inputs of
  any shape (how baselines see the maps as the model does);
- ``metadata()`` -> ``{"json"}``: lines, size, scaling, model config, tied lines and
  the VAE's score samples, so a scorer can refuse records that do not match the model.

The same JSON is written to ``assets.extra/ifskeras.json`` for tools that only read files.
docs/savedmodel.md is the reference of every endpoint and of the format versions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from ifskeras import __version__
from ifskeras.common.files import atomic_directory
from ifskeras.learning.models.losses import PEAK_MIN_PIXELS, PEAK_WINDOW
from ifskeras.survey.lines import TIED_LINES, tied_lines_among

__all__ = [
    "ExportError",
    "export_model",
    "export_run",
    "read_model_metadata",
    "tied_lines_among",
    "METADATA_FILE",
    "FORMAT_VERSION",
    "TIED_LINES",
]

METADATA_FILE = Path("assets.extra") / "ifskeras.json"
#: 4: ``score(flux, valid, ivar)`` also returns ``chi2_peak_per_line``, what
#: ``rank_score`` is built from. 3: ``score`` takes ``ivar`` (chi2 and, for a VAE,
#: negative-ELBO scores); the old ``score(flux, valid)`` stays as a second signature and
#: as ``score_flux``; ``decode`` added. 2: the ``scale`` endpoint was added.
FORMAT_VERSION = 4

class ExportError(RuntimeError):
    """A model could not be exported or an exported model could not be read."""


def export_model(model, out_dir: str | os.PathLike, *, lines, size: int, extra: dict | None = None,
                 exclude_tied_lines: bool = True) -> Path:
    """Write ``model`` as a SavedModel with the endpoints above; returns ``out_dir``.

    With ``exclude_tied_lines`` (the default) the galaxy-level ``chi2_score`` leaves out
    the tied copies of :data:`TIED_LINES` present among ``lines`` (``chi2_per_line``
    still reports every line); metadata lists them as ``chi2_excluded_lines``.
    ``anomaly_score`` and the VAE's ``nelbo_score`` count every line the model learnt:
    lines a model left out of its training loss (``loss_line_mask``, listed as
    ``loss_excluded_lines``) are left out of every galaxy-level score.

    The archive is written next to ``out_dir`` and renamed into place, so a failed
    export never leaves a half-written model that looks whole.
    """
    out_dir = Path(out_dir)
    lines = [str(line) for line in lines]
    num_lines = len(lines)
    config = model.get_config()
    mask = getattr(model, "loss_line_mask", None)
    loss_excluded = [line for line, counted in zip(lines, mask) if not counted] if mask else []
    metadata = {
        "format": "ifskeras-savedmodel",
        "format_version": FORMAT_VERSION,
        "ifskeras_version": __version__,
        "model_class": type(model).__name__,
        "lines": lines,
        "size": int(size),
        "scaling": config.get("scaling"),
        "softening": config.get("softening"),
        "latent_dim": int(config.get("latent_dim", 0)),
        "model_config": config,
        "tied_lines": tied_lines_among(lines),
        "chi2_peak_window": PEAK_WINDOW,
        "chi2_peak_min_pixels": PEAK_MIN_PIXELS,
        "loss_excluded_lines": loss_excluded,
        "chi2_excluded_lines": sorted(set(tied_lines_among(lines)) | set(loss_excluded) if exclude_tied_lines
                                      else loss_excluded),
        **_likelihood_metadata(model),
        **(extra or {}),
    }
    chi2_line_mask = [0.0 if line in metadata["chi2_excluded_lines"] else 1.0 for line in lines]
    metadata_json = json.dumps(metadata, default=str, sort_keys=True)
    flux_spec = tf.TensorSpec([None, num_lines, size, size, 1], tf.float32, name="flux")
    valid_spec = tf.TensorSpec([None, num_lines, size, size, 1], tf.float32, name="valid")
    ivar_spec = tf.TensorSpec([None, num_lines, size, size, 1], tf.float32, name="ivar")
    latent_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="latent")

    archive = keras.export.ExportArchive()
    archive.track(model)

    def reconstruct(flux):
        return {"reconstruction": model.unscale(model(flux, training=False))}

    def encode(flux):
        encoded = model.encode(flux, training=False)
        out = {"latent_mean": encoded["latent_mean"]}
        if "latent_log_var" in encoded:
            out["latent_scale"] = tf.exp(0.5 * encoded["latent_log_var"])
        return out

    def decode(latent):
        scaled = model.decode(latent)
        out = {"reconstruction": model.unscale(scaled), "scaled_reconstruction": scaled}
        if model.kind == "vae":
            out["likelihood_line_scale"] = model.likelihood_line_scale()
        return out

    # One function, two signatures: score(flux, valid, ivar) and, for callers of format 2,
    # score(flux, valid). The ivar signature is traced first, so it is the one
    # `signatures["score"]` serves; `score_flux` serves the other.
    @tf.function(autograph=False)
    def score(flux, valid, ivar=None):
        return dict(model.score(flux, valid, ivar, chi2_line_mask=tf.constant(chi2_line_mask)))

    score.get_concrete_function(flux_spec, valid_spec, ivar_spec)
    score.get_concrete_function(flux_spec, valid_spec)

    def score_flux(flux, valid):
        return score(flux, valid)

    def scale(flux):
        return {"scaled": model.scale_flux(flux)}

    @tf.function(input_signature=[])
    def metadata_endpoint():
        return {"json": tf.constant(metadata_json)}

    archive.add_endpoint("reconstruct", reconstruct, input_signature=[flux_spec])
    archive.add_endpoint("encode", encode, input_signature=[flux_spec])
    archive.add_endpoint("decode", decode, input_signature=[latent_spec])
    archive.add_endpoint("score", score)
    archive.add_endpoint("score_flux", score_flux, input_signature=[flux_spec, valid_spec])
    archive.add_endpoint("scale", scale, input_signature=[tf.TensorSpec(None, tf.float32, name="flux")])
    archive.add_endpoint("metadata", metadata_endpoint)

    with atomic_directory(out_dir) as staging:
        archive.write_out(str(staging), verbose=False)
        (staging / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str, sort_keys=True))
    return out_dir


def _likelihood_metadata(model) -> dict:
    """How the VAE's ``nelbo_score`` draws its posterior samples (nothing for the AE)."""
    if model.kind != "vae":
        return {}
    from ifskeras.learning.models.vae import NELBO_SAMPLES, NELBO_SEED

    return {"nelbo_samples": NELBO_SAMPLES, "nelbo_seed": list(NELBO_SEED), "nelbo_sampling_algorithm": "philox"}


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *, exclude_tied_lines: bool = True) -> Path:
    """Export the best model of a finished or interrupted ``ifskeras fit`` run directory."""
    import ifskeras.learning.models  # noqa: F401  registers the custom classes for safe .keras loading

    run_dir = Path(run_dir)
    provenance_path = run_dir / "provenance.json"
    model_path = run_dir / "model.keras"
    if not provenance_path.exists():
        raise ExportError(f"{run_dir}: not an ifskeras run directory (no provenance.json)")
    try:
        provenance = json.loads(provenance_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ExportError(f"{provenance_path}: unreadable ({error}); the run directory is damaged") from error
    if model_path.exists():
        try:
            model = keras.saving.load_model(str(model_path), safe_mode=True)
        except Exception as error:  # safe_mode refusals (Lambda, foreign modules), corrupt archives
            raise ExportError(
                f"{model_path}: cannot load the model, nothing was exported "
                f"({type(error).__name__}: {str(error).strip()})"
            ) from error
    else:
        from ifskeras.learning.config import RunConfig
        from ifskeras.learning.models import build_model

        weights = run_dir / "best.weights.h5"
        if not weights.exists():
            raise ExportError(f"{run_dir}: no model.keras and no best.weights.h5; train at least one epoch first")
        config = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        num_lines, size = provenance["shape"][0], provenance["shape"][1]
        model = build_model(config.model, num_lines=num_lines, size=size, lines=provenance.get("lines"))
        model(tf.zeros([1, num_lines, size, size, 1]), training=False)
        model.load_weights(str(weights))
    # The same metadata as the export at the end of ``fit``: records and the run's config.
    extra = {"records_manifest_sha256": provenance.get("records_manifest_sha256")}
    if provenance.get("grid"):
        extra["records_grid"] = provenance["grid"]
    config_path = run_dir / "config.json"
    if config_path.exists():
        extra["run_config"] = json.loads(config_path.read_text())
    return export_model(model, out_dir, lines=provenance["lines"], size=provenance["shape"][1], extra=extra,
                        exclude_tied_lines=exclude_tied_lines)


def read_model_metadata(model_dir: str | os.PathLike) -> dict:
    """The metadata of an exported model, read from its file (no TensorFlow needed)."""
    model_dir = Path(model_dir)
    if not (model_dir / "saved_model.pb").exists():
        raise ExportError(f"{model_dir}: not a SavedModel directory (no saved_model.pb)")
    path = model_dir / METADATA_FILE
    if not path.exists():
        raise ExportError(f"{model_dir}: a SavedModel, but not one exported by ifskeras (no {METADATA_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ExportError(f"{path}: corrupt metadata ({error})") from error
