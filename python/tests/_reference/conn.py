"""One client connection of the reference server: :class:`Conn`, its test
API (sending, cutting, reading slowly) and its thread, which owns the socket
(non-blocking, driven by ``select``) and handles every frame; the handshake
messages go to its :class:`~_reference.handshake.ServerHandshake`."""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple, Union

import numpy as np

from .frames import FrameHandler
from .handshake import ServerHandshake
from .session import Session
from .wire import HANDSHAKE_LIMIT, HEADER, Body, encode_value, frame, is_application

if TYPE_CHECKING:
    from .server import ReferenceServer


class Conn:
    """One client connection of the :class:`ReferenceServer`."""

    def __init__(self, server: "ReferenceServer", sock: socket.socket, addr: Any) -> None:
        self.server = server
        self.addr = addr
        self._sock: Union[socket.socket, ssl.SSLSocket] = sock
        self._cond = threading.Condition()
        self._out: Deque[Union[bytes, float]] = deque()  # bytes to write, or a pause in seconds
        self._pings: Dict[bytes, Tuple[float, threading.Event]] = {}
        self._stop = False
        self._close_after_flush = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        #: The session (``None`` before the welcome).
        self.session: Optional[Session] = None
        #: The welcome's id (``None`` before the welcome).
        self.id: Optional[int] = None
        #: The hello's name.
        self.name: Optional[str] = None
        #: The hello and auth messages received (for replay tests).
        self.handshake_messages: List[Dict[str, Any]] = []
        #: ``(kind, body size)`` of every frame received; kind is "heartbeat",
        #: "ping", "pong", "handshake", "ack", "reply", "close" or "value".
        self.frames: List[Tuple[str, int]] = []
        self.bytes_received = 0
        self.bytes_sent = 0
        self.pings_received = 0
        self.pongs_sent = 0
        #: Stop answering pings and stop writing (a hung server).
        self.silent = False
        self._reading = True
        self._read_budget: Optional[int] = None
        self._cut_sent: Optional[int] = None
        self._cut_received: Optional[int] = None
        #: Whether the connection ended inside a frame.
        self.truncated = False
        #: Set when the connection is closed (by either side).
        self.closed = threading.Event()
        #: Why it closed: "eof", "bye" (c1 06), "reset", "timeout", "violation",
        #: "server", "rejected", "cut".
        self.close_reason: Optional[str] = None
        self.welcomed = threading.Event()
        self._frames = FrameHandler(self, ServerHandshake(self))
        self.thread = threading.Thread(target=self._run, name=f"refserver-conn-{addr}", daemon=True)

    # -- API for tests ---------------------------------------------------------

    @property
    def reading(self) -> bool:
        """Whether the socket is read (``False``: a server too busy to read; TCP pushes back)."""
        return self._reading

    @reading.setter
    def reading(self, value: bool) -> None:
        with self._cond:
            self._read_budget = None
            self._reading = value
        self._wake()

    def allow(self, nbytes: int) -> None:
        """Reads ``nbytes`` more bytes, then stops reading again (a slow server)."""
        with self._cond:
            self._read_budget = nbytes
            self._reading = True
        self._wake()

    def send(self, value: Any) -> None:
        """Sends one application value on the session."""
        self.send_body(encode_value(value))

    def send_long(self, value: Any, ref_min: int = 64 * 1024, part_bytes: int = 1 << 20) -> int:
        """Sends one value as a long message on the session (see :meth:`Session.send_long`)."""
        return self._session().send_long(value, ref_min, part_bytes)

    def send_body(self, body: bytes) -> None:
        """Sends a frame with this body: an application body on the session
        (numbered), anything else (a control frame) on this connection."""
        if is_application(body) and self.session is not None:
            self.session.send_body(body)
        else:
            self.send_raw(frame(body))

    def send_raw(self, data: bytes) -> None:
        """Queues raw bytes (anything, even garbage; never numbered)."""
        with self._cond:
            self._out.append(bytes(data))
        self._wake()

    def send_slowly(self, data: bytes, chunk: int, delay: float) -> None:
        """Queues a whole frame written ``chunk`` bytes at a time, ``delay``
        seconds apart (an application frame is numbered on the session)."""
        if self.session is not None and is_application(data[4:5]):
            self.session.send_body(bytes(data[4:]), chunk, delay)
        else:
            self._queue_slowly(data, chunk, delay)

    def _queue_slowly(self, data: bytes, chunk: int, delay: float) -> None:
        with self._cond:
            for start in range(0, len(data), chunk):
                self._out.append(bytes(data[start : start + chunk]))
                self._out.append(float(delay))
        self._wake()

    def flush(self, timeout: float = 10.0) -> None:
        """Waits until everything queued is written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._out and not self.closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("flush timed out")
                self._cond.wait(remaining)

    def _session(self) -> Session:
        assert self.session is not None, "no session before the welcome"
        return self.session

    def recv_frame(self, timeout: float = 10.0) -> Tuple[Body, Any]:
        """The session's next application value as ``(body, decoded value)``."""
        return self._session().recv_frame(timeout)

    def recv_body(self, timeout: float = 10.0) -> Body:
        """The session's next application body, not decoded."""
        return self._session().recv_body(timeout)

    def recv(self, timeout: float = 10.0) -> Any:
        """The session's next application value, decoded with msgpack_numpy."""
        return self._session().recv(timeout)

    def ping(self, timeout: float = 5.0) -> float:
        """Sends a ping and waits for its pong; returns the round-trip time."""
        payload = os.urandom(8)
        event = threading.Event()
        with self._cond:
            self._pings[payload] = (time.monotonic(), event)
        self.send_body(b"\xc1\x01" + payload)
        if not event.wait(timeout):
            raise TimeoutError("no pong within the timeout")
        with self._cond:
            sent, _ = self._pings.pop(payload)
            return self._pong_times.pop(payload) - sent

    def close(self, flush: bool = True) -> None:
        """Closes the connection (after writing what is queued if ``flush``);
        no ``c1 06``: with a grace, the session waits for a resume."""
        with self._cond:
            if flush:
                self._close_after_flush = True
            else:
                self._stop = True
        self._wake()

    def cut(self) -> None:
        """Drops the connection at once, whatever is being written or read."""
        with self._cond:
            self.close_reason = "cut"
            self._stop = True
        self._wake()

    def cut_after(self, sent: Optional[int] = None, received: Optional[int] = None) -> None:
        """Drops the connection once ``bytes_sent`` reaches ``sent`` (or
        ``bytes_received`` reaches ``received``): mid-frame, exactly there."""
        with self._cond:
            self._cut_sent = sent
            self._cut_received = received
        self._wake()

    # -- the connection thread -------------------------------------------------

    _pong_times: Dict[bytes, float]

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\x00")
        except OSError:
            pass

    def violation(self, message: str) -> None:
        """Records a protocol violation of the client and closes the connection."""
        self.server.errors.append(f"{self.addr}: {message}")
        self.stop("violation")

    def stop(self, reason: str) -> None:
        """Ends the connection (in its thread) for ``reason``."""
        self.close_reason = reason
        self._stop = True

    def pong_received(self, payload: bytes) -> None:
        """A pong: it answers a :meth:`ping` if the payload is one of its."""
        with self._cond:
            entry = self._pings.get(payload)
            if entry is not None:
                self._pong_times[payload] = time.monotonic()
                entry[1].set()

    def _run(self) -> None:
        self._pong_times = {}
        server = self.server
        try:
            sock = self._sock
            deadline = time.monotonic() + server.handshake_timeout
            if server.tls_context is not None:
                sock.settimeout(server.handshake_timeout)
                try:
                    sock = server.tls_context.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError) as error:
                    self.server.tls_failures.append(repr(error))
                    self.close_reason = "tls"
                    return
                self._sock = sock
            sock.setblocking(False)
            self._loop(sock, deadline)
        except Exception as error:  # a bug in this test server
            server.errors.append(f"{self.addr}: server crashed: {error!r}")
        finally:
            try:
                self._sock.close()
            except OSError:
                pass
            self._wake_r.close()
            self._wake_w.close()
            if self.session is not None:
                self.session._detached(self, bye=self.close_reason == "bye")
            with self._cond:
                self.closed.set()
                self._cond.notify_all()
                for _, event in self._pings.values():
                    event.set()

    def _cut_due(self) -> bool:
        if self._cut_sent is not None and self.bytes_sent >= self._cut_sent:
            return True
        return self._cut_received is not None and self.bytes_received >= self._cut_received

    def _loop(self, sock: Union[socket.socket, ssl.SSLSocket], deadline: float) -> None:
        server = self.server
        inbuf = bytearray()
        self._large: Optional[memoryview] = None
        self._large_fill = 0
        current: Optional[memoryview] = None
        write_after = 0.0
        last_write = time.monotonic()
        while True:
            with self._cond:
                if self._stop or server.stopping:
                    if self.close_reason is None:
                        self.close_reason = "server"
                    return
                if self._close_after_flush and not self._out and current is None:
                    self.close_reason = self.close_reason or "server"
                    return
            if self._cut_due():
                self.close_reason = "cut"
                return
            now = time.monotonic()
            if self.id is None and now > deadline:
                self.close_reason = "timeout"
                return
            ack_at = self._frames.ack_check(now)
            # Server-side heartbeat pings.
            if (
                server.ping_interval
                and self.id is not None
                and not self.silent
                and current is None
                and now - last_write >= server.ping_interval
            ):
                self.send_body(b"\xc1\x01" + os.urandom(8))
            # Write.
            want_write = False
            while not self.silent and now >= write_after:
                if current is None:
                    with self._cond:
                        if not self._out:
                            self._cond.notify_all()
                            break
                        item = self._out.popleft()
                        if not self._out:
                            self._cond.notify_all()
                    if isinstance(item, float):
                        write_after = time.monotonic() + item
                        break
                    current = memoryview(item)
                piece = current
                if self._cut_sent is not None:
                    piece = current[: max(1, self._cut_sent - self.bytes_sent)]
                try:
                    n = sock.send(piece)
                except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    want_write = True
                    break
                except OSError:
                    self.close_reason = "reset"
                    return
                self.bytes_sent += n
                last_write = now = time.monotonic()
                current = current[n:] if n < len(current) else None
                if self._cut_due():
                    self.close_reason = "cut"
                    return
            # Wait.
            timeout = 0.05
            if write_after > now:
                timeout = min(timeout, write_after - now)
            if ack_at is not None:
                timeout = min(timeout, max(0.0, ack_at - now))
            reading = self.reading
            readable, writable, _ = select.select(
                [sock, self._wake_r] if reading else [self._wake_r],
                [sock] if want_write else [],
                [],
                max(timeout, 0),
            )
            if self._wake_r in readable:
                try:
                    while self._wake_r.recv(4096):
                        pass
                except OSError:
                    pass
            if not reading or (sock not in readable and not isinstance(sock, ssl.SSLSocket)):
                continue
            # Read everything available (SSL: until it wants more, so no data stays buffered).
            while self.reading:
                large = self._large
                budget = self._read_budget  # (read once: another thread may change it)
                want = 1 << 20 if budget is None else max(1, min(1 << 20, budget))
                if self._cut_received is not None:
                    want = max(1, min(want, self._cut_received - self.bytes_received))
                try:
                    if large is not None:
                        n = sock.recv_into(large[self._large_fill : self._large_fill + want])
                    else:
                        data = sock.recv(want)
                        n = len(data)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    n = 0
                except OSError:
                    self.close_reason = "reset"
                    return
                if n == 0:
                    if inbuf or large is not None:
                        self.truncated = True
                        if server.grace == 0:
                            self.violation("truncated frame at EOF")
                    self.close_reason = self.close_reason or "eof"
                    return
                self.bytes_received += n
                with self._cond:
                    if self._read_budget is not None:
                        self._read_budget -= n
                        if self._read_budget <= 0:
                            self._read_budget = None
                            self._reading = False
                if large is not None:
                    self._large_fill += n
                    if self._large_fill == len(large):
                        self._large = None
                        if not self._frames.handle(large):
                            return
                else:
                    inbuf += data
                    if not self._parse(inbuf):
                        return
                if self._cut_due():
                    self.truncated = bool(inbuf) or self._large is not None
                    self.close_reason = "cut"
                    return

    def _parse(self, inbuf: bytearray) -> bool:
        """Handles every complete frame in ``inbuf``; ``False`` to close."""
        while len(inbuf) >= 4:
            (length,) = HEADER.unpack_from(inbuf, 0)
            limit = HANDSHAKE_LIMIT if self.id is None else self.server.max_frame_bytes
            if length > limit:
                self.violation(f"frame of {length} bytes over the limit {limit}")
                return False
            if len(inbuf) < 4 + length:
                if length > 1 << 20:
                    # Large: read the rest straight into a buffer of its own
                    # (np.empty: no zeroing while holding the GIL).
                    self._large = memoryview(np.empty(length, dtype=np.uint8))
                    self._large[: len(inbuf) - 4] = inbuf[4:]
                    self._large_fill = len(inbuf) - 4
                    inbuf.clear()
                return True
            body = bytes(inbuf[4 : 4 + length])
            del inbuf[: 4 + length]
            if not self._frames.handle(body):
                return False
        return True

