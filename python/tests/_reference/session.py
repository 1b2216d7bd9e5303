"""A client's session on the reference server: it outlives its connections
(resume)."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Sequence, Tuple

from .wire import REF_MIN_BYTES, Body, LongIn, Message, encode_value, frame, long_frames

if TYPE_CHECKING:
    from .conn import Conn
    from .server import ReferenceServer


class Session:
    """A client's session: it outlives its connections (resume)."""

    def __init__(self, server: "ReferenceServer", id_: int, name: Optional[str],
                 props: Optional[Dict[str, Any]]) -> None:
        self.server = server
        self.id = id_
        self.name = name
        self.props = props
        self.token = os.urandom(16)
        self.cond = threading.Condition()
        self._inbox: Deque[Message] = deque()
        #: Application messages received from the client.
        self.received = 0
        #: Application messages numbered for the client.
        self.sent = 0
        #: The client's latest ack.
        self.acked = 0
        #: Unacknowledged messages for the client: (number, whole frame).
        self.retained: Deque[Tuple[int, bytes]] = deque()
        #: Every message received: (number, request).
        self.log: List[Tuple[int, Optional[int]]] = []
        self.conn: Optional[Conn] = None
        self.conns: List[Conn] = []
        #: "connected", "resuming" or "gone".
        self.state = "connected"
        #: Why the session ended: "closed" (c1 06 from the client), "server"
        #: (end()), "grace", "dropped" (no grace), "forgotten".
        self.end_reason: Optional[str] = None
        self.ended = threading.Event()
        self.dropped_at = 0.0
        self.resumes = 0
        #: The ``maxMessageBytes`` of the session's first hello (``None``: absent).
        self.hello_max_message_bytes: Optional[int] = None

    @property
    def long_ok(self) -> bool:
        """Whether long messages were negotiated (both sides announced a limit > 0)."""
        return bool(self.hello_max_message_bytes) and bool(self.server.max_message_bytes)

    # -- messages for the client ---------------------------------------------

    def send(self, value: Any) -> None:
        """Sends one application value (numbered, retained until acknowledged)."""
        self.send_body(encode_value(value))

    def send_body(self, body: bytes, chunk: Optional[int] = None, delay: float = 0.0) -> int:
        """Sends an application body (optionally ``chunk`` bytes at a time,
        ``delay`` seconds apart); returns its number. While the session is
        resuming it is only retained (sent on the resume)."""
        data = frame(body)
        with self.cond:
            if self.state == "gone":
                raise ConnectionError(f"session over: {self.end_reason}")
            self.sent += 1
            self.retained.append((self.sent, data))
            if self.state == "connected" and self.conn is not None:
                if chunk is None:
                    self.conn.send_raw(data)
                else:
                    self.conn._queue_slowly(data, chunk, delay)
            return self.sent

    def send_long(
        self,
        value: Any,
        ref_min: int = REF_MIN_BYTES,
        part_bytes: int = 1 << 20,
        between: Sequence[bytes] = (),
    ) -> int:
        """Sends ``value`` as a long message (PROTOCOL.md §8.8: header and
        parts, written back to back; ``between``: whole frames written after
        the header, the first part, … in turn), numbered and retained as one
        message; returns its number."""
        frames = long_frames(value, 0, ref_min, part_bytes)
        data = b"".join(f + (between[i] if i < len(between) else b"") for i, f in enumerate(frames))
        with self.cond:
            if self.state == "gone":
                raise ConnectionError(f"session over: {self.end_reason}")
            self.sent += 1
            self.retained.append((self.sent, data))
            if self.state == "connected" and self.conn is not None:
                self.conn.send_raw(data)
            return self.sent

    def end(self) -> None:
        """Ends the session for good: ``c1 06``, then the connection closes."""
        with self.cond:
            conn = self.conn
            self._end_locked("server")
        if conn is not None:
            conn.send_raw(frame(b"\xc1\x06"))
            conn.close()

    # -- messages from the client ----------------------------------------------

    def recv_message(self, timeout: float = 10.0) -> Message:
        """The next application message (plain or reply)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self._inbox:
                if self.state == "gone":
                    raise ConnectionError(f"session over: {self.end_reason}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("recv timed out")
                self.cond.wait(remaining)
            return self._inbox.popleft()

    def recv_body(self, timeout: float = 10.0) -> Body:
        """The next application body, not decoded (decoding a huge one holds the GIL)."""
        return self.recv_message(timeout).body

    def recv_frame(self, timeout: float = 10.0) -> Tuple[Body, Any]:
        """The next application value as ``(body, decoded value)``."""
        message = self.recv_message(timeout)
        # Decoded here, in the test's thread, not in the connection thread.
        try:
            return message.body, message.value()
        except Exception as error:
            self.server.errors.append(f"client {self.id}: malformed application value: {error}")
            raise

    def recv(self, timeout: float = 10.0) -> Any:
        """The next application value, decoded with msgpack_numpy."""
        return self.recv_frame(timeout)[1]

    def pending(self) -> int:
        """Messages received and not yet taken."""
        with self.cond:
            return len(self._inbox)

    def wait_state(self, state: str, timeout: float = 10.0) -> None:
        """Waits until the session is in ``state``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.state != state:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"session {self.id} is {self.state}, not {state}")
                self.cond.wait(remaining)

    # -- for the connection thread ---------------------------------------------

    def _end_locked(self, reason: str) -> None:
        if self.state != "gone":
            self.state = "gone"
            self.end_reason = reason
            self.retained.clear()
            self.ended.set()
        self.cond.notify_all()

    def _received(
        self, request: Optional[int], body: Body, long: Optional[LongIn] = None
    ) -> Optional[str]:
        """Records a message (``long``: a long message, ``body`` its
        skeleton); returns a violation, if any."""
        with self.cond:
            if request is not None and not 1 <= request <= self.sent:
                return f"reply to request {request}, but {self.sent} messages were sent"
            self.received += 1
            self.log.append((self.received, request))
            self._inbox.append(Message(self.received, request, body, long))
            self.cond.notify_all()
        return None

    def _acked(self, count: int) -> Optional[str]:
        with self.cond:
            if count > self.sent:
                return f"ack of {count} messages, but {self.sent} were sent"
            if count < self.acked:
                return f"ack of {count} after an ack of {self.acked}"
            self.acked = count
            while self.retained and self.retained[0][0] <= count:
                self.retained.popleft()
        return None

    def _detached(self, conn: "Conn", bye: bool) -> None:
        with self.cond:
            if self.conn is not conn or self.state == "gone":
                return
            self.conn = None
            if bye:
                self._end_locked("closed")
            elif self.server.grace > 0 and not self.server.stopping:
                self.state = "resuming"
                self.dropped_at = time.monotonic()
                self.cond.notify_all()
            else:
                self._end_locked("dropped")

    def _expire(self, now: float) -> None:
        with self.cond:
            if self.state == "resuming" and now - self.dropped_at > self.server.grace:
                self._end_locked("grace")
