"""The frames a client sends on a connection of the reference server, as
:class:`FrameHandler` checks and handles them: values, replies and long
messages (header ``c1 07`` and parts ``c1 08``, PROTOCOL.md §8.8) go to the
session (numbered; the acks owed are tracked and written), pings are
answered (behind the ack owed, PROTOCOL.md §8.3), pongs and acks recorded,
handshake messages passed on, and every protocol violation reported."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

import msgpack

from .handshake import ServerHandshake
from .session import Session
from .wire import (
    ACK_DELAY,
    ACK_LARGE_BYTES,
    ACK_PENDING_BYTES,
    ACK_PENDING_MESSAGES,
    U64,
    Body,
    LongIn,
    frame,
)

if TYPE_CHECKING:
    from .conn import Conn


class FrameHandler:
    """Handles the frames read on ``conn`` (in its thread); handshake
    messages go to ``greeting``."""

    def __init__(self, conn: "Conn", greeting: ServerHandshake) -> None:
        self._conn = conn
        self._greeting = greeting
        self._ack_since: Optional[float] = None
        self._ack_bytes = 0
        self._ack_urgent = False
        self._acked = 0
        #: The long message being received on this connection (dropped with it).
        self._long: Optional[LongIn] = None

    @property
    def _session(self) -> Session:
        assert self._conn.session is not None, "no session before the welcome"
        return self._conn.session

    def ack_check(self, now: float, force: bool = False) -> Optional[float]:
        """Writes the ack owed if it is due (``force``: if one is owed, as
        in front of a pong); returns when the next one is."""
        session = self._conn.session
        if session is None or not self._conn.server.acks or self._ack_since is None:
            return None
        due = self._ack_since if self._ack_urgent else self._ack_since + ACK_DELAY
        if now < due and not force:
            return due
        with session.cond:
            count = session.received
        self._acked = count
        self._ack_since = None
        self._ack_bytes = 0
        self._ack_urgent = False
        self._conn.send_raw(frame(b"\xc1\x04" + U64.pack(count)))
        return None

    def handle(self, body: Body) -> bool:
        """Handles one frame body; ``False`` to close the connection."""
        if not body:
            self._conn.frames.append(("heartbeat", 0))
            return True
        if body[0] == 0xC1:
            return self._control(body)
        self._conn.frames.append(("value", len(body)))
        if self._conn.id is None:
            # A version 1 hello gets a version reject in the plain form.
            try:
                value = msgpack.unpackb(body, raw=False)
            except Exception:
                value = None
            if isinstance(value, dict) and value.get("type") == "hello":
                self._greeting.reject("version", "Unsupported protocol version: this server speaks 3", plain=True)
                return False
            self._conn.violation("application value before the welcome")
            return False
        return self._message(None, body)

    def _not_between(self, what: str) -> bool:
        """Whether ``what`` may come now (not between a header and its last part)."""
        if self._long is not None:
            self._conn.violation(f"{what} before the last part of a long message")
            return False
        return True

    def _message(
        self, request: Optional[int], body: Body, long: Optional[LongIn] = None
    ) -> bool:
        if long is None and not self._not_between("an application frame"):
            return False
        problem = self._session._received(request, body, long)
        if problem is not None:
            self._conn.violation(problem)
            return False
        if long is not None:
            size = long.size
        else:
            size = len(body) + (8 if request is not None else 0)
        if self._ack_since is None:
            self._ack_since = time.monotonic()
        self._ack_bytes += size
        with self._session.cond:
            unacked = self._session.received - self._acked
        if (
            size >= ACK_LARGE_BYTES
            or self._ack_bytes >= ACK_PENDING_BYTES
            or unacked >= ACK_PENDING_MESSAGES
        ):
            self._ack_urgent = True
            self.ack_check(time.monotonic())
        return True

    def _control(self, body: Body) -> bool:
        kind = body[1] if len(body) > 1 else None
        if kind == 0x03:
            self._conn.frames.append(("handshake", len(body)))
            if self._conn.id is not None:
                self._conn.violation("handshake message after the welcome")
                return False
            try:
                message = msgpack.unpackb(bytes(body[2:]), raw=False)
            except Exception as error:
                self._conn.violation(f"malformed handshake message: {error}")
                return False
            return self._greeting.handle(message)
        if self._conn.id is None and kind != 0x02:
            self._conn.violation(f"control frame {kind!r} before the welcome")
            return False
        if kind in (0x01, 0x02):
            if len(body) != 10:
                self._conn.violation(f"ping/pong of {len(body)} bytes")
                return False
            payload = bytes(body[2:])
            if kind == 0x01:
                self._conn.frames.append(("ping", len(body)))
                self._conn.pings_received += 1
                if self._conn.server.answer_pings and not self._conn.silent:
                    self.ack_check(time.monotonic(), force=True)  # the ack owed goes first
                    self._conn.pongs_sent += 1
                    self._conn.send_body(b"\xc1\x02" + payload)
            else:
                self._conn.frames.append(("pong", len(body)))
                self._conn.pong_received(payload)
            return True
        if kind == 0x04:
            self._conn.frames.append(("ack", len(body)))
            if len(body) != 10:
                self._conn.violation(f"ack of {len(body)} bytes")
                return False
            problem = self._session._acked(U64.unpack_from(body, 2)[0])
            if problem is not None:
                self._conn.violation(problem)
                return False
            return True
        if kind == 0x05:
            self._conn.frames.append(("reply", len(body)))
            if len(body) < 9:
                self._conn.violation(f"reply of {len(body)} bytes")
                return False
            return self._message(int.from_bytes(body[2:8], "big"), body[8:])
        if kind == 0x07:
            self._conn.frames.append(("long", len(body)))
            return self._long_header(body)
        if kind == 0x08:
            self._conn.frames.append(("part", len(body)))
            if len(body) < 9 or self._long is None:
                self._conn.violation(f"a part of {len(body)} bytes, with no long message under way")
                return False
            try:
                self._long.part(body)
            except ValueError as error:
                self._conn.violation(f"invalid part: {error}")
                return False
            return self._long_done()
        if kind == 0x06:
            self._conn.frames.append(("close", len(body)))
            if len(body) != 2:
                self._conn.violation(f"close of {len(body)} bytes")
            self._conn.stop("bye")
            return False
        self._conn.violation(f"unknown control frame kind {kind!r}")
        return False

    def _long_header(self, body: Body) -> bool:
        limit = self._conn.server.max_message_bytes
        if len(body) < 9 or not self._not_between("a long message header"):
            if len(body) < 9:
                self._conn.violation(f"a long message header of {len(body)} bytes")
            return False
        if limit is None or not self._session.long_ok:
            self._conn.violation("a long message, but none was negotiated")
            return False
        try:
            self._long = LongIn(body, limit)
        except Exception as error:
            self._conn.violation(f"invalid long message header: {error}")
            return False
        return self._long_done()

    def _long_done(self) -> bool:
        """Hands a complete long message to the session."""
        long = self._long
        assert long is not None
        if not long.complete:
            return True
        self._long = None
        return self._message(long.request or None, long.skeleton, long)
