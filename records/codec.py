"""The ``tf.train.Example`` protobuf codec of schema v1, in pure Python (no TensorFlow).

:func:`encode_example` writes one galaxy's example with its features in sorted key
order, so the same galaxy always gives the same bytes; ``tf.io.parse_example`` (see
:mod:`ifskeras.records.dataset`) reads them. :func:`decode_example` reads any
serialized ``tf.train.Example``, :func:`decode_galaxy` a schema-v1 one as numpy arrays.
The features are listed in :mod:`ifskeras.records.schema`.
"""

from __future__ import annotations

import struct

import numpy as np

from ifskeras.records.schema import FEATURES, RecordsError

__all__ = ["encode_example", "decode_example", "decode_galaxy"]


def encode_example(
    plateifu: str,
    flux: np.ndarray,
    ivar: np.ndarray,
    valid: np.ndarray,
    *,
    label: str = "",
    ra: float = float("nan"),
    dec: float = float("nan"),
) -> bytes:
    """Serialized ``tf.train.Example`` of one galaxy (schema v1), deterministic bytes.

    Examples
    --------
    >>> import numpy as np
    >>> maps = np.zeros((2, 4, 4), np.float32)
    >>> blob = encode_example("7815-3702", maps, maps, maps > 0, ra=1.0, dec=2.0)
    >>> decode_galaxy(blob, (2, 4, 4))["id"]
    '7815-3702'
    """
    flux = np.asarray(flux)
    if not flux.shape == np.shape(ivar) == np.shape(valid):
        raise ValueError(
            f"flux, ivar and valid must have one shape. Received: {flux.shape}, "
            f"{np.shape(ivar)}, {np.shape(valid)}"
        )
    features = {
        "dec": _float_feature(dec),
        "flux": _bytes_feature(np.ascontiguousarray(flux, dtype="<f4").tobytes()),
        "id": _bytes_feature(plateifu.encode()),
        "ivar": _bytes_feature(np.ascontiguousarray(ivar, dtype="<f4").tobytes()),
        "label": _bytes_feature(label.encode()),
        "ra": _float_feature(ra),
        "valid": _bytes_feature(np.ascontiguousarray(valid, dtype=np.uint8).tobytes()),
    }
    entries = b"".join(
        _field(1, _field(1, key.encode()) + _field(2, value)) for key, value in sorted(features.items())
    )
    return _field(1, entries)


def decode_example(serialized: bytes) -> dict[str, list]:
    """Features of any serialized ``tf.train.Example``: name -> list of bytes, floats or ints."""
    view = memoryview(serialized)
    features: dict[str, list] = {}
    for number, _, example_field in _iter_fields(view):
        if number != 1:
            continue
        for entry_number, _, entry in _iter_fields(example_field):
            if entry_number != 1:
                continue
            key, feature = None, memoryview(b"")
            for part_number, _, part in _iter_fields(entry):
                if part_number == 1:
                    key = bytes(part).decode()
                elif part_number == 2:
                    feature = part
            if key is not None:
                features[key] = _decode_feature(feature)
    return features


def decode_galaxy(serialized: bytes, shape: tuple[int, int, int]) -> dict:
    """One schema-v1 example as numpy: ``flux``, ``ivar`` float32 and ``valid`` bool [L, S, S]."""
    features = decode_example(serialized)
    missing = [key for key in FEATURES if key not in features]
    if missing:
        raise RecordsError(f"record lacks features {missing}; schema v1 needs {list(FEATURES)}")
    n_values = int(np.prod(shape))

    def array(key: str, dtype: str) -> np.ndarray:
        raw = features[key][0]
        values = np.frombuffer(raw, dtype=dtype)
        if values.size != n_values:
            raise RecordsError(
                f"feature {key!r} holds {values.size} values, shape {list(shape)} needs {n_values}"
            )
        return values.reshape(shape)

    return {
        "id": features["id"][0].decode(),
        "flux": array("flux", "<f4").astype(np.float32),
        "ivar": array("ivar", "<f4").astype(np.float32),
        "valid": array("valid", "u1").astype(bool),
        "label": features["label"][0].decode() if features["label"] else "",
        "ra": float(features["ra"][0]),
        "dec": float(features["dec"][0]),
    }


# ----------------------------------------------------------------------------- protobuf wire format

def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:
    return _field(1, _field(1, value))


def _float_feature(value: float) -> bytes:
    return _field(2, _field(1, struct.pack("<f", value)))


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(view):
            raise RecordsError("malformed protobuf: truncated varint")
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _iter_fields(view: memoryview):
    pos = 0
    while pos < len(view):
        tag, pos = _read_varint(view, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(view, pos)
        elif wire == 1:
            value, pos = view[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = _read_varint(view, pos)
            value, pos = view[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = view[pos:pos + 4], pos + 4
        else:
            raise RecordsError(f"malformed protobuf: wire type {wire}")
        if pos > len(view):
            raise RecordsError("malformed protobuf: field runs past the end")
        yield number, wire, value


def _decode_feature(view: memoryview) -> list:
    values: list = []
    for kind, _, payload in _iter_fields(view):
        for number, wire, value in _iter_fields(payload):
            if number != 1:
                continue
            if kind == 1:
                values.append(bytes(value))
            elif kind == 2:
                values.extend(np.frombuffer(bytes(value), "<f4").tolist())
            elif kind == 3:
                if wire == 2:
                    inner, pos = memoryview(bytes(value)), 0
                    while pos < len(inner):
                        number_value, pos = _read_varint(inner, pos)
                        values.append(_signed(number_value))
                else:
                    values.append(_signed(value))
    return values


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value
