"""A small Python client for the fedcomm wire protocol, version 1.

fedcomm is the communication layer of a federated-learning system: a
coordinator server and N clients exchanging MessagePack values in
length-delimited frames over TCP. This module implements the client side as
specified in ``PROTOCOL.md`` at the root of the repository. It needs only
``msgpack`` (>= 1.0) and ``numpy``; numpy arrays travel in the
``msgpack_numpy`` convention, implemented here, so ``msgpack_numpy`` itself is
not required.

Example::

    import numpy as np
    from fedcomm_client import FedcommClient

    with FedcommClient("127.0.0.1", 9000) as client:
        for message in client:  # until the server closes the connection
            weights = message["weights"]  # a numpy array
            client.send({"round": message["round"], "weights": weights * 0.5})

The client is synchronous and not thread-safe: use it from one thread (or
guard it with a lock). It sends no heartbeats on its own; call
:meth:`FedcommClient.heartbeat` if a NAT or load balancer between you and the
server drops idle connections.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, Iterator, List, Optional, Tuple, Union

import msgpack
import numpy as np

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "FedcommClient",
    "FedcommError",
    "FedcommTimeoutError",
    "FrameTooLargeError",
    "HANDSHAKE_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "PeerDisconnectedError",
    "ProtocolError",
    "RejectedError",
    "decode",
    "encode",
]

#: The protocol version this module speaks.
PROTOCOL_VERSION = 1
#: The default largest frame body accepted: 512 MiB.
DEFAULT_MAX_FRAME_BYTES = 512 * 1024 * 1024
#: The largest body the 4-byte length can announce.
MAX_FRAME_BYTES_LIMIT = 2**32 - 1
#: The largest frame accepted before the welcome.
HANDSHAKE_FRAME_BYTES = 64 * 1024

_HEADER = struct.Struct(">I")
_HEADER_BYTES = 4
_HEARTBEAT = b"\x00\x00\x00\x00"
#: Frames whose header and body fit in the read buffer are cut out of it.
_READ_BUFFER_BYTES = 256 * 1024
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


class FedcommError(Exception):
    """Base class of the errors about the connection or the peer."""


class ProtocolError(FedcommError):
    """The server broke the protocol: a malformed frame or value, a bad handshake."""


class RejectedError(ProtocolError):
    """The server refused the connection in the handshake.

    ``reason`` is machine-readable (``"version"``, ``"full"``, ``"malformed"``,
    ``"closed"``, or a reason a later server version adds); ``message`` explains it.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"Server rejected the connection: {reason}: {message}")
        self.reason = reason
        self.message = message


class FrameTooLargeError(FedcommError, ValueError):
    """A frame body over the limit: announced by the server (the connection
    then fails), or a value to send that encodes to more than the server
    accepts (nothing is sent; the connection stays usable)."""

    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(f"Frame too large: {size} bytes exceeds {what} {limit}")
        self.size = size
        self.limit = limit


class PeerDisconnectedError(FedcommError, ConnectionError):
    """The server closed or lost the connection, or this client was closed."""


class FedcommTimeoutError(FedcommError, TimeoutError):
    """A connect, handshake, receive or send ran out of time."""


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------


def _bin_header(n: int) -> bytes:
    if n < 0x100:
        return b"\xc4" + bytes((n,))
    if n < 0x10000:
        return b"\xc5" + struct.pack(">H", n)
    if n < 2**32:
        return b"\xc6" + struct.pack(">I", n)
    raise ValueError(f"Cannot encode binary: {n} bytes exceeds the 4 GiB MessagePack limit")


def _wire_array(array: np.ndarray) -> np.ndarray:
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
        self._parts: List[Union[bytearray, memoryview]] = []
        self._cur = bytearray()
        self._done = 0  # bytes in finished parts, minus the header

    def encode(self, value: Any) -> Tuple[List[Union[bytearray, memoryview]], int]:
        self._parts = []
        self._cur = bytearray(_HEADER_BYTES)
        self._done = -_HEADER_BYTES
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

    def _ndarray(self, value: np.ndarray) -> None:
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
                    cur += b"\xdb" + _HEADER.pack(len(dtype))
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
        cur += b"\xc6" + _HEADER.pack(array.nbytes)
        assert self._offset % _ALIGN == 0
        # memoryview(...).cast("B") of a C-contiguous array: its bytes, not a copy.
        self._raw(memoryview(array.reshape(-1)).cast("B"))


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
    return b"".join(parts)[_HEADER_BYTES:]


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


class _BadValue(ValueError):
    pass


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _field(obj: dict, key: str) -> Any:
    value = obj.get(key.encode(), _MISSING)
    return obj.get(key, _MISSING) if value is _MISSING else value


def _object_hook(obj: dict) -> Any:
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


# --------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FedcommClient:
    """A connection to a fedcomm server, after a completed handshake.

    Args:
        host: The server's address.
        port: The server's TCP port.
        timeout: Seconds for connecting and the handshake (``None``: no limit).
        max_frame_bytes: The largest frame body accepted from the server
            (default 512 MiB).

    Attributes:
        id: This client's id, from 0 to ``clients - 1``.
        clients: How many clients the server serves.
        max_frame_bytes: The largest frame body accepted from the server.
        server_max_frame_bytes: The largest body the server accepts (from
            the welcome); :meth:`send` refuses larger values.
        welcome: The whole welcome map (a later server may add keys).

    Raises:
        RejectedError: The server refused the client (``reason``: full, version, ...).
        FedcommTimeoutError: No connection or no welcome within ``timeout``.
        PeerDisconnectedError: The server closed the connection without a welcome.
        ProtocolError: The server's answer is not a valid welcome.
        OSError: The connection could not be made (refused, unreachable).
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: Optional[float] = 10.0,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if not _is_int(max_frame_bytes) or not 0 <= max_frame_bytes <= MAX_FRAME_BYTES_LIMIT:
            raise ValueError(
                f"Invalid max_frame_bytes: {max_frame_bytes!r} is not an integer "
                f"from 0 to {MAX_FRAME_BYTES_LIMIT}"
            )
        self.max_frame_bytes = max_frame_bytes
        self._encoder = _Encoder()
        self._buf = bytearray(_READ_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._large: Optional[bytearray] = None
        self._large_fill = 0
        self._failed: Optional[BaseException] = None
        self._closed = False
        self._eof = False
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except socket.timeout as error:
            raise FedcommTimeoutError(
                f"Connect timed out after {timeout} s: {host}:{port}"
            ) from error
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.welcome = self._handshake(deadline, timeout)
        except BaseException:
            self._sock.close()
            self._closed = True
            raise
        self.id: int = self.welcome["id"]
        self.clients: int = self.welcome["clients"]
        self.server_max_frame_bytes: int = self.welcome["maxFrameBytes"]

    # -- handshake ---------------------------------------------------------

    def _handshake(self, deadline: Optional[float], timeout: Optional[float]) -> dict:
        parts, size = self._encoder.encode({"fedcomm": PROTOCOL_VERSION, "type": "hello"})
        _HEADER.pack_into(parts[0], 0, size)
        self._sendall(parts, deadline, "Handshake")
        while True:
            try:
                body = self._read_frame(HANDSHAKE_FRAME_BYTES, deadline, "Handshake")
            except FedcommTimeoutError:
                raise FedcommTimeoutError(f"Handshake timed out after {timeout} s") from None
            if body is None:
                raise PeerDisconnectedError(
                    "Server closed the connection during the handshake, without a welcome"
                )
            if len(body) > 0:
                break  # else a heartbeat: skip it
        answer = self._decode(body)
        if not isinstance(answer, dict) or not isinstance(answer.get("type"), str):
            raise self._fail(ProtocolError('Invalid handshake: expected a "welcome" map'))
        if answer["type"] == "reject":
            raise RejectedError(str(answer.get("reason")), str(answer.get("message")))
        version = answer.get("fedcomm")
        if not (_is_int(version) and version == PROTOCOL_VERSION):
            raise self._fail(
                ProtocolError(
                    f"Unsupported protocol version: server speaks {version!r}, "
                    f"this client {PROTOCOL_VERSION}"
                )
            )
        if answer["type"] != "welcome":
            raise self._fail(ProtocolError(f"Unsupported handshake message: {answer['type']!r}"))
        id_, clients, limit = answer.get("id"), answer.get("clients"), answer.get("maxFrameBytes")
        if not (
            _is_int(id_) and _is_int(clients) and _is_int(limit)
            and 0 <= id_ < clients and limit >= 0
        ):
            raise self._fail(
                ProtocolError(
                    f"Invalid welcome: id {id_!r}, clients {clients!r}, maxFrameBytes {limit!r}"
                )
            )
        return answer

    # -- sending -----------------------------------------------------------

    def send(self, value: Any, timeout: Optional[float] = None) -> None:
        """Sends one value to the server.

        Small values go out in one ``sendall``; the data of large numpy arrays
        (and byte strings) is written straight from their memory. Returns once
        the kernel has taken every byte: then you may change the arrays.

        Args:
            value: The value (see :func:`encode` for the types).
            timeout: Seconds to wait for the socket (default: no limit; the
                server pauses reading while its buffers are full).

        Raises:
            FrameTooLargeError: The value encodes to more than the server
                accepts (nothing was sent).
            TypeError, ValueError, OverflowError: The value cannot be encoded
                (nothing was sent).
            PeerDisconnectedError: The connection is gone.
            FedcommTimeoutError: The socket did not take the frame in time; a
                frame may have been cut, so the connection is closed.
        """
        self._check_usable()
        parts, size = self._encoder.encode(value)
        if size > self.server_max_frame_bytes:
            raise FrameTooLargeError(
                size, self.server_max_frame_bytes, "the server's maxFrameBytes"
            )
        _HEADER.pack_into(parts[0], 0, size)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._sendall(parts, deadline, "Send")

    def heartbeat(self) -> None:
        """Sends a heartbeat (an empty frame), which the server ignores."""
        self._check_usable()
        self._sendall([_HEARTBEAT], None, "Send")

    def _sendall(self, parts: list, deadline: Optional[float], what: str) -> None:
        # Once any byte is out, a failure leaves a cut frame: the connection is closed.
        for part in parts:
            try:
                self._sock.settimeout(self._remaining(deadline, what))
                self._sock.sendall(part)
            except (socket.timeout, FedcommTimeoutError) as error:
                raise self._fail(
                    FedcommTimeoutError(f"{what} timed out: the frame may be cut")
                ) from error
            except OSError as error:
                raise self._fail(PeerDisconnectedError(f"Server disconnected: {error}")) from error

    # -- receiving ---------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Any:
        """Waits for the next message from the server (heartbeats are skipped).

        Args:
            timeout: Seconds to wait (default: no limit). A timeout loses
                nothing: a frame partly read is resumed by the next call.

        Returns:
            The decoded value: dicts, lists, str, bytes, int, float, bool,
            None, numpy arrays (read-only; ``.copy()`` to change them) and
            scalars, UTC datetimes.

        Raises:
            PeerDisconnectedError: The server closed the connection.
            FedcommTimeoutError: Nothing arrived in time.
            FrameTooLargeError: The server announced a frame over
                ``max_frame_bytes`` (the connection is closed).
            ProtocolError: A malformed or truncated frame (the connection is closed).
        """
        self._check_usable()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            body = self._read_frame(self.max_frame_bytes, deadline, "Receive")
            if body is None:
                self._eof = True
                raise self._fail(PeerDisconnectedError("Server disconnected"))
            if len(body) > 0:
                return self._decode(body)

    def __iter__(self) -> Iterator[Any]:
        """Yields every message until the server closes the connection."""
        while True:
            try:
                message = self.recv()
            except PeerDisconnectedError:
                if self._eof:
                    return
                raise
            yield message

    def _decode(self, body: memoryview) -> Any:
        try:
            return decode(body)
        except ProtocolError as error:
            raise self._fail(error) from error.__cause__
        finally:
            body.release()

    def _read_frame(
        self, limit: int, deadline: Optional[float], what: str
    ) -> Optional[memoryview]:
        """Reads the next frame body (empty for a heartbeat), or ``None`` at a
        clean end of stream. The body is a view into a buffer reused by the
        next read: decode it before reading again."""
        while True:
            if self._large is not None:
                large = memoryview(self._large)
                while self._large_fill < len(large):
                    n = self._recv_into(large[self._large_fill :], deadline, what)
                    if n == 0:
                        raise self._fail(
                            ProtocolError(
                                f"Truncated frame: expected {len(large)} bytes, "
                                f"received {self._large_fill}"
                            )
                        )
                    self._large_fill += n
                self._large = None
                return large
            available = self._end - self._start
            if available >= _HEADER_BYTES:
                (length,) = _HEADER.unpack_from(self._buf, self._start)
                if length > limit:
                    raise self._fail(FrameTooLargeError(length, limit, "max_frame_bytes"))
                frame_end = self._start + _HEADER_BYTES + length
                if frame_end <= self._end:
                    body = self._view[self._start + _HEADER_BYTES : frame_end]
                    self._start = frame_end
                    return body
                if _HEADER_BYTES + length > len(self._buf):
                    # Read a large body straight into a buffer of its own.
                    buffered = self._view[self._start + _HEADER_BYTES : self._end]
                    self._large = bytearray(length)
                    self._large[: len(buffered)] = buffered
                    self._large_fill = len(buffered)
                    self._start = self._end = 0
                    continue
            if self._start > 0:
                # memoryview assignment is a memmove: the ranges may overlap.
                self._view[:available] = self._view[self._start : self._end]
                self._start, self._end = 0, available
            n = self._recv_into(self._view[self._end :], deadline, what)
            if n == 0:
                if available == 0:
                    return None
                if available < _HEADER_BYTES:
                    raise self._fail(
                        ProtocolError(
                            f"Truncated frame: expected 4 header bytes, received {available}"
                        )
                    )
                (length,) = _HEADER.unpack_from(self._buf, 0)
                raise self._fail(
                    ProtocolError(
                        f"Truncated frame: expected {length} bytes, "
                        f"received {available - _HEADER_BYTES}"
                    )
                )
            self._end += n

    def _recv_into(self, target: memoryview, deadline: Optional[float], what: str) -> int:
        self._sock.settimeout(self._remaining(deadline, what))
        try:
            return self._sock.recv_into(target)
        except socket.timeout as error:
            raise FedcommTimeoutError(f"{what} timed out") from error
        except OSError as error:
            raise self._fail(PeerDisconnectedError(f"Server disconnected: {error}")) from error

    @staticmethod
    def _remaining(deadline: Optional[float], what: str) -> Optional[float]:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise FedcommTimeoutError(f"{what} timed out")
        return left

    # -- state -------------------------------------------------------------

    def _fail(self, error: BaseException) -> BaseException:
        """Marks the connection failed (closing the socket) and returns ``error``."""
        if self._failed is None:
            self._failed = error
        self._close_socket()
        return error

    def _check_usable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise PeerDisconnectedError("Connection closed: close() was called")

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._sock.close()

    def close(self) -> None:
        """Closes the connection. Safe to call more than once."""
        self._close_socket()

    def __enter__(self) -> "FedcommClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        id_, clients = getattr(self, "id", None), getattr(self, "clients", None)
        return f"<FedcommClient id={id_} clients={clients} {state}>"

