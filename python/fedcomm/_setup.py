"""Connecting, run by the thread that calls :func:`~fedcomm.connect`: the TCP
connect (with retries for ``wait_for_server``), the TLS handshake and the
fedcomm handshake, on the non-blocking socket with a deadline, before the I/O
thread starts. :class:`_Setup` is a mixin of :class:`~fedcomm.Client`."""

from __future__ import annotations

import errno
import selectors
import socket
import ssl
import time
from typing import Any, Dict, Optional

from ._framing import HANDSHAKE_FRAME_BYTES, FrameReader
from ._handshake import Handshake, parse_handshake
from ._options import _fmt
from ._state import _ClientState
from .errors import (
    AuthenticationError,
    FedcommTimeoutError,
    PeerDisconnectedError,
    ProtocolError,
)

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


class _Setup(_ClientState):
    """The connection setup of :class:`~fedcomm.Client`: dialling, TLS and the
    blocking handshake."""

    def _open(
        self,
        raw: socket.socket,
        context: Optional[ssl.SSLContext],
        hostname: str,
        handshake: Handshake,
        deadline: Optional[float],
    ) -> Dict[str, Any]:
        """Runs the TLS handshake (with a ``context``) and the fedcomm
        handshake on the dialled socket; returns the welcome."""
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        if context is not None:
            self._sock = self._start_tls(raw, context, hostname, deadline)
        self._reader = FrameReader(HANDSHAKE_FRAME_BYTES, "the handshake limit")
        return self._handshake(handshake, deadline)

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
