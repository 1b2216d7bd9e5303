"""The inbox: the values received and not yet taken with ``recv()``, and the
number of the last one taken (what a reply answers by default)."""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Tuple

__all__ = ["QUEUE_LIMIT_BYTES", "QUEUE_LIMIT_MESSAGES", "Inbox"]

#: Reading stops while more than this many body bytes wait in the inbox ...
QUEUE_LIMIT_BYTES = 64 * 1024 * 1024
#: ... or more than this many messages, so that TCP slows the server down.
QUEUE_LIMIT_MESSAGES = 65_536


class Inbox:
    """The received values not yet taken, oldest first."""

    def __init__(self) -> None:
        # (value, body size, message number)
        self._items: Deque[Tuple[Any, int, int]] = deque()
        #: The body bytes of the values waiting.
        self.queued_bytes = 0
        #: The number of the last value taken (0: none yet).
        self.last_taken = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """Whether reading should pause until values are taken."""
        return self.queued_bytes > QUEUE_LIMIT_BYTES or len(self._items) > QUEUE_LIMIT_MESSAGES

    def add(self, value: Any, size: int, number: int) -> None:
        """Queues message ``number``, of ``size`` body bytes."""
        self._items.append((value, size, number))
        self.queued_bytes += size

    def take(self) -> Tuple[Any, bool]:
        """Takes the oldest value (there must be one); returns it and whether
        the inbox stopped being full (reading may go on)."""
        was_full = self.full
        value, size, number = self._items.popleft()
        self.queued_bytes -= size
        self.last_taken = number
        return value, was_full and not self.full

    def clear(self) -> None:
        """Drops every value waiting."""
        self._items.clear()
        self.queued_bytes = 0
