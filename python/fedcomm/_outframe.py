"""Outgoing frames: :class:`_OutFrame`, a frame queued for the I/O thread and
written in chunks that stop at every 4 MiB of the body (for progress reports),
and :func:`_control`, which makes one for a control frame (ping, pong, ack,
close).

An application frame is numbered when the I/O thread starts writing it, and
kept (retained) until the server acknowledges it: after a resume it is written
again from the start (:meth:`_OutFrame.rewind`). Its large parts may be views
of the caller's memory; :meth:`_OutFrame.own` copies them once the caller no
longer waits for the frame, so the caller may change its arrays.
"""

from __future__ import annotations

import threading
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from ._codec import Part
from ._framing import HEADER_BYTES, PROGRESS_CHUNK_BYTES, control_frame
from ._progress import Progress


class _OutFrame:
    """A frame on its way out, written by the I/O thread in chunks that stop at
    every 4 MiB boundary of the body (so progress is reported there).

    The write cursor (``sent``, ``index``, ``offset``) and ``parts`` are
    changed only while holding ``lock``.
    """

    __slots__ = (
        "parts", "borrowed", "size", "total", "sent", "index", "offset", "app", "report",
        "reported", "number", "started", "done", "acked", "error", "events", "ping",
        "lock",
    )

    def __init__(
        self, parts: Sequence[Union[bytes, Part]], size: int, app: bool, report: bool
    ) -> None:
        kept = [part for part in parts if len(part)]
        self.parts = [memoryview(part).cast("B") for part in kept]
        #: Indexes of the parts that view memory the caller may change.
        self.borrowed: Tuple[int, ...] = tuple(
            i for i, part in enumerate(kept)
            if isinstance(part, memoryview) and not isinstance(part.obj, bytes)
        )
        self.size = size
        self.total = HEADER_BYTES + size
        self.sent = 0
        self.index = 0
        self.offset = 0
        self.app = app
        self.report = report
        #: Body bytes already reported (a frame written again reports no more).
        self.reported = 0
        #: The application message number (0: not numbered yet).
        self.number = 0
        #: Taken by the I/O thread (an application frame: numbered and retained).
        self.started = False
        #: Written whole once: the sender may return.
        self.done = False
        #: Acknowledged by the server (no longer retained).
        self.acked = False
        self.error: Optional[BaseException] = None
        self.events: List[Progress] = []
        self.ping: Optional[bytes] = None
        self.lock = threading.Lock()

    def chunk(self) -> memoryview:
        """The next bytes to write (call with ``lock`` held)."""
        part = self.parts[self.index]
        body_pos = max(self.sent - HEADER_BYTES, 0)
        boundary = HEADER_BYTES + (body_pos // PROGRESS_CHUNK_BYTES + 1) * PROGRESS_CHUNK_BYTES
        length = min(len(part) - self.offset, boundary - self.sent)
        return part[self.offset : self.offset + length]

    def advance(self, n: int) -> Optional[Progress]:
        """Records ``n`` bytes written (call with ``lock`` held); returns the
        progress event due, if any."""
        self.sent += n
        self.offset += n
        while self.index < len(self.parts) and self.offset >= len(self.parts[self.index]):
            self.index += 1
            self.offset = 0
        if self.report:
            done = self.sent - HEADER_BYTES
            if done > self.reported and (
                done % PROGRESS_CHUNK_BYTES == 0 or self.sent == self.total
            ):
                self.reported = done
                return Progress("send", done, self.size)
        return None

    def rewind(self) -> None:
        """Starts the frame over, to write it again whole on a new connection."""
        with self.lock:
            self.sent = self.index = self.offset = 0

    def own(self) -> None:
        """Replaces the parts that are views of the caller's memory with
        copies, so that the caller may change that memory while the frame is
        retained. (Views of ``bytes`` are kept: they cannot change.)"""
        with self.lock:
            for i in self.borrowed:
                copy = np.empty(len(self.parts[i]), dtype=np.uint8)
                copy[:] = np.frombuffer(self.parts[i], dtype=np.uint8)  # (without the GIL)
                self.parts[i] = copy.data.cast("B")
            self.borrowed = ()


def _control(kind: int, payload: bytes) -> _OutFrame:
    frame = control_frame(kind, payload)
    return _OutFrame([frame], len(frame) - HEADER_BYTES, app=False, report=False)
