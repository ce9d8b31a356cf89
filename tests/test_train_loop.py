"""The training loop's bookkeeping: validation coverage, the monitored objective, early stopping, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402

from ifskeras.learning.config import RunConfig, smoke_config  # noqa: E402
from ifskeras.learning.errors import TrainingError  # noqa: E402
from ifskeras.learning.train import fit  # noqa: E402


def _model_weights(path) -> list[np.ndarray]:
    import ifskeras.learning.models  # noqa: F401  registers the custom classes

    return [np.asarray(w) for w in keras.saving.load_model(str(path)).get_weights()]


def test_validation_scores_every_val_galaxy_exactly_once(tiny_records, tmp_path):
    """batch 4 over a val split that is not a multiple of 4: the partial batch counts once, by its size."""
    from ifskeras.records import load_manifest, make_dataset

    n_val = load_manifest(tiny_records).examples("val")
    assert n_val % 4, "the fixture should leave a partial val batch"
    config = smoke_config("ae").override(train={"epochs": 1, "batch_size": 4})
    result = fit(tiny_records, tmp_path / "run", config, progress=False, export=False)
    row = result.history[0]
    assert row["val_examples"] == n_val

    model = keras.saving.load_model(str(result.model_path))
    batch = next(iter(make_dataset(tiny_records, "val", batch_size=n_val + 10, training=False)))
    assert batch["flux"].shape[0] == n_val
    losses = model.per_example_losses(batch["flux"], batch["ivar"], batch["valid"], training=False)
    np.testing.assert_allclose(row["val_loss"], float(np.mean(losses["loss"])), rtol=1e-5)
    np.testing.assert_allclose(row["val_objective"], row["val_loss"], rtol=1e-6)  # AE: objective is val_loss


def test_early_stopping_follows_the_objective_not_the_warmed_up_loss(tiny_records, tmp_path, monkeypatch):
    """Scripted val losses for a VAE warming beta up over 4 epochs.

    epoch:             1     2     3     4
    reconstruction:   0.5   0.8   0.9   1.0
    KL:               2.0   0.6   0.7   0.8
    val_loss (warm):  1.0   1.1   1.425 1.8   -> best epoch 1 (biased by the warm-up)
    objective (b=1):  2.5   1.4   1.6   1.8   -> best epoch 2
    With patience 2 the run stops after epoch 4 and restores epoch 2's weights.
    """
    import ifskeras.learning.steps as steps

    script = [(0.5, 2.0), (0.8, 0.6), (0.9, 0.7), (1.0, 0.8)]
    snapshots, models = [], []

    def scripted_evaluator(strategy, model):
        models.append(model)

        def evaluate(dataset):
            reconstruction, kl = script[len(snapshots)]
            beta = float(model.beta.numpy())
            return {"loss": reconstruction + beta * kl, "reconstruction_loss": reconstruction, "kl_loss": kl}, 7

        return evaluate

    monkeypatch.setattr(steps, "make_evaluator", scripted_evaluator)
    config = smoke_config("vae").override(
        model={"beta": 1.0, "kl_warmup_epochs": 4},
        train={"epochs": 6, "early_stopping_patience": 2},
    )
    result = fit(tiny_records, tmp_path / "run", config, progress=False, export=False,
                 on_epoch_end=lambda row: snapshots.append([np.asarray(w) for w in models[0].get_weights()]))
    history = result.history
    np.testing.assert_allclose([row["val_loss"] for row in history], [1.0, 1.1, 1.425, 1.8])
    np.testing.assert_allclose([row["val_objective"] for row in history], [2.5, 1.4, 1.6, 1.8])
    assert (result.best_epoch, result.epochs_completed, result.stopped_early) == (2, 4, True)
    assert result.best_objective == pytest.approx(1.4)
    saved = _model_weights(result.model_path)
    for got, want in zip(saved, snapshots[1]):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(got, last) for got, last in zip(saved, snapshots[3]))
    state = json.loads((result.run_dir / "train_state.json").read_text())
    assert state["best_epoch"] == 2 and state["wait"] == 2


def test_resume_applies_allowed_changes_and_refuses_others(trained_ae, tmp_path):
    from ifskeras.learning.config import load_config

    run = tmp_path / "run"
    shutil.copytree(trained_ae.run_dir, run)
    stored = load_config(run / "config.json")
    records = json.loads((run / "provenance.json").read_text())["records_dir"]

    changed_model = stored.override(model={"latent_dim": 16}, train={"learning_rate": 0.5})
    with pytest.raises(TrainingError) as error:
        fit(records, run, changed_model, resume=True, progress=False, export=False)
    message = str(error.value)
    assert "model.latent_dim: 8 -> 16" in message and "train.learning_rate: 0.01 -> 0.5" in message
    assert "train.epochs" in message  # names what may change
    assert load_config(run / "config.json") == stored  # a refused resume changes nothing

    extended = stored.override(train={"epochs": stored.train.epochs + 1, "early_stopping_patience": 9})
    result = fit(records, run, extended, resume=True, progress=False, export=False)
    assert result.resume_changes == [
        f"train.epochs: {stored.train.epochs} -> {stored.train.epochs + 1}",
        "train.early_stopping_patience: 0 -> 9",
    ]
    assert result.epochs_completed == stored.train.epochs + 1
    assert load_config(run / "config.json") == extended
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["resume_changes"] == result.resume_changes


@pytest.mark.long  # a second fit or export of its own: kept out of make test's 10 minutes
def test_resume_through_the_cli_reports_the_change(trained_ae, tmp_path):
    from typer.testing import CliRunner

    from ifskeras.cli.app import app

    run = tmp_path / "run"
    shutil.copytree(trained_ae.run_dir, run)
    records = json.loads((run / "provenance.json").read_text())["records_dir"]
    epochs = RunConfig.from_dict(json.loads((run / "config.json").read_text())).train.epochs
    runner = CliRunner()
    refused = runner.invoke(app, ["fit", records, "--out", str(run), "--resume", "--latent-dim", "3", "--quiet"])
    assert refused.exit_code == 1 and "model.latent_dim: 8 -> 3" in refused.output
    done = runner.invoke(app, ["fit", records, "--out", str(run), "--resume", "--epochs", str(epochs + 1), "--quiet"])
    assert done.exit_code == 0, done.output
    assert f"resumed with train.epochs: {epochs} -> {epochs + 1}" in done.output


@pytest.mark.long  # a second fit or export of its own: kept out of make test's 10 minutes
def test_export_run_writes_a_savedmodel_equal_to_the_fit_export(trained_ae, tmp_path):
    import tensorflow as tf

    from ifskeras.learning.export import export_run

    path = export_run(trained_ae.run_dir, tmp_path / "exported")
    assert (path / "saved_model.pb").exists() and not (tmp_path / "exported.partial").exists()
    fresh, original = tf.saved_model.load(str(path)), tf.saved_model.load(str(trained_ae.export_path))
    flux = tf.random.stateless_uniform([2, 19, 16, 16, 1], seed=[1, 2], maxval=3.0)
    valid = tf.ones_like(flux)
    for key, value in original.score(flux, valid).items():
        np.testing.assert_allclose(fresh.score(flux, valid)[key].numpy(), value.numpy(), rtol=1e-6, atol=1e-7)
    meta = json.loads(fresh.metadata()["json"].numpy().decode())
    assert meta == json.loads(original.metadata()["json"].numpy().decode())
