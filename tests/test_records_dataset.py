"""The tf.data reader, its parse ops (directly and inside Dataset.map), read_examples and inspect."""

import shutil

import numpy as np
import pytest
import tensorflow as tf
from pictures import assert_picture
from simulated import small_options

from ifskeras.records import (
    EmptySplitError,
    MissingShardError,
    RecordsError,
    convert_maps,
    dataset_spec,
    encode_example,
    load_manifest,
    make_dataset,
    parse_batch,
    parse_example,
    read_examples,
    read_index,
    render_galaxy,
    summarize_records,
)

SHAPE = (3, 4, 4)


def _blobs(n=3):
    rng = np.random.default_rng(0)
    out = []
    for index in range(n):
        flux = rng.normal(size=SHAPE).astype(np.float32)
        ivar = rng.uniform(1, 2, SHAPE).astype(np.float32)
        valid = rng.random(SHAPE) > 0.5
        out.append((encode_example(f"1-{index}", flux, ivar, valid, label="x" * index), flux, ivar, valid))
    return out


def test_parse_example_directly_and_in_dataset_map():
    blob, flux, ivar, valid = _blobs(1)[0]
    direct = parse_example(tf.constant(blob), SHAPE)
    mapped = next(iter(tf.data.Dataset.from_tensors(blob).map(lambda s: parse_example(s, SHAPE))))
    for parsed in (direct, mapped):
        assert parsed["flux"].shape == (*SHAPE, 1) and parsed["valid"].dtype == tf.float32
        np.testing.assert_array_equal(parsed["flux"].numpy()[..., 0], flux)
        np.testing.assert_array_equal(parsed["ivar"].numpy()[..., 0], ivar)
        np.testing.assert_array_equal(parsed["valid"].numpy()[..., 0], valid.astype(np.float32))
        assert parsed["id"].numpy() == b"1-0" and parsed["label"].numpy() == b""


def test_parse_batch_directly_and_in_dataset_map():
    items = _blobs(3)
    blobs = [item[0] for item in items]
    direct = parse_batch(tf.constant(blobs), SHAPE)
    mapped = next(iter(tf.data.Dataset.from_tensor_slices(blobs).batch(3).map(lambda s: parse_batch(s, SHAPE))))
    for parsed in (direct, mapped):
        assert parsed["flux"].shape == (3, *SHAPE, 1)
        np.testing.assert_array_equal(parsed["flux"].numpy()[..., 0], np.stack([i[1] for i in items]))
        assert [v.decode() for v in parsed["label"].numpy()] == ["", "x", "xx"]


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_shard_writer_writes_what_tensorflow_reads(tmp_path, compression):
    """The converter frames records without TensorFlow; TF's own writer and reader agree."""
    from ifskeras.records.shards import _ShardWriter
    from ifskeras.common.files import sha256_file
    from ifskeras.records.tfrecord import iter_tfrecord

    blobs = [item[0] for item in _blobs(3)] + [b""]
    writer = _ShardWriter(tmp_path, "ours.tfrecord", compression)
    for blob in blobs:
        writer.write(blob)
    info = writer.commit()
    ours = tmp_path / "ours.tfrecord"
    assert info["bytes"] == ours.stat().st_size and info["sha256"] == sha256_file(ours)
    tf_compression = "GZIP" if compression else ""
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours), tf_compression)] == blobs
    assert list(iter_tfrecord(ours, compression)) == blobs
    if compression is None:
        theirs = tmp_path / "theirs.tfrecord"
        with tf.io.TFRecordWriter(str(theirs)) as tf_writer:
            for blob in blobs:
                tf_writer.write(blob)
        assert ours.read_bytes() == theirs.read_bytes()


def test_make_dataset_shapes_dtypes_and_all_examples(records_dir):
    spec = dataset_spec(records_dir)
    assert spec.input_shape == (19, 8, 8, 1) and len(spec.lines) == 19
    n_train = spec.examples["train"]
    batches = list(make_dataset(records_dir, "train", batch_size=3, training=False))
    first = batches[0]
    assert first["flux"].shape == (3, 19, 8, 8, 1) and first["flux"].dtype == tf.float32
    assert first["ivar"].dtype == tf.float32 and first["valid"].dtype == tf.float32
    assert first["id"].dtype == tf.string and first["label"].shape == (3,)
    assert set(np.unique(first["valid"].numpy())) <= {0.0, 1.0}
    ids = [v.decode() for batch in batches for v in batch["id"].numpy()]
    expected = [row["id"] for row in read_index(records_dir) if row["split"] == "train"]
    assert sorted(ids) == sorted(expected) and len(ids) == n_train  # evaluation: every example once
    again = make_dataset(records_dir, "train", batch_size=3, training=False)
    assert [v.decode() for batch in again for v in batch["id"].numpy()] == ids  # in a fixed order


def test_training_dataset_shuffles_repeats_and_drops_remainder(records_dir):
    n_train = dataset_spec(records_dir).examples["train"]
    training = make_dataset(records_dir, "train", batch_size=4, training=True, seed=3, shuffle_buffer=16)
    batches = list(training.take(2 * n_train))
    assert all(batch["flux"].shape[0] == 4 for batch in batches)
    again = make_dataset(records_dir, "train", batch_size=4, training=True, seed=3, shuffle_buffer=16)
    assert [b["id"].numpy().tolist() for b in again.take(3)] == [b["id"].numpy().tolist() for b in batches[:3]]
    one_pass = list(make_dataset(records_dir, "train", batch_size=4, training=True, repeat=1, seed=0))
    assert len(one_pass) == n_train // 4


def test_input_pipelines_read_disjoint_shards(records_dir):
    parts = [
        {v.decode() for batch in make_dataset(records_dir, "train", batch_size=2, training=False,
                                               num_input_pipelines=2, input_pipeline_id=i) for v in batch["id"].numpy()}
        for i in range(2)
    ]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert len(parts[0] | parts[1]) == dataset_spec(records_dir).examples["train"]
    with pytest.raises(RecordsError, match="--min-shards 9"):
        make_dataset(records_dir, "train", batch_size=2, training=True, num_input_pipelines=9, input_pipeline_id=0)


def test_missing_shard_and_empty_split_are_errors(records_dir, survey_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(records_dir, copy)
    next(copy.glob("maps-val.*")).unlink()
    with pytest.raises(MissingShardError, match="maps-val"):
        make_dataset(copy, "train", batch_size=2, training=False)
    convert_maps([survey_dir], tmp_path / "no_test", small_options(val_fraction=0.0, test_fraction=0.0))
    with pytest.raises(EmptySplitError, match="'test' has no examples"):
        make_dataset(tmp_path / "no_test", "test", batch_size=2, training=False)
    with pytest.raises(EmptySplitError, match="fewer than batch_size"):
        make_dataset(tmp_path / "no_test", "train", batch_size=64, training=True, repeat=1)


def test_read_examples_returns_requested_ids_in_order(records_dir):
    ids = [row["id"] for row in read_index(records_dir)][::-4]
    got = read_examples(records_dir, ids)
    assert list(got["id"]) == ids and got["flux"].shape == (len(ids), 19, 8, 8, 1)
    batch = next(iter(make_dataset(records_dir, "train", batch_size=12, training=False)))
    first = batch["id"].numpy()[0].decode()
    np.testing.assert_array_equal(read_examples(records_dir, [first])["flux"][0], batch["flux"].numpy()[0])
    with pytest.raises(KeyError, match="0000-0000"):
        read_examples(records_dir, ["0000-0000"])


def test_without_ivar_same_flux_and_mask(records_dir):
    full = next(iter(make_dataset(records_dir, "train", batch_size=5, training=False)))
    lean = next(iter(make_dataset(records_dir, "train", batch_size=5, training=False, with_ivar=False)))
    assert "ivar" in full and "ivar" not in lean
    for key in ("id", "flux", "valid", "label"):
        np.testing.assert_array_equal(lean[key], full[key])


def test_inspect_summary_and_png(records_dir, tmp_path):
    text = summarize_records(records_dir)
    manifest = load_manifest(records_dir)
    assert "[19, 8, 8]" in text and f"train {manifest.examples('train'):7d}" in text and "Ha-6564" in text
    galaxy = read_index(records_dir)[0]["id"]
    png = render_galaxy(records_dir, galaxy, tmp_path / "galaxy.png")
    # 19 panels in 5 columns and 4 rows of 3.2 x 2.9 inches (+0.4 for the title), at 90 dpi.
    pixels = assert_picture(png, size=(1440, 1080))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # colour-mapped maps, not just text and frames
