"""Outgoing frames: :class:`_OutFrame`, a frame queued for the I/O thread and
written in chunks that stop at every 4 MiB of the body (for progress reports),
and :func:`_control`, which makes one for a control frame (ping, pong)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

from ._codec import Part
from ._framing import HEADER_BYTES, PROGRESS_CHUNK_BYTES, control_frame
from ._progress import Progress


class _OutFrame:
    """A frame on its way out, written by the I/O thread in chunks that stop at
    every 4 MiB boundary of the body (so progress is reported there)."""

    __slots__ = (
        "parts", "size", "total", "sent", "index", "offset",
        "app", "report", "started", "done", "error", "events", "ping",
    )

    def __init__(
        self, parts: Sequence[Union[bytes, Part]], size: int, app: bool, report: bool
    ) -> None:
        self.parts = [memoryview(part).cast("B") for part in parts if len(part)]
        self.size = size
        self.total = HEADER_BYTES + size
        self.sent = 0
        self.index = 0
        self.offset = 0
        self.app = app
        self.report = report
        self.started = False
        self.done = False
        self.error: Optional[BaseException] = None
        self.events: List[Progress] = []
        self.ping: Optional[bytes] = None

    def chunk(self) -> memoryview:
        part = self.parts[self.index]
        body_pos = max(self.sent - HEADER_BYTES, 0)
        boundary = HEADER_BYTES + (body_pos // PROGRESS_CHUNK_BYTES + 1) * PROGRESS_CHUNK_BYTES
        length = min(len(part) - self.offset, boundary - self.sent)
        return part[self.offset : self.offset + length]

    def advance(self, n: int) -> Optional[Progress]:
        """Records ``n`` bytes written; returns the progress event due, if any."""
        self.sent += n
        self.offset += n
        while self.index < len(self.parts) and self.offset >= len(self.parts[self.index]):
            self.index += 1
            self.offset = 0
        if self.report:
            done = self.sent - HEADER_BYTES
            if done > 0 and (done % PROGRESS_CHUNK_BYTES == 0 or self.sent == self.total):
                return Progress("send", done, self.size)
        return None


def _control(kind: int, payload: bytes) -> _OutFrame:
    frame = control_frame(kind, payload)
    return _OutFrame([frame], len(frame) - HEADER_BYTES, app=False, report=False)
