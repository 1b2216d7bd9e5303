"""Sending, in the caller's thread: :class:`_Sender`, a mixin of
:class:`~fedcomm.Client`, builds the frame of a plain message or of a reply
(``c1 05`` + the request number as a u48 big-endian + the value), hands it to
the I/O thread and waits until the kernel has taken all of it, reporting
progress on the way."""

from __future__ import annotations

import time
from typing import Any, List, Optional, Tuple

from ._codec import Part, encode_parts
from ._framing import CONTROL, HEADER, HEADER_BYTES, MAX_REQUEST, REPLY, REPLY_PREFIX_BYTES
from ._io import _IOLoop
from ._options import _fmt
from ._outframe import _OutFrame
from ._progress import ProgressCallback, _call_progress
from .errors import FrameTooLargeError, SendTimeoutError


class _Sender(_IOLoop):
    """The sending half of :class:`~fedcomm.Client`."""

    def _encode(self, value: Any, request: int) -> Tuple[List[Part], int]:
        """The parts of the frame (header written) and the body size of
        ``value``: a plain message, or with ``request`` > 0 a reply to it."""
        parts, size = encode_parts(value)
        if request:
            size += REPLY_PREFIX_BYTES
        limit = min(self.server_max_frame_bytes, self.max_frame_bytes)
        if size > limit:
            what = (
                "the server's maxFrameBytes"
                if limit == self.server_max_frame_bytes
                else "max_frame_bytes"
            )
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

    def _reply_target(self, to: Optional[int]) -> int:
        """The request number a reply answers (``to``, or the last message taken)."""
        if to is None:
            if self._last_taken == 0:
                raise ValueError(
                    "Nothing to reply to: no message was taken with recv() yet "
                    "(pass to=<message number>)"
                )
            return self._last_taken
        if isinstance(to, bool) or not isinstance(to, int):
            raise TypeError(f"Invalid to: expected an int, got {type(to).__name__}")
        received = self._acks.received
        if not 1 <= to <= min(received, MAX_REQUEST):
            raise ValueError(
                f"Invalid to: {to!r} is not the number of a message received from the server "
                + (f"(1 to {received})" if received else "(none received yet)")
            )
        return to

    def _submit(
        self,
        parts: List[Part],
        size: int,
        timeout: Optional[float],
        on_progress: Optional[ProgressCallback],
    ) -> None:
        """Queues the frame and waits until the kernel has taken all of it."""
        callback = on_progress if on_progress is not None else self._on_progress
        frame = _OutFrame(parts, size, app=True, report=callback is not None)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._check_usable()
            self._outbox.append(frame)
        self._wake()
        try:
            while True:
                with self._cond:
                    while not (frame.done or frame.error is not None or frame.events):
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise self._send_timed_out(frame, timeout)
                        self._cond.wait(remaining)
                    events, frame.events = frame.events, []
                    done, error = frame.done, frame.error
                if callback is not None:
                    for event in events:
                        _call_progress(callback, event)
                if done:
                    break
                if error is not None:
                    raise error
        except BaseException:
            with self._cond:
                if not frame.started and frame in self._outbox:
                    self._outbox.remove(frame)
            if frame.started:
                frame.own()  # it stays in the session: the caller may now change its arrays
            raise
        if not frame.acked:
            frame.own()  # retained until acknowledged: the caller may now change its arrays

    def _send_timed_out(self, frame: _OutFrame, timeout: Optional[float]) -> BaseException:
        """The error of a send that ran out of time (called with the lock held)."""
        if frame.started:
            return SendTimeoutError(
                f"Send timed out after {_fmt(timeout)} s: the message is partly written: "
                "queued, not acknowledged yet: it will be delivered, do not send it again",
                queued=True,
            )
        self._outbox.remove(frame)
        if self._resuming:
            why = "the connection dropped and the client is resuming the session"
        elif self._retention.bytes >= self.retain_bytes:
            why = (
                f"{self._retention.bytes} bytes of earlier messages await the server's "
                f"acknowledgement (retain_bytes {self.retain_bytes})"
            )
        else:
            why = "the server is not reading"
        return SendTimeoutError(
            f"Send timed out after {_fmt(timeout)} s: {why}: not queued: nothing was sent, "
            "send it again",
            queued=False,
        )
