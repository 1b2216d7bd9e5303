"""The client: connects to a fedcomm server, completes the handshake, then
receives and sends MessagePack values while a background thread keeps the
connection alive and, after a drop, resumes the session on a new connection.

Threads:

- The thread that calls :func:`connect` runs the TCP connect, the TLS
  handshake and the fedcomm handshake.
- Then a daemon **I/O thread** owns the socket: it alone calls ``recv`` and
  ``send`` on it (a non-blocking socket driven by ``selectors``), so a TLS
  socket is never used by two threads at once and frames never interleave. It
  reads frames continuously into a bounded queue, answers pings at once,
  acknowledges the messages it receives, sends a ping after ``heartbeat``
  seconds without writing, declares the server dead after ``idle_timeout``
  seconds without receiving anything, and reconnects after a drop.
- :meth:`Client.send` and :meth:`Client.reply` encode in the calling thread,
  hand the frame to the I/O thread and wait until the kernel has taken all of
  it (so the caller may then change its arrays: a message kept for a resume
  is copied if needed). :meth:`Client.recv` takes the next decoded value from
  the queue. They may be called from any thread.

This module holds :class:`Client` (its constructor, sending, replying and
closing) and :func:`connect`; the other parts of the client are in private
modules: ``_options`` and ``_props`` (the
checks of the arguments), ``_progress``, ``_outframe`` (frames queued for
writing), ``_retention`` and ``_acks`` (what is unacknowledged each way),
``_state`` (the shared attributes), ``_setup`` (connecting and the
handshakes), ``_io`` and ``_receive`` (the I/O thread), ``_resume``
(reconnecting), ``_send``, ``_inbox`` (receiving) and ``_properties``.
"""

from __future__ import annotations

import selectors
import threading
import time
from typing import Any, Dict, Mapping, Optional, Union

from ._framing import DEFAULT_MAX_FRAME_BYTES
from ._handshake import Handshake
from ._inbox import _Inbox
from ._options import MIN_SECRET_BYTES as MIN_SECRET_BYTES
from ._options import TLSOption, _check_arguments, _check_session_arguments
from ._progress import Progress, ProgressCallback
from ._properties import _Properties
from ._props import PropValue
# The constants and types below are defined elsewhere but importable from here too.
from ._receive import QUEUE_LIMIT_BYTES
from ._receive import QUEUE_LIMIT_MESSAGES as QUEUE_LIMIT_MESSAGES
from ._retention import DEFAULT_RETAIN_BYTES
from ._send import _Sender
from ._state import DisconnectCallback, ResumeCallback
from .errors import PeerDisconnectedError

__all__ = [
    "Client",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_RETAIN_BYTES",
    "DEFAULT_TIMEOUT",
    "DisconnectCallback",
    "Progress",
    "ProgressCallback",
    "PropValue",
    "QUEUE_LIMIT_BYTES",
    "ResumeCallback",
    "connect",
]

#: Seconds for connecting and the handshake, by default.
DEFAULT_TIMEOUT = 10.0
#: Seconds without writing after which the client sends a ping, by default.
DEFAULT_HEARTBEAT = 15.0
#: Seconds without receiving anything after which the server is declared dead, by default.
DEFAULT_IDLE_TIMEOUT = 60.0
#: How long close() waits for the server to acknowledge the messages sent.
_CLOSE_ACK_SECONDS = 5.0
#: ... and then for the I/O thread to finish.
_CLOSE_JOIN_SECONDS = 2.0


class Client(_Sender, _Inbox, _Properties):
    """A session with a fedcomm server (protocol version 3), after a completed handshake.

    Prefer :func:`connect`, which takes the same arguments. Use it as a context
    manager, or call :meth:`close`.

    Messages are numbered 1, 2, 3, … each way for the whole session; each side
    acknowledges what it received, and keeps what it sent until acknowledged.
    When the server offers a grace period (its welcome's ``grace``, 5 minutes
    by default with the Deno server) and the connection drops (the server
    closed or reset it, or went silent for ``idle_timeout``), the I/O thread
    reconnects and resumes the session: nothing is lost or duplicated, and
    :meth:`recv` and :meth:`send` just wait meanwhile (within their timeouts).
    If the session cannot be resumed within the grace, they raise
    :class:`PeerDisconnectedError`.

    Args:
        host: The server's address.
        port: The server's TCP port.
        timeout: Seconds for connecting (and waiting for the server), the TLS
            handshake and the fedcomm handshake together (also for each try
            of a resume); ``None``: no limit.
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
        props: Metadata for the server (its ``stats()``): a dict of at most 16
            entries, keys of 1 to 64 UTF-8 bytes, values ``None``, ``bool``,
            ``int``, ``float`` or ``str`` of at most 256 UTF-8 bytes.
        resume: Resume the session after a drop when the server offers a
            grace period (default ``True``).
        retain_bytes: Sends wait while this many bytes of sent messages are
            not yet acknowledged by the server (default 64 MiB), which bounds
            the memory kept for a resume.
        on_disconnect: Called (in the I/O thread) with the error when the
            connection drops and the client starts resuming the session.
        on_resume: Called (in the I/O thread) with the number of resumes so
            far once the session is resumed. Exceptions the callbacks raise
            are logged and ignored.

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
        props: Optional[Mapping[str, PropValue]] = None,
        resume: bool = True,
        retain_bytes: int = DEFAULT_RETAIN_BYTES,
        on_disconnect: Optional[DisconnectCallback] = None,
        on_resume: Optional[ResumeCallback] = None,
    ) -> None:
        timeout, secret_bytes, context, heartbeat, idle_timeout = _check_arguments(
            host, port, timeout, name, secret, tls, heartbeat, idle_timeout,
            max_frame_bytes, on_progress,
        )
        checked_props = _check_session_arguments(
            props, resume, retain_bytes, on_disconnect, on_resume
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
        #: Sends wait while this many bytes of sent messages are unacknowledged.
        self.retain_bytes = retain_bytes
        #: The metadata sent in the hello (``None``: none).
        self.props = checked_props
        self._on_progress = on_progress
        self._on_disconnect = on_disconnect
        self._on_resume = on_resume
        self._secret = secret_bytes
        self._context = context
        self._hostname = server_hostname or host
        self._props = checked_props
        self._resume_enabled = resume
        self._init_state()

        deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        try:
            welcome = self._connect(
                lambda: Handshake(name, secret_bytes, checked_props), deadline, wait_for_server
            )
            #: The whole welcome map (a later server may add keys; updated by a resume).
            self.welcome: Dict[str, Any] = welcome.message
            #: This client's id (the same for the whole session).
            self.id: int = welcome.id
            #: How many clients the server serves (at most at once, for an open server).
            self.clients: int = welcome.clients
            #: The largest frame body the server accepts (from its welcome).
            self.server_max_frame_bytes: int = welcome.max_frame_bytes
            self._token = welcome.token
            self._grace = welcome.grace / 1000
            self._start_thread()
        except BaseException:
            self._closed = True
            self._close_socket(graceful=False)
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            raise

    # -- sending --------------------------------------------------------------

    def send(
        self,
        value: Any,
        timeout: Optional[float] = None,
        *,
        on_progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Sends one value to the server (an unsolicited message; see :meth:`reply`).

        The value is encoded in the calling thread; the data of large numpy
        arrays and byte strings is then written straight from their memory.
        Returns once the kernel has taken every byte: then you may change the
        arrays (the copy kept for a resume until the server acknowledges the
        message is made then, if needed). Frames are written whole, never
        interleaved with other frames (pongs and pings wait for the frame to
        end). While ``retain_bytes`` of earlier messages are unacknowledged,
        or the session is being resumed, the send waits.

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
                (or this client) accepts. Nothing was sent; the session
                stays usable.
            TypeError, ValueError, OverflowError: The value cannot be encoded.
                Nothing was sent.
            PeerDisconnectedError: The session is over or was closed.
            FedcommTimeoutError: The server did not take the frame in time.
                If nothing of it was written, the message was dropped
                ("nothing was sent"); otherwise it stays queued and will be
                delivered whole. The session stays usable either way.
        """
        self._check_not_io_thread("send")
        self._check_usable()
        parts, size = self._encode(value, 0)
        self._submit(parts, size, timeout, on_progress)

    def reply(
        self,
        value: Any,
        to: Optional[int] = None,
        timeout: Optional[float] = None,
        *,
        on_progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Sends ``value`` as the answer to a message of the server.

        The server can then tell an answer to its latest request from a late
        answer to an earlier one. Otherwise as :meth:`send`.

        Args:
            value: As for :meth:`send`.
            to: The number of the message answered (see :attr:`last_received`;
                the session's first message from the server is 1). Default:
                the last message taken with :meth:`recv` or iteration.
            timeout: As for :meth:`send`.
            on_progress: As for :meth:`send`.

        Raises:
            ValueError: No message was taken yet (and no ``to``), or ``to``
                is not the number of a message received.
            TypeError: ``to`` is not an int.
            FrameTooLargeError, PeerDisconnectedError, FedcommTimeoutError:
                As for :meth:`send`.
        """
        self._check_not_io_thread("reply")
        self._check_usable()
        request = self._reply_target(to)
        parts, size = self._encode(value, request)
        self._submit(parts, size, timeout, on_progress)

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Ends the session for good. Safe to call more than once.

        Waits (at most 5 s) until the server has acknowledged the messages
        sent, then tells it that the session is over (``c1 06``: the server
        does not wait for a resume), closes the connection and stops the I/O
        thread. Sends that did not start are refused; messages not yet taken
        with :meth:`recv` are dropped. While the session is being resumed, it
        stops resuming at once.
        """
        with self._cond:
            already = self._closed
            self._closed = True
            if not already:
                self._close_deadline = time.monotonic() + _CLOSE_ACK_SECONDS
                closed = PeerDisconnectedError("Connection closed: close() was called")
                for frame in self._outbox:
                    if frame.error is None:
                        frame.error = closed
                self._outbox.clear()
                self._inbox.clear()
                self._queued_bytes = 0
            self._cond.notify_all()
        if already and self._thread is None:
            return
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_CLOSE_ACK_SECONDS + _CLOSE_JOIN_SECONDS)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "resuming" if self._resuming else "open"
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
    props: Optional[Mapping[str, PropValue]] = None,
    resume: bool = True,
    retain_bytes: int = DEFAULT_RETAIN_BYTES,
    on_disconnect: Optional[DisconnectCallback] = None,
    on_resume: Optional[ResumeCallback] = None,
) -> Client:
    """Connects to a fedcomm server and completes the handshake.

    See :class:`Client` for the arguments and the exceptions.

    Example::

        import fedcomm

        with fedcomm.connect("127.0.0.1", 9000, name="hospital-a", secret="s3cret") as client:
            for message in client:  # until the server ends the session
                client.reply({"round": message["round"], "weights": message["weights"] * 0.5})

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
        props=props,
        resume=resume,
        retain_bytes=retain_bytes,
        on_disconnect=on_disconnect,
        on_resume=on_resume,
    )
