"""The reading half of the I/O thread: :class:`_Receiver`, a mixin of
:class:`~fedcomm.Client`, reads the socket into the frame reader and handles
each frame: application values go to the inbox (numbered, and an ack becomes
owed), pings are answered, pongs time the round trip, acks free retained
messages, and a close (``c1 06``) ends the session."""

from __future__ import annotations

import selectors
import ssl
import struct
import time
from typing import Union

from ._codec import decode
from ._framing import (
    ACK,
    ACK_BODY_BYTES,
    CLOSE,
    CLOSE_BODY_BYTES,
    CONTROL,
    HANDSHAKE,
    PING,
    PING_BODY_BYTES,
    PONG,
    PROGRESS_CHUNK_BYTES,
    REPLY,
)
from ._outframe import _control
from ._progress import Progress, _call_progress
from ._state import _ClientState
from .errors import (
    FedcommError,
    FrameTooLargeError,
    PeerDisconnectedError,
    ProtocolError,
    TruncatedFrameError,
)

#: The I/O thread stops reading while more than this many body bytes wait in the queue.
QUEUE_LIMIT_BYTES = 64 * 1024 * 1024
#: ... or more than this many messages.
QUEUE_LIMIT_MESSAGES = 65_536
#: The I/O thread reads at most this much before looking at its other work.
_READ_BURST_BYTES = 16 * 1024 * 1024

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)
_U64 = struct.Struct(">Q")

_NAMES = {PING: "ping", PONG: "pong", ACK: "ack", CLOSE: "close"}
_SIZES = {PING: PING_BODY_BYTES, PONG: PING_BODY_BYTES, ACK: ACK_BODY_BYTES, CLOSE: CLOSE_BODY_BYTES}

Body = Union[bytes, bytearray, memoryview]


class _Receiver(_ClientState):
    """Reading and handling frames, in the I/O thread."""

    def _paused(self) -> bool:
        return (
            self._queued_bytes > QUEUE_LIMIT_BYTES or len(self._inbox) > QUEUE_LIMIT_MESSAGES
        )

    def _read_burst(self) -> Union[None, int, bool]:
        """Reads until the socket has nothing more (or a burst's worth).
        Returns ``None`` (more may be ready), the event to wait for, or
        ``False`` when the connection failed, dropped or ended."""
        reader = self._reader
        budget = _READ_BURST_BYTES
        while budget > 0:
            try:
                n = self._sock.recv_into(reader.target())
            except _WOULD_BLOCK:
                return selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                return selectors.EVENT_WRITE
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                n = 0
            except OSError as error:
                self._lost(PeerDisconnectedError(f"Server disconnected: {error}"))
                return False
            if n == 0:
                try:
                    reader.check_eof()
                except TruncatedFrameError as error:
                    self._lost(error)  # a frame cut by the drop: it is sent again whole
                    return False
                self._lost(
                    PeerDisconnectedError("Server disconnected: it closed the connection"),
                    eof=True,
                )
                return False
            budget -= n
            self._bytes_received += n
            self._last_heard = time.monotonic()
            reader.filled(n)
            partial = reader.partial()
            if partial is not None:
                done, total, first = partial
                if (
                    first != CONTROL
                    and (done % PROGRESS_CHUNK_BYTES == 0 or done == total)
                    and done > self._rx_reported
                ):
                    self._rx_reported = done
                    if self._on_progress is not None:
                        _call_progress(self._on_progress, Progress("receive", done, total))
            if not self._drain_frames():
                return False
            with self._cond:
                if (
                    self._paused()
                    or self._error is not None
                    or self._acks.urgent  # write the ack now
                ):
                    return None
        return None

    def _drain_frames(self) -> bool:
        """Handles every complete frame in the reader. Returns ``False`` when
        the connection failed or the session ended."""
        while True:
            try:
                body = self._reader.next_body()
            except FrameTooLargeError as error:
                self._fail(error)
                return False
            if body is None:
                return True
            try:
                if not self._handle(body):
                    return False
            except FedcommError as error:
                self._fail(error)
                return False

    def _handle(self, body: Body) -> bool:
        """Handles one frame; ``False`` when it ended the session."""
        size = len(body)
        reported, self._rx_reported = self._rx_reported, 0
        if size == 0:
            return True  # a heartbeat
        if body[0] == CONTROL:
            return self._handle_control(body)
        value = decode(body)
        with self._cond:
            number = self._acks.message(size, time.monotonic())
            self._inbox.append((value, size, number))
            self._queued_bytes += size
            self._cond.notify_all()
        if self._on_progress is not None and reported < size:
            _call_progress(self._on_progress, Progress("receive", size, size))
        return True

    def _handle_control(self, body: Body) -> bool:
        size = len(body)
        kind = body[1] if size >= 2 else None
        if kind in _SIZES and size != _SIZES[kind]:
            raise ProtocolError(
                f"Invalid {_NAMES[kind]}: {size} bytes, expected {_SIZES[kind]}"
            )
        if kind == PING:
            with self._cond:
                self._control.append(_control(PONG, bytes(body[2:])))
        elif kind == PONG:
            sent_at = self._pings.pop(bytes(body[2:]), None)
            if sent_at is not None:
                self._rtt = time.monotonic() - sent_at
        elif kind == ACK:
            (count,) = _U64.unpack_from(body, 2)
            with self._cond:
                if self._retention.ack(count):
                    self._cond.notify_all()
        elif kind == CLOSE:
            with self._cond:
                self._eof = True
                self._fail_locked(
                    PeerDisconnectedError("Server closed the session: it ended it for good")
                )
            return False
        elif kind == REPLY:
            raise ProtocolError("Unexpected reply (c1 05) from the server: only clients reply")
        elif kind == HANDSHAKE:
            raise ProtocolError("Unexpected handshake message after the welcome")
        else:
            raise ProtocolError(
                "Unknown control frame: kind "
                + ("none" if kind is None else f"0x{kind:02x}")
                + f", {size} bytes"
            )
        return True
