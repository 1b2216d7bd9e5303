"""The reading half of the I/O thread: :class:`Receiver` reads the socket
into the frame decoder and hands each frame to the session: application
values go to the inbox (numbered, and an ack becomes owed), pings are
answered, pongs time the round trip, acks free retained messages, and a
close (``c1 06``) ends the session. The frames of a long message (PROTOCOL.md
§8.8) go to the connection's :class:`~fedcomm._protocol.assembly.Assembler`;
the complete message goes to the inbox as one value."""

from __future__ import annotations

import selectors
import ssl
import time
from typing import Optional, Union

from ._connector import Connection
from ._progress import Progress, ProgressCallback, call_back
from ._protocol.assembly import Completed
from ._protocol.codec import decode
from ._protocol.framing import (
    ACK,
    CLOSE,
    CONTROL,
    LONG,
    PART,
    PING,
    PONG,
    PROGRESS_CHUNK_BYTES,
    PlacedPart,
    read_control,
)
from ._protocol.traffic import Traffic
from ._shared import Shared
from .errors import FedcommError, PeerDisconnectedError, TruncatedFrameError

#: The I/O thread reads at most this much before looking at its other work.
_READ_BURST_BYTES = 16 * 1024 * 1024

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)

Body = Union[bytes, bytearray, memoryview, PlacedPart]


class Receiver:
    """Reads frames and handles them, in the I/O thread.

    Args:
        shared: The session the frames go to.
        traffic: Counts the bytes read, and times the pongs.
        on_progress: Called with the progress of the application values received.
    """

    def __init__(self, shared: Shared, traffic: Traffic, on_progress: Optional[ProgressCallback]) -> None:
        self._shared = shared
        self._traffic = traffic
        self._on_progress = on_progress
        #: Body bytes of the large frame being read already reported.
        self._reported = 0
        #: Bytes of the long message being received already reported.
        self._long_reported = 0

    def read_burst(self, conn: Connection) -> Union[None, int, bool]:
        """Reads until the socket has nothing more (or a burst's worth).
        Returns ``None`` (more may be ready), the event to wait for, or
        ``False`` when the connection failed, dropped or ended."""
        decoder = conn.decoder
        budget = _READ_BURST_BYTES
        while budget > 0:
            try:
                n = conn.sock.recv_into(decoder.target())
            except _WOULD_BLOCK:
                return selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                return selectors.EVENT_WRITE
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                n = 0
            except OSError as error:
                self._shared.lost(PeerDisconnectedError(f"Server disconnected: {error}"))
                return False
            if n == 0:
                self._ended(conn)
                return False
            budget -= n
            self._traffic.read(n, time.monotonic())
            decoder.filled(n)
            self._report_partial(conn)
            if not self.drain(conn):
                return False
            with self._shared.cond:
                session = self._shared.session
                if session.inbox.full or session.error is not None or session.acks.urgent:
                    return None  # stop reading (or write the ack now)
        return None

    def _ended(self, conn: Connection) -> None:
        """The server closed the connection."""
        try:
            conn.decoder.check_eof()
        except TruncatedFrameError as error:
            self._shared.lost(error)  # a frame cut by the drop: it is sent again whole
            return
        long = conn.assembler.current
        if long is not None:
            # Between the parts of a long message: cut, as a frame is (sent again whole).
            self._shared.lost(TruncatedFrameError(long.size, long.received))
            return
        self._shared.lost(
            PeerDisconnectedError("Server disconnected: it closed the connection"), eof=True
        )

    def _report_partial(self, conn: Connection) -> None:
        decoder = conn.decoder
        long = conn.assembler.progress(decoder.placed)
        if long is not None:
            self._report_long(*long)
            return
        partial = decoder.partial()
        if partial is None:
            return
        done, total, first = partial
        if (
            first != CONTROL
            and (done % PROGRESS_CHUNK_BYTES == 0 or done == total)
            and done > self._reported
        ):
            self._reported = done
            call_back(self._on_progress, Progress("receive", done, total), "on_progress")

    def _report_long(self, done: int, total: int) -> None:
        """Progress of a long message: at each 4 MiB boundary its bytes cross."""
        if done // PROGRESS_CHUNK_BYTES > self._long_reported // PROGRESS_CHUNK_BYTES:
            self._long_reported = done
            call_back(self._on_progress, Progress("receive", done, total), "on_progress")

    def drain(self, conn: Connection) -> bool:
        """Handles every complete frame in the connection's decoder. Returns
        ``False`` when the connection failed or the session ended."""
        while True:
            try:
                body = conn.decoder.next_body()  # (a large part: refused by the assembler)
                if body is None:
                    return True
                if not self._handle(conn, body):
                    return False
            except FedcommError as error:
                self._shared.fail(error)
                return False

    def _handle(self, conn: Connection, body: Body) -> bool:
        """Handles one frame; ``False`` when it ended the session."""
        if isinstance(body, PlacedPart):
            return self._long_part(conn, conn.assembler.placed(body.length))
        size = len(body)
        reported, self._reported = self._reported, 0
        if size == 0:
            return True  # a heartbeat
        if body[0] == CONTROL:
            return self._handle_control(conn, body)
        conn.assembler.check_between("a plain frame")
        value = decode(body)  # (outside the lock: it may take a while)
        self._deliver(value, size, reported)
        return True

    def _deliver(self, value: object, size: int, reported: int) -> None:
        """An application message of ``size`` bytes arrived whole."""
        with self._shared.cond:
            self._shared.session.deliver(value, size, time.monotonic())
            self._shared.cond.notify_all()
        if self._on_progress is not None and reported < size:
            call_back(self._on_progress, Progress("receive", size, size), "on_progress")

    def _long_part(self, conn: Connection, completed: Optional[Completed]) -> bool:
        """A header or a part of a long message was handled: delivers the
        message if it is complete, else reports its progress."""
        if completed is None:
            progress = conn.assembler.progress(0)
            if progress is not None and self._on_progress is not None:
                self._report_long(*progress)
            return True
        value, size = completed
        reported, self._long_reported = self._long_reported, 0
        self._deliver(value, size, reported)
        return True

    def _handle_control(self, conn: Connection, body: Body) -> bool:
        assert not isinstance(body, PlacedPart)
        kind, payload = read_control(body)
        if kind == LONG:
            self._long_reported = 0
            return self._long_part(conn, conn.assembler.header(body))
        if kind == PART:
            return self._long_part(conn, conn.assembler.part(body))
        shared = self._shared
        if kind == PING:
            with shared.cond:
                shared.session.on_ping(payload)
        elif kind == PONG:
            self._traffic.pong(payload, time.monotonic())
        elif kind == ACK:
            with shared.cond:
                if shared.session.on_ack(int.from_bytes(payload, "big")):
                    shared.cond.notify_all()
        elif kind == CLOSE:
            with shared.cond:
                shared.session.on_close()
                shared.cond.notify_all()
            return False
        return True
