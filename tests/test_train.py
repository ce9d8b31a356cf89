"""Training loop, resume, divergence, distribution strategies and SavedModel export on tiny data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from ifskeras.learning.config import smoke_config  # noqa: E402
from ifskeras.learning.train import TrainingDivergedError, TrainingError, fit, read_history  # noqa: E402
from ifskeras.records import load_manifest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _weights(path: Path) -> list[np.ndarray]:
    import ifskeras.learning.models  # noqa: F401  registers custom classes

    model = keras.saving.load_model(str(path))
    return [np.asarray(w) for w in model.get_weights()]


def _smoke(kind="ae", **train):
    config = smoke_config(kind)
    return config.override(train={"epochs": 3, **train})


def test_loss_falls_and_run_dir_is_complete(trained_ae):
    result = trained_ae
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    run = result.run_dir
    for name in ("config.json", "provenance.json", "history.csv", "history.json", "model.keras", "model/saved_model.pb"):
        assert (run / name).exists(), name
    provenance = json.loads((run / "provenance.json").read_text())
    assert len(provenance["records_manifest_sha256"]) == 64
    assert provenance["versions"]["tensorflow"] == tf.__version__
    assert "val_loss" in result.history[0] and result.history[0]["samples_per_second"] > 0
    assert list((run / "tensorboard").iterdir())


def test_vae_trains_and_logs_kl(trained_vae):
    result = trained_vae
    row = result.history[-1]
    assert row["kl_loss"] > 0 and np.isfinite(row["val_loss"])
    assert result.history[0]["beta"] <= result.history[-1]["beta"]


def test_small_records_are_cached_unless_told_not_to(trained_ae, trained_vae):
    """The AE's tiny records fit in memory (cache decided), the VAE was told --no-cache."""
    for result, cached in ((trained_ae, True), (trained_vae, False)):
        provenance = json.loads((result.run_dir / "provenance.json").read_text())
        assert (result.records_cached, provenance["records_cached"]) == (cached, cached)
        assert provenance["cache_reason"] == result.cache_reason
    assert "fit in 25% of the" in trained_ae.cache_reason and trained_vae.cache_reason == "--no-cache"


def test_decide_cache(tiny_records):
    from ifskeras.records import load_manifest
    from ifskeras.learning.cache import decide_cache

    manifest = load_manifest(tiny_records)
    n_train = manifest.examples("train")
    train_bytes = sum(info.bytes for info in manifest.shards("train"))
    val_bytes = sum(info.bytes for info in manifest.shards("val"))
    held = train_bytes + val_bytes

    def decide(requested=None, *, workers=1, read=n_train + 1, available=4 * held):
        return decide_cache(manifest, requested, num_workers=workers, examples_read=read, available_bytes=available)

    assert decide() == (True, f"{held / 1e6:.0f} MB of records fit in 25% of the {4 * held / 1e9:.1f} GB available")
    assert decide(available=4 * held - 4)[0] is False  # one byte over the budget
    assert decide(available=None) == (False, "the available memory is unknown")
    assert decide(read=n_train) == (False, "the train split is read at most once")
    # Two workers each hold half the train shards but the whole val split.
    assert decide(workers=2, available=4 * (train_bytes // 2 + val_bytes + 1))[0] is True
    assert decide(workers=1, available=4 * (train_bytes // 2 + val_bytes + 1))[0] is False
    assert decide(True, read=1, available=None) == (True, "--cache")
    assert decide(False) == (False, "--no-cache")


@pytest.mark.parametrize("value", ["yes", 1, 0.5])
def test_cache_config_must_be_a_bool_or_null(value):
    from ifskeras.learning.config import ConfigError

    with pytest.raises(ConfigError, match="cache must be true, false or null"):
        _smoke(cache=value)


@pytest.mark.long
def test_same_seed_same_weights(tiny_records, tmp_path):
    config = _smoke(epochs=1, seed=7)
    fit(tiny_records, tmp_path / "a", config, progress=False, export=False)
    fit(tiny_records, tmp_path / "b", config, progress=False, export=False)
    for wa, wb in zip(_weights(tmp_path / "a/model.keras"), _weights(tmp_path / "b/model.keras")):
        np.testing.assert_array_equal(wa, wb)


def test_refuses_non_empty_run_dir_and_bad_batch(tiny_records, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run/keep.txt").write_text("mine")
    with pytest.raises(TrainingError, match="not empty; use --resume"):
        fit(tiny_records, tmp_path / "run", _smoke(), progress=False)
    assert (tmp_path / "run/keep.txt").read_text() == "mine"
    with pytest.raises(TrainingError, match="fewer than one batch"):
        fit(tiny_records, tmp_path / "run2", _smoke(batch_size=4096), progress=False)
    # A run refused by its checks leaves nothing behind, so the corrected retry is not blocked.
    assert not (tmp_path / "run2").exists()
    deep = smoke_config("ae").override(model={"filters": (4, 4, 4, 4, 4)})
    with pytest.raises(TrainingError, match="16x16 maps that this model cannot take"):
        fit(tiny_records, tmp_path / "run2", deep, progress=False)
    assert not (tmp_path / "run2").exists()


def test_cli_errors_are_messages_not_tracebacks(tiny_records, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ifskeras.cli.app import app

    monkeypatch.delenv("TF_CONFIG", raising=False)
    runner = CliRunner()
    result = runner.invoke(app, ["fit", str(tiny_records), "--out", str(tmp_path / "r"), "--strategy", "multiworker"])
    assert result.exit_code == 1 and "needs TF_CONFIG" in result.output
    result = runner.invoke(app, ["fit", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "no such records directory" in result.output
    assert "Traceback" not in result.output


@pytest.mark.long  # trains its own model: kept out of make test's 10 minutes
def test_nan_loss_stops_with_last_good_checkpoint(tiny_records, tmp_path, monkeypatch):
    import ifskeras.learning.models as models

    poison = tf.Variable(1.0, trainable=False)
    original = models.build_model

    def poisoned_build(*args, **kwargs):
        model = original(*args, **kwargs)
        per_example = model.per_example_losses

        def losses(*a, **k):
            out = per_example(*a, **k)
            return {name: value * poison for name, value in out.items()}

        model.per_example_losses = losses
        return model

    monkeypatch.setattr(models, "build_model", poisoned_build)
    with pytest.raises(TrainingDivergedError, match="loss became nan at epoch 2"):
        fit(tiny_records, tmp_path / "run", _smoke(), progress=False,
            on_epoch_end=lambda row: poison.assign(float("nan")))
    assert tf.train.latest_checkpoint(str(tmp_path / "run/checkpoints")).endswith("-1")
    assert len(read_history(tmp_path / "run")) == 1


@pytest.mark.long  # starts TensorFlow in a subprocess
def test_export_loads_without_ifskeras(trained_vae, tiny_records, tmp_path):
    result = trained_vae
    import ifskeras.learning.models  # noqa: F401
    from ifskeras.records import make_dataset

    batch = next(iter(make_dataset(tiny_records, "train", batch_size=3, training=False)))
    model = keras.saving.load_model(str(result.model_path))
    expected = {k: np.asarray(v) for k, v in model.score(batch["flux"], batch["valid"]).items()}
    np.save(tmp_path / "flux.npy", batch["flux"].numpy())
    np.save(tmp_path / "valid.npy", batch["valid"].numpy())
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(result.export_path)!r})
        flux = np.load({str(tmp_path / 'flux.npy')!r}); valid = np.load({str(tmp_path / 'valid.npy')!r})
        out = {{k: v.numpy() for k, v in m.score(flux, valid).items()}}
        out["encode_mean"] = m.encode(flux)["latent_mean"].numpy()
        out["encode_scale"] = m.encode(flux)["latent_scale"].numpy()
        out["reconstruct"] = m.reconstruct(flux)["reconstruction"].numpy()
        np.savez({str(tmp_path / 'out.npz')!r}, **out)
        meta = json.loads(m.metadata()["json"].numpy().decode())
        assert not any(name.startswith("ifskeras") for name in sys.modules), "ifskeras was imported"
        print(json.dumps({{"lines": meta["lines"], "size": meta["size"]}}))
    """)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               cwd=tmp_path, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    meta = json.loads(completed.stdout.strip().splitlines()[-1])
    assert meta["size"] == batch["flux"].shape[2] and len(meta["lines"]) == batch["flux"].shape[1]
    out = np.load(tmp_path / "out.npz")
    for key in ("anomaly_score", "line_error", "latent_mean", "reconstruction"):
        np.testing.assert_allclose(out[key], expected[key], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["encode_mean"], expected["latent_mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["reconstruct"], expected["reconstruction"], rtol=1e-5, atol=1e-6)


def _run_fit_cli(args, env=None, **kwargs):
    command = [sys.executable, "-c", "from ifskeras.cli.app import main; main()", "fit", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, **kwargs)


def _write_smoke_config(path: Path, **train) -> Path:
    config = smoke_config("ae").override(train=train)
    path.write_text(json.dumps(config.to_dict()))
    return path


@pytest.mark.long
def test_resume_after_kill_continues_from_last_checkpoint(tiny_records, tmp_path):
    config = _write_smoke_config(tmp_path / "c.json", epochs=40, early_stopping_patience=0)
    run = tmp_path / "run"
    process = _run_fit_cli([str(tiny_records), "--out", str(run), "--config", str(config), "--quiet"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_history(run)) < 2:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()
    done = len(read_history(run))
    assert 2 <= done < 40, f"expected the run killed mid-way, saw {done} epochs"
    first_rows = read_history(run)
    # The checkpoint is written last in an epoch: a kill between an epoch's history row
    # and its checkpoint loses that one epoch, which the resumed run does again.
    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    checkpointed = int(tf.train.load_variable(latest, "epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    assert checkpointed in (done - 1, done), (checkpointed, done)
    resumed = _run_fit_cli([str(tiny_records), "--out", str(run), "--resume", "--epochs", str(done + 2), "--quiet"])
    output, _ = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, output[-2000:]
    history = read_history(run)
    assert [row["epoch"] for row in history] == list(range(1, done + 3))
    # Checkpointed epochs are kept, not re-run.
    assert history[:checkpointed] == first_rows[:checkpointed]
    assert (run / "model" / "saved_model.pb").exists()


_MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from ifskeras.learning.config import smoke_config
from ifskeras.learning.train import fit
config = smoke_config("vae").override(train={"epochs": 2, "strategy": "mirrored", "batch_size": 4})
result = fit(sys.argv[1], sys.argv[2], config, progress=False)
prov = json.load(open(sys.argv[2] + "/provenance.json"))
print(json.dumps({"replicas": prov["num_replicas"], "loss": [r["loss"] for r in result.history],
                  "val_examples": [r["val_examples"] for r in result.history]}))
"""


@pytest.mark.long
def test_mirrored_strategy_over_two_logical_cpus(tiny_records, tmp_path):
    completed = subprocess.run([sys.executable, "-c", _MIRRORED_SCRIPT, str(tiny_records), str(tmp_path / "run")],
                               capture_output=True, text=True, timeout=240,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["replicas"] == 2
    assert all(np.isfinite(summary["loss"]))
    # Each replica takes every other val batch; the last replica may get an empty one.
    n_val = load_manifest(tiny_records).examples("val")
    assert summary["val_examples"] == [n_val, n_val]
    assert (tmp_path / "run/model/saved_model.pb").exists()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.long
def test_multiworker_two_local_workers_end_identical(tiny_records, tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    config = _write_smoke_config(tmp_path / "c.json", epochs=2, batch_size=4, strategy="multiworker",
                                 early_stopping_patience=0)
    run = tmp_path / "run"
    processes = [
        _run_fit_cli([str(tiny_records), "--out", str(run), "--config", str(config), "--quiet"],
                     env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, output in zip(processes, outputs):
        assert p.returncode == 0, output[-3000:]
    chief = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "checkpoints")))
    worker = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "workers/worker-1/checkpoints")))
    names = [n for n in chief.get_variable_to_shape_map() if n.startswith("model/") and "OPTIMIZER" not in n]
    assert names
    for name in names:
        np.testing.assert_array_equal(chief.get_tensor(name), worker.get_tensor(name))
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["num_workers"] == 2 and provenance["strategy"] == "multiworker"
    # The val split is divided by example between the workers: together they score it once.
    n_val = load_manifest(tiny_records).examples("val")
    assert [row["val_examples"] for row in read_history(run)] == [n_val, n_val]


@pytest.mark.long
def test_mixed_bfloat16_trains_and_exports_float32(tiny_records, tmp_path):
    result = fit(tiny_records, tmp_path / "run", _smoke("vae", epochs=1, precision="mixed_bfloat16"), progress=False)
    assert np.isfinite(result.history[0]["loss"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    loaded = tf.saved_model.load(str(result.export_path))
    flux = tf.ones([2, 19, 16, 16, 1])
    out = loaded.score(flux, tf.ones_like(flux))
    assert out["anomaly_score"].dtype == tf.float32 and out["reconstruction"].dtype == tf.float32


def test_resume_refuses_other_records(trained_ae, tiny_survey, tmp_path):
    import shutil

    from ifskeras.records import ConvertOptions, convert_maps

    other = tmp_path / "other"
    convert_maps([tiny_survey], other, ConvertOptions(size=16, val_fraction=0.3))
    run = tmp_path / "run"
    shutil.copytree(trained_ae.run_dir, run)
    with pytest.raises(TrainingError, match="is not the dataset .* started with"):
        fit(other, run, _smoke(), resume=True, progress=False)


@pytest.mark.long
def test_jit_compiles_the_model_step(tiny_records, tmp_path):
    result = fit(tiny_records, tmp_path / "run", _smoke(epochs=1, jit_compile=True), progress=False, export=False)
    assert np.isfinite(result.history[0]["loss"])
