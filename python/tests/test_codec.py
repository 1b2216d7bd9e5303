"""The codec: numpy arrays in the msgpack-numpy convention, checked against
msgpack_numpy itself."""

from __future__ import annotations

import datetime

import msgpack
import msgpack_numpy
import numpy as np
import pytest

import fedcomm
from fedcomm._protocol.codec import HEADER_BYTES, encode_parts

DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
          "uint64", "float16", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_dtypes(dtype: str) -> None:
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    for value in (array, array[0, 0], array.reshape(-1), np.asarray(array[0, 0, 0])):
        back = fedcomm.decode(fedcomm.encode({"a": value}))["a"]
        assert back.dtype == value.dtype and back.shape == value.shape
        assert np.array_equal(back, value)


def test_interop_with_msgpack_numpy() -> None:
    value = {"w": np.linspace(0, 1, 10, dtype=np.float32), "m": np.eye(3), "s": np.float32(1.5)}
    ours = fedcomm.encode(value)
    theirs = msgpack.unpackb(ours, object_hook=msgpack_numpy.decode, raw=False)
    assert np.array_equal(theirs["w"], value["w"]) and np.array_equal(theirs["m"], value["m"])
    assert theirs["s"] == np.float32(1.5)
    back = fedcomm.decode(msgpack.packb(value, default=msgpack_numpy.encode, use_bin_type=True))
    assert np.array_equal(back["w"], value["w"]) and np.array_equal(back["m"], value["m"])


def test_array_data_aligned_and_not_copied() -> None:
    array = np.arange(1 << 16, dtype=np.float32)
    parts, size = encode_parts({"round": 1, "weights": array})
    assert len(parts[0]) >= HEADER_BYTES
    body = b"".join(parts)[HEADER_BYTES:]
    assert len(body) == size
    offset = body.index(array.tobytes())
    assert offset % 8 == 0
    assert any(isinstance(p, memoryview) and p.obj is not None for p in parts[1:])


def test_other_values() -> None:
    now = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    value = {"s": "é", "b": b"\x00\x01", "i": -(2**63), "u": 2**64 - 1, "f": 0.5,
             "n": None, "t": True, "l": [1, [2]], "d": now}
    assert fedcomm.decode(fedcomm.encode(value)) == value


def test_refused_values() -> None:
    with pytest.raises(TypeError):
        fedcomm.encode(np.array(["a"]))
    with pytest.raises(TypeError):
        fedcomm.encode(np.zeros(2, dtype=np.complex64))
    with pytest.raises(TypeError):
        fedcomm.encode(object())
    big_endian = np.arange(3, dtype=">f4")
    assert fedcomm.decode(fedcomm.encode(big_endian)).dtype == np.dtype("<f4")


def test_malformed() -> None:
    with pytest.raises(fedcomm.ProtocolError, match="Malformed MessagePack"):
        fedcomm.decode(b"\x92\x01")
    pickled = msgpack.packb({b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1], b"data": b"x"})
    with pytest.raises(fedcomm.ProtocolError):
        fedcomm.decode(pickled)
