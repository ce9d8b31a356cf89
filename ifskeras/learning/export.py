"""Export a trained model as a TensorFlow SavedModel that loads without ifskeras.

Endpoints (all inputs are physical fluxes in 1e-17 erg/s/cm^2/spaxel, shape
[batch, lines, size, size, 1], float32):

- ``reconstruct(flux)`` -> ``{"reconstruction"}`` in physical units;
- ``encode(flux)`` -> ``{"latent_mean"}`` (and ``"latent_scale"`` for a VAE);
- ``score(flux, valid)`` -> ``{"anomaly_score", "line_error", "line_valid_fraction",
  "latent_mean", "reconstruction", ...}``;
- ``scale(flux)`` -> ``{"scaled"}``: the model's flux scaling, elementwise, for inputs of
  any shape (how baselines see the maps as the model does);
- ``metadata()`` -> ``{"json"}``: lines, size, scaling and model config, so a scorer can
  refuse records that do not match the model.

The same JSON is written to ``assets.extra/ifskeras.json`` for tools that only read files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import tensorflow as tf

from ifskeras import __version__
from ifskeras.common.files import atomic_directory

__all__ = ["ExportError", "export_model", "export_run", "read_model_metadata", "METADATA_FILE"]

METADATA_FILE = Path("assets.extra") / "ifskeras.json"
#: 2: the ``scale`` endpoint was added.
FORMAT_VERSION = 2


class ExportError(RuntimeError):
    """A model could not be exported or an exported model could not be read."""


def export_model(model, out_dir: str | os.PathLike, *, lines, size: int, extra: dict | None = None) -> Path:
    """Write ``model`` as a SavedModel with the endpoints above; returns ``out_dir``.

    The archive is written next to ``out_dir`` and renamed into place, so a failed
    export never leaves a half-written model that looks whole.
    """
    out_dir = Path(out_dir)
    lines = [str(line) for line in lines]
    num_lines = len(lines)
    config = model.get_config()
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
        **(extra or {}),
    }
    metadata_json = json.dumps(metadata, default=str, sort_keys=True)
    flux_spec = tf.TensorSpec([None, num_lines, size, size, 1], tf.float32, name="flux")
    valid_spec = tf.TensorSpec([None, num_lines, size, size, 1], tf.float32, name="valid")

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

    def score(flux, valid):
        return dict(model.score(flux, valid))

    def scale(flux):
        return {"scaled": model.scale_flux(flux)}

    @tf.function(input_signature=[])
    def metadata_endpoint():
        return {"json": tf.constant(metadata_json)}

    archive.add_endpoint("reconstruct", reconstruct, input_signature=[flux_spec])
    archive.add_endpoint("encode", encode, input_signature=[flux_spec])
    archive.add_endpoint("score", score, input_signature=[flux_spec, valid_spec])
    archive.add_endpoint("scale", scale, input_signature=[tf.TensorSpec(None, tf.float32, name="flux")])
    archive.add_endpoint("metadata", metadata_endpoint)

    with atomic_directory(out_dir) as staging:
        archive.write_out(str(staging), verbose=False)
        (staging / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str, sort_keys=True))
    return out_dir


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
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
        model = build_model(config.model, num_lines=num_lines, size=size)
        model(tf.zeros([1, num_lines, size, size, 1]), training=False)
        model.load_weights(str(weights))
    # The same metadata as the export at the end of ``fit``: records and the run's config.
    extra = {"records_manifest_sha256": provenance.get("records_manifest_sha256")}
    config_path = run_dir / "config.json"
    if config_path.exists():
        extra["run_config"] = json.loads(config_path.read_text())
    return export_model(model, out_dir, lines=provenance["lines"], size=provenance["shape"][1], extra=extra)


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
