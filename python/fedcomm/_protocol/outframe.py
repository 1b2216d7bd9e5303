"""The frame encoder: :class:`OutFrame`, a frame on its way out, written in
chunks that stop at every 4 MiB of the body (for progress reports);
:func:`message_frame`, the frame of an application value or a reply, or the
frames of a long message; and :func:`control`, the frame of a control message
(ping, pong, ack, close).

An application frame is numbered when the I/O thread starts writing it, and
kept (retained) until the server acknowledges it: after a resume it is written
again from the start (:meth:`OutFrame.rewind`). Its large parts may be views
of the caller's memory; :meth:`OutFrame.own` copies them once the caller no
longer waits for the frame, so the caller may change its arrays.

A long message (PROTOCOL.md §8.8) is one :class:`OutFrame` too, one
application message: its header frame (``c1 07`` + u48 request + the
skeleton) and its part frames (``c1 08`` + six zero bytes + data) back to
back, numbered, retained and written again whole. Its size (and its
progress) counts the header body and the data, not the frames' headers and
the parts' prefixes.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .._progress import Progress
from ..errors import FrameTooLargeError, MessageTooLargeError
from .codec import REF_MIN_BYTES, HugeBinaryError, Part, encode_parts, encode_skeleton
from .framing import (
    CONTROL,
    HEADER,
    HEADER_BYTES,
    LONG,
    LONG_PREFIX_BYTES,
    PART,
    PROGRESS_CHUNK_BYTES,
    REPLY,
    REPLY_PREFIX_BYTES,
    control_frame,
)

__all__ = ["LONG_PART_BYTES", "LongSend", "MessageFrame", "OutFrame", "control", "message_frame"]

#: The most data in a part of a long message (less when the frame limit is smaller).
LONG_PART_BYTES = 64 * 1024 * 1024


class OutFrame:
    """A frame on its way out, written in chunks that stop at every 4 MiB
    boundary of the body (so progress is reported there).

    The writer holds ``guard`` around :meth:`chunk`, writing it and
    :meth:`advance`; :meth:`own` and :meth:`rewind` hold it too, so that the
    caller's memory is never changed under a write (``guard``: a lock when
    another thread may call :meth:`own`).
    """

    __slots__ = (
        "parts", "skips", "borrowed", "size", "total", "sent", "counted", "index", "offset",
        "app", "report", "reported", "number", "started", "done", "acked", "error", "events",
        "ping", "guard", "long",
    )

    def __init__(
        self,
        parts: Sequence[Union[bytes, Part]],
        size: int,
        app: bool,
        report: bool,
        guard: ContextManager[Any] = nullcontext(),
        skips: Optional[Sequence[int]] = None,
        long: bool = False,
    ) -> None:
        if skips is None:
            skips = [HEADER_BYTES] + [0] * (len(parts) - 1)  # one frame: its header
        kept = [(part, skip) for part, skip in zip(parts, skips) if len(part)]
        self.parts = [memoryview(part).cast("B") for part, _ in kept]
        #: How many leading bytes of each part are not counted in ``size``
        #: (frame headers, the prefixes of a long message's parts).
        self.skips = [skip for _, skip in kept]
        #: Indexes of the parts that view memory the caller may change.
        self.borrowed: Tuple[int, ...] = tuple(
            i for i, (part, _) in enumerate(kept)
            if isinstance(part, memoryview) and not isinstance(part.obj, bytes)
        )
        #: The message's size: body bytes (a long message: header body and data).
        self.size = size
        #: Bytes on the wire.
        self.total = sum(len(part) for part in self.parts)
        self.sent = 0
        #: Bytes of ``size`` written (for progress).
        self.counted = 0
        self.index = 0
        self.offset = 0
        #: A long message (the sender waits for its ack rather than copying it).
        self.long = long
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
        """The next bytes to write (call with ``guard`` held): the rest of the
        current part, up to the next 4 MiB boundary of the counted bytes."""
        part = self.parts[self.index]
        counted_from = max(self.offset, self.skips[self.index])
        boundary = (self.counted // PROGRESS_CHUNK_BYTES + 1) * PROGRESS_CHUNK_BYTES
        end = min(len(part), counted_from + boundary - self.counted)
        return part[self.offset : end]

    def advance(self, n: int) -> Optional[Progress]:
        """Records ``n`` bytes written (call with ``guard`` held); returns the
        progress event due, if any."""
        counted = max(0, self.offset + n - max(self.offset, self.skips[self.index]))
        self.sent += n
        self.counted += counted
        self.offset += n
        while self.index < len(self.parts) and self.offset >= len(self.parts[self.index]):
            self.index += 1
            self.offset = 0
        if self.report and counted:
            done = self.counted
            if done > self.reported and (done % PROGRESS_CHUNK_BYTES == 0 or done == self.size):
                self.reported = done
                return Progress("send", done, self.size)
        return None

    def rewind(self) -> None:
        """Starts the frame over, to write it again whole on a new connection."""
        with self.guard:
            self.sent = self.counted = self.index = self.offset = 0

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


@dataclass(frozen=True)
class LongSend:
    """Whether a value too large for one frame may go as a long message
    (PROTOCOL.md §8.8), and how it is cut.

    Attributes:
        server_max_message_bytes: The welcome's ``maxMessageBytes`` (0: the
            server takes no long messages).
        own_max_message_bytes: This client's ``max_message_bytes``.
        ref_min_bytes: Byte strings and array data of this size or more go
            out of band.
        part_bytes: Data bytes per part (``None``: the frame limit less the
            8-byte prefix, at most 64 MiB).
    """

    server_max_message_bytes: int
    own_max_message_bytes: int
    ref_min_bytes: int = REF_MIN_BYTES
    part_bytes: Optional[int] = None

    @property
    def limit(self) -> int:
        """The largest long message that may be sent (0: none)."""
        return min(self.server_max_message_bytes, self.own_max_message_bytes)


class MessageFrame(NamedTuple):
    """An encoded application message, for an :class:`OutFrame`."""

    #: The parts to write, in order (the frame headers written).
    parts: List[Union[bytes, Part]]
    #: The message's size (a plain frame or reply: its body).
    size: int
    #: Leading bytes of each part not counted in ``size``.
    skips: List[int]
    #: Whether it is a long message.
    long: bool = False

    def out_frame(self, report: bool, guard: ContextManager[Any] = nullcontext()) -> OutFrame:
        """The application :class:`OutFrame` of this message."""
        return OutFrame(self.parts, self.size, app=True, report=report, guard=guard,
                        skips=self.skips, long=self.long)


def message_frame(
    value: Any,
    request: int,
    server_limit: int,
    own_limit: int,
    long: Optional[LongSend] = None,
) -> MessageFrame:
    """The frame of ``value``: a plain message, or with ``request`` > 0 a
    reply to the server's message of that number. When that frame would
    exceed the frame limit (the smaller of ``server_limit``, the server's
    ``maxFrameBytes``, and ``own_limit``, ``max_frame_bytes``) or ``value``
    holds a binary of 4 GiB or more, and ``long`` allows it, the frames of a
    long message instead (the request in its header).

    Raises:
        FrameTooLargeError: The body exceeds the frame limit and no long
            message may be sent (or its header alone exceeds the limit).
        MessageTooLargeError: The long message exceeds ``long.limit``.
        TypeError, ValueError, OverflowError: ``value`` cannot be encoded
            (``ValueError`` for a binary of 4 GiB or more without long messages).
    """
    limit = min(server_limit, own_limit)
    what = "the server's maxFrameBytes" if limit == server_limit else "max_frame_bytes"
    try:
        parts, size = encode_parts(value)
    except HugeBinaryError:
        if long is None or long.limit == 0:
            raise
        return _long_frames(value, request, limit, what, long)
    if request:
        size += REPLY_PREFIX_BYTES
    if size > limit:
        if long is None or long.limit == 0:
            raise FrameTooLargeError(size, limit, what)
        return _long_frames(value, request, limit, what, long)
    if request:
        # The 8-byte prefix keeps array data 8-byte aligned from the start of the value.
        first = bytearray(HEADER.pack(size))
        first += bytes((CONTROL, REPLY)) + request.to_bytes(6, "big")
        first += parts[0][HEADER_BYTES:]
        parts[0] = first
    else:
        HEADER.pack_into(parts[0], 0, size)
    return MessageFrame(list(parts), size, [HEADER_BYTES] + [0] * (len(parts) - 1))


def _long_frames(value: Any, request: int, limit: int, what: str, long: LongSend) -> MessageFrame:
    """The header and part frames of ``value`` as a long message (PROTOCOL.md §8.8)."""
    parts, header_size, refs = encode_skeleton(value, LONG_PREFIX_BYTES, long.ref_min_bytes)
    if header_size > limit:
        raise FrameTooLargeError(header_size, limit, what + " (a long message's header)")
    size = header_size + sum(ref.nbytes for ref in refs)
    if size > long.limit:
        which = (
            "the server's maxMessageBytes"
            if long.limit == long.server_max_message_bytes
            else "max_message_bytes"
        )
        raise MessageTooLargeError(size, long.limit, which)
    first = parts[0]
    assert isinstance(first, bytearray)
    HEADER.pack_into(first, 0, header_size)
    first[HEADER_BYTES : HEADER_BYTES + LONG_PREFIX_BYTES] = bytes((CONTROL, LONG)) + request.to_bytes(6, "big")
    out: List[Union[bytes, Part]] = list(parts)
    skips = [HEADER_BYTES] + [0] * (len(parts) - 1)
    step = min(long.part_bytes or LONG_PART_BYTES, limit - LONG_PREFIX_BYTES)
    part_prefix = bytes((CONTROL, PART)) + bytes(LONG_PREFIX_BYTES - 2)
    for ref in refs:
        for start in range(0, ref.nbytes, step):
            data = ref[start : start + step]
            out.append(HEADER.pack(LONG_PREFIX_BYTES + data.nbytes) + part_prefix)
            skips.append(HEADER_BYTES + LONG_PREFIX_BYTES)
            out.append(data)
            skips.append(0)
    return MessageFrame(out, size, skips, long=True)
