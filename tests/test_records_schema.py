"""Schema v1 encoding, shard names, stable splits and the manifest reader."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ifskeras.records import (
    SCHEMA_VERSION,
    ManifestError,
    MissingShardError,
    SchemaVersionError,
    decode_galaxy,
    encode_example,
    load_manifest,
    manifest_checksum,
    parse_shard_filename,
    shard_filename,
    split_of,
)
from ifskeras.records.codec import decode_example
from ifskeras.records.naming import SPLITS, part_of, stable_fraction
from ifskeras.records.tfrecord import iter_tfrecord


def _galaxy(shape=(3, 4, 4), seed=0):
    rng = np.random.default_rng(seed)
    flux = rng.normal(0, 1e3, shape).astype(np.float32)
    flux.flat[0] = np.float32(1e-30)
    ivar = rng.uniform(0, 1e4, shape).astype(np.float32)
    valid = rng.random(shape) > 0.3
    return flux, ivar, valid


def test_iter_tfrecord_checks_both_checksums(tmp_path):
    from ifskeras.records.schema import RecordsError
    from ifskeras.records.tfrecord import frame_record

    blob = b"galaxy bytes" * 10
    header, footer = frame_record(blob)
    good = header + blob + footer
    path = tmp_path / "one.tfrecord"
    path.write_bytes(good + good)
    assert list(iter_tfrecord(path)) == [blob, blob]
    for offset, message in ((len(good) + 20, "record 1: data checksum"), (2, "record 0: length checksum"),
                            (len(good) + len(good) - 1, "record 1: data checksum")):
        damaged = bytearray(good + good)
        damaged[offset] ^= 0x01
        path.write_bytes(bytes(damaged))
        with pytest.raises(RecordsError, match=message):
            list(iter_tfrecord(path))
    path.write_bytes(good + good[:-3])
    with pytest.raises(RecordsError, match="truncated record \\(record 1\\)"):
        list(iter_tfrecord(path))


def test_encode_decode_round_trip_is_exact():
    flux, ivar, valid = _galaxy()
    blob = encode_example("7815-3702", flux, ivar, valid, label="AGN", ra=317.9, dec=-1.5)
    galaxy = decode_galaxy(blob, flux.shape)
    assert galaxy["id"] == "7815-3702" and galaxy["label"] == "AGN"
    np.testing.assert_array_equal(galaxy["flux"], flux)
    np.testing.assert_array_equal(galaxy["ivar"], ivar)
    np.testing.assert_array_equal(galaxy["valid"], valid)
    assert galaxy["ra"] == pytest.approx(317.9) and galaxy["dec"] == -1.5
    assert encode_example("7815-3702", flux, ivar, valid, label="AGN", ra=317.9, dec=-1.5) == blob


def test_encoding_is_what_tensorflow_writes_and_parses():
    import tensorflow as tf

    flux, ivar, valid = _galaxy()
    blob = encode_example("8143-3701", flux, ivar, valid, ra=1.0, dec=2.0)
    example = tf.train.Example.FromString(blob)
    assert example.SerializeToString(deterministic=True) == blob
    assert example.features.feature["label"].bytes_list.value == [b""]
    # and a TF-written example decodes in pure Python
    assert decode_example(example.SerializeToString())["id"] == [b"8143-3701"]


def test_decode_rejects_wrong_shape_and_missing_features():
    flux, ivar, valid = _galaxy()
    blob = encode_example("1-1", flux, ivar, valid)
    with pytest.raises(Exception, match="needs 96"):
        decode_galaxy(blob, (2, 4, 12))
    with pytest.raises(Exception, match="lacks features"):
        decode_galaxy(b"", flux.shape)


@given(
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,12}", fullmatch=True),
    split=st.sampled_from(SPLITS),
    count=st.integers(1, 99999),
    data=st.data(),
)
@settings(max_examples=50, deadline=None)
def test_shard_names_parse_back(name, split, count, data):
    index = data.draw(st.integers(0, count - 1))
    filename = shard_filename(name, split, index, count)
    assert parse_shard_filename(filename) == (name, split, index, count)
    assert parse_shard_filename(filename + ".incomplete") is None


def test_shard_name_examples_and_rejections():
    assert shard_filename("maps", "train", 3, 10) == "maps-train.tfrecord-00003-of-00010"
    assert parse_shard_filename("maps-train.tfrecord-00003-of-00010").index == 3
    for bad in ("maps-dev.tfrecord-00000-of-00001", "maps-train.tfrecord-0-of-1", "manifest.json"):
        assert parse_shard_filename(bad) is None
    with pytest.raises(ValueError, match="dataset name"):
        shard_filename("my-maps", "train", 0, 1)
    with pytest.raises(ValueError, match="index"):
        shard_filename("maps", "train", 1, 1)


def test_splits_are_stable_across_processes_and_follow_fractions():
    ids = [f"{plate}-{ifu}" for plate in range(7443, 7643) for ifu in (1901, 3702, 12701)]
    here = [split_of(plateifu, 0.1, 0.1) for plateifu in ids]
    code = (
        "from ifskeras.records.naming import split_of; import sys; "
        "print(','.join(split_of(i, 0.1, 0.1) for i in sys.argv[1:]))"
    )
    other = subprocess.run([sys.executable, "-c", code, *ids[:50]], capture_output=True, text=True, check=True)
    assert other.stdout.strip().split(",") == here[:50]
    fractions = {split: here.count(split) / len(here) for split in SPLITS}
    assert fractions["test"] == pytest.approx(0.1, abs=0.03) and fractions["val"] == pytest.approx(0.1, abs=0.03)
    # known values pin the hash: a change of the rule must be deliberate
    assert [split_of(i, 0.1, 0.1) for i in ("7815-3702", "8143-3701")] == ["train", "train"]
    # more validation never moves a test galaxy
    assert all(split_of(i, 0.3, 0.1) == "test" for i, s in zip(ids, here) if s == "test")
    assert 0 <= stable_fraction("x", "split") < 1 and part_of("7815-3702", 4) in range(4)


def test_manifest_contents(records_dir):
    manifest = load_manifest(records_dir)
    data = json.loads((records_dir / "manifest.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert manifest["shape"] == [19, 8, 8] and manifest.shape == (19, 8, 8)
    assert len(data["lines"]) == len(data["wavelengths"]) == 19 and data["wavelengths"] == sorted(data["wavelengths"])
    assert data["preprocessing"]["mode"] == "fit" and data["preprocessing"]["size"] == 8
    assert data["preprocessing"]["reject_bits"] == ["NOCOV", "DONOTUSE"]
    assert data["compression"] is None and data["flux_unit"] == "1E-17 erg/s/cm^2/spaxel"
    assert data["created"].endswith("+00:00")
    assert data["totals"]["examples"] == manifest.examples() == 12 and data["totals"]["failures"] == 0
    for split in SPLITS:
        entry = data["splits"][split]
        assert entry["examples"] == sum(shard["examples"] for shard in entry["shards"])
        for shard in entry["shards"]:
            path = records_dir / shard["file"]
            assert parse_shard_filename(shard["file"]).split == split
            assert path.stat().st_size == shard["bytes"] and len(shard["sha256"]) == 64
            assert sum(1 for _ in iter_tfrecord(path)) == shard["examples"]
    assert len(data["splits"]["train"]["shards"]) >= 2
    assert len(manifest_checksum(records_dir)) == 64


def test_load_manifest_refuses_unknown_schema_version_and_missing_shards(records_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(records_dir, copy)
    manifest_path = copy / "manifest.json"
    data = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(SchemaVersionError, match="schema version 2.*reads version 1"):
        load_manifest(copy)
    manifest_path.write_text(json.dumps(data))
    (copy / data["splits"]["train"]["shards"][0]["file"]).unlink()
    with pytest.raises(MissingShardError, match="missing"):
        load_manifest(copy)
    assert load_manifest(copy, check_shards=False).examples() == 12
    manifest_path.write_text("{not json")
    with pytest.raises(ManifestError, match="unreadable"):
        load_manifest(copy)
    manifest_path.unlink()
    with pytest.raises(ManifestError, match="did not finish.*--resume"):
        load_manifest(copy)
    with pytest.raises(ManifestError, match="no such records directory"):
        load_manifest(tmp_path / "nowhere")


def test_importing_the_records_layer_does_not_load_tensorflow():
    code = (
        "import sys, ifskeras.records as r\n"
        "import ifskeras.records.convert, ifskeras.records.verify, ifskeras.records.merge\n"
        "import ifskeras.records.reader, ifskeras.records.inspect, ifskeras.survey.preprocess\n"
        "r.load_manifest, r.convert_maps, r.verify_records, r.read_examples\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
