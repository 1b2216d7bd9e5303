"""The wire, as the reference server sees it: the framing, the values
(decoded with ``msgpack_numpy``, independently of the package), the proofs,
the checks of a hello's props, and :class:`Message`."""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Union

import msgpack
import msgpack_numpy

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
    #: The body of the value (a reply's 8-byte prefix removed).
    body: Body

    def value(self) -> Any:
        return decode_value(self.body)

