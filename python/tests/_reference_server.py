"""A small, strict fedcomm protocol version 3 server, for tests.

It is written independently of the ``fedcomm`` package (it decodes with
``msgpack_numpy`` itself), so that a bug shared by the client's encoder and
decoder cannot hide. Every protocol violation it sees from a client is
recorded in :attr:`ReferenceServer.errors`; tests assert that list is empty.

Sessions: each welcomed client has a :class:`Session` (its id, token, props,
the messages numbered each way, what was acknowledged) that outlives its
connections: with ``grace`` > 0 a dropped connection can be resumed (hello
``resume: {id, token, received}``); retained messages the client did not
receive are sent again. The server acknowledges the client's messages as the
design says (at once after a body of 64 KiB or more, else within 10 ms).

Threads: one accepting connections (it also ends sessions whose grace ran
out), and one per connection that owns its socket (non-blocking, driven by
``select``), so a TLS socket is never used by two threads at once. Tests talk
to a session through :class:`Session` (``srv.session(id)``) or to its current
connection through :class:`Conn` (``srv.conn(id)``), which forwards messages
to its session.

Fault injection: ``answer_pings=False`` / :attr:`Conn.silent` (a dead or hung
server), :meth:`Conn.send_raw` (garbage), :meth:`Conn.send_slowly` (a large
frame trickling in), :meth:`Conn.cut` / :meth:`Conn.cut_after` (a connection
dropped, mid-frame), ``acks`` (a server that does not acknowledge),
``refuse_live`` (resumes refused as "still connected"), :meth:`ReferenceServer.forget`
(a session lost), ``reject=...`` (any reject reason), ``plain_reject`` (a
reject in the version 1 form), ``skip_challenge`` (a server that does not
authenticate), ``challenge=...`` (a replayed challenge), ``server_secret`` (a
server with another secret), ``welcome_extra`` / ``welcome_override``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import msgpack
import msgpack_numpy
import numpy as np

HEADER = struct.Struct(">I")
U64 = struct.Struct(">Q")
HANDSHAKE_LIMIT = 64 * 1024
VERSION = 3
SERVER_LABEL = b"fedcomm server proof\x00"
CLIENT_LABEL = b"fedcomm client proof\x00"
ACK_LARGE_BYTES = 64 * 1024
ACK_PENDING_BYTES = 1024 * 1024
ACK_PENDING_MESSAGES = 1024
ACK_DELAY = 0.010

Body = Union[bytes, memoryview]


def proof(label: bytes, secret: bytes, client_nonce: bytes, server_nonce: bytes, name: bytes) -> bytes:
    """HMAC-SHA256(secret, label + client nonce + server nonce + name)."""
    return hmac.new(secret, label + client_nonce + server_nonce + name, hashlib.sha256).digest()


def frame(body: bytes) -> bytes:
    """A whole frame: 4-byte big-endian length, then the body."""
    return HEADER.pack(len(body)) + body


def handshake_body(message: Dict[str, Any]) -> bytes:
    """``c1 03`` + the MessagePack map."""
    return b"\xc1\x03" + msgpack.packb(message, use_bin_type=True)


def encode_value(value: Any) -> bytes:
    """An application body, encoded with msgpack_numpy."""
    return msgpack.packb(value, default=msgpack_numpy.encode, use_bin_type=True)


def decode_value(body: Body) -> Any:
    """An application body, decoded with msgpack_numpy."""
    return msgpack.unpackb(body, object_hook=msgpack_numpy.decode, raw=False, strict_map_key=False)


def is_application(body: Body) -> bool:
    """Whether a frame body is an application message (numbered)."""
    return len(body) > 0 and body[0] != 0xC1


def _secret(value: Union[None, str, bytes]) -> Optional[bytes]:
    return value.encode() if isinstance(value, str) else value


def check_props(props: Any) -> Optional[str]:
    """What is wrong with a hello's props (``None``: nothing)."""
    if not isinstance(props, dict):
        return "is not a map"
    if len(props) > 16:
        return f"has {len(props)} entries (at most 16)"
    for key, value in props.items():
        if not isinstance(key, str) or not 1 <= len(key.encode()) <= 64:
            return f"key {key!r} is not 1-64 bytes of text"
        if isinstance(value, str):
            if len(value.encode()) > 256:
                return f"value of {key!r} is over 256 bytes"
        elif value is not None and not isinstance(value, (bool, int, float)):
            return f"value of {key!r} is a {type(value).__name__}"
    return None


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Polls ``condition`` (every 5 ms) until it holds; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


@dataclass
class Message:
    """An application message received from a client."""

    number: int
    #: The request a reply answers (``None``: a plain message).
    request: Optional[int]
    #: The body of the value (a reply's 8-byte prefix removed).
    body: Body

    def value(self) -> Any:
        return decode_value(self.body)


class Session:
    """A client's session: it outlives its connections (resume)."""

    def __init__(self, server: "ReferenceServer", id_: int, name: Optional[str],
                 props: Optional[Dict[str, Any]]) -> None:
        self.server = server
        self.id = id_
        self.name = name
        self.props = props
        self.token = os.urandom(16)
        self.cond = threading.Condition()
        self._inbox: Deque[Message] = deque()
        #: Application messages received from the client.
        self.received = 0
        #: Application messages numbered for the client.
        self.sent = 0
        #: The client's latest ack.
        self.acked = 0
        #: Unacknowledged messages for the client: (number, whole frame).
        self.retained: Deque[Tuple[int, bytes]] = deque()
        #: Every message received: (number, request).
        self.log: List[Tuple[int, Optional[int]]] = []
        self.conn: Optional[Conn] = None
        self.conns: List[Conn] = []
        #: "connected", "resuming" or "gone".
        self.state = "connected"
        #: Why the session ended: "closed" (c1 06 from the client), "server"
        #: (end()), "grace", "dropped" (no grace), "forgotten".
        self.end_reason: Optional[str] = None
        self.ended = threading.Event()
        self.dropped_at = 0.0
        self.resumes = 0

    # -- messages for the client ---------------------------------------------

    def send(self, value: Any) -> None:
        """Sends one application value (numbered, retained until acknowledged)."""
        self.send_body(encode_value(value))

    def send_body(self, body: bytes, chunk: Optional[int] = None, delay: float = 0.0) -> int:
        """Sends an application body (optionally ``chunk`` bytes at a time,
        ``delay`` seconds apart); returns its number. While the session is
        resuming it is only retained (sent on the resume)."""
        data = frame(body)
        with self.cond:
            if self.state == "gone":
                raise ConnectionError(f"session over: {self.end_reason}")
            self.sent += 1
            self.retained.append((self.sent, data))
            if self.state == "connected" and self.conn is not None:
                if chunk is None:
                    self.conn.send_raw(data)
                else:
                    self.conn._queue_slowly(data, chunk, delay)
            return self.sent

    def end(self) -> None:
        """Ends the session for good: ``c1 06``, then the connection closes."""
        with self.cond:
            conn = self.conn
            self._end_locked("server")
        if conn is not None:
            conn.send_raw(frame(b"\xc1\x06"))
            conn.close()

    # -- messages from the client ----------------------------------------------

    def recv_message(self, timeout: float = 10.0) -> Message:
        """The next application message (plain or reply)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self._inbox:
                if self.state == "gone":
                    raise ConnectionError(f"session over: {self.end_reason}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("recv timed out")
                self.cond.wait(remaining)
            return self._inbox.popleft()

    def recv_body(self, timeout: float = 10.0) -> Body:
        """The next application body, not decoded (decoding a huge one holds the GIL)."""
        return self.recv_message(timeout).body

    def recv_frame(self, timeout: float = 10.0) -> Tuple[Body, Any]:
        """The next application value as ``(body, decoded value)``."""
        body = self.recv_body(timeout)
        # Decoded here, in the test's thread, not in the connection thread.
        try:
            return body, decode_value(body)
        except Exception as error:
            self.server.errors.append(f"client {self.id}: malformed application value: {error}")
            raise

    def recv(self, timeout: float = 10.0) -> Any:
        """The next application value, decoded with msgpack_numpy."""
        return self.recv_frame(timeout)[1]

    def pending(self) -> int:
        """Messages received and not yet taken."""
        with self.cond:
            return len(self._inbox)

    def wait_state(self, state: str, timeout: float = 10.0) -> None:
        """Waits until the session is in ``state``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.state != state:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"session {self.id} is {self.state}, not {state}")
                self.cond.wait(remaining)

    # -- for the connection thread ---------------------------------------------

    def _end_locked(self, reason: str) -> None:
        if self.state != "gone":
            self.state = "gone"
            self.end_reason = reason
            self.retained.clear()
            self.ended.set()
        self.cond.notify_all()

    def _received(self, request: Optional[int], body: Body) -> Optional[str]:
        """Records a message; returns a violation, if any."""
        with self.cond:
            if request is not None and not 1 <= request <= self.sent:
                return f"reply to request {request}, but {self.sent} messages were sent"
            self.received += 1
            self.log.append((self.received, request))
            self._inbox.append(Message(self.received, request, body))
            self.cond.notify_all()
        return None

    def _acked(self, count: int) -> Optional[str]:
        with self.cond:
            if count > self.sent:
                return f"ack of {count} messages, but {self.sent} were sent"
            if count < self.acked:
                return f"ack of {count} after an ack of {self.acked}"
            self.acked = count
            while self.retained and self.retained[0][0] <= count:
                self.retained.popleft()
        return None

    def _detached(self, conn: "Conn", bye: bool) -> None:
        with self.cond:
            if self.conn is not conn or self.state == "gone":
                return
            self.conn = None
            if bye:
                self._end_locked("closed")
            elif self.server.grace > 0 and not self.server.stopping:
                self.state = "resuming"
                self.dropped_at = time.monotonic()
                self.cond.notify_all()
            else:
                self._end_locked("dropped")

    def _expire(self, now: float) -> None:
        with self.cond:
            if self.state == "resuming" and now - self.dropped_at > self.server.grace:
                self._end_locked("grace")


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
        self._ack_since: Optional[float] = None
        self._ack_bytes = 0
        self._ack_urgent = False
        self._acked = 0
        #: Whether the connection ended inside a frame.
        self.truncated = False
        #: Set when the connection is closed (by either side).
        self.closed = threading.Event()
        #: Why it closed: "eof", "bye" (c1 06), "reset", "timeout", "violation",
        #: "server", "rejected", "cut".
        self.close_reason: Optional[str] = None
        self.welcomed = threading.Event()
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

    def _violation(self, message: str) -> None:
        self.server.errors.append(f"{self.addr}: {message}")
        self.close_reason = "violation"
        self._stop = True

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

    def _ack_check(self, now: float) -> Optional[float]:
        """Writes the ack owed if it is due; returns when the next one is."""
        session = self.session
        if session is None or not self.server.acks or self._ack_since is None:
            return None
        due = self._ack_since if self._ack_urgent else self._ack_since + ACK_DELAY
        if now < due:
            return due
        with session.cond:
            count = session.received
        self._acked = count
        self._ack_since = None
        self._ack_bytes = 0
        self._ack_urgent = False
        self.send_raw(frame(b"\xc1\x04" + U64.pack(count)))
        return None

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
            ack_at = self._ack_check(now)
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
                            self._violation("truncated frame at EOF")
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
                        if not self._handle(large):
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
                self._violation(f"frame of {length} bytes over the limit {limit}")
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
            if not self._handle(body):
                return False
        return True

    def _handle(self, body: Body) -> bool:
        if not body:
            self.frames.append(("heartbeat", 0))
            return True
        if body[0] == 0xC1:
            return self._handle_control(body)
        self.frames.append(("value", len(body)))
        if self.id is None:
            # A version 1 hello gets a version reject in the plain form.
            try:
                value = msgpack.unpackb(body, raw=False)
            except Exception:
                value = None
            if isinstance(value, dict) and value.get("type") == "hello":
                self._reject("version", "Unsupported protocol version: this server speaks 3", plain=True)
                return False
            self._violation("application value before the welcome")
            return False
        return self._message(None, body)

    def _message(self, request: Optional[int], body: Body) -> bool:
        problem = self._session()._received(request, body)
        if problem is not None:
            self._violation(problem)
            return False
        size = len(body) + (8 if request is not None else 0)
        if self._ack_since is None:
            self._ack_since = time.monotonic()
        self._ack_bytes += size
        with self._session().cond:
            unacked = self._session().received - self._acked
        if (
            size >= ACK_LARGE_BYTES
            or self._ack_bytes >= ACK_PENDING_BYTES
            or unacked >= ACK_PENDING_MESSAGES
        ):
            self._ack_urgent = True
            self._ack_check(time.monotonic())
        return True

    def _handle_control(self, body: Body) -> bool:
        kind = body[1] if len(body) > 1 else None
        if kind == 0x03:
            self.frames.append(("handshake", len(body)))
            if self.id is not None:
                self._violation("handshake message after the welcome")
                return False
            try:
                message = msgpack.unpackb(bytes(body[2:]), raw=False)
            except Exception as error:
                self._violation(f"malformed handshake message: {error}")
                return False
            return self._handshake(message)
        if self.id is None and kind != 0x02:
            self._violation(f"control frame {kind!r} before the welcome")
            return False
        if kind in (0x01, 0x02):
            if len(body) != 10:
                self._violation(f"ping/pong of {len(body)} bytes")
                return False
            payload = bytes(body[2:])
            if kind == 0x01:
                self.frames.append(("ping", len(body)))
                self.pings_received += 1
                if self.server.answer_pings and not self.silent:
                    self.pongs_sent += 1
                    self.send_body(b"\xc1\x02" + payload)
            else:
                self.frames.append(("pong", len(body)))
                with self._cond:
                    entry = self._pings.get(payload)
                    if entry is not None:
                        self._pong_times[payload] = time.monotonic()
                        entry[1].set()
            return True
        if kind == 0x04:
            self.frames.append(("ack", len(body)))
            if len(body) != 10:
                self._violation(f"ack of {len(body)} bytes")
                return False
            problem = self._session()._acked(U64.unpack_from(body, 2)[0])
            if problem is not None:
                self._violation(problem)
                return False
            return True
        if kind == 0x05:
            self.frames.append(("reply", len(body)))
            if len(body) < 9:
                self._violation(f"reply of {len(body)} bytes")
                return False
            return self._message(int.from_bytes(body[2:8], "big"), body[8:])
        if kind == 0x06:
            self.frames.append(("close", len(body)))
            if len(body) != 2:
                self._violation(f"close of {len(body)} bytes")
            self.close_reason = "bye"
            self._stop = True
            return False
        self._violation(f"unknown control frame kind {kind!r}")
        return False

    # -- handshake --------------------------------------------------------------

    _client_nonce: Optional[bytes] = None
    _server_nonce: Optional[bytes] = None
    _state = "hello"
    _hello: Dict[str, Any]

    def _send_handshake(self, message: Dict[str, Any], plain: bool = False) -> None:
        body = msgpack.packb(message, use_bin_type=True) if plain else handshake_body(message)
        self.send_raw(frame(body))

    def _reject(self, reason: str, message: str, plain: bool = False) -> None:
        self._send_handshake(
            {"fedcomm": VERSION, "type": "reject", "reason": reason, "message": message}, plain
        )
        self.close_reason = "rejected"
        with self._cond:
            self._close_after_flush = True

    def _hello_problem(self, message: Dict[str, Any]) -> Optional[Tuple[str, str]]:
        """What is wrong with a hello, as (reject reason, message)."""
        allowed = {"fedcomm", "type", "name", "nonce", "props", "resume"}
        if set(message) - allowed:
            self._violation(f"unknown hello keys {sorted(set(message) - allowed)}")
        name, nonce = message.get("name"), message.get("nonce")
        if name is not None and not (isinstance(name, str) and 1 <= len(name.encode()) <= 128):
            self._violation(f"invalid name {name!r}")
            return "malformed", "Invalid name"
        if nonce is not None and not (isinstance(nonce, bytes) and len(nonce) == 32):
            self._violation(f"invalid nonce {nonce!r}")
            return "malformed", "Invalid nonce"
        if "props" in message:
            problem = check_props(message["props"])
            if problem is not None:
                self._violation(f'invalid props: {problem}')
                return "malformed", f'Invalid hello: "props" {problem}'
        if "resume" in message:
            resume = message["resume"]
            valid = (
                isinstance(resume, dict)
                and set(resume) == {"id", "token", "received"}
                and isinstance(resume["id"], int) and resume["id"] >= 0
                and isinstance(resume["token"], bytes)
                and isinstance(resume["received"], int) and resume["received"] >= 0
            )
            if not valid:
                self._violation(f"invalid resume {resume!r}")
                return "malformed", 'Invalid hello: "resume"'
        return None

    def _handshake(self, message: Any) -> bool:
        server = self.server
        if not isinstance(message, dict) or not all(isinstance(k, str) for k in message):
            self._violation("handshake message is not a map with str keys")
            return False
        self.handshake_messages.append(message)
        if message.get("fedcomm") != VERSION:
            self._violation(f"handshake message with fedcomm {message.get('fedcomm')!r}")
            self._reject("version", "Unsupported protocol version")
            return True
        kind = message.get("type")
        if self._state == "hello":
            if kind != "hello":
                self._violation(f"expected hello, got {kind!r}")
                self._reject("malformed", 'Invalid handshake: expected a "hello" map')
                return True
            problem = self._hello_problem(message)
            if problem is not None:
                self._reject(*problem)
                return True
            self._hello = message
            self.name = name = message.get("name")
            self._client_nonce = nonce = message.get("nonce")
            if server.busy_first > 0:
                server.busy_first -= 1
                self._reject("busy", "Server busy: too many connections are in their handshake")
                return True
            if server.reject is not None:
                self._reject(server.reject, f"Rejected by the test server: {server.reject}", server.plain_reject)
                return True
            if server.closing:
                self._reject("closed", "Server closing")
                return True
            if server.secret is None or server.skip_challenge:
                return self._admit()
            if nonce is None:
                self._reject("auth", "Authentication required: this server needs a secret")
                return True
            secret = server.server_secret if server.server_secret is not None else server.secret
            name_bytes = b"" if name is None else name.encode()
            if server.challenge is not None:
                self._server_nonce, server_proof = server.challenge
            else:
                self._server_nonce = os.urandom(32)
                server_proof = proof(SERVER_LABEL, secret, nonce, self._server_nonce, name_bytes)
            server.challenges.append((nonce, self._server_nonce, server_proof))
            self._send_handshake(
                {"fedcomm": VERSION, "type": "challenge", "nonce": self._server_nonce, "proof": server_proof}
            )
            self._state = "auth"
            return True
        if self._state == "auth":
            if kind != "auth" or set(message) != {"fedcomm", "type", "proof"}:
                self._violation(f"expected auth, got {message!r}")
                self._reject("malformed", 'Invalid handshake: expected an "auth" map')
                return True
            assert self._client_nonce is not None and self._server_nonce is not None
            name_bytes = b"" if self.name is None else self.name.encode()
            expected = proof(CLIENT_LABEL, server.secret, self._client_nonce, self._server_nonce, name_bytes)
            given = message.get("proof")
            if not isinstance(given, bytes) or not hmac.compare_digest(expected, given):
                self._reject("auth", "Authentication failed")
                return True
            return self._admit()
        self._violation(f"handshake message in state {self._state}")
        return False

    def _admit(self) -> bool:
        resume = self._hello.get("resume")
        if resume is not None:
            return self._resume(resume)
        server = self.server
        with server.lock:
            if server.next_id >= server.clients:
                self._reject("full", f"Server full: all {server.clients} clients have joined")
                return True
            session = Session(server, server.next_id, self.name, self._hello.get("props"))
            server.next_id += 1
            server.sessions[session.id] = session
        with session.cond:
            self._bind(session, resumed=False)
        with server.lock:
            server.joined_cond.notify_all()
        return True

    def _resume(self, resume: Dict[str, Any]) -> bool:
        server = self.server
        id_ = resume["id"]
        with server.lock:
            session = server.sessions.get(id_)
        if session is not None:
            session._expire(time.monotonic())
        if session is None or session.state == "gone":
            self._reject("resume", f'Resume refused: no session "{id_}"')
            return True
        with session.cond:
            if not hmac.compare_digest(session.token, resume["token"]):
                self._reject("resume", f'Resume refused: wrong token for client "{id_}"')
                return True
            if session.state == "connected" or server.refuse_live > 0:
                if session.state == "connected":
                    server.early_refusals += 1  # the cut is not through on this side yet
                else:
                    server.refuse_live -= 1
                    server.live_refusals += 1
                self._reject(server.live_reason, f'Resume refused: client "{id_}" is still connected')
                return True
            if resume["received"] > session.sent:
                self._violation(f"resume received {resume['received']} > {session.sent} sent")
                return False
            while session.retained and session.retained[0][0] <= resume["received"]:
                session.retained.popleft()
            session.resumes += 1
            self._bind(session, resumed=True)
            for _, data in session.retained:  # sent again, in order, before anything new
                self.send_raw(data)
        return True

    def _bind(self, session: Session, resumed: bool) -> None:
        """Welcomes this connection into ``session`` (call with its lock held)."""
        server = self.server
        self.session = session
        self.id = session.id
        session.conn = self
        session.conns.append(self)
        session.state = "connected"
        session.cond.notify_all()
        message: Dict[str, Any] = {
            "fedcomm": VERSION,
            "type": "welcome",
            "id": session.id,
            "clients": server.clients,
            "maxFrameBytes": server.max_frame_bytes,
        }
        if server.grace > 0:
            message["token"] = session.token
        message.update(
            {"grace": int(server.grace * 1000), "received": session.received, "resumed": resumed}
        )
        message.update(server.welcome_extra)
        if server.welcome_override is not None:
            message = dict(server.welcome_override)
        self._send_handshake(message)
        self._state = "session"
        self.welcomed.set()


class ReferenceServer:
    """A strict protocol version 3 server on 127.0.0.1 (a free port).

    Args:
        clients: How many clients it admits.
        secret: Require authentication with this secret.
        server_secret: Compute the server's proof with this secret instead (a
            server that does not know the right one).
        tls: ``(certfile, keyfile)`` to serve TLS.
        max_frame_bytes: Announced in the welcome and enforced.
        answer_pings: Answer pings with pongs (``False``: a hung server).
        ping_interval: Send a ping after this many seconds without writing.
        grace: Seconds a session waits for a resume after a drop (0: none).
        acks: Acknowledge the clients' messages (settable later).
        refuse_live: Refuse this many resumes as "still connected".
        live_reason: The reason of those rejects: "live", as PROTOCOL.md §6.3
            says ("resume", which means the session is over, to test that the
            client decides by the reason alone).
        reject: Reject every hello with this reason.
        busy_first: Reject this many hellos first with ``busy``.
        plain_reject: Send that reject as plain MessagePack (the version 1 form).
        skip_challenge: Welcome at once even if authentication is configured.
        challenge: ``(nonce, proof)`` to send instead of a fresh challenge (replay).
        welcome_extra: Extra keys for the welcome.
        welcome_override: Send exactly this map as the welcome.
        handshake_timeout: Seconds a client has to complete the handshake.
    """

    def __init__(
        self,
        clients: int = 1,
        *,
        secret: Union[None, str, bytes] = None,
        server_secret: Union[None, str, bytes] = None,
        tls: Optional[Tuple[str, str]] = None,
        max_frame_bytes: int = 512 * 1024 * 1024,
        answer_pings: bool = True,
        ping_interval: Optional[float] = None,
        grace: float = 0.0,
        acks: bool = True,
        refuse_live: int = 0,
        live_reason: str = "live",
        reject: Optional[str] = None,
        busy_first: int = 0,
        plain_reject: bool = False,
        skip_challenge: bool = False,
        challenge: Optional[Tuple[bytes, bytes]] = None,
        welcome_extra: Optional[Dict[str, Any]] = None,
        welcome_override: Optional[Dict[str, Any]] = None,
        handshake_timeout: float = 10.0,
        port: int = 0,
    ) -> None:
        self.clients = clients
        self.secret = _secret(secret)
        self.server_secret = _secret(server_secret)
        self.max_frame_bytes = max_frame_bytes
        self.answer_pings = answer_pings
        self.ping_interval = ping_interval
        self.grace = grace
        self.acks = acks
        self.refuse_live = refuse_live
        self.live_reason = live_reason
        #: Resumes refused as "still connected" because of ``refuse_live``.
        self.live_refusals = 0
        #: Resumes refused because the old connection was still open here.
        self.early_refusals = 0
        self.reject = reject
        self.busy_first = busy_first
        self.plain_reject = plain_reject
        self.skip_challenge = skip_challenge
        self.challenge = challenge
        self.welcome_extra = welcome_extra or {}
        self.welcome_override = welcome_override
        self.handshake_timeout = handshake_timeout
        self.tls_context: Optional[ssl.SSLContext] = None
        if tls is not None:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(*tls)
        #: Protocol violations seen from clients.
        self.errors: List[str] = []
        #: TLS handshakes that failed.
        self.tls_failures: List[str] = []
        #: ``(client nonce, server nonce, server proof)`` of every challenge sent.
        self.challenges: List[Tuple[bytes, bytes, bytes]] = []
        self.lock = threading.Lock()
        self.joined_cond = threading.Condition(self.lock)
        self.next_id = 0
        self.sessions: Dict[int, Session] = {}
        self.stopping = False
        self.closing = False
        self.conns: List[Conn] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)
        #: The port it listens on.
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept, name="refserver-accept", daemon=True)
        self._accept_thread.start()

    def joined(self) -> int:
        """How many sessions were started."""
        return self.next_id

    def _accept(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            with self.lock:
                sessions = list(self.sessions.values())
            for session in sessions:
                session._expire(now)
            try:
                sock, addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(self, sock, addr)
            with self.lock:
                self.conns.append(conn)
            conn.thread.start()

    def wait_clients(self, count: Optional[int] = None, timeout: float = 10.0) -> List[Conn]:
        """Waits until ``count`` (default: all) sessions started; returns their
        current (latest) connections by id."""
        count = self.clients if count is None else count
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.next_id < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"only {self.next_id} of {count} clients joined")
                self.joined_cond.wait(remaining)
            sessions = sorted(self.sessions.values(), key=lambda s: s.id)
        return [s.conns[-1] for s in sessions]

    def session(self, id_: int = 0, timeout: float = 10.0) -> Session:
        """The session with this id, waiting for it."""
        self.wait_clients(id_ + 1, timeout)
        with self.lock:
            return self.sessions[id_]

    def conn(self, id_: int = 0, timeout: float = 10.0) -> Conn:
        """The current connection of the session with this id, waiting for it."""
        return self.session(id_, timeout).conns[-1]

    def wait_connections(self, count: int, timeout: float = 10.0) -> List[Conn]:
        """Waits until ``count`` connections were accepted (welcomed or not)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.conns) >= count:
                    return list(self.conns)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.conns)} connections")
            time.sleep(0.01)

    def forget(self, id_: int) -> None:
        """Loses a session (as a restarted server would): resumes are refused."""
        with self.lock:
            session = self.sessions[id_]
        with session.cond:
            session._end_locked("forgotten")

    def close(self) -> None:
        """Stops accepting, closes every connection and joins every thread."""
        self.stopping = True
        try:
            self._listener.close()
        except OSError:
            pass
        self._accept_thread.join(5)
        for conn in list(self.conns):
            conn._wake()
            conn.thread.join(5)

    def __enter__(self) -> "ReferenceServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
