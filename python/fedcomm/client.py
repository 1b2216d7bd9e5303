"""The client: :class:`Client` and :func:`connect`.

A :class:`Client` is composed of parts that each do one thing and get what
they need passed in: the settings (``_options``: the checked keyword
arguments), the protocol state of the session behind its lock (``_shared``,
``_protocol.session``: numbering, acks, retention, inbox, the frames due),
the byte counts and timers (``_protocol.traffic``), the connection setup
(``_connector``, ``_dial``), the I/O thread (``_io``, ``_reading``,
``_resume``) and the sending of messages (``_sending``).

Threads: the thread that calls :func:`connect` runs the TCP connect, the TLS
handshake and the fedcomm handshake. Then a daemon I/O thread owns the
socket: it alone reads and writes it (a non-blocking socket driven by
``selectors``), so a TLS socket is never used by two threads at once and
frames never interleave. :meth:`Client.send`, :meth:`Client.reply` and
:meth:`Client.recv` may be called from any thread: a send encodes in the
calling thread, hands the frame to the I/O thread and waits until the kernel
has taken all of it; a receive takes the next value the I/O thread queued.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, Optional

from ._connector import Connector
from ._io import IOThread
from ._options import Options, check_options, fmt_seconds, options_signature
from ._protocol.handshake import Welcome
from ._protocol.session import Session
from ._protocol.traffic import Traffic
from ._sending import Sender
from ._shared import Shared
from .errors import FedcommTimeoutError, PeerDisconnectedError

# Defined elsewhere, and importable from here too.
from ._options import DEFAULT_HEARTBEAT, DEFAULT_IDLE_TIMEOUT, DEFAULT_TIMEOUT  # isort: skip
from ._options import MIN_SECRET_BYTES as MIN_SECRET_BYTES  # isort: skip
from ._options import DisconnectCallback, ResumeCallback  # isort: skip
from ._progress import Progress, ProgressCallback  # isort: skip
from ._protocol.inbox import QUEUE_LIMIT_BYTES  # isort: skip
from ._protocol.inbox import QUEUE_LIMIT_MESSAGES as QUEUE_LIMIT_MESSAGES  # isort: skip
from ._protocol.props import PropValue  # isort: skip
from ._protocol.retention import DEFAULT_RETAIN_BYTES  # isort: skip

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

#: How long close() waits for the server to acknowledge the messages sent.
_CLOSE_ACK_SECONDS = 5.0
#: ... and then for the I/O thread to finish.
_CLOSE_JOIN_SECONDS = 2.0


class Client:
    """A session with a fedcomm server (protocol version 3), after a completed handshake.

    Prefer :func:`connect`, which takes the same arguments (all keyword-only
    but ``host`` and ``port``). Use it as a context manager, or call
    :meth:`close`.

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
        max_message_bytes: The largest long message accepted from the server,
            and sent to it (default 16 GiB; 0: none). A long message
            (PROTOCOL.md §8.8) carries a value larger than a frame, or holding
            a binary of 4 GiB or more, as a header frame and part frames; the
            client announces this limit in its hello and sends long messages
            only to a server whose welcome announces one too.
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

    @options_signature
    def __init__(self, host: str, port: int, **options: Any) -> None:
        settings = check_options(host, port, Options.from_keywords("Client.__init__", options))
        #: The server's address, as given.
        self.host = host
        #: The server's port, as given.
        self.port = port
        #: This client's name, as sent in the hello (``None``: none).
        self.name = settings.name
        #: The largest frame body accepted from the server.
        self.max_frame_bytes = settings.max_frame_bytes
        #: The largest long message accepted from the server (0: none).
        self.max_message_bytes = settings.max_message_bytes
        #: Seconds without writing before a ping (``None``: never).
        self.heartbeat = settings.heartbeat
        #: Seconds of silence after which the server is declared dead (``None``: never).
        self.idle_timeout = settings.idle_timeout
        #: Whether the connection is encrypted with TLS.
        self.tls = settings.context is not None
        #: Sends wait while this many bytes of sent messages are unacknowledged.
        self.retain_bytes = settings.retain_bytes
        #: The metadata sent in the hello (``None``: none).
        self.props = settings.props
        self._traffic = Traffic(settings.heartbeat, settings.idle_timeout, time.monotonic())
        self._shared = Shared(Session(settings.retain_bytes, settings.resume))
        conn, welcome = Connector(settings, self._traffic).connect()
        try:
            self._shared.session.start(welcome)
            self._io = IOThread(settings, self._shared, self._traffic, conn)
            self._sender = Sender(settings, self._shared, self._io)
            self._io.start()
        except BaseException:
            conn.close(graceful=False)
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
        message is made then, if needed). A value too large for one frame (or
        holding a binary of 4 GiB or more) goes as a long message when the
        server takes them; such a send returns once the server acknowledged
        it, so nothing is copied (or, if ``timeout`` runs out first, once it
        is written whole, its data then copied for a resume). Frames are written whole, never
        interleaved with other frames (pongs and pings wait for the frame to
        end). While ``retain_bytes`` of earlier messages are unacknowledged,
        or the session is being resumed, the send waits; while a send waits
        for acks (for room, or for the ack of its long message), the I/O
        thread asks the server for them with a ping, once per wait.

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
                (or this client) accepts in a frame, and cannot go as a long
                message (one of the two takes none). Nothing was sent; the
                session stays usable.
            MessageTooLargeError: The value, as a long message, exceeds the
                server's (or this client's) ``maxMessageBytes``. Nothing was
                sent; the session stays usable.
            TypeError, ValueError, OverflowError: The value cannot be encoded.
                Nothing was sent.
            PeerDisconnectedError: The session is over or was closed.
            FedcommTimeoutError: The server did not take the frame in time.
                If nothing of it was written, the message was dropped
                ("nothing was sent"); otherwise it stays queued and will be
                delivered whole. The session stays usable either way.
        """
        self._sender.send(value, False, None, timeout, on_progress)

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
            FrameTooLargeError, MessageTooLargeError, PeerDisconnectedError,
            FedcommTimeoutError: As for :meth:`send`.
        """
        self._sender.send(value, True, to, timeout, on_progress)

    # -- receiving ------------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Any:
        """Returns the next message from the server, waiting for it if needed.

        Messages are read by the I/O thread as they arrive; this takes the
        oldest one from the queue (its number becomes :attr:`last_received`).
        Messages received before an error are returned first; the error is
        raised once they are taken. While the session is being resumed, this
        waits.

        Args:
            timeout: Seconds to wait (default: no limit). A timeout loses nothing.

        Returns:
            The decoded value: dicts, lists, str, bytes, int, float, bool,
            None, numpy arrays (read-only: ``.copy()`` to change them) and
            scalars, UTC datetimes.

        Raises:
            PeerDisconnectedError: The server ended the session (it closed it,
                or it could not be resumed) and no message is left, or
                :meth:`close` was called.
            FedcommTimeoutError: Nothing arrived in time.
            FrameTooLargeError: The server announced a frame over
                ``max_frame_bytes`` (the session is over).
            MessageTooLargeError: The server announced a long message over
                ``max_message_bytes`` (the session is over).
            ProtocolError: The server broke the protocol (the session is over).
        """
        self._io.check_caller("recv")
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._shared.cond
        with cond:
            while True:
                taken = self._shared.session.take()
                if taken is not None:
                    value, may_read = taken
                    if may_read:
                        self._io.wake()  # the inbox has room again
                    return value
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise FedcommTimeoutError(f"Receive timed out after {fmt_seconds(timeout)} s")
                cond.wait(remaining)

    def __iter__(self) -> Iterator[Any]:
        """Yields every message until the server ends the session (a close,
        or a disconnect it does not resume) or :meth:`close` is called; other
        errors (a session that could not be resumed among them) are raised."""
        session = self._shared.session
        while True:
            try:
                message = self.recv()
            except PeerDisconnectedError:
                if session.eof or session.closed:
                    return
                raise
            yield message

    # -- closing --------------------------------------------------------------

    def close(self) -> None:
        """Ends the session for good. Safe to call more than once.

        Waits (at most 5 s) until the server has acknowledged the messages
        sent, then tells it that the session is over (``c1 06``: the server
        does not wait for a resume), closes the connection and stops the I/O
        thread. While messages await their ack, the I/O thread sends a ping
        once they are written: the server answers with the ack it owes
        before the pong (PROTOCOL.md §8.3), so close() does not wait for the
        server's ack delay (up to 2 s; 0.5 to 1 s with the Deno library). Sends that did not start are refused; messages not yet taken
        with :meth:`recv` are dropped. While the session is being resumed, it
        stops resuming at once.
        """
        with self._shared.cond:
            self._shared.session.close(time.monotonic() + _CLOSE_ACK_SECONDS)
            self._shared.cond.notify_all()
        self._io.wake()
        self._io.join(_CLOSE_ACK_SECONDS + _CLOSE_JOIN_SECONDS)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "resuming" if self.resuming else "open"
        return (
            f"<fedcomm.Client {self.host}:{self.port} id={self.id} clients={self.clients} "
            f"{'tls ' if self.tls else ''}{state}>"
        )

    # -- state ----------------------------------------------------------------

    @property
    def welcome(self) -> Dict[str, Any]:
        """The whole welcome map (a later server may add keys; the latest, after a resume)."""
        return self._welcome.message

    @property
    def id(self) -> int:
        """This client's id (the same for the whole session)."""
        return self._welcome.id

    @property
    def clients(self) -> int:
        """How many clients the server serves (at most at once, for an open server)."""
        return self._welcome.clients

    @property
    def server_max_frame_bytes(self) -> int:
        """The largest frame body the server accepts (from its welcome)."""
        return self._welcome.max_frame_bytes

    @property
    def server_max_message_bytes(self) -> int:
        """The largest long message the server accepts (from its welcome; 0:
        it takes none, or this client announced none)."""
        return self._welcome.max_message_bytes

    @property
    def _welcome(self) -> Welcome:
        welcome = self._shared.session.welcome
        assert welcome is not None  # (set before __init__ returns)
        return welcome

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the server, frame headers, handshakes, pings, acks and messages sent again included."""
        return self._traffic.bytes_sent

    @property
    def bytes_received(self) -> int:
        """Bytes read from the server, frame headers, handshakes, pings and acks included."""
        return self._traffic.bytes_received

    @property
    def messages_sent(self) -> int:
        """Application messages (values and replies) written completely (once each)."""
        return self._shared.session.messages_sent

    @property
    def messages_received(self) -> int:
        """Application values received on the session (queued for :meth:`recv` or already taken)."""
        return self._shared.session.acks.received

    @property
    def last_received(self) -> int:
        """The number of the last message taken with :meth:`recv` or iteration
        (1 for the session's first; 0: none yet): what :meth:`reply` answers."""
        return self._shared.session.inbox.last_taken

    @property
    def retained_bytes(self) -> int:
        """Bytes of sent messages kept until the server acknowledges them."""
        return self._shared.session.retention.bytes

    @property
    def grace(self) -> float:
        """Seconds the server keeps the session after a drop (0: no resume)."""
        return self._shared.session.grace

    @property
    def resumes(self) -> int:
        """How many times the session was resumed on a new connection."""
        return self._shared.session.resumes

    @property
    def resuming(self) -> bool:
        """Whether the connection dropped and the client is resuming the session."""
        return self._shared.session.resuming

    @property
    def rtt(self) -> Optional[float]:
        """Seconds from sending the last answered ping to receiving its pong (``None`` before)."""
        return self._traffic.rtt

    @property
    def last_heard(self) -> float:
        """:func:`time.monotonic` when the last byte was received from the server."""
        return self._traffic.last_heard

    @property
    def closed(self) -> bool:
        """Whether the session is over (by :meth:`close`, the server or an error)."""
        return self._shared.session.over


@options_signature
def connect(host: str, port: int, **options: Any) -> Client:
    """Connects to a fedcomm server and completes the handshake.

    Takes the arguments of :class:`Client` (``options``: its keyword
    arguments, with the same defaults) and raises its exceptions.

    Example::

        import fedcomm

        with fedcomm.connect("127.0.0.1", 9000, name="hospital-a", secret="s3cret") as client:
            for message in client:  # until the server ends the session
                client.reply({"round": message["round"], "weights": message["weights"] * 0.5})

    Returns:
        The connected :class:`Client`.
    """
    return Client(host, port, **options)
