"""The background I/O thread, which alone uses the socket once connected.

:class:`_IOLoop`, a mixin of :class:`~fedcomm.Client`, holds its loop
(:meth:`_IOLoop._run`: it reads frames into the queue, writes queued frames in
chunks, answers pings, sends heartbeat pings and detects a silent server), its
start, and the helpers the caller threads share with it (checks, waking it,
failing the connection, a send's timeout).
"""

from __future__ import annotations

import logging
import secrets
import selectors
import socket
import ssl
import threading
import time
from typing import List, Optional, Union

from ._codec import decode
from ._framing import CONTROL, HANDSHAKE, PING, PING_BODY_BYTES, PONG, PROGRESS_CHUNK_BYTES
from ._options import _fmt
from ._outframe import _OutFrame, _control
from ._progress import Progress, _call_progress
from ._state import _ClientState
from .errors import (
    FedcommError,
    FedcommTimeoutError,
    FrameTooLargeError,
    PeerDisconnectedError,
    ProtocolError,
)

_log = logging.getLogger("fedcomm")

#: The I/O thread stops reading while more than this many body bytes wait in the queue.
QUEUE_LIMIT_BYTES = 64 * 1024 * 1024
#: ... or more than this many messages.
QUEUE_LIMIT_MESSAGES = 65_536
#: The I/O thread reads at most this much before looking at its other work.
_READ_BURST_BYTES = 16 * 1024 * 1024
#: Pings awaiting their pong that are remembered (for the RTT).
_PINGS_KEPT = 16

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)


class _IOLoop(_ClientState):
    """The I/O thread of :class:`~fedcomm.Client` (:meth:`_run`) and the
    state helpers it shares with the caller threads."""

    # -- starting, and the state shared with the caller threads ---------------

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
                f"Cannot call {what}() from an on_progress callback for a receive: it runs "
                "in the I/O thread, which would wait for itself"
            )

    def _send_timed_out(self, frame: _OutFrame, timeout: Optional[float]) -> BaseException:
        """Called with the lock held."""
        if not frame.started:
            self._outbox.remove(frame)
            return FedcommTimeoutError(
                f"Send timed out after {_fmt(timeout)} s: the server is not reading "
                "(nothing was sent)"
            )
        error = FedcommTimeoutError(
            f"Send timed out after {_fmt(timeout)} s: the frame was cut, so the "
            "connection is closed"
        )
        self._fail_locked(error)
        self._wake()
        return error

    def _paused(self) -> bool:
        return (
            self._queued_bytes > QUEUE_LIMIT_BYTES or len(self._inbox) > QUEUE_LIMIT_MESSAGES
        )

    def _pending_frames(self) -> List[_OutFrame]:
        frames = list(self._outbox) + list(self._control)
        if self._current is not None:
            frames.append(self._current)
        return frames

    def _fail_locked(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        for frame in self._pending_frames():
            if frame.error is None and not frame.done:
                frame.error = self._error
        self._cond.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self._fail_locked(error)

    def _wake(self) -> None:
        sock = self._wake_w
        if sock is None:
            return
        try:
            sock.send(b"\x00")
        except OSError:
            pass  # full (a wake-up is already pending) or closed (the thread is gone)

    def _close_socket(self, graceful: bool) -> None:
        sock = self._sock
        try:
            self._selector.close()
        except Exception:
            pass
        if graceful and isinstance(sock, ssl.SSLSocket):
            try:
                sock.unwrap()  # sends close_notify; the peer's answer is not awaited
            except (OSError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass

    # -- the I/O thread -------------------------------------------------------

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        assert self._wake_r is not None
        sel.register(self._wake_r, selectors.EVENT_READ)
        sock = self._sock
        registered = 0
        read_wait: Optional[int] = None  # None: try reading now; else the event awaited
        write_wait: Optional[int] = None
        was_paused = False
        graceful = False
        try:
            if not self._drain_frames():
                return
            while True:
                with self._cond:
                    if self._error is not None:
                        break
                    if self._closed:
                        graceful = True
                        break
                    paused = self._paused()
                now = time.monotonic()
                if paused:
                    self._alive_hint = now  # not reading: the silence is ours
                elif was_paused:
                    read_wait = None
                was_paused = paused

                read_now = not paused and read_wait is None
                if read_now:
                    read_wait = self._read_burst()
                    if read_wait is False:  # failed or ended
                        break
                current = self._next_frame()  # (pongs queued by the read just now included)
                while current is not None and write_wait is None:
                    write_wait = self._write_chunk(current)
                    if write_wait is False:
                        break
                    if current.done or current.error is not None:
                        with self._cond:
                            self._current = None
                        current = self._next_frame()
                if write_wait is False:
                    break

                # Timers: heartbeat ping and idle timeout.
                now = time.monotonic()
                wake_at: Optional[float] = None
                if self.heartbeat is not None and current is None:
                    ping_at = self._last_write + self.heartbeat
                    if now >= ping_at:
                        with self._cond:
                            self._control.append(self._new_ping())
                        continue
                    wake_at = ping_at
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
                        self._fail(
                            PeerDisconnectedError(
                                f"Server silent for {self.idle_timeout:g} s: nothing received, "
                                "not even a pong or a heartbeat; the server or the network "
                                f"is down ({self.host}:{self.port})"
                            )
                        )
                        break
                    wake_at = dead_at if wake_at is None else min(wake_at, dead_at)

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
        except BaseException as error:  # a bug: fail the connection rather than hang callers
            _log.exception("fedcomm: the I/O thread failed")
            self._fail(FedcommError(f"I/O thread failed: {error!r}"))
        finally:
            with self._cond:
                self._fail_locked(
                    PeerDisconnectedError(
                        "Connection closed: close() was called"
                        if self._closed
                        else "Connection closed"
                    )
                )
            sel.close()
            self._close_socket(graceful)
            for wake in (self._wake_w, self._wake_r):
                if wake is not None:
                    try:
                        wake.close()
                    except OSError:
                        pass

    def _next_frame(self) -> Optional[_OutFrame]:
        """The frame being written, or the next one to write: control frames
        (pongs, pings) first, between application frames."""
        with self._cond:
            if self._current is None:
                if self._control:
                    self._current = self._control.popleft()
                elif self._outbox:
                    self._current = self._outbox.popleft()
                if self._current is not None:
                    self._current.started = True
            return self._current

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
        try:
            n = self._sock.send(frame.chunk())
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            return selectors.EVENT_WRITE
        except ssl.SSLWantReadError:
            return selectors.EVENT_READ
        except OSError as error:
            self._fail(PeerDisconnectedError(f"Server disconnected: {error}"))
            return False
        now = time.monotonic()
        self._bytes_sent += n
        self._last_write = now
        event = frame.advance(n)
        finished = frame.sent == frame.total
        if not finished:
            self._alive_hint = now  # the server is taking our bytes
        if finished or event is not None:
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

    def _read_burst(self) -> Union[None, int, bool]:
        """Reads until the socket has nothing more (or a burst's worth).
        Returns ``None`` (more may be ready), the event to wait for, or
        ``False`` when the connection failed or ended."""
        reader = self._reader
        budget = _READ_BURST_BYTES
        while budget > 0:
            try:
                n = self._sock.recv_into(reader.target())
            except _WOULD_BLOCK:
                return selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                return selectors.EVENT_WRITE
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                n = 0
            except OSError as error:
                self._fail(PeerDisconnectedError(f"Server disconnected: {error}"))
                return False
            if n == 0:
                try:
                    reader.check_eof()
                except ProtocolError as error:
                    self._fail(error)
                    return False
                with self._cond:
                    self._eof = True
                    self._fail_locked(
                        PeerDisconnectedError("Server disconnected: it closed the connection")
                    )
                return False
            budget -= n
            self._bytes_received += n
            self._last_heard = time.monotonic()
            reader.filled(n)
            partial = reader.partial()
            if partial is not None:
                done, total, first = partial
                if (
                    first != CONTROL
                    and (done % PROGRESS_CHUNK_BYTES == 0 or done == total)
                    and done > self._rx_reported
                ):
                    self._rx_reported = done
                    if self._on_progress is not None:
                        _call_progress(self._on_progress, Progress("receive", done, total))
            if not self._drain_frames():
                return False
            with self._cond:
                if self._paused() or self._error is not None or self._closed:
                    return None
        return None

    def _drain_frames(self) -> bool:
        """Handles every complete frame in the reader. Returns ``False`` when
        the connection failed."""
        while True:
            try:
                body = self._reader.next_body()
            except FrameTooLargeError as error:
                self._fail(error)
                return False
            if body is None:
                return True
            try:
                self._handle(body)
            except FedcommError as error:
                self._fail(error)
                return False

    def _handle(self, body: Union[bytes, bytearray, memoryview]) -> None:
        size = len(body)
        reported, self._rx_reported = self._rx_reported, 0
        if size == 0:
            return  # a heartbeat
        if body[0] == CONTROL:
            kind = body[1] if size >= 2 else None
            if kind in (PING, PONG) and size == PING_BODY_BYTES:
                payload = bytes(body[2:])
                if kind == PING:
                    with self._cond:
                        self._control.append(_control(PONG, payload))
                else:
                    sent_at = self._pings.pop(payload, None)
                    if sent_at is not None:
                        self._rtt = time.monotonic() - sent_at
                return
            if kind == HANDSHAKE:
                raise ProtocolError("Unexpected handshake message after the welcome")
            if kind in (PING, PONG):
                raise ProtocolError(
                    f"Invalid {'ping' if kind == PING else 'pong'}: {size} bytes, "
                    f"expected {PING_BODY_BYTES}"
                )
            raise ProtocolError(
                "Unknown control frame: kind "
                + ("none" if kind is None else f"0x{kind:02x}")
                + f", {size} bytes"
            )
        value = decode(body)
        with self._cond:
            self._inbox.append((value, size))
            self._queued_bytes += size
            self._messages_received += 1
            self._cond.notify_all()
        if self._on_progress is not None and reported < size:
            _call_progress(self._on_progress, Progress("receive", size, size))

