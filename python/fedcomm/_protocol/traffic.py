"""Traffic: what crossed the connections of a session and when.

:class:`Traffic` counts the bytes each way, remembers when the client last
read and wrote, and from that says when a heartbeat ping is due and when a
silent server counts as dead. It also times the pings it makes: the pong of
a ping gives the round-trip time.
"""

from __future__ import annotations

import secrets
from typing import Dict, Optional

from .framing import PING
from .outframe import OutFrame, control

__all__ = ["Traffic"]

#: Pings awaiting their pong that are remembered (for the RTT).
_PINGS_KEPT = 16


class Traffic:
    """The byte counts and the liveness timers of a session.

    Args:
        heartbeat: Seconds without writing after which a ping is due (``None``: never).
        idle_timeout: Seconds without receiving anything after which the
            server counts as dead (``None``: never).
        now: :func:`time.monotonic` at the start.
    """

    def __init__(self, heartbeat: Optional[float], idle_timeout: Optional[float], now: float) -> None:
        self.heartbeat = heartbeat
        self.idle_timeout = idle_timeout
        self.bytes_sent = 0
        self.bytes_received = 0
        #: When the last byte was read.
        self.last_heard = now
        #: When the last byte was written.
        self.last_write = now
        #: Until when a silence of the server is excused (see :meth:`excuse`).
        self.alive_hint = 0.0
        #: Seconds from the last answered ping to its pong (``None`` before).
        self.rtt: Optional[float] = None
        self._pings: Dict[bytes, float] = {}

    def read(self, n: int, now: float) -> None:
        """``n`` bytes were read at ``now``."""
        self.bytes_received += n
        self.last_heard = now

    def wrote(self, n: int, now: float) -> None:
        """``n`` bytes were written at ``now``."""
        self.bytes_sent += n
        self.last_write = now

    def excuse(self, now: float) -> None:
        """The server's silence until ``now`` is not its fault: this client
        is not reading, or the server is taking a long frame of ours."""
        self.alive_hint = now

    def restart(self, now: float) -> None:
        """A new connection starts (a resume): the timers start over."""
        self.last_heard = self.last_write = now
        self.alive_hint = 0.0

    def ping_at(self) -> Optional[float]:
        """When a heartbeat ping is due (``None``: never)."""
        return None if self.heartbeat is None else self.last_write + self.heartbeat

    def dead_at(self) -> Optional[float]:
        """When the server counts as dead if nothing arrives (``None``: never)."""
        if self.idle_timeout is None:
            return None
        return max(self.last_heard, self.alive_hint) + self.idle_timeout

    def new_ping(self) -> OutFrame:
        """A ping frame with a fresh payload."""
        payload = secrets.token_bytes(8)
        frame = control(PING, payload)
        frame.ping = payload
        return frame

    def ping_written(self, payload: bytes, now: float) -> None:
        """A ping went out whole at ``now``: its pong will time the round trip."""
        self._pings[payload] = now
        while len(self._pings) > _PINGS_KEPT:
            del self._pings[next(iter(self._pings))]

    def pong(self, payload: bytes, now: float) -> None:
        """A pong arrived at ``now``."""
        sent_at = self._pings.pop(payload, None)
        if sent_at is not None:
            self.rtt = now - sent_at

    def forget_pings(self) -> None:
        """The connection dropped: no pong will come for the pings sent."""
        self._pings.clear()
