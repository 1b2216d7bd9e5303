"""The read-only public state of a :class:`~fedcomm.Client`: counters, the
session's numbering and retention, resumes, liveness. :class:`_Properties` is
a mixin of :class:`~fedcomm.Client`."""

from __future__ import annotations

from typing import Optional

from ._state import _ClientState


class _Properties(_ClientState):
    """The properties of :class:`~fedcomm.Client`."""

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the server, frame headers, handshakes, pings, acks and messages sent again included."""
        return self._bytes_sent

    @property
    def bytes_received(self) -> int:
        """Bytes read from the server, frame headers, handshakes, pings and acks included."""
        return self._bytes_received

    @property
    def messages_sent(self) -> int:
        """Application messages (values and replies) written completely (once each)."""
        return self._messages_sent

    @property
    def messages_received(self) -> int:
        """Application values received on the session (queued for :meth:`recv` or already taken)."""
        return self._acks.received

    @property
    def last_received(self) -> int:
        """The number of the last message taken with :meth:`recv` or iteration
        (1 for the session's first; 0: none yet): what :meth:`reply` answers."""
        return self._last_taken

    @property
    def retained_bytes(self) -> int:
        """Bytes of sent messages kept until the server acknowledges them."""
        return self._retention.bytes

    @property
    def grace(self) -> float:
        """Seconds the server keeps the session after a drop (0: no resume)."""
        return self._grace

    @property
    def resumes(self) -> int:
        """How many times the session was resumed on a new connection."""
        return self._resumes

    @property
    def resuming(self) -> bool:
        """Whether the connection dropped and the client is resuming the session."""
        return self._resuming

    @property
    def rtt(self) -> Optional[float]:
        """Seconds from sending the last answered ping to receiving its pong (``None`` before)."""
        return self._rtt

    @property
    def last_heard(self) -> float:
        """:func:`time.monotonic` when the last byte was received from the server."""
        return self._last_heard

    @property
    def closed(self) -> bool:
        """Whether the session is over (by :meth:`close`, the server or an error)."""
        return self._closed or self._error is not None
