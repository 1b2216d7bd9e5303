"""The frame encoder: :class:`OutFrame`, a frame on its way out, written in
chunks that stop at every 4 MiB of the body (for progress reports);
:func:`message_frame`, the frame of an application value or a reply; and
:func:`control`, the frame of a control message (ping, pong, ack, close).

An application frame is numbered when the I/O thread starts writing it, and
kept (retained) until the server acknowledges it: after a resume it is written
again from the start (:meth:`OutFrame.rewind`). Its large parts may be views
of the caller's memory; :meth:`OutFrame.own` copies them once the caller no
longer waits for the frame, so the caller may change its arrays.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, ContextManager, List, Optional, Sequence, Tuple, Union

import numpy as np

from .._progress import Progress
from ..errors import FrameTooLargeError
from .codec import Part, encode_parts
from .framing import (
    CONTROL,
    HEADER,
    HEADER_BYTES,
    PROGRESS_CHUNK_BYTES,
    REPLY,
    REPLY_PREFIX_BYTES,
    control_frame,
)

__all__ = ["OutFrame", "control", "message_frame"]


class OutFrame:
    """A frame on its way out, written in chunks that stop at every 4 MiB
    boundary of the body (so progress is reported there).

    The writer holds ``guard`` around :meth:`chunk`, writing it and
    :meth:`advance`; :meth:`own` and :meth:`rewind` hold it too, so that the
    caller's memory is never changed under a write (``guard``: a lock when
    another thread may call :meth:`own`).
    """

    __slots__ = (
        "parts", "borrowed", "size", "total", "sent", "index", "offset", "app", "report",
        "reported", "number", "started", "done", "acked", "error", "events", "ping",
        "guard",
    )

    def __init__(
        self,
        parts: Sequence[Union[bytes, Part]],
        size: int,
        app: bool,
        report: bool,
        guard: ContextManager[Any] = nullcontext(),
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
        self.guard = guard

    def chunk(self) -> memoryview:
        """The next bytes to write (call with ``guard`` held)."""
        part = self.parts[self.index]
        body_pos = max(self.sent - HEADER_BYTES, 0)
        boundary = HEADER_BYTES + (body_pos // PROGRESS_CHUNK_BYTES + 1) * PROGRESS_CHUNK_BYTES
        length = min(len(part) - self.offset, boundary - self.sent)
        return part[self.offset : self.offset + length]

    def advance(self, n: int) -> Optional[Progress]:
        """Records ``n`` bytes written (call with ``guard`` held); returns the
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
        with self.guard:
            self.sent = self.index = self.offset = 0

    def own(self) -> None:
        """Replaces the parts that are views of the caller's memory with
        copies, so that the caller may change that memory while the frame is
        retained. (Views of ``bytes`` are kept: they cannot change.)"""
        with self.guard:
            for i in self.borrowed:
                copy = np.empty(len(self.parts[i]), dtype=np.uint8)
                copy[:] = np.frombuffer(self.parts[i], dtype=np.uint8)  # (without the GIL)
                self.parts[i] = copy.data.cast("B")
            self.borrowed = ()


def control(kind: int, payload: bytes) -> OutFrame:
    """The frame of a control message of ``kind`` carrying ``payload``."""
    frame = control_frame(kind, payload)
    return OutFrame([frame], len(frame) - HEADER_BYTES, app=False, report=False)


def message_frame(
    value: Any, request: int, server_limit: int, own_limit: int
) -> Tuple[List[Part], int]:
    """The parts of the frame (header written) and the body size of
    ``value``: a plain message, or with ``request`` > 0 a reply to the
    server's message of that number.

    Raises:
        FrameTooLargeError: The body exceeds ``server_limit`` (the server's
            ``maxFrameBytes``) or ``own_limit`` (``max_frame_bytes``).
        TypeError, ValueError, OverflowError: ``value`` cannot be encoded.
    """
    parts, size = encode_parts(value)
    if request:
        size += REPLY_PREFIX_BYTES
    limit = min(server_limit, own_limit)
    if size > limit:
        what = "the server's maxFrameBytes" if limit == server_limit else "max_frame_bytes"
        raise FrameTooLargeError(size, limit, what)
    if request:
        # The 8-byte prefix keeps array data 8-byte aligned from the start of the value.
        first = bytearray(HEADER.pack(size))
        first += bytes((CONTROL, REPLY)) + request.to_bytes(6, "big")
        first += parts[0][HEADER_BYTES:]
        parts[0] = first
    else:
        HEADER.pack_into(parts[0], 0, size)
    return parts, size
