"""The background I/O thread, which alone uses the socket once connected.

:class:`_IOLoop`, a mixin of :class:`~fedcomm.Client`, holds its loop:
:meth:`_IOLoop._run` serves one connection after another for the session
(:meth:`_IOLoop._serve`: it reads frames into the queue, writes queued frames
in chunks, answers pings, writes the acks it owes, sends heartbeat pings and
detects a silent server; after a drop :meth:`_resume` reconnects), and
finishes a close (it waits for the acks, then writes ``c1 06``).
"""

from __future__ import annotations

import logging
import secrets
import selectors
import socket
import ssl
import threading
import time
from typing import Optional, Union

from ._framing import CLOSE, PING
from ._outframe import _OutFrame, _control
from ._receive import _Receiver
from ._resume import _Resumer
from .errors import FedcommError, PeerDisconnectedError

_log = logging.getLogger("fedcomm")

#: Pings awaiting their pong that are remembered (for the RTT).
_PINGS_KEPT = 16


class _IOLoop(_Receiver, _Resumer):
    """The I/O thread of :class:`~fedcomm.Client` (:meth:`_run`)."""

    # -- starting, and the checks of the caller threads -------------------------

    def _start_thread(self) -> None:
        """Starts the I/O thread, which owns the socket from then on."""
        self._selector.close()  # the I/O thread has its own
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(
            target=self._run, name=f"fedcomm-io-{self.host}:{self.port}", daemon=True
        )
        self._thread.start()

    def _check_usable(self) -> None:
        if self._closed:
            raise PeerDisconnectedError("Connection closed: close() was called")
        if self._error is not None:
            raise self._error

    def _check_not_io_thread(self, what: str) -> None:
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError(
                f"Cannot call {what}() from a callback of the client: it runs "
                "in the I/O thread, which would wait for itself"
            )

    # -- the I/O thread -------------------------------------------------------

    def _run(self) -> None:
        graceful = False
        try:
            while True:
                outcome = self._serve()
                if outcome != "dropped":
                    graceful = outcome == "closed"
                    break
                self._close_socket(graceful=False)
                if not self._resume():
                    break
        except BaseException as error:  # a bug: fail the session rather than hang callers
            _log.exception("fedcomm: the I/O thread failed")
            self._fail(FedcommError(f"I/O thread failed: {error!r}"))
        finally:
            with self._cond:
                self._resuming = False
                self._fail_locked(
                    PeerDisconnectedError(
                        "Connection closed: close() was called"
                        if self._closed
                        else "Connection closed"
                    )
                )
            self._close_socket(graceful)
            for wake in (self._wake_w, self._wake_r):
                if wake is not None:
                    try:
                        wake.close()
                    except OSError:
                        pass

    def _serve(self) -> str:
        """Serves the current connection until it ends. Returns ``"dropped"``
        (the session may resume), ``"closed"`` (close() finished: ``c1 06``
        written) or ``"ended"`` (the session is over, or close() gave up)."""
        sel = selectors.DefaultSelector()
        try:
            return self._serve_with(sel)
        finally:
            sel.close()

    def _serve_with(self, sel: selectors.BaseSelector) -> str:
        assert self._wake_r is not None
        sel.register(self._wake_r, selectors.EVENT_READ)
        sock = self._sock
        registered = 0
        read_wait: Optional[int] = None  # None: try reading now; else the event awaited
        write_wait: Optional[int] = None
        was_paused = False
        if not self._drain_frames():
            return self._outcome()
        while True:
            now = time.monotonic()
            with self._cond:
                if self._error is not None or self._drop_error is not None:
                    return self._outcome()
                if self._closed:
                    bye, deadline = self._bye, self._close_deadline
                    if deadline is not None and now >= deadline and not (
                        bye is not None and bye.started
                    ):
                        return "ended"  # acks or writes took too long: no c1 06
                paused = self._paused()
            if paused:
                self._alive_hint = now  # not reading: the silence is ours
            elif was_paused:
                read_wait = None
            was_paused = paused

            read_now = not paused and read_wait is None
            if read_now:
                read_wait = self._read_burst()
                if read_wait is False:  # failed, dropped or ended
                    return self._outcome()
            current = self._next_frame()  # (pongs and acks queued by the read included)
            while current is not None and write_wait is None:
                write_wait = self._write_chunk(current)
                if write_wait is False:
                    return self._outcome()
                if current.sent == current.total or current.error is not None:
                    with self._cond:
                        self._current = None
                    if current is self._bye:
                        return "closed"
                    current = self._next_frame()

            # Timers: acks owed, heartbeat ping, idle timeout, close deadline.
            now = time.monotonic()
            # (An ack owed waits for the frame being written: no timer meanwhile.)
            wake_at = self._acks.deadline if current is None else None
            if self._close_deadline is not None:
                wake_at = _earliest(wake_at, self._close_deadline)
            if self.heartbeat is not None and current is None:
                ping_at = self._last_write + self.heartbeat
                if now >= ping_at:
                    with self._cond:
                        self._control.append(self._new_ping())
                    continue
                wake_at = _earliest(wake_at, ping_at)
            if self.idle_timeout is not None:
                silent_since = max(self._last_heard, self._alive_hint)
                dead_at = silent_since + self.idle_timeout
                if now >= dead_at and not paused and not read_now:
                    # Look at the socket once more first: after a stall of this
                    # process (the GIL held elsewhere, a suspended machine)
                    # the answer may be waiting there.
                    read_wait = None
                    continue
                if now >= dead_at and not paused:
                    self._lost(
                        PeerDisconnectedError(
                            f"Server silent for {self.idle_timeout:g} s: nothing received, "
                            "not even a pong or a heartbeat; the server or the network "
                            f"is down ({self.host}:{self.port})"
                        )
                    )
                    return self._outcome()
                wake_at = _earliest(wake_at, dead_at)

            # Wait for the socket, a wake-up or the next timer.
            events = 0
            if not paused and read_wait is not None:
                events |= read_wait
            if current is not None and write_wait is not None:
                events |= write_wait
            if events != registered:
                if registered == 0:
                    sel.register(sock, events)
                elif events == 0:
                    sel.unregister(sock)
                else:
                    sel.modify(sock, events)
                registered = events
            busy = (not paused and read_wait is None) or (
                current is not None and write_wait is None
            )
            if busy:
                wait: Optional[float] = 0.0
            else:
                wait = None if wake_at is None else max(0.0, wake_at - time.monotonic())
            for key, mask in sel.select(wait):
                if key.fileobj is self._wake_r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                for flag in (selectors.EVENT_READ, selectors.EVENT_WRITE):
                    if mask & flag:
                        if read_wait == flag:
                            read_wait = None
                        if write_wait == flag:
                            write_wait = None

    def _outcome(self) -> str:
        with self._cond:
            if self._error is None and self._drop_error is not None:
                return "dropped"
            return "ended"

    def _settled_locked(self) -> bool:
        """Whether everything sent was acknowledged and nothing is being written."""
        return (
            self._current is None
            and not self._resend
            and not self._control
            and len(self._retention) == 0
        )

    def _next_frame(self) -> Optional[_OutFrame]:
        """The frame being written, or the next one to write: control frames
        (an ack due, pongs, pings) first, between application frames; an ack
        owed goes in front of an application frame; messages to send again
        after a resume go before new ones, which wait while ``retain_bytes``
        are unacknowledged. After close(), once everything sent is
        acknowledged: the close frame (``c1 06``)."""
        with self._cond:
            if self._current is not None:
                return self._current
            acks = self._acks
            if acks.due(time.monotonic()):
                self._control.append(acks.frame())
            if self._closed and self._bye is None and self._settled_locked():
                self._bye = _control(CLOSE, b"")
                self._control.append(self._bye)
            frame: Optional[_OutFrame] = None
            if self._control:
                frame = self._control.popleft()
            elif self._resend or self._may_start_locked():
                if acks.pending:
                    frame = acks.frame()  # piggyback: the ack goes right before
                elif self._resend:
                    frame = self._resend.popleft()
                else:
                    frame = self._outbox.popleft()
                    self._retention.add(frame)
            if frame is not None:
                frame.started = True
                self._current = frame
            return frame

    def _may_start_locked(self) -> bool:
        return (
            bool(self._outbox)
            and not self._closed
            and self._retention.bytes < self.retain_bytes
        )

    def _new_ping(self) -> _OutFrame:
        payload = secrets.token_bytes(8)
        frame = _control(PING, payload)
        frame.ping = payload
        return frame

    def _write_chunk(self, frame: _OutFrame) -> Union[None, int, bool]:
        """Writes one chunk. Returns ``None`` (try again now), the event to wait
        for, or ``False`` when the connection failed."""
        if frame.error is not None:
            return None
        failure: Optional[OSError] = None
        with frame.lock:  # (the sender may be copying the parts: own())
            try:
                n = self._sock.send(frame.chunk())
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                return selectors.EVENT_WRITE
            except ssl.SSLWantReadError:
                return selectors.EVENT_READ
            except OSError as error:
                failure = error
            else:
                event = frame.advance(n)
        if failure is not None:
            self._lost(PeerDisconnectedError(f"Server disconnected: {failure}"))
            return False
        now = time.monotonic()
        self._bytes_sent += n
        self._last_write = now
        finished = frame.sent == frame.total
        if not finished:
            self._alive_hint = now  # the server is taking our bytes
        if (finished and not frame.done) or event is not None:
            with self._cond:
                if event is not None:
                    frame.events.append(event)
                if finished:
                    frame.done = True
                    if frame.app:
                        self._messages_sent += 1
                self._cond.notify_all()
        if finished and frame.ping is not None:
            self._pings[frame.ping] = now
            while len(self._pings) > _PINGS_KEPT:
                del self._pings[next(iter(self._pings))]
        return None


def _earliest(a: Optional[float], b: float) -> float:
    return b if a is None else min(a, b)
