"""Encoding and decoding of MessagePack bodies, numpy arrays included.

Numeric arrays travel in the ``msgpack_numpy`` convention (PROTOCOL.md §5),
implemented here, so ``msgpack_numpy`` itself is not needed. The encoder
returns a list of parts instead of one ``bytes``: the data of large arrays and
byte strings are views of the caller's memory and are sent without a copy.

A long message's skeleton (PROTOCOL.md §8.8) is encoded and decoded here too:
:func:`encode_skeleton` writes each large binary as a reference (ext 127 with
8 data bytes: its length as a u64 big-endian) and returns the binaries apart;
:func:`decode_skeleton` allocates the memory each reference stands for (a
numpy array's own memory for array data), to be filled by the parts.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import msgpack  # type: ignore[import-untyped]
import numpy as np
import numpy.typing as npt

from ..errors import MessageTooLargeError, ProtocolError
from .framing import HEADER_BYTES

__all__ = [
    "EXT_REFERENCE",
    "HEADER_BYTES",
    "HugeBinaryError",
    "Part",
    "REF_MIN_BYTES",
    "Skeleton",
    "decode",
    "decode_skeleton",
    "encode",
    "encode_parts",
    "encode_skeleton",
]

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
#: The largest binary a MessagePack bin (bin32) holds, plus one.
_BIN_LIMIT = 2**32
#: The extension type of a reference in a long message's skeleton (with 8 data bytes).
EXT_REFERENCE = 127
#: In a skeleton, byte strings and array data of at least this size go out of band.
REF_MIN_BYTES = 64 * 1024

#: One piece of an encoded frame.
Part = Union[bytearray, memoryview]


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


class HugeBinaryError(ValueError):
    """A binary (or array data) of 4 GiB or more in a plain frame: a
    MessagePack bin cannot hold it, a long message can."""


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + bytes((n,))
    if n < 0x10000:
        return b"\xc5" + struct.pack(">H", n)
    if n < _BIN_LIMIT:
        return b"\xc6" + _U32.pack(n)
    raise HugeBinaryError(f"Cannot encode binary: {n} bytes exceeds the 4 GiB MessagePack limit")


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

    The first part starts with 4 bytes reserved for the frame header (and
    ``reserve`` more, counted in the body: a prefix). Small values are packed
    into one ``bytearray``; array data and byte strings of 64 KiB or more
    become parts of their own (``memoryview``s of the caller's memory), so
    they are sent without being copied.

    With ``ref_min_bytes``, it encodes a long message's skeleton: byte strings
    and array data of that size or more (or of 4 GiB or more) become
    references, and their memory is collected in :attr:`refs`.
    """

    def __init__(self, ref_min_bytes: Optional[int] = None) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, datetime=True, autoreset=True)
        self._parts: List[Part] = []
        self._cur = bytearray()
        self._done = 0  # bytes in finished parts, minus the header
        self._ref_min = None if ref_min_bytes is None else max(1, ref_min_bytes)
        self._in_key = 0  # inside a map key: no references there
        #: In a skeleton: the binaries sent out of band, in the order of their references.
        self.refs: List[memoryview] = []

    def encode(self, value: Any, reserve: int = 0) -> Tuple[List[Part], int]:
        self._parts = []
        self._cur = bytearray(HEADER_BYTES + reserve)
        self._done = -HEADER_BYTES
        self.refs = []
        try:
            self._value(value, 0)
            self._cut()
            return self._parts, self._done
        finally:
            self._cur = bytearray()

    def _out_of_band(self, nbytes: int) -> bool:
        """Whether a binary of ``nbytes`` becomes a reference."""
        return (
            self._ref_min is not None
            and not self._in_key
            and (nbytes >= self._ref_min or nbytes >= _BIN_LIMIT)
        )

    def _reference(self, data: memoryview) -> None:
        """A reference: fixext 8 of type 127, the binary's length as a u64."""
        self._cur += b"\xd7\x7f" + data.nbytes.to_bytes(8, "big")
        self.refs.append(data)

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
            if self._ref_min is not None and value.code == EXT_REFERENCE and len(value.data) == 8:
                raise TypeError(
                    f"Cannot encode ExtType: type {EXT_REFERENCE} with 8 bytes is a reference "
                    "in a long message"
                )
            self._cur += self._packer.pack(value)
        elif isinstance(value, dict):
            self._cur += self._packer.pack_map_header(len(value))
            for key, item in value.items():
                self._in_key += 1
                try:
                    self._value(key, depth + 1)
                finally:
                    self._in_key -= 1
                self._value(item, depth + 1)
        elif isinstance(value, (list, tuple)):
            self._cur += self._packer.pack_array_header(len(value))
            for item in value:
                self._value(item, depth + 1)
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = memoryview(value).cast("B")
            if self._out_of_band(data.nbytes):
                self._reference(data)
            else:
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
        if self._out_of_band(array.nbytes):
            # Out of band: no alignment to keep, the shortest headers.
            cur = self._cur
            cur += b"\x85\xc4\x02nd\xc3\xc4\x04type" + bytes((0xA0 | len(dtype),)) + dtype
            cur += b"\xc4\x04kind\xc4\x00\xc4\x05shape" + shape + b"\xc4\x04data"
            self._reference(array.reshape(-1).data.cast("B"))
            return
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
        if array.nbytes >= _BIN_LIMIT:
            raise HugeBinaryError(
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


def encode_skeleton(
    value: Any, reserve: int, ref_min_bytes: int = REF_MIN_BYTES
) -> Tuple[List[Part], int, List[memoryview]]:
    """Encodes ``value`` as a long message's skeleton (PROTOCOL.md §8.8).

    Byte strings and array data of ``ref_min_bytes`` or more (and any of 4 GiB
    or more) become references; an array whose data does is written with the
    shortest headers (no alignment padding). Returns the parts (the first
    starts with :data:`HEADER_BYTES` + ``reserve`` bytes reserved for the frame
    header and the prefix), the body size (``reserve`` included) and the
    memory of the references, in order: views of the caller's memory.

    Raises:
        TypeError, ValueError, OverflowError: as :func:`encode`; also
            ``TypeError`` for an ``ExtType`` of type 127 with 8 bytes.
    """
    encoder = _Encoder(ref_min_bytes)
    parts, size = encoder.encode(value, reserve)
    return parts, size, encoder.refs


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


def _layout(obj: Dict[Any, Any], nd: bool, nbytes: int) -> Tuple[np.dtype[Any], Any]:
    """The dtype and shape of a numpy map whose data has ``nbytes``
    (``shape`` is ``None`` for a scalar), checked."""
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
        if nbytes != dtype.itemsize:
            raise _BadValue(f"Invalid numpy scalar: {nbytes} data bytes for {dtype.str!r}")
        return dtype, None
    shape = _field(obj, "shape")
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise _BadValue(f"Invalid numpy array: shape {shape!r}")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != nbytes:
        raise _BadValue(
            f"Invalid numpy array: shape {list(shape)} of {dtype.str!r} needs "
            f"{count * dtype.itemsize} bytes, data has {nbytes}"
        )
    return dtype, shape


def _object_hook(obj: Dict[Any, Any]) -> Any:
    """Turns msgpack-numpy maps (str or bin keys) into numpy arrays and scalars."""
    nd = _field(obj, "nd")
    if not isinstance(nd, bool):
        return obj
    data = _field(obj, "data")
    if not isinstance(data, bytes):
        return obj
    dtype, shape = _layout(obj, nd, len(data))
    if shape is None:
        return np.frombuffer(data, dtype=dtype)[0]
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


# --------------------------------------------------------------------------
# Skeletons (long messages)
# --------------------------------------------------------------------------


class Skeleton(NamedTuple):
    """A decoded skeleton: the value, whose out-of-band binaries are still to
    be filled, and the memory of its references, in order."""

    #: The value: each reference became a ``bytearray`` of its length, or the
    #: (uninitialised) numpy array whose data it is.
    value: Any
    #: The memory of each reference (``memoryview`` of bytes), in order.
    refs: List[memoryview]
    #: The arrays received in place (made read-only once filled).
    arrays: List[npt.NDArray[Any]]


class _Ref:
    """A reference met in a skeleton, before its memory is allocated."""

    __slots__ = ("index", "length")

    def __init__(self, index: int, length: int) -> None:
        self.index = index
        self.length = length


class _SkeletonReader:
    """The hooks of msgpack's unpacker that turn references into memory.

    ``ext_hook`` meets each reference in the order of the skeleton's bytes
    and calls ``charge`` with its length (which raises to refuse it), before
    anything is allocated for it; the hooks of the containers then allocate
    it where it stands: a numpy map's data as the array itself
    (``np.empty``), any other bin as a ``bytearray``.
    """

    def __init__(self, charge: Callable[[int], None]) -> None:
        self._charge = charge
        self.refs: List[Optional[memoryview]] = []
        self.arrays: List[npt.NDArray[Any]] = []

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code != EXT_REFERENCE or len(data) != 8:
            return msgpack.ExtType(code, data)
        length = int.from_bytes(data, "big")
        if length == 0:
            raise _BadValue(f"reference {len(self.refs) + 1} of 0 bytes")
        self._charge(length)
        self.refs.append(None)
        return _Ref(len(self.refs) - 1, length)

    def _bytes(self, ref: _Ref) -> bytearray:
        buffer = bytearray(ref.length)
        self.refs[ref.index] = memoryview(buffer)
        return buffer

    def list_hook(self, items: List[Any]) -> List[Any]:
        for i, item in enumerate(items):
            if type(item) is _Ref:
                items[i] = self._bytes(item)
        return items

    def object_hook(self, obj: Dict[Any, Any]) -> Any:
        nd = _field(obj, "nd")
        data = _field(obj, "data")
        if isinstance(nd, bool) and type(data) is _Ref:
            return self._array(obj, nd, data)
        for key, item in obj.items():
            if type(key) is _Ref:
                raise _BadValue(f"reference {key.index + 1} is a map key")
            if type(item) is _Ref:
                obj[key] = self._bytes(item)  # (a value replaced: the dict keeps its size)
        return _object_hook(obj)

    def _array(self, obj: Dict[Any, Any], nd: bool, ref: _Ref) -> Any:
        dtype, shape = _layout(obj, nd, ref.length)
        if shape is None:
            # A scalar is made at once, before the parts fill its reference.
            raise _BadValue(f"a numpy scalar's data is reference {ref.index + 1}")
        array: npt.NDArray[Any] = np.empty(shape, dtype=dtype)
        self.refs[ref.index] = array.reshape(-1).view(np.uint8).data
        self.arrays.append(array)
        return array

    def value(self, value: Any) -> Any:
        """The decoded value, a reference standing alone allocated too."""
        if type(value) is _Ref:
            value = self._bytes(value)
        assert all(ref is not None for ref in self.refs), "every reference is allocated"
        return value


def decode_skeleton(skeleton: Union[bytes, bytearray, memoryview], charge: Callable[[int], None]) -> Skeleton:
    """Decodes a long message's skeleton (PROTOCOL.md §8.8) as :func:`decode`
    does a body, and allocates the memory of each reference (ext 127 with 8
    data bytes): a numpy map's data becomes the memory of its array (received
    in place), any other reference a ``bytearray``.

    Args:
        skeleton: The skeleton (the header body after its 8-byte prefix).
        charge: Called with each reference's length, in order, before
            anything is allocated for it; raises to refuse it.

    Raises:
        ProtocolError: The skeleton is not exactly one valid MessagePack
            value, holds an invalid numpy map, a reference of 0 bytes, a
            reference as a map key or as a numpy scalar's data.
        MessageTooLargeError: As raised by ``charge``.
    """
    reader = _SkeletonReader(charge)
    try:
        value = msgpack.unpackb(
            skeleton,
            raw=False,
            strict_map_key=False,
            object_hook=reader.object_hook,
            list_hook=reader.list_hook,
            ext_hook=reader.ext_hook,
            timestamp=3,
        )
        value = reader.value(value)
    except MessageTooLargeError:
        raise
    except Exception as error:
        detail = str(error) or type(error).__name__
        raise ProtocolError(f"Malformed MessagePack: {detail}") from error
    return Skeleton(value, [ref for ref in reader.refs if ref is not None], reader.arrays)
