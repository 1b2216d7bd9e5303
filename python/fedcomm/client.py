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

This module holds :class:`Client`'s public methods and :func:`connect`; the
parts of the client are in private modules: ``_options`` (the checks of the
arguments), ``_progress``, ``_outframe`` (frames queued for writing),
``_state`` (the shared attributes), ``_setup`` (connecting and the handshakes)
and ``_io`` (the I/O thread).
"""

from __future__ import annotations

import selectors
import threading
import time
from typing import Any, Dict, Iterator, Optional, Union

from ._codec import encode_parts
from ._framing import DEFAULT_MAX_FRAME_BYTES, HEADER
from ._handshake import Handshake
# The constants and types below are defined elsewhere but importable from here too.
from ._io import QUEUE_LIMIT_BYTES
from ._io import QUEUE_LIMIT_MESSAGES as QUEUE_LIMIT_MESSAGES
from ._io import _IOLoop
from ._options import MIN_SECRET_BYTES as MIN_SECRET_BYTES
from ._options import TLSOption, _check_arguments, _fmt
from ._outframe import _OutFrame
from ._progress import Progress, ProgressCallback, _call_progress
from ._setup import _Setup
from .errors import FedcommTimeoutError, FrameTooLargeError, PeerDisconnectedError

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

#: Seconds for connecting and the handshake, by default.
DEFAULT_TIMEOUT = 10.0
#: Seconds without writing after which the client sends a ping, by default.
DEFAULT_HEARTBEAT = 15.0
#: Seconds without receiving anything after which the server is declared dead, by default.
DEFAULT_IDLE_TIMEOUT = 60.0
#: How long close() waits for the I/O thread.
_CLOSE_JOIN_SECONDS = 5.0


class Client(_Setup, _IOLoop):
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
        timeout, secret_bytes, context, heartbeat, idle_timeout = _check_arguments(
            host, port, timeout, name, secret, tls, heartbeat, idle_timeout,
            max_frame_bytes, on_progress,
        )

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
        self._init_state()

        deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        raw = self._dial(deadline, wait_for_server)
        self._sock = raw
        self._selector = selectors.DefaultSelector()
        try:
            handshake = Handshake(name, secret_bytes)
            welcome = self._open(raw, context, server_hostname or host, handshake, deadline)
            self._reader.set_limit(max_frame_bytes, "max_frame_bytes")
            #: The whole welcome map (a later server may add keys).
            self.welcome: Dict[str, Any] = welcome
            #: This client's id, from 0 to ``clients - 1``.
            self.id: int = welcome["id"]
            #: How many clients the server serves.
            self.clients: int = welcome["clients"]
            #: The largest frame body the server accepts (from its welcome).
            self.server_max_frame_bytes: int = welcome["maxFrameBytes"]
            self._start_thread()
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
