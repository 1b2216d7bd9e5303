"""The wire, as the reference server sees it: the framing, the values
(decoded with ``msgpack_numpy``, independently of the package), long messages
(PROTOCOL.md §8.8: :func:`long_frames`, :class:`LongIn`), the proofs, the
checks of a hello's props, and :class:`Message`."""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

import msgpack
import msgpack_numpy
import numpy as np

HEADER = struct.Struct(">I")
U64 = struct.Struct(">Q")
HANDSHAKE_LIMIT = 64 * 1024
VERSION = 3
SERVER_LABEL = b"fedcomm server proof\x00"
CLIENT_LABEL = b"fedcomm client proof\x00"
ACK_LARGE_BYTES = 64 * 1024
ACK_PENDING_BYTES = 1024 * 1024
ACK_PENDING_MESSAGES = 1024
ACK_DELAY = 0.010
#: Long messages: the reference's extension type, the prefix of a part, the
#: least binary sent out of band by default.
EXT_REFERENCE = 127
PART_PREFIX = b"\xc1\x08" + bytes(6)
REF_MIN_BYTES = 64 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024**3

Body = Union[bytes, memoryview]


def proof(label: bytes, secret: bytes, client_nonce: bytes, server_nonce: bytes, name: bytes) -> bytes:
    """HMAC-SHA256(secret, label + client nonce + server nonce + name)."""
    return hmac.new(secret, label + client_nonce + server_nonce + name, hashlib.sha256).digest()


def frame(body: bytes) -> bytes:
    """A whole frame: 4-byte big-endian length, then the body."""
    return HEADER.pack(len(body)) + body


def handshake_body(message: Dict[str, Any]) -> bytes:
    """``c1 03`` + the MessagePack map."""
    return b"\xc1\x03" + msgpack.packb(message, use_bin_type=True)


def encode_value(value: Any) -> bytes:
    """An application body, encoded with msgpack_numpy."""
    return msgpack.packb(value, default=msgpack_numpy.encode, use_bin_type=True)


def decode_value(body: Body) -> Any:
    """An application body, decoded with msgpack_numpy."""
    return msgpack.unpackb(body, object_hook=msgpack_numpy.decode, raw=False, strict_map_key=False)


def is_application(body: Body) -> bool:
    """Whether a frame body is an application message (numbered)."""
    return len(body) > 0 and body[0] != 0xC1


def _out_of_band(value: Any, ref_min: int, refs: List[bytes]) -> Any:
    """``value`` with numpy arrays as msgpack_numpy maps and every binary of
    ``ref_min`` bytes or more replaced by a reference (collected in ``refs``)."""
    if isinstance(value, (np.ndarray, np.generic)):
        value = dict(msgpack_numpy.encode(value))
        if len(bytes(value[b"data"])) >= ref_min and value[b"nd"] is True:
            refs.append(bytes(value[b"data"]))
            value[b"data"] = msgpack.ExtType(EXT_REFERENCE, len(refs[-1]).to_bytes(8, "big"))
        return value
    if isinstance(value, (bytes, bytearray, memoryview)) and len(bytes(value)) >= ref_min:
        refs.append(bytes(value))
        return msgpack.ExtType(EXT_REFERENCE, len(refs[-1]).to_bytes(8, "big"))
    if isinstance(value, dict):
        return {key: _out_of_band(item, ref_min, refs) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_out_of_band(item, ref_min, refs) for item in value]
    return value


def long_frames(
    value: Any, request: int = 0, ref_min: int = REF_MIN_BYTES, part_bytes: int = 1 << 20
) -> List[bytes]:
    """A long message's whole frames: the header (``c1 07`` + u48 request +
    the skeleton), then the parts (``c1 08`` + six zero bytes + data)."""
    refs: List[bytes] = []
    skeleton = msgpack.packb(_out_of_band(value, ref_min, refs), use_bin_type=True)
    frames = [frame(b"\xc1\x07" + request.to_bytes(6, "big") + skeleton)]
    for ref in refs:
        for start in range(0, len(ref), part_bytes):
            frames.append(frame(PART_PREFIX + ref[start : start + part_bytes]))
    return frames


class LongIn:
    """A long message being received from a client: the header's skeleton,
    its references' lengths and the buffers the parts fill. Raises
    ``ValueError`` for what the protocol forbids."""

    def __init__(self, body: Body, limit: int) -> None:
        self.request = int.from_bytes(body[2:8], "big")
        self.skeleton = bytes(body[8:])
        lengths: List[int] = []

        def count(code: int, data: bytes) -> Any:
            if code == EXT_REFERENCE and len(data) == 8:
                lengths.append(int.from_bytes(data, "big"))
                if lengths[-1] == 0:
                    raise ValueError("a reference of 0 bytes")
            return None

        msgpack.unpackb(self.skeleton, ext_hook=count, raw=False, strict_map_key=False)
        self.size = len(body) + sum(lengths)
        if self.size > limit:
            raise ValueError(f"a long message of {self.size} bytes over maxMessageBytes {limit}")
        self.buffers = [bytearray(n) for n in lengths]
        self._index = 0
        self._offset = 0

    @property
    def complete(self) -> bool:
        return self._index == len(self.buffers)

    def part(self, body: Body) -> None:
        if bytes(body[:8]) != PART_PREFIX:
            raise ValueError(f"a part prefix {bytes(body[:8]).hex()}")
        data = body[8:]
        if self.complete:
            raise ValueError("a part after the last reference")
        buffer = self.buffers[self._index]
        if not 0 < len(data) <= len(buffer) - self._offset:
            raise ValueError(f"a part of {len(data)} bytes, {len(buffer) - self._offset} left")
        buffer[self._offset : self._offset + len(data)] = data
        self._offset += len(data)
        if self._offset == len(buffer):
            self._index, self._offset = self._index + 1, 0

    def value(self) -> Any:
        refs = iter(self.buffers)

        def fill(code: int, data: bytes) -> Any:
            if code == EXT_REFERENCE and len(data) == 8:
                return bytes(next(refs))
            return msgpack.ExtType(code, data)

        return msgpack.unpackb(
            self.skeleton, ext_hook=fill, object_hook=msgpack_numpy.decode, raw=False,
            strict_map_key=False,
        )


def secret_bytes(value: Union[None, str, bytes]) -> Optional[bytes]:
    return value.encode() if isinstance(value, str) else value


def check_props(props: Any) -> Optional[str]:
    """What is wrong with a hello's props (``None``: nothing)."""
    if not isinstance(props, dict):
        return "is not a map"
    if len(props) > 16:
        return f"has {len(props)} entries (at most 16)"
    for key, value in props.items():
        if not isinstance(key, str) or not 1 <= len(key.encode()) <= 64:
            return f"key {key!r} is not 1-64 bytes of text"
        if isinstance(value, str):
            if len(value.encode()) > 256:
                return f"value of {key!r} is over 256 bytes"
        elif value is not None and not isinstance(value, (bool, int, float)):
            return f"value of {key!r} is a {type(value).__name__}"
    return None


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls ``condition`` (every 5 ms) until it holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


@dataclass
class Message:
    """An application message received from a client."""

    number: int
    #: The request a reply answers (``None``: a plain message).
    request: Optional[int]
    #: The body of the value (a reply's 8-byte prefix removed; a long
    #: message: its header's skeleton).
    body: Body
    #: A long message's value (``None``: a frame's).
    long: Optional[LongIn] = None

    def value(self) -> Any:
        return decode_value(self.body) if self.long is None else self.long.value()

