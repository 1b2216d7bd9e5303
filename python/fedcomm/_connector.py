"""Connecting: the TCP connect, the TLS handshake and the fedcomm handshake,
on a non-blocking socket with a deadline.

:class:`Connector` runs them for the thread that calls
:func:`~fedcomm.connect`, before the I/O thread starts (:meth:`Connector.connect`),
and for the I/O thread, to resume the session after a drop
(:meth:`Connector.reconnect`: then close() interrupts every wait). Both
return a :class:`Connection` and the server's welcome.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from typing import Callable, Optional, Tuple, Union

from ._dial import Backoff, Waiter, dial, dial_once
from ._options import Settings
from ._protocol.assembly import Assembler
from ._protocol.framing import HANDSHAKE_FRAME_BYTES, FrameDecoder
from ._protocol.handshake import Handshake, ResumeRequest, Welcome, parse_handshake
from ._protocol.traffic import Traffic
from ._waker import Waker
from .errors import (
    AuthenticationError,
    FrameTooLargeError,
    PeerDisconnectedError,
    ProtocolError,
    RejectedError,
)

#: Backoff between handshakes refused as ``busy``.
_BUSY_FIRST = 0.05
_BUSY_MAX = 2.0
#: OpenSSL's verify codes for a certificate not signed by a trusted CA (self-signed, unknown issuer).
_UNTRUSTED_CODES = (18, 19, 20, 21)

Socket = Union[socket.socket, ssl.SSLSocket]


class Connection:
    """A connection whose handshake completed: its socket (non-blocking), the
    decoder of the frames read from it, and the long message being received
    on it (the decoder reads large parts straight into place through it; a
    partial one is dropped with the connection)."""

    def __init__(self, sock: Socket, decoder: FrameDecoder, assembler: Assembler) -> None:
        self.sock = sock
        self.decoder = decoder
        self.assembler = assembler
        decoder.sink = assembler

    def close(self, graceful: bool) -> None:
        """Closes the socket (see :func:`close_socket`)."""
        close_socket(self.sock, graceful)


def close_socket(sock: Socket, graceful: bool) -> None:
    """Closes ``sock`` (``graceful``: with TLS, sends close_notify first; the
    peer's answer is not awaited)."""
    if graceful and isinstance(sock, ssl.SSLSocket):
        try:
            sock.unwrap()
        except (OSError, ValueError):
            pass
    try:
        sock.close()
    except OSError:
        pass


class Connector:
    """Opens the connections of one client.

    Args:
        settings: The client's settings.
        traffic: Counts the bytes of the handshakes.
        waker: In the I/O thread: interrupts the waits, and the try once
            ``waker.stopped()`` (:class:`~fedcomm._dial.Interrupted`).
    """

    def __init__(self, settings: Settings, traffic: Traffic, waker: Optional[Waker] = None) -> None:
        self._settings = settings
        self._traffic = traffic
        self._waker = waker

    def connect(self) -> Tuple[Connection, Welcome]:
        """Connects for a new session within the ``timeout`` of the settings; a
        ``busy`` server (too many connections in their handshake) is tried
        again after pauses from 50 ms doubling to 2 s, jittered."""
        settings = self._settings
        deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
        backoff = Backoff(_BUSY_FIRST, _BUSY_MAX)
        while True:
            raw = dial(settings, deadline)
            try:
                handshake = Handshake(
                    settings.name, settings.secret, settings.props,
                    max_message_bytes=settings.max_message_bytes,
                )
                return self._open(raw, handshake, deadline)
            except RejectedError as error:
                wait = backoff.next()
                if error.reason != "busy" or (
                    deadline is not None and time.monotonic() + wait >= deadline
                ):
                    raise
            time.sleep(wait)

    def reconnect(self, resume: ResumeRequest, deadline: float) -> Tuple[Connection, Welcome]:
        """One try of a resume: connect, TLS, hello with ``resume``."""
        assert self._waker is not None
        settings = self._settings
        raw = dial_once(settings, deadline, self._waker)
        handshake = Handshake(
            settings.name, settings.secret, settings.props, resume, settings.max_message_bytes
        )
        return self._open(raw, handshake, deadline)

    def _open(
        self, raw: socket.socket, handshake: Handshake, deadline: Optional[float]
    ) -> Tuple[Connection, Welcome]:
        """Runs the TLS handshake (with TLS) and the fedcomm handshake on the
        dialled socket, which is closed if they fail."""
        settings = self._settings
        waiter = Waiter(settings, raw, self._waker)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setblocking(False)
            if settings.context is not None:
                self._start_tls(waiter, settings.context, deadline)
            # Before the welcome the smaller of the two limits applies (PROTOCOL.md §3.1).
            decoder = FrameDecoder(
                min(HANDSHAKE_FRAME_BYTES, settings.max_frame_bytes), "the handshake limit"
            )
            self._handshake(waiter, decoder, handshake, deadline)
        except BaseException:
            close_socket(waiter.sock, graceful=False)
            raise
        finally:
            waiter.close()
        assert handshake.welcome is not None
        decoder.set_limit(settings.max_frame_bytes, "max_frame_bytes")
        assembler = Assembler(settings.max_message_bytes)
        return Connection(waiter.sock, decoder, assembler), handshake.welcome

    def _start_tls(self, waiter: Waiter, context: ssl.SSLContext, deadline: Optional[float]) -> None:
        """Wraps the waiter's socket in TLS and runs the TLS handshake."""
        where, hostname = self._settings.where, self._settings.hostname
        sock = context.wrap_socket(waiter.sock, server_hostname=hostname, do_handshake_on_connect=False)
        waiter.sock = sock
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                waiter.wait(selectors.EVENT_READ, deadline, "TLS handshake")
            except ssl.SSLWantWriteError:
                waiter.wait(selectors.EVENT_WRITE, deadline, "TLS handshake")
            except ssl.SSLCertVerificationError as error:
                detail = error.verify_message or error.reason or str(error)
                if error.verify_code in _UNTRUSTED_CODES:
                    detail += " (not signed by a CA this client trusts: for a private CA pass tls=<its PEM file>)"
                raise AuthenticationError(
                    f"TLS certificate verification failed for {where} "
                    f"(as {hostname!r}): {detail}"
                ) from error
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError) as error:
                raise PeerDisconnectedError(
                    f"Server closed the connection during the TLS handshake: {where}: it may not "
                    f"speak TLS (connect without tls if it does not): {error}"
                ) from error
            except ssl.SSLError as error:
                raise ProtocolError(
                    f"TLS handshake failed with {where}: {error.reason or error}"
                ) from error
            except OSError as error:
                raise PeerDisconnectedError(
                    f"Server disconnected during the TLS handshake: {where}: {error}"
                ) from error

    def _handshake(
        self, waiter: Waiter, decoder: FrameDecoder, handshake: Handshake, deadline: Optional[float]
    ) -> None:
        """Runs the fedcomm handshake until the welcome (in ``handshake.welcome``)."""
        self._write(waiter, handshake.hello(), deadline)
        while True:
            try:
                body = self._read_frame(waiter, decoder, deadline)
            except FrameTooLargeError as error:
                if self._settings.context is None and _is_tls_record(error.size):
                    raise ProtocolError(
                        "Server speaks TLS: pass tls=<its CA's PEM file> (or tls=True for a public "
                        f"CA): {self._settings.where} answered with a TLS record, not a fedcomm frame"
                    ) from error
                raise
            if body is None:
                raise PeerDisconnectedError(
                    f"Server closed the connection during the handshake, without a welcome: "
                    f"{self._settings.where}"
                )
            if len(body) == 0:
                continue  # a heartbeat
            reply = handshake.answer(parse_handshake(body))
            if reply is None:
                return
            self._write(waiter, reply, deadline)

    def _write(self, waiter: Waiter, data: bytes, deadline: Optional[float]) -> None:
        view = memoryview(data)
        while view:
            n = _transfer(waiter, lambda: waiter.sock.send(view), selectors.EVENT_WRITE, deadline)
            self._traffic.wrote(n, time.monotonic())
            view = view[n:]

    def _read_frame(
        self, waiter: Waiter, decoder: FrameDecoder, deadline: Optional[float]
    ) -> Optional[memoryview]:
        """The next frame body (``None``: the server closed the connection)."""
        while True:
            body = decoder.next_body()
            if body is not None:
                return memoryview(body)
            n = _transfer(
                waiter, lambda: waiter.sock.recv_into(decoder.target()), selectors.EVENT_READ, deadline
            )
            if n == 0:
                decoder.check_eof()
                return None
            decoder.filled(n)
            self._traffic.read(n, time.monotonic())


def _transfer(waiter: Waiter, call: Callable[[], int], blocked: int, deadline: Optional[float]) -> int:
    """Runs ``call`` (a ``send`` or ``recv_into`` of the handshake) until it
    does not block, waiting for ``blocked`` (the event it needs; TLS may ask
    for the other one). A TLS close while reading reads as 0 bytes.

    Raises:
        PeerDisconnectedError: The connection failed.
    """
    while True:
        try:
            return call()
        except (BlockingIOError, InterruptedError):
            events = blocked
        except ssl.SSLWantReadError:
            events = selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            events = selectors.EVENT_WRITE
        except OSError as error:
            if blocked == selectors.EVENT_READ and isinstance(
                error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)
            ):
                return 0
            raise PeerDisconnectedError(
                f"Server disconnected during the handshake: {error}"
            ) from error
        waiter.wait(events, deadline, "Handshake")


def _is_tls_record(length: int) -> bool:
    """Whether a frame header's length is really a TLS record header (content
    type 20-23, version 3.x): a server that speaks TLS."""
    return 0x14 <= length >> 24 <= 0x17 and (length >> 16) & 0xFF == 3
