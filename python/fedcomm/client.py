"""The client: connects to a fedcomm server, completes the handshake, then
receives and sends MessagePack values while a background thread keeps the
connection alive.

Threads:

- The thread that calls :func:`connect` runs the TCP connect, the TLS
  handshake and the fedcomm handshake.
- Then a daemon **I/O thread** owns the socket: it alone calls ``recv`` and
  ``send`` on it (a non-blocking socket driven by ``selectors``), so a TLS
  socket is never used by two threads at once and frames never interleave. It
  reads frames continuously into a bounded queue, answers pings at once, sends
  a ping after ``heartbeat`` seconds without writing, and declares the server
  dead after ``idle_timeout`` seconds without receiving anything.
- :meth:`Client.send` encodes in the calling thread, hands the frame to the
  I/O thread and waits until the kernel has taken all of it (so the caller may
  then change its arrays). :meth:`Client.recv` takes the next decoded value
  from the queue. Both may be called from any thread.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Union,
)


from ._codec import Part, decode, encode_parts
from ._framing import (
    CONTROL,
    DEFAULT_MAX_FRAME_BYTES,
    HANDSHAKE,
    HANDSHAKE_FRAME_BYTES,
    HEADER,
    HEADER_BYTES,
    MAX_FRAME_BYTES_LIMIT,
    PING,
    PING_BODY_BYTES,
    PONG,
    PROGRESS_CHUNK_BYTES,
    FrameReader,
    control_frame,
)
from ._handshake import MAX_NAME_BYTES, Handshake, parse_handshake
from .errors import (
    AuthenticationError,
    FedcommError,
    FedcommTimeoutError,
    FrameTooLargeError,
    PeerDisconnectedError,
    ProtocolError,
)

__all__ = [
    "Client",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_TIMEOUT",
    "Progress",
    "ProgressCallback",
    "QUEUE_LIMIT_BYTES",
    "connect",
]

_log = logging.getLogger("fedcomm")

#: Seconds for connecting and the handshake, by default.
DEFAULT_TIMEOUT = 10.0
#: Seconds without writing after which the client sends a ping, by default.
DEFAULT_HEARTBEAT = 15.0
#: Seconds without receiving anything after which the server is declared dead, by default.
DEFAULT_IDLE_TIMEOUT = 60.0
#: The I/O thread stops reading while more than this many body bytes wait in the queue.
QUEUE_LIMIT_BYTES = 64 * 1024 * 1024
#: ... or more than this many messages.
QUEUE_LIMIT_MESSAGES = 65_536
#: The shortest secret accepted (as the Deno library): a random key, not a password.
MIN_SECRET_BYTES = 16
#: Backoff between connection attempts with ``wait_for_server``.
_RETRY_FIRST = 0.1
_RETRY_MAX = 2.0
#: The I/O thread reads at most this much before looking at its other work.
_READ_BURST_BYTES = 16 * 1024 * 1024
#: Pings awaiting their pong that are remembered (for the RTT).
_PINGS_KEPT = 16
#: How long close() waits for the I/O thread.
_CLOSE_JOIN_SECONDS = 5.0

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError)
_RETRY_ERRNOS = frozenset(
    code
    for code in (
        getattr(errno, "ECONNREFUSED", None),
        getattr(errno, "ENETUNREACH", None),
        getattr(errno, "EHOSTUNREACH", None),
        getattr(errno, "EHOSTDOWN", None),
        getattr(errno, "ENETDOWN", None),
        getattr(errno, "ECONNRESET", None),
        getattr(errno, "ECONNABORTED", None),
    )
    if code is not None
)

TLSOption = Union[None, bool, ssl.SSLContext, str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Progress:
    """How far a frame has been sent or received.

    Reported as bytes go: for a large body at least every 4 MiB (so a 300 MB
    upload reports about 75 times), and always once with ``done == total`` at
    the end. Counts are body bytes (the 4-byte frame header is not counted).

    Attributes:
        direction: ``"send"`` or ``"receive"``.
        done: Body bytes moved so far (strictly increasing, ends at ``total``).
        total: The size of the frame body.
    """

    direction: Literal["send", "receive"]
    done: int
    total: int

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 for an empty body)."""
        return self.done / self.total if self.total else 1.0


#: The type of an ``on_progress`` callback.
ProgressCallback = Callable[[Progress], None]


def _call_progress(callback: ProgressCallback, event: Progress) -> None:
    try:
        callback(event)
    except Exception:  # a broken callback must not break the connection
        _log.exception("fedcomm: the on_progress callback raised; ignored")


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


def _number(value: Any, what: str, allow_none: bool = True) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise TypeError(f"Invalid {what}: {value!r} is not a number")
    if value < 0:
        raise ValueError(f"Invalid {what}: {value!r} is negative")
    return float(value)


def _secret_bytes(secret: Union[None, str, bytes, bytearray, memoryview]) -> Optional[bytes]:
    if secret is None:
        return None
    if isinstance(secret, str):
        data = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        data = bytes(secret)
    else:
        raise TypeError(f"Invalid secret: expected str or bytes, got {type(secret).__name__}")
    if len(data) < MIN_SECRET_BYTES:
        raise ValueError(
            f"Invalid secret: {len(data)} bytes is shorter than {MIN_SECRET_BYTES}; "
            'use a random key such as "openssl rand -hex 32"'
        )
    return data


def _tls_context(tls: TLSOption) -> Optional[ssl.SSLContext]:
    if tls is None or tls is False:
        return None
    if tls is True:
        return ssl.create_default_context()
    if isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, (str, os.PathLike)):
        # The file is the only trust anchor: the system's CAs are not loaded.
        return ssl.create_default_context(cafile=os.fspath(tls))
    raise TypeError(
        f"Invalid tls: expected True, an ssl.SSLContext or a CA file path, got {tls!r}"
    )


def _fmt(seconds: Optional[float]) -> str:
    return "unlimited" if seconds is None else f"{seconds:g}"


class Client:
    """A connection to a fedcomm server (protocol version 2), after a completed handshake.

    Prefer :func:`connect`, which takes the same arguments. Use it as a context
    manager, or call :meth:`close`.

    Args:
        host: The server's address.
        port: The server's TCP port.
        timeout: Seconds for connecting (and waiting for the server), the TLS
            handshake and the fedcomm handshake together; ``None``: no limit.
        wait_for_server: Retry refused or unreachable connection attempts
            within ``timeout`` (backoff from 0.1 s doubling to 2 s), for
            clients started before their server.
        name: This client's name (1 to 128 UTF-8 bytes), sent in the hello;
            with authentication, it takes part in the proofs (a server may
            keep one secret per name).
        secret: A shared secret of at least 16 bytes (``str``: its UTF-8
            bytes), a random key such as ``openssl rand -hex 32``. The client then
            requires the server to prove it knows the secret, and proves it
            knows it too; the secret never crosses the wire.
        tls: ``True`` (the system's CAs), an :class:`ssl.SSLContext`, or the
            path of a PEM CA certificate used as the only trust anchor.
            ``None`` (default): plain TCP.
        server_hostname: The name checked against the server's certificate
            (default: ``host``).
        heartbeat: Send a ping after this many seconds without writing, so the
            server never declares a busy client dead (``None`` or 0: never).
        idle_timeout: Declare the server dead when nothing at all was received
            for this many seconds (``None`` or 0: never). Must exceed
            ``heartbeat``: an alive server answers the pings.
        max_frame_bytes: The largest frame body accepted from the server, and
            sent to it (default 512 MiB).
        on_progress: Called with a :class:`Progress` as frame bodies are sent
            and received. Receive events come from the I/O thread (keep the
            callback quick); send events from the thread that calls
            :meth:`send`. Exceptions it raises are logged and ignored.

    Raises:
        PeerDisconnectedError: The connection could not be made (refused,
            unreachable) or the server closed it during the handshake.
        FedcommTimeoutError: No connection or no welcome within ``timeout``.
        RejectedError: The server refused the client (``.reason``).
        AuthenticationError: The server did not prove it knows the secret, or
            its TLS certificate could not be verified.
        ProtocolError: The server's answer is not a valid handshake.
        TypeError, ValueError: An invalid argument.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        wait_for_server: bool = False,
        name: Optional[str] = None,
        secret: Union[None, str, bytes, bytearray] = None,
        tls: TLSOption = None,
        server_hostname: Optional[str] = None,
        heartbeat: Optional[float] = DEFAULT_HEARTBEAT,
        idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        on_progress: Optional[ProgressCallback] = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise TypeError(f"Invalid host: {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"Invalid port: {port!r}")
        timeout = _number(timeout, "timeout")
        if timeout == 0:
            raise ValueError("Invalid timeout: 0 (use None for no limit)")
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"Invalid name: expected str, got {type(name).__name__}")
            if not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
                raise ValueError(
                    f"Invalid name: {name!r} must be 1 to {MAX_NAME_BYTES} bytes of UTF-8"
                )
        secret_bytes = _secret_bytes(secret)
        context = _tls_context(tls)
        heartbeat = _number(heartbeat, "heartbeat") or None
        idle_timeout = _number(idle_timeout, "idle_timeout") or None
        if heartbeat is not None and idle_timeout is not None and idle_timeout <= heartbeat:
            raise ValueError(
                f"Invalid idle_timeout: {idle_timeout:g} s must exceed heartbeat "
                f"{heartbeat:g} s, or an idle but alive server would be declared dead"
            )
        if (
            isinstance(max_frame_bytes, bool)
            or not isinstance(max_frame_bytes, int)
            or not 0 <= max_frame_bytes <= MAX_FRAME_BYTES_LIMIT
        ):
            raise ValueError(
                f"Invalid max_frame_bytes: {max_frame_bytes!r} is not an integer "
                f"from 0 to {MAX_FRAME_BYTES_LIMIT}"
            )
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"Invalid on_progress: {on_progress!r} is not callable")

        #: The server's address, as given.
        self.host = host
        #: The server's port, as given.
        self.port = port
        #: This client's name, as sent in the hello (``None``: none).
        self.name = name
        #: The largest frame body accepted from the server.
        self.max_frame_bytes = max_frame_bytes
        #: Seconds without writing before a ping (``None``: never).
        self.heartbeat = heartbeat
        #: Seconds of silence after which the server is declared dead (``None``: never).
        self.idle_timeout = idle_timeout
        #: Whether the connection is encrypted with TLS.
        self.tls = context is not None
        self._on_progress = on_progress

        self._bytes_sent = 0
        self._bytes_received = 0
        self._messages_sent = 0
        self._messages_received = 0
        self._rtt: Optional[float] = None
        self._last_heard = time.monotonic()
        self._last_write = time.monotonic()
        self._alive_hint = 0.0
        self._pings: Dict[bytes, float] = {}
        self._rx_reported = 0

        self._cond = threading.Condition()
        self._inbox: Deque[Tuple[Any, int]] = deque()
        self._queued_bytes = 0
        self._outbox: Deque[_OutFrame] = deque()
        self._control: Deque[_OutFrame] = deque()
        self._current: Optional[_OutFrame] = None
        self._error: Optional[BaseException] = None
        self._closed = False
        self._eof = False
        self._thread: Optional[threading.Thread] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None

        deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        raw = self._dial(deadline, wait_for_server)
        self._sock: Union[socket.socket, ssl.SSLSocket] = raw
        self._selector = selectors.DefaultSelector()
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setblocking(False)
            if context is not None:
                self._sock = self._start_tls(raw, context, server_hostname or host, deadline)
            self._reader = FrameReader(HANDSHAKE_FRAME_BYTES, "the handshake limit")
            welcome = self._handshake(Handshake(name, secret_bytes), deadline)
            self._reader.set_limit(max_frame_bytes, "max_frame_bytes")
            #: The whole welcome map (a later server may add keys).
            self.welcome: Dict[str, Any] = welcome
            #: This client's id, from 0 to ``clients - 1``.
            self.id: int = welcome["id"]
            #: How many clients the server serves.
            self.clients: int = welcome["clients"]
            #: The largest frame body the server accepts (from its welcome).
            self.server_max_frame_bytes: int = welcome["maxFrameBytes"]
            self._selector.close()  # the I/O thread has its own
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._thread = threading.Thread(
                target=self._run, name=f"fedcomm-io-{host}:{port}", daemon=True
            )
            self._thread.start()
        except BaseException:
            self._closed = True
            self._close_socket(graceful=False)
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            raise

    # -- public state ---------------------------------------------------------

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the server, frame headers, handshake, pings and pongs included."""
        return self._bytes_sent

    @property
    def bytes_received(self) -> int:
        """Bytes read from the server, frame headers, handshake, pings and pongs included."""
        return self._bytes_received

    @property
    def messages_sent(self) -> int:
        """Application values written completely."""
        return self._messages_sent

    @property
    def messages_received(self) -> int:
        """Application values received (queued for :meth:`recv` or already taken)."""
        return self._messages_received

    @property
    def rtt(self) -> Optional[float]:
        """Seconds from sending the last answered ping to receiving its pong (``None`` before)."""
        return self._rtt

    @property
    def last_heard(self) -> float:
        """:func:`time.monotonic` when the last byte was received from the server."""
        return self._last_heard

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by :meth:`close`, the server or an error)."""
        return self._closed or self._error is not None

    # -- connecting -----------------------------------------------------------

    def _dial(self, deadline: Optional[float], wait: bool) -> socket.socket:
        host, port = self.host, self.port
        delay = _RETRY_FIRST
        last: Optional[BaseException] = None
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                detail = f": last attempt: {last}" if last is not None else ""
                raise FedcommTimeoutError(
                    f"Connect timed out after {_fmt(self._timeout)} s: {host}:{port}{detail}"
                ) from last
            try:
                return socket.create_connection((host, port), timeout=remaining)
            except socket.timeout as error:
                raise FedcommTimeoutError(
                    f"Connect timed out after {_fmt(self._timeout)} s: {host}:{port}"
                ) from error
            except OSError as error:
                retryable = isinstance(error, ConnectionError) or error.errno in _RETRY_ERRNOS
                if isinstance(error, socket.gaierror):
                    retryable = error.errno == socket.EAI_AGAIN
                if not (wait and retryable):
                    if isinstance(error, ConnectionRefusedError):
                        detail = (
                            "connection refused (is the server running? "
                            "wait_for_server=True waits for it)"
                        )
                    else:
                        detail = error.strerror or str(error)
                    raise PeerDisconnectedError(
                        f"Cannot connect to {host}:{port}: {detail}"
                    ) from error
                last = error
            pause = delay if deadline is None else min(delay, deadline - time.monotonic())
            if pause > 0:
                time.sleep(pause)
            delay = min(delay * 2, _RETRY_MAX)

    def _wait(self, events: int, deadline: Optional[float], what: str) -> None:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise FedcommTimeoutError(
                f"{what} timed out after {_fmt(self._timeout)} s: {self.host}:{self.port}"
            )
        try:
            self._selector.modify(self._sock, events)
        except KeyError:
            self._selector.register(self._sock, events)
        self._selector.select(remaining)

    def _start_tls(
        self,
        raw: socket.socket,
        context: ssl.SSLContext,
        hostname: str,
        deadline: Optional[float],
    ) -> ssl.SSLSocket:
        where = f"{self.host}:{self.port}"
        sock = context.wrap_socket(raw, server_hostname=hostname, do_handshake_on_connect=False)
        self._sock = sock
        while True:
            try:
                sock.do_handshake()
                return sock
            except ssl.SSLWantReadError:
                self._wait(selectors.EVENT_READ, deadline, "TLS handshake")
            except ssl.SSLWantWriteError:
                self._wait(selectors.EVENT_WRITE, deadline, "TLS handshake")
            except ssl.SSLCertVerificationError as error:
                detail = error.verify_message or error.reason or str(error)
                if error.verify_code in (18, 19, 20, 21):  # self-signed, unknown issuer
                    detail += " (not signed by a CA this client trusts: for a private CA pass tls=<its PEM file>)"
                raise AuthenticationError(
                    f"TLS certificate verification failed for {where} "
                    f"(as {hostname!r}): {detail}"
                ) from error
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as error:
                raise PeerDisconnectedError(
                    f"Server closed the connection during the TLS handshake: {where}"
                ) from error
            except ssl.SSLError as error:
                raise ProtocolError(
                    f"TLS handshake failed with {where}: {error.reason or error}"
                ) from error
            except OSError as error:
                raise PeerDisconnectedError(
                    f"Server disconnected during the TLS handshake: {where}: {error}"
                ) from error

    def _handshake(self, handshake: Handshake, deadline: Optional[float]) -> Dict[str, Any]:
        self._write_blocking(handshake.hello(), deadline)
        while True:
            body = self._read_frame_blocking(deadline)
            if body is None:
                raise PeerDisconnectedError(
                    f"Server closed the connection during the handshake, without a welcome: "
                    f"{self.host}:{self.port}"
                )
            if len(body) == 0:
                continue  # a heartbeat
            message = parse_handshake(body)
            reply = handshake.answer(message)
            if reply is None:
                return message
            self._write_blocking(reply, deadline)

    def _write_blocking(self, data: bytes, deadline: Optional[float]) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self._sock.send(view)
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                self._wait(selectors.EVENT_WRITE, deadline, "Handshake")
                continue
            except ssl.SSLWantReadError:
                self._wait(selectors.EVENT_READ, deadline, "Handshake")
                continue
            except OSError as error:
                raise PeerDisconnectedError(
                    f"Server disconnected during the handshake: {error}"
                ) from error
            self._bytes_sent += n
            self._last_write = time.monotonic()
            view = view[n:]

    def _read_frame_blocking(self, deadline: Optional[float]) -> Optional[memoryview]:
        reader = self._reader
        while True:
            body = reader.next_body()
            if body is not None:
                return memoryview(body)
            try:
                n = self._sock.recv_into(reader.target())
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._wait(selectors.EVENT_READ, deadline, "Handshake")
                continue
            except ssl.SSLWantWriteError:
                self._wait(selectors.EVENT_WRITE, deadline, "Handshake")
                continue
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                n = 0
            except OSError as error:
                raise PeerDisconnectedError(
                    f"Server disconnected during the handshake: {error}"
                ) from error
            if n == 0:
                reader.check_eof()
                return None
            reader.filled(n)
            self._bytes_received += n
            self._last_heard = time.monotonic()

    # -- sending --------------------------------------------------------------

    def send(
        self,
        value: Any,
        timeout: Optional[float] = None,
        *,
        on_progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Sends one value to the server.

        The value is encoded in the calling thread; the data of large numpy
        arrays and byte strings is then written straight from their memory.
        Returns once the kernel has taken every byte: then you may change the
        arrays. Frames are written whole, never interleaved with other frames
        (pongs and pings wait for the frame to end).

        Args:
            value: dicts, lists, tuples, str, bytes, int (64-bit), float, bool,
                None, timezone-aware datetimes, numpy arrays (bool, int8-64,
                uint8-64, float16/32/64) and numpy scalars.
            timeout: Seconds to wait for the server to take the frame
                (default: no limit; the server pauses reading while it is busy).
            on_progress: Called with :class:`Progress` events for this send,
                in this thread, instead of the client's ``on_progress``.

        Raises:
            FrameTooLargeError: The value encodes to more than the server
                (or this client) accepts. Nothing was sent; the connection
                stays usable.
            TypeError, ValueError, OverflowError: The value cannot be encoded.
                Nothing was sent.
            PeerDisconnectedError: The connection is gone or was closed.
            FedcommTimeoutError: The server did not take the frame in time.
                If nothing of it was written the connection stays usable;
                otherwise the frame was cut and the connection is closed.
        """
        self._check_not_io_thread("send")
        self._check_usable()
        parts, size = encode_parts(value)
        limit = min(self.server_max_frame_bytes, self.max_frame_bytes)
        if size > limit:
            what = (
                "the server's maxFrameBytes"
                if limit == self.server_max_frame_bytes
                else "max_frame_bytes"
            )
            raise FrameTooLargeError(size, limit, what)
        HEADER.pack_into(parts[0], 0, size)
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
                    return
                if error is not None:
                    raise error
        except BaseException:
            with self._cond:
                if not frame.started and frame in self._outbox:
                    self._outbox.remove(frame)
            raise

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

    # -- receiving ------------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Any:
        """Returns the next message from the server, waiting for it if needed.

        Messages are read by the I/O thread as they arrive; this takes the
        oldest one from the queue. Messages received before an error are
        returned first; the error is raised once they are taken.

        Args:
            timeout: Seconds to wait (default: no limit). A timeout loses nothing.

        Returns:
            The decoded value: dicts, lists, str, bytes, int, float, bool,
            None, numpy arrays (read-only: ``.copy()`` to change them) and
            scalars, UTC datetimes.

        Raises:
            PeerDisconnectedError: The server closed the connection (or went
                silent for ``idle_timeout``) and no message is left, or
                :meth:`close` was called.
            FedcommTimeoutError: Nothing arrived in time.
            FrameTooLargeError: The server announced a frame over
                ``max_frame_bytes`` (the connection is closed).
            ProtocolError: The server broke the protocol (the connection is closed).
        """
        self._check_not_io_thread("recv")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise PeerDisconnectedError("Connection closed: close() was called")
                if self._inbox:
                    paused = self._paused()
                    value, size = self._inbox.popleft()
                    self._queued_bytes -= size
                    if paused and not self._paused():
                        self._wake()
                    return value
                if self._error is not None:
                    raise self._error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise FedcommTimeoutError(f"Receive timed out after {_fmt(timeout)} s")
                self._cond.wait(remaining)

    def __iter__(self) -> Iterator[Any]:
        """Yields every message until the server closes the connection (or
        :meth:`close` is called); other errors are raised."""
        while True:
            try:
                message = self.recv()
            except PeerDisconnectedError:
                if self._eof or self._closed:
                    return
                raise
            yield message

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection and stops the I/O thread. Safe to call more than once.

        A frame another thread is still sending is cut; messages not yet
        taken with :meth:`recv` are dropped.
        """
        with self._cond:
            already = self._closed
            self._closed = True
            closed = PeerDisconnectedError("Connection closed: close() was called")
            for frame in self._pending_frames():
                if frame.error is None and not frame.done:
                    frame.error = closed
            self._cond.notify_all()
        if already and self._thread is None:
            return
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_CLOSE_JOIN_SECONDS)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        id_, clients = getattr(self, "id", None), getattr(self, "clients", None)
        return (
            f"<fedcomm.Client {self.host}:{self.port} id={id_} clients={clients} "
            f"{'tls ' if self.tls else ''}{state}>"
        )

    # -- shared state ---------------------------------------------------------

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


def connect(
    host: str,
    port: int,
    *,
    timeout: Optional[float] = DEFAULT_TIMEOUT,
    wait_for_server: bool = False,
    name: Optional[str] = None,
    secret: Union[None, str, bytes, bytearray] = None,
    tls: TLSOption = None,
    server_hostname: Optional[str] = None,
    heartbeat: Optional[float] = DEFAULT_HEARTBEAT,
    idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    on_progress: Optional[ProgressCallback] = None,
) -> Client:
    """Connects to a fedcomm server and completes the handshake.

    See :class:`Client` for the arguments and the exceptions.

    Example::

        import fedcomm

        with fedcomm.connect("127.0.0.1", 9000, name="hospital-a", secret="s3cret") as client:
            for message in client:  # until the server closes the connection
                client.send({"round": message["round"], "weights": message["weights"] * 0.5})

    Returns:
        The connected :class:`Client`.
    """
    return Client(
        host,
        port,
        timeout=timeout,
        wait_for_server=wait_for_server,
        name=name,
        secret=secret,
        tls=tls,
        server_hostname=server_hostname,
        heartbeat=heartbeat,
        idle_timeout=idle_timeout,
        max_frame_bytes=max_frame_bytes,
        on_progress=on_progress,
    )
