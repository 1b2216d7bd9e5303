"""Sending, in the caller's thread: :class:`Sender` builds the frame of a
plain message or of a reply (``c1 05`` + the request number as a u48
big-endian + the value), or the frames of a long message (PROTOCOL.md §8.8)
when the value does not fit one frame and the server takes long messages,
hands it to the I/O thread and waits until the kernel has taken all of it
(a long message: until the server acknowledged it), reporting progress on
the way."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

from ._io import IOThread
from ._options import Settings, fmt_seconds
from ._progress import ProgressCallback, call_back
from ._protocol.outframe import LongSend, MessageFrame, OutFrame, message_frame
from ._shared import Shared
from .errors import SendTimeoutError


class Sender:
    """Sends application messages on the session.

    Args:
        settings: The client's settings (``max_frame_bytes``, ``on_progress``).
        shared: The session the messages join.
        io: The I/O thread that writes them.
    """

    def __init__(self, settings: Settings, shared: Shared, io: IOThread) -> None:
        self._settings = settings
        self._shared = shared
        self._io = io

    def send(
        self,
        value: Any,
        reply: bool,
        to: Optional[int],
        timeout: Optional[float],
        on_progress: Optional[ProgressCallback],
    ) -> None:
        """Sends ``value``: with ``reply``, as the answer to the server's
        message ``to`` (default: the last one taken). See
        :meth:`fedcomm.Client.send` and :meth:`fedcomm.Client.reply`."""
        self._io.check_caller("reply" if reply else "send")
        session = self._shared.session
        session.check_usable()
        request = session.reply_target(to) if reply else 0
        welcome = session.welcome
        assert welcome is not None
        long = LongSend(welcome.max_message_bytes, self._settings.max_message_bytes)
        encoded = message_frame(
            value, request, welcome.max_frame_bytes, self._settings.max_frame_bytes, long
        )
        self._submit(encoded, timeout, on_progress)

    def _submit(
        self,
        encoded: MessageFrame,
        timeout: Optional[float],
        on_progress: Optional[ProgressCallback],
    ) -> None:
        """Queues the frame and waits until the kernel has taken all of it
        (a long message: until the server acknowledged it, within ``timeout``)."""
        callback = on_progress if on_progress is not None else self._settings.on_progress
        frame = encoded.out_frame(report=callback is not None, guard=threading.Lock())
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._shared.cond:
            self._shared.session.submit(frame)
        self._io.wake()
        try:
            self._wait(frame, deadline, timeout, callback)
        except BaseException:
            with self._shared.cond:
                self._shared.session.withdraw(frame)
            if frame.started:
                frame.own()  # it stays in the session: the caller may now change its arrays
            raise
        if frame.long:
            self._wait_ack(frame, deadline)
        if not frame.acked:
            frame.own()  # retained until acknowledged: the caller may now change its arrays

    def _wait_ack(self, frame: OutFrame, deadline: Optional[float]) -> None:
        """Waits (until ``deadline``) for the server to acknowledge a long
        message written whole: its data then need not be copied for a resume.
        The I/O thread asks for the ack with a ping (a server may delay the
        ack of a small message by up to 2 s, but writes it before the pong,
        PROTOCOL.md §8.3)."""
        cond = self._shared.cond
        session = self._shared.session
        with cond:
            session.ack_waits += 1
            self._io.wake()
            try:
                while not frame.acked and not session.over:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    cond.wait(remaining)
            finally:
                session.ack_waits -= 1

    def _wait(
        self,
        frame: OutFrame,
        deadline: Optional[float],
        timeout: Optional[float],
        callback: Optional[ProgressCallback],
    ) -> None:
        """Waits until ``frame`` is written whole, reporting its progress."""
        cond = self._shared.cond
        while True:
            with cond:
                while not (frame.done or frame.error is not None or frame.events):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise self._timed_out(frame, timeout)
                    cond.wait(remaining)
                events, frame.events = frame.events, []
                done, error = frame.done, frame.error
            for event in events:
                call_back(callback, event, "on_progress")
            if done:
                return
            if error is not None:
                raise error

    def _timed_out(self, frame: OutFrame, timeout: Optional[float]) -> BaseException:
        """The error of a send that ran out of time (called with the lock held)."""
        seconds = fmt_seconds(timeout)
        if frame.started:
            return SendTimeoutError(
                f"Send timed out after {seconds} s: the message is partly written: "
                "queued, not acknowledged yet: it will be delivered, do not send it again",
                queued=True,
            )
        session = self._shared.session
        session.withdraw(frame)
        if session.resuming:
            why = "the connection dropped and the client is resuming the session"
        elif session.retention.bytes >= session.retain_bytes:
            why = (
                f"{session.retention.bytes} bytes of earlier messages await the server's "
                f"acknowledgement (retain_bytes {session.retain_bytes})"
            )
        else:
            why = "the server is not reading"
        return SendTimeoutError(
            f"Send timed out after {seconds} s: {why}: not queued: nothing was sent, "
            "send it again",
            queued=False,
        )
