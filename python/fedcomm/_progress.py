"""Progress reports: the :class:`Progress` event and the ``on_progress``
callback type; and :func:`call_back`, which calls any callback of the user
without letting it break the connection."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

__all__ = ["Progress", "ProgressCallback", "call_back"]

_log = logging.getLogger("fedcomm")


@dataclass(frozen=True)
class Progress:
    """How far a frame has been sent or received.

    Reported as bytes go: for a large body at least every 4 MiB (so a 300 MB
    upload reports about 75 times), and always once with ``done == total`` at
    the end. Counts are body bytes (the 4-byte frame header is not counted).

    Attributes:
        direction: ``"send"`` or ``"receive"``.
        done: Body bytes moved so far (strictly increasing, ends at ``total``).
        total: The size of the frame body.
    """

    direction: Literal["send", "receive"]
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 for an empty body)."""
        return self.done / self.total if self.total else 1.0


#: The type of an ``on_progress`` callback.
ProgressCallback = Callable[[Progress], None]


def call_back(callback: Optional[Callable[[Any], None]], argument: Any, what: str) -> None:
    """Calls ``callback`` (named ``what`` in the log) with ``argument``, if any."""
    if callback is None:
        return
    try:
        callback(argument)
    except Exception:  # a broken callback must not break the connection
        _log.exception("fedcomm: the %s callback raised; ignored", what)
