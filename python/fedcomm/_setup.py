"""Connecting: the TCP connect (with retries for ``wait_for_server``), the TLS
handshake and the fedcomm handshake, on the non-blocking socket with a
deadline. Run by the thread that calls :func:`~fedcomm.connect` before the I/O
thread starts, and by the I/O thread to resume the session after a drop (then
:meth:`close` interrupts every wait). :class:`_Setup` is a mixin of
:class:`~fedcomm.Client`."""

from __future__ import annotations

import errno
import os
import random
import selectors
import socket
import ssl
import time
from typing import Any, Callable, Dict, Optional

from ._framing import HANDSHAKE_FRAME_BYTES, FrameReader
from ._handshake import Handshake, Welcome, parse_handshake
from ._options import _fmt
from ._state import _ClientState
from .errors import (
    AuthenticationError,
    FedcommTimeoutError,
    FrameTooLargeError,
    PeerDisconnectedError,
    ProtocolError,
    RejectedError,
)

#: Backoff between handshakes refused as ``busy``.
_BUSY_FIRST = 0.05
_BUSY_MAX = 2.0
#: Each pause of a retry loop is multiplied by a random factor within 1 ± this.
JITTER = 0.2


class _Backoff:
    """The pauses of a retry loop: ``first`` seconds, doubled after each one up
    to ``most``, each within 1 ± ``JITTER``."""

    def __init__(self, first: float, most: float) -> None:
        self._next = first
        self._most = most

    def next(self) -> float:
        """The next pause (jittered); doubles the one after it."""
        pause = self._next * random.uniform(1 - JITTER, 1 + JITTER)
        self._next = min(self._next * 2, self._most)
        return pause

#: Backoff between connection attempts with ``wait_for_server``.
_RETRY_FIRST = 0.1
_RETRY_MAX = 2.0

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


class _Interrupted(Exception):
    """:meth:`~fedcomm.Client.close` was called while the I/O thread reconnected."""


class _Setup(_ClientState):
    """The connection setup of :class:`~fedcomm.Client`: dialling, TLS and the
    blocking handshake."""

    def _open(self, raw: socket.socket, handshake: Handshake, deadline: Optional[float]) -> Welcome:
        """Runs the TLS handshake (with TLS) and the fedcomm handshake on the
        dialled socket (it becomes ``self._sock``; ``self._selector`` waits
        for it); returns the welcome."""
        self._sock = raw
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        if self._context is not None:
            self._sock = self._start_tls(raw, self._context, self._hostname, deadline)
        # Before the welcome the smaller of the two limits applies (PROTOCOL.md §3.1).
        self._reader = FrameReader(
            min(HANDSHAKE_FRAME_BYTES, self.max_frame_bytes), "the handshake limit"
        )
        self._handshake(handshake, deadline)
        assert handshake.welcome is not None
        self._reader.set_limit(self.max_frame_bytes, "max_frame_bytes")
        return handshake.welcome

    def _connect(
        self,
        handshake: Callable[[], Handshake],
        deadline: Optional[float],
        wait_for_server: bool,
    ) -> Welcome:
        """Dials and runs the handshake (``_open``); a ``busy`` server (too many
        connections in their handshake) is tried again after pauses from 50 ms
        doubling to 2 s, jittered, until ``deadline``."""
        backoff = _Backoff(_BUSY_FIRST, _BUSY_MAX)
        while True:
            raw = self._dial(deadline, wait_for_server)
            self._selector = selectors.DefaultSelector()
            try:
                return self._open(raw, handshake(), deadline)
            except RejectedError as error:
                self._close_socket(graceful=False)
                wait = backoff.next()
                if error.reason != "busy" or (
                    deadline is not None and time.monotonic() + wait >= deadline
                ):
                    raise
            except BaseException:
                self._close_socket(graceful=False)
                raise
            time.sleep(wait)

    def _close_socket(self, graceful: bool) -> None:
        sock = getattr(self, "_sock", None)  # (None when the first dial failed)
        try:
            self._selector.close()
        except Exception:
            pass
        if sock is None:
            return
        if graceful and isinstance(sock, ssl.SSLSocket):
            try:
                sock.unwrap()  # sends close_notify; the peer's answer is not awaited
            except (OSError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass

    def _dial_once(self, deadline: Optional[float]) -> socket.socket:
        """One TCP connect without blocking (for the I/O thread: :meth:`close`
        interrupts it), trying each address of the host in turn.

        Raises:
            PeerDisconnectedError: No address accepted the connection.
            FedcommTimeoutError: ``deadline`` passed.
            _Interrupted: close() was called.
        """
        where = f"{self.host}:{self.port}"
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise PeerDisconnectedError(f"Cannot connect to {where}: {error}") from error
        last: Optional[OSError] = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            self._selector = selectors.DefaultSelector()  # (used by _wait, then _open)
            try:
                sock.setblocking(False)
                code = sock.connect_ex(address)
                if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                    self._sock = sock
                    self._wait(selectors.EVENT_WRITE, deadline, "Connect")
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    while code == 0 and not _connected(sock):  # (woken by something else)
                        self._wait(selectors.EVENT_WRITE, deadline, "Connect")
                        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code == 0:
                    return sock
                last = OSError(code, os.strerror(code))
            except BaseException:
                self._selector.close()
                sock.close()
                raise
            self._selector.close()
            sock.close()
        raise PeerDisconnectedError(
            f"Cannot connect to {where}: {last.strerror if last is not None else 'no address'}"
        ) from last

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
        """Waits for the socket (or, in the I/O thread, a wake-up) until ``deadline``.

        Raises:
            FedcommTimeoutError: ``deadline`` passed.
            _Interrupted: close() was called (in the I/O thread).
        """
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise FedcommTimeoutError(
                f"{what} timed out after {_fmt(self._timeout)} s: {self.host}:{self.port}"
            )
        selector = self._selector
        try:
            selector.modify(self._sock, events)
        except KeyError:
            selector.register(self._sock, events)
        wake = self._wake_r
        if wake is not None:
            try:
                selector.get_key(wake)
            except KeyError:
                selector.register(wake, selectors.EVENT_READ)
        for key, _ in selector.select(remaining):
            if key.fileobj is wake:
                _drain(wake)
        if self._closed:
            raise _Interrupted()

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

    def _handshake(self, handshake: Handshake, deadline: Optional[float]) -> Dict[str, Any]:
        self._write_blocking(handshake.hello(), deadline)
        while True:
            try:
                body = self._read_frame_blocking(deadline)
            except FrameTooLargeError as error:
                if self._context is None and _is_tls_record(error.size):
                    raise ProtocolError(
                        "Server speaks TLS: pass tls=<its CA's PEM file> (or tls=True for a public "
                        f"CA): {self.host}:{self.port} answered with a TLS record, not a fedcomm frame"
                    ) from error
                raise
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


def _is_tls_record(length: int) -> bool:
    """Whether a frame header's length is really a TLS record header (content
    type 20-23, version 3.x): a server that speaks TLS."""
    return 0x14 <= length >> 24 <= 0x17 and (length >> 16) & 0xFF == 3


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def _drain(sock: socket.socket) -> None:
    """Reads every pending wake-up byte."""
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass
