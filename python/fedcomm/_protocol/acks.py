"""Acks this client owes the server: :class:`AckState` counts the
application messages received on the session and decides when the I/O thread
writes an ack (``c1 04`` + the count as a u64 big-endian):

- at once after a message whose body is 64 KiB or more (its sender may be
  waiting for the ack to free room), or when 1 MiB or 1024 messages are
  unacknowledged;
- otherwise within 10 ms of the first unacknowledged message (the protocol
  allows up to 2 s, PROTOCOL.md §8.3; a client sends about one message per
  round, so its acks rarely find a frame to ride on);
- in front of any application frame this client writes (piggyback);
- and in front of the pong answering a ping that arrives while an ack is
  owed (:meth:`~fedcomm._protocol.session.Session.on_ping`): a server that
  waits for its acks asks for them with a ping.

The other way round, when close() or a send waits for the server's acks,
the I/O thread pings the server once per wait
(:meth:`~fedcomm._protocol.session.Session.ask_for_acks`): a server may delay
its acks by up to 2 s (the Deno library: 0.5 to 1 s), but writes the ack it
owes before the pong.
"""

from __future__ import annotations

import struct
from typing import Optional

from .framing import ACK
from .outframe import OutFrame, control

__all__ = ["ACK_DELAY", "ACK_LARGE_BYTES", "ACK_PENDING_BYTES", "ACK_PENDING_MESSAGES", "AckState"]

#: A message of at least this many body bytes is acknowledged at once.
ACK_LARGE_BYTES = 64 * 1024
#: ... and so are pending messages of this many bytes in all ...
ACK_PENDING_BYTES = 1024 * 1024
#: ... or this many messages.
ACK_PENDING_MESSAGES = 1024
#: Seconds after the first unacknowledged message within which its ack is written.
ACK_DELAY = 0.010

_U64 = struct.Struct(">Q")


class AckState:
    """The received count of a session and the ack owed for it."""

    def __init__(self) -> None:
        #: Application messages received on the session (the last one's number).
        self.received = 0
        #: The count last acknowledged to the server.
        self.acked = 0
        self._pending_bytes = 0
        self._urgent = False
        #: :func:`time.monotonic` of the first unacknowledged message.
        self._first_at = 0.0

    @property
    def pending(self) -> bool:
        """Whether an ack is owed."""
        return self.received > self.acked

    @property
    def urgent(self) -> bool:
        """Whether the ack owed must be written at once."""
        return self.pending and self._urgent

    @property
    def deadline(self) -> Optional[float]:
        """When the ack owed is due (``None``: none is owed)."""
        if not self.pending:
            return None
        return self._first_at if self._urgent else self._first_at + ACK_DELAY

    def message(self, size: int, now: float) -> int:
        """Counts a received message of ``size`` body bytes; returns its number."""
        if not self.pending:
            self._first_at = now
        self.received += 1
        self._pending_bytes += size
        if (
            size >= ACK_LARGE_BYTES
            or self._pending_bytes >= ACK_PENDING_BYTES
            or self.received - self.acked >= ACK_PENDING_MESSAGES
        ):
            self._urgent = True
        return self.received

    def due(self, now: float) -> bool:
        """Whether the ack owed is due at ``now``."""
        deadline = self.deadline
        return deadline is not None and now >= deadline

    def frame(self) -> OutFrame:
        """The ack frame for everything received so far (it is then not owed)."""
        self.settled(self.received)
        return control(ACK, _U64.pack(self.received))

    def settled(self, count: int) -> None:
        """Records that the server knows of ``count`` messages (an ack written,
        or a resume hello's ``received``)."""
        self.acked = count
        self._pending_bytes = 0
        self._urgent = False
