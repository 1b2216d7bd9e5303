"""Framing: the 4-byte big-endian length header, the control frame kinds,
and :class:`FrameDecoder`, which cuts frames out of the bytes read.

A frame is a 4-byte big-endian unsigned body length, then the body:

- an empty body is a heartbeat (ignored anywhere);
- a body starting with ``0xc1`` (a byte that never starts a MessagePack value)
  is a control frame whose second byte is its kind: ``01`` ping and ``02`` pong
  (each followed by exactly 8 opaque bytes), ``03`` a handshake message
  (followed by one MessagePack map), ``04`` an ack (followed by a u64
  big-endian count), ``05`` a reply (followed by a u48 big-endian request
  number and one MessagePack value: an application message, client to server
  only), ``06`` close (nothing follows), and the frames of a long message
  (PROTOCOL.md §8.8): ``07`` its header (a u48 request number and the
  skeleton) and ``08`` a part (six zero bytes, then data);
- any other body is one MessagePack application value.

The decoder reads the data of a large long message part straight into the
memory of its reference (see :class:`PartSink`), without an intermediate copy.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import Enum
from typing import Optional, Protocol, Tuple, Union

import numpy as np

from ..errors import FrameTooLargeError, ProtocolError, TruncatedFrameError

__all__ = [
    "ACK",
    "ACK_BODY_BYTES",
    "CLOSE",
    "CLOSE_BODY_BYTES",
    "CONTROL",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "FrameDecoder",
    "HANDSHAKE",
    "HANDSHAKE_FRAME_BYTES",
    "HEADER",
    "HEADER_BYTES",
    "LONG",
    "LONG_PREFIX_BYTES",
    "MAX_REQUEST",
    "MAX_FRAME_BYTES_LIMIT",
    "MAX_MESSAGE_BYTES_LIMIT",
    "PART",
    "PING",
    "PONG",
    "PartSink",
    "PlacedPart",
    "PROGRESS_CHUNK_BYTES",
    "REPLY",
    "REPLY_PREFIX_BYTES",
    "control_frame",
    "read_control",
]

HEADER = struct.Struct(">I")
HEADER_BYTES = 4
#: The default largest frame body accepted: 512 MiB.
DEFAULT_MAX_FRAME_BYTES = 512 * 1024 * 1024
#: The largest body the 4-byte length can announce.
MAX_FRAME_BYTES_LIMIT = 2**32 - 1
#: The default largest long message accepted (and sent): 16 GiB.
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024 * 1024
#: The largest ``maxMessageBytes`` (2**53 - 1, as the Deno library).
MAX_MESSAGE_BYTES_LIMIT = 2**53 - 1
#: The largest frame accepted before the welcome.
HANDSHAKE_FRAME_BYTES = 64 * 1024
#: Progress is reported at least every this many body bytes (and reads and
#: writes of large bodies are cut at these boundaries).
PROGRESS_CHUNK_BYTES = 4 * 1024 * 1024

#: The first byte of every control frame body.
CONTROL = 0xC1
#: Control frame kinds.
PING = 0x01
PONG = 0x02
HANDSHAKE = 0x03
ACK = 0x04
REPLY = 0x05
CLOSE = 0x06
LONG = 0x07
PART = 0x08
#: Length of a ping or pong body: c1, kind, 8 opaque bytes.
PING_BODY_BYTES = 10
#: Length of an ack body: c1 04, then the count as a u64 big-endian.
ACK_BODY_BYTES = 10
#: Length of a close body: c1 06.
CLOSE_BODY_BYTES = 2
#: The prefix of a reply body: c1 05, then the request number as a u48 big-endian.
REPLY_PREFIX_BYTES = 8
#: The largest request number a reply can carry.
MAX_REQUEST = 2**48 - 1
#: The prefix of a long message's header (c1 07 + u48 request) and of a
#: part (c1 08 + six zero bytes); a header or part body has at least one more byte.
LONG_PREFIX_BYTES = 8

#: Frames whose header and body fit in the read buffer are cut out of it.
_READ_BUFFER_BYTES = 256 * 1024

Buffer = Union[bytes, bytearray, memoryview]


def control_frame(kind: int, payload: Buffer) -> bytes:
    """Returns a whole control frame (header included) of ``kind`` carrying ``payload``."""
    return HEADER.pack(2 + len(payload)) + bytes((CONTROL, kind)) + bytes(payload)


_NAMES = {PING: "ping", PONG: "pong", ACK: "ack", CLOSE: "close"}
_SIZES = {PING: PING_BODY_BYTES, PONG: PING_BODY_BYTES, ACK: ACK_BODY_BYTES, CLOSE: CLOSE_BODY_BYTES}


def read_control(body: Buffer) -> Tuple[int, bytes]:
    """Checks a control frame the server sent after the welcome; returns its
    kind (``PING``, ``PONG``, ``ACK``, ``CLOSE``, ``LONG`` or ``PART``) and
    what follows the kind (for ``LONG`` and ``PART``: nothing, the caller
    reads the body, which may be large, itself).

    Raises:
        ProtocolError: A wrong size for its kind, a reply or a handshake
            message (never sent by a server after the welcome), or an
            unknown kind.
    """
    size = len(body)
    kind = body[1] if size >= 2 else None
    if kind in _SIZES:
        if size != _SIZES[kind]:
            raise ProtocolError(f"Invalid {_NAMES[kind]}: {size} bytes, expected {_SIZES[kind]}")
        return kind, bytes(body[2:])
    if kind in (LONG, PART):
        if size <= LONG_PREFIX_BYTES:
            what = "long message header" if kind == LONG else "long message part"
            raise ProtocolError(
                f"Invalid {what}: {size} bytes, expected more than {LONG_PREFIX_BYTES}"
            )
        return kind, b""
    if kind == REPLY:
        raise ProtocolError("Unexpected reply (c1 05) from the server: only clients reply")
    if kind == HANDSHAKE:
        raise ProtocolError("Unexpected handshake message after the welcome")
    raise ProtocolError(
        "Unknown control frame: kind "
        + ("none" if kind is None else f"0x{kind:02x}")
        + f", {size} bytes"
    )


class PartSink(Protocol):
    """Where the data of a long message's large parts goes: the long message
    being received on the connection (:class:`~fedcomm._protocol.assembly.Assembler`)."""

    def place(self, prefix: bytes, length: int) -> memoryview:
        """The memory for the next ``length`` data bytes of a part whose
        8-byte ``prefix`` (``c1 08`` + six bytes) is given.

        Raises:
            ProtocolError: No long message is under way, the prefix is not
                ``c1 08`` + six zero bytes, or the data is empty or longer
                than its reference has left.
        """
        ...


@dataclass(frozen=True)
class PlacedPart:
    """What :meth:`FrameDecoder.next_body` returns for a part read straight
    into the memory its :class:`PartSink` gave: ``length`` data bytes."""

    length: int


class DecoderState(Enum):
    """Where a :class:`FrameDecoder` is in the stream."""

    #: Frames are cut out of the read buffer, which may hold a partial header or body.
    BUFFERED = "buffered"
    #: A body too large for the read buffer is read into a buffer of its own.
    LARGE_BODY = "large body"
    #: The data of a large long message part is read into its reference's memory.
    PART_DATA = "part data"


class FrameDecoder:
    """Cuts frames out of a byte stream, for a caller that reads the socket.

    The caller asks :meth:`target` where to put the next bytes, reads into it,
    reports how many with :meth:`filled`, then takes complete bodies with
    :meth:`next_body` until it returns ``None``.

    In state ``BUFFERED``, bodies of frames that fit in the 256 KiB read
    buffer are views into it, valid until the next :meth:`target`. A larger
    body switches to ``LARGE_BODY``: it is read into a buffer of its own,
    :data:`PROGRESS_CHUNK_BYTES` at most per read, so that :meth:`partial` can
    report progress at those boundaries. A larger long message part (``c1
    08``), with a :attr:`sink`, switches to ``PART_DATA``: its data is read
    into the memory the sink gives, and :meth:`next_body` then returns a
    :class:`PlacedPart`.
    """

    def __init__(self, limit: int, what: str) -> None:
        #: The largest body accepted; checked on each header before the body is read.
        self.limit = limit
        self._what = what
        self.state = DecoderState.BUFFERED
        self._buf = bytearray(_READ_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._large = memoryview(b"")
        self._large_fill = 0
        #: Where large long message parts go (``None``: the client takes no long messages).
        self.sink: Optional[PartSink] = None

    def set_limit(self, limit: int, what: str) -> None:
        """Changes the limit (``what`` names it in errors)."""
        self.limit = limit
        self._what = what

    def target(self) -> memoryview:
        """Where the next received bytes go (never empty)."""
        if self.state is not DecoderState.BUFFERED:
            fill = self._large_fill
            boundary = (fill // PROGRESS_CHUNK_BYTES + 1) * PROGRESS_CHUNK_BYTES
            return self._large[fill : min(len(self._large), boundary)]
        if self._start > 0:
            # memoryview assignment is a memmove: the ranges may overlap.
            available = self._end - self._start
            self._view[:available] = self._view[self._start : self._end]
            self._start, self._end = 0, available
        return self._view[self._end :]

    def filled(self, n: int) -> None:
        """Records that ``n`` bytes were read into the last :meth:`target`."""
        if self.state is DecoderState.BUFFERED:
            self._end += n
        else:
            self._large_fill += n

    def partial(self) -> Optional[Tuple[int, int, int]]:
        """For a large body being read: ``(done, total, first byte)``, else ``None``."""
        if self.state is not DecoderState.LARGE_BODY or self._large_fill == 0:
            return None
        return self._large_fill, len(self._large), self._large[0]

    @property
    def placed(self) -> int:
        """Data bytes of the part being read into place so far (0: none is)."""
        return self._large_fill if self.state is DecoderState.PART_DATA else 0

    def next_body(self) -> Union[None, Buffer, PlacedPart]:
        """Returns the next complete body (empty for a heartbeat), a
        :class:`PlacedPart` for a part read into place, or ``None`` when more
        bytes are needed.

        Raises:
            FrameTooLargeError: A header announced more than :attr:`limit`.
            ProtocolError: The :attr:`sink` refused a large part.
        """
        if self.state is not DecoderState.BUFFERED:
            if self._large_fill < len(self._large):
                return None
            body = self._large
            placed = self.state is DecoderState.PART_DATA
            self.state, self._large = DecoderState.BUFFERED, memoryview(b"")
            return PlacedPart(len(body)) if placed else body
        available = self._end - self._start
        if available < HEADER_BYTES:
            return None
        (length,) = HEADER.unpack_from(self._buf, self._start)
        if length > self.limit:
            raise FrameTooLargeError(length, self.limit, self._what)
        frame_end = self._start + HEADER_BYTES + length
        if frame_end <= self._end:
            body = self._view[self._start + HEADER_BYTES : frame_end]
            self._start = frame_end
            return body
        if HEADER_BYTES + length > len(self._buf):
            body_start = self._start + HEADER_BYTES
            if self.sink is not None and self._end > body_start + 1 and (
                self._buf[body_start] == CONTROL and self._buf[body_start + 1] == PART
            ):
                if self._end - body_start < LONG_PREFIX_BYTES:
                    return None  # (the read buffer has room for the rest of the prefix)
                self._start_part_data(length)
            else:
                self._start_large_body(length)
            return self.next_body()
        return None

    def _start_part_data(self, length: int) -> None:
        assert self.sink is not None
        body_start = self._start + HEADER_BYTES
        prefix = bytes(self._buf[body_start : body_start + LONG_PREFIX_BYTES])
        target = self.sink.place(prefix, length - LONG_PREFIX_BYTES)
        buffered = self._view[body_start + LONG_PREFIX_BYTES : self._end]
        target[: len(buffered)] = buffered
        self._large = target
        self._large_fill = len(buffered)
        self._start = self._end = 0
        self.state = DecoderState.PART_DATA

    def _start_large_body(self, length: int) -> None:
        # np.empty, not bytearray(length): that zeroes the memory while holding
        # the GIL, about 0.5 s for 64 MiB on some machines; here the pages are
        # touched by recv_into, which releases the GIL.
        buffered = self._view[self._start + HEADER_BYTES : self._end]
        self._large = np.empty(length, dtype=np.uint8).data
        self._large[: len(buffered)] = buffered
        self._large_fill = len(buffered)
        self._start = self._end = 0
        self.state = DecoderState.LARGE_BODY

    def check_eof(self) -> None:
        """Called at end of stream: raises if it fell inside a frame.

        Raises:
            TruncatedFrameError: The stream ended inside a header or a body.
        """
        if self.state is DecoderState.LARGE_BODY:
            raise TruncatedFrameError(len(self._large), self._large_fill)
        if self.state is DecoderState.PART_DATA:
            raise TruncatedFrameError(
                LONG_PREFIX_BYTES + len(self._large), LONG_PREFIX_BYTES + self._large_fill
            )
        available = self._end - self._start
        if available == 0:
            return
        if available < HEADER_BYTES:
            raise TruncatedFrameError(HEADER_BYTES, available, in_header=True)
        (length,) = HEADER.unpack_from(self._buf, self._start)
        raise TruncatedFrameError(length, available - HEADER_BYTES)
