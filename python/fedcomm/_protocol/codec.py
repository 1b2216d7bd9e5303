"""Encoding and decoding of MessagePack bodies, numpy arrays included.

Numeric arrays travel in the ``msgpack_numpy`` convention (PROTOCOL.md §5),
implemented here, so ``msgpack_numpy`` itself is not needed. The encoder
returns a list of parts instead of one ``bytes``: the data of large arrays and
byte strings are views of the caller's memory and are sent without a copy.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Tuple, Union

import msgpack  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

from ..errors import ProtocolError
from .framing import HEADER_BYTES

__all__ = ["HEADER_BYTES", "Part", "decode", "encode", "encode_parts"]

_U32 = struct.Struct(">I")
#: Byte strings and array data of at least this size are sent from their own memory.
_EXTERNAL_MIN_BYTES = 64 * 1024
#: Array data is placed this-byte aligned from the start of the body.
_ALIGN = 8
_MAX_DEPTH = 512
#: dtype kind + item size of every array type a fedcomm peer must understand.
_WIRE_CODES = frozenset(
    ["b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"]
)
_NUMPY_KEYS = (b"nd", b"type", b"kind", b"shape", b"data")
_MISSING = object()

#: One piece of an encoded frame.
Part = Union[bytearray, memoryview]


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + bytes((n,))
    if n < 0x10000:
        return b"\xc5" + struct.pack(">H", n)
    if n < 2**32:
        return b"\xc6" + _U32.pack(n)
    raise ValueError(f"Cannot encode binary: {n} bytes exceeds the 4 GiB MessagePack limit")


def _wire_array(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Returns ``array`` as a C-contiguous little-endian array of a wire dtype."""
    dtype = array.dtype
    code = f"{dtype.kind}{dtype.itemsize}"
    if code not in _WIRE_CODES or dtype.fields is not None or dtype.subdtype is not None:
        raise TypeError(
            f"Cannot encode numpy dtype {dtype.str!r}: fedcomm carries bool, "
            "int8-64, uint8-64 and float16/32/64 arrays"
        )
    if dtype.str[0] == ">":
        array = array.astype(dtype.newbyteorder("<"))
    # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
    return array if array.flags.c_contiguous else array.copy(order="C")


class _Encoder:
    """Encodes a value as a list of parts whose concatenation is the frame.

    The first part starts with 4 bytes reserved for the frame header. Small
    values are packed into one ``bytearray``; array data and byte strings of
    64 KiB or more become parts of their own (``memoryview``s of the caller's
    memory), so they are sent without being copied.
    """

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, datetime=True, autoreset=True)
        self._parts: List[Part] = []
        self._cur = bytearray()
        self._done = 0  # bytes in finished parts, minus the header

    def encode(self, value: Any) -> Tuple[List[Part], int]:
        self._parts = []
        self._cur = bytearray(HEADER_BYTES)
        self._done = -HEADER_BYTES
        try:
            self._value(value, 0)
            self._cut()
            return self._parts, self._done
        finally:
            self._cur = bytearray()

    @property
    def _offset(self) -> int:
        """Where the next byte goes, counted from the start of the body."""
        return self._done + len(self._cur)

    def _cut(self) -> None:
        if self._cur:
            self._parts.append(self._cur)
            self._done += len(self._cur)
            self._cur = bytearray()

    def _raw(self, data: memoryview) -> None:
        if data.nbytes >= _EXTERNAL_MIN_BYTES:
            self._cut()
            self._parts.append(data)
            self._done += data.nbytes
        else:
            self._cur += data

    def _value(self, value: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise ValueError(f"Cannot encode value: nested deeper than {_MAX_DEPTH} levels")
        if isinstance(value, np.ndarray):
            self._ndarray(value)
        elif isinstance(value, (np.bool_, np.number)):
            self._scalar(value)
        elif isinstance(value, msgpack.ExtType):  # a namedtuple: not an array
            self._cur += self._packer.pack(value)
        elif isinstance(value, dict):
            self._cur += self._packer.pack_map_header(len(value))
            for key, item in value.items():
                self._value(key, depth + 1)
                self._value(item, depth + 1)
        elif isinstance(value, (list, tuple)):
            self._cur += self._packer.pack_array_header(len(value))
            for item in value:
                self._value(item, depth + 1)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = memoryview(value).cast("B")
            self._cur += _bin_header(data.nbytes)
            self._raw(data)
        else:
            # str, int, float, bool, None, timezone-aware datetime
            self._cur += self._packer.pack(value)

    def _scalar(self, value: Any) -> None:
        array = _wire_array(np.asarray(value))
        self._cur += b"\x83"
        self._cur += b"\xc4\x02nd\xc2"
        self._cur += b"\xc4\x04type" + self._packer.pack(array.dtype.str)
        self._cur += b"\xc4\x04data" + _bin_header(array.nbytes) + array.tobytes()

    def _ndarray(self, value: npt.NDArray[Any]) -> None:
        array = _wire_array(value)
        dtype = array.dtype.str.encode("ascii")
        shape = self._packer.pack(list(array.shape))
        # Minimal layout: map(1) nd(4+1) type(6+1+len) kind(6+2) shape(7+len) data(6) bin32(5).
        minimal = 1 + 5 + 7 + len(dtype) + 8 + 7 + len(shape) + 6 + 5
        pad = -(self._offset + minimal) % _ALIGN
        wide_type = pad >= 4  # type as str32: 4 more bytes
        widen = pad % 4  # keys nd, type, kind as bin16: 1 more byte each
        cur = self._cur
        cur += b"\x85"
        for index, key in enumerate(_NUMPY_KEYS):
            cur += (b"\xc5\x00" if index < widen else b"\xc4") + bytes((len(key),)) + key
            if index == 0:
                cur += b"\xc3"
            elif index == 1:
                if wide_type:
                    cur += b"\xdb" + _U32.pack(len(dtype))
                else:
                    cur += bytes((0xA0 | len(dtype),))
                cur += dtype
            elif index == 2:
                cur += b"\xc4\x00"
            elif index == 3:
                cur += shape
        if array.nbytes >= 2**32:
            raise ValueError(
                f"Cannot encode array: {array.nbytes} bytes exceeds the 4 GiB MessagePack limit"
            )
        cur += b"\xc6" + _U32.pack(array.nbytes)
        assert self._offset % _ALIGN == 0
        # memoryview(...).cast("B") of a C-contiguous array: its bytes, not a copy.
        self._raw(array.reshape(-1).data.cast("B"))


def encode_parts(value: Any) -> Tuple[List[Part], int]:
    """Encodes ``value`` as a frame: a list of parts and the body size.

    The first part starts with :data:`HEADER_BYTES` zero bytes reserved for
    the frame header (the caller writes the length there). Large array data and
    byte strings are ``memoryview``\\s of the caller's memory: keep the value
    unchanged until the parts are sent.

    Raises:
        TypeError, ValueError, OverflowError: as :func:`encode`.
    """
    return _Encoder().encode(value)


def encode(value: Any) -> bytes:
    """Encodes ``value`` as one MessagePack body (without the frame header).

    dicts, lists and tuples, str, bytes, int (64-bit), float, bool, None,
    timezone-aware datetimes (timestamp extension), numpy arrays (bool,
    int8-64, uint8-64, float16/32/64; the msgpack-numpy map) and numpy scalars.

    Raises:
        TypeError: for a value with no MessagePack form or an unsupported dtype.
        ValueError: for a timezone-naive datetime.
        OverflowError: for an int beyond 64 bits.
    """
    parts, _ = _Encoder().encode(value)
    return b"".join(parts)[HEADER_BYTES:]


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


class _BadValue(ValueError):
    pass


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _field(obj: Dict[Any, Any], key: str) -> Any:
    value = obj.get(key.encode(), _MISSING)
    return obj.get(key, _MISSING) if value is _MISSING else value


def _object_hook(obj: Dict[Any, Any]) -> Any:
    """Turns msgpack-numpy maps (str or bin keys) into numpy arrays and scalars."""
    nd = _field(obj, "nd")
    if not isinstance(nd, bool):
        return obj
    data = _field(obj, "data")
    if not isinstance(data, bytes):
        return obj
    kind = _text(_field(obj, "kind"))
    if kind not in (_MISSING, ""):
        # Object arrays would need pickle: never unpickle what a peer sends.
        raise _BadValue(f"Unsupported numpy array: kind {kind!r} (structured or object dtype)")
    try:
        dtype = np.dtype(_text(_field(obj, "type")))
    except Exception as error:
        raise _BadValue(f"Invalid numpy array: bad dtype {_field(obj, 'type')!r}") from error
    if dtype.hasobject or dtype.itemsize == 0:
        raise _BadValue(f"Unsupported numpy dtype {dtype.str!r}")
    if not nd:
        if len(data) != dtype.itemsize:
            raise _BadValue(f"Invalid numpy scalar: {len(data)} data bytes for {dtype.str!r}")
        return np.frombuffer(data, dtype=dtype)[0]
    shape = _field(obj, "shape")
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _BadValue(f"Invalid numpy array: shape {shape!r}")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(data):
        raise _BadValue(
            f"Invalid numpy array: shape {list(shape)} of {dtype.str!r} needs "
            f"{count * dtype.itemsize} bytes, data has {len(data)}"
        )
    # A read-only view of the decoded bytes: .copy() it to change it in place.
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode(body: Union[bytes, bytearray, memoryview]) -> Any:
    """Decodes one MessagePack value that fills ``body`` exactly.

    numpy maps become numpy arrays (read-only) and scalars, ``str`` stays
    ``str``, ``bin`` becomes ``bytes``, timestamps become UTC ``datetime``\\s,
    other extension types ``msgpack.ExtType``.

    Raises:
        ProtocolError: if ``body`` is not exactly one valid MessagePack value or
            holds an invalid numpy map.
    """
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=False,
            object_hook=_object_hook,
            timestamp=3,
        )
    except Exception as error:
        detail = str(error) or type(error).__name__
        raise ProtocolError(f"Malformed MessagePack: {detail}") from error
