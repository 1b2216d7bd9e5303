"""Retention: the application messages sent on a session and not yet
acknowledged by the server, kept to be written again after a resume.

:class:`Retention` numbers the messages (1, 2, 3, … for the whole session,
across resumes), keeps them in order with their byte count, drops them when an
ack (``c1 04``) or a resume welcome's ``received`` covers them, and lists the
rest to send again.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, List

from ..errors import ProtocolError
from .outframe import OutFrame

__all__ = ["DEFAULT_RETAIN_BYTES", "Retention"]

#: The default bound of retained bytes: sends wait while this much is unacknowledged.
DEFAULT_RETAIN_BYTES = 64 * 1024 * 1024


class Retention:
    """The unacknowledged application messages of a session, in order."""

    def __init__(self) -> None:
        self._frames: Deque[OutFrame] = deque()
        #: Frame bytes retained (headers included).
        self.bytes = 0
        #: Messages numbered so far: the number of the last one.
        self.sent = 0
        #: The highest count the server acknowledged.
        self.acked = 0

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, frame: OutFrame) -> None:
        """Numbers ``frame`` (the next number) and keeps it until acknowledged."""
        self.sent += 1
        frame.number = self.sent
        self._frames.append(frame)
        self.bytes += frame.total

    def ack(self, count: int) -> bool:
        """Drops the messages numbered up to ``count``; returns whether any was.

        Raises:
            ProtocolError: ``count`` exceeds the messages sent.
        """
        if count > self.sent:
            raise ProtocolError(
                f"Invalid ack: the server acknowledged {count} messages, "
                f"this client sent {self.sent}"
            )
        if count <= self.acked:
            return False  # (acks are cumulative: an old one says nothing new)
        self.acked = count
        frames = self._frames
        while frames and frames[0].number <= count:
            frame = frames.popleft()
            frame.acked = True
            self.bytes -= frame.total
        return True

    def resume(self, received: int) -> List[OutFrame]:
        """Applies a resume welcome's ``received``: drops what it covers and
        returns the rest, rewound, to be written again in order.

        Raises:
            ProtocolError: ``received`` exceeds the messages sent, or is below
                a count the server already acknowledged (those are gone).
        """
        if received > self.sent:
            raise ProtocolError(
                f"Invalid welcome: received {received} exceeds the {self.sent} messages "
                "this client sent"
            )
        if received < self.acked:
            raise ProtocolError(
                f"Invalid welcome: received {received} is below the {self.acked} messages "
                "the server already acknowledged"
            )
        self.ack(received)
        frames = list(self._frames)
        for frame in frames:
            frame.rewind()
        return frames

    def frames(self) -> List[OutFrame]:
        """The retained frames, oldest first."""
        return list(self._frames)
