"""Dialling the server: the TCP connect, and the waits of a socket being set up.

:func:`dial` is the blocking connect of the thread that calls connect()
(with ``wait_for_server`` it retries refused and unreachable attempts);
:func:`dial_once` is the non-blocking one of a resume, in the I/O thread,
which close() interrupts. :class:`Waiter` waits for a socket until a
deadline, and :class:`Backoff` spaces the tries of every retry loop.
"""

from __future__ import annotations

import errno
import os
import random
import selectors
import socket
import ssl
import time
from typing import Optional, Union

from ._options import Settings, fmt_seconds
from ._waker import Waker
from .errors import FedcommTimeoutError, PeerDisconnectedError

#: Each pause of a retry loop is multiplied by a random factor within 1 ± this.
JITTER = 0.2
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


class Backoff:
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


class Interrupted(Exception):
    """:meth:`~fedcomm.Client.close` was called while the I/O thread reconnected."""


class Waiter:
    """Waits for :attr:`sock` until a deadline; in the I/O thread (``waker``)
    also for a wake-up, after which ``waker.stopped()`` interrupts it."""

    def __init__(
        self,
        settings: Settings,
        sock: Union[socket.socket, ssl.SSLSocket],
        waker: Optional[Waker] = None,
    ) -> None:
        self._settings = settings
        self.sock = sock
        self._waker = waker
        self._selector = selectors.DefaultSelector()
        if waker is not None:
            self._selector.register(waker.socket, selectors.EVENT_READ)

    def wait(self, events: int, deadline: Optional[float], what: str) -> None:
        """Waits for ``events`` on the socket.

        Raises:
            FedcommTimeoutError: ``deadline`` passed.
            Interrupted: ``waker.stopped()`` became true.
        """
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise FedcommTimeoutError(
                f"{what} timed out after {fmt_seconds(self._settings.timeout)} s: "
                f"{self._settings.where}"
            )
        try:
            self._selector.modify(self.sock, events)
        except KeyError:
            self._selector.register(self.sock, events)
        waker = self._waker
        for key, _ in self._selector.select(remaining):
            if waker is not None and key.fileobj is waker.socket:
                waker.drain()
        if waker is not None and waker.stopped():
            raise Interrupted()

    def close(self) -> None:
        """Closes the selector (not the socket)."""
        self._selector.close()


def dial(settings: Settings, deadline: Optional[float]) -> socket.socket:
    """A blocking TCP connect; with ``wait_for_server``, refused or
    unreachable attempts are tried again (0.1 s doubling to 2 s) until ``deadline``.

    Raises:
        PeerDisconnectedError: The connection could not be made.
        FedcommTimeoutError: ``deadline`` passed.
    """
    delay = _RETRY_FIRST
    last: Optional[BaseException] = None
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            detail = f": last attempt: {last}" if last is not None else ""
            raise FedcommTimeoutError(
                f"Connect timed out after {fmt_seconds(settings.timeout)} s: "
                f"{settings.where}{detail}"
            ) from last
        try:
            return socket.create_connection((settings.host, settings.port), timeout=remaining)
        except socket.timeout as error:
            raise FedcommTimeoutError(
                f"Connect timed out after {fmt_seconds(settings.timeout)} s: {settings.where}"
            ) from error
        except OSError as error:
            if not (settings.wait_for_server and _retryable(error)):
                raise PeerDisconnectedError(
                    f"Cannot connect to {settings.where}: {_why(error)}"
                ) from error
            last = error
        pause = delay if deadline is None else min(delay, deadline - time.monotonic())
        if pause > 0:
            time.sleep(pause)
        delay = min(delay * 2, _RETRY_MAX)


def _retryable(error: OSError) -> bool:
    if isinstance(error, socket.gaierror):
        return error.errno == socket.EAI_AGAIN
    return isinstance(error, ConnectionError) or error.errno in _RETRY_ERRNOS


def _why(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is the server running? wait_for_server=True waits for it)"
    return error.strerror or str(error)


def dial_once(settings: Settings, deadline: Optional[float], waker: Waker) -> socket.socket:
    """One TCP connect without blocking (close() interrupts it: ``waker``),
    trying each address of the host in turn.

    Raises:
        PeerDisconnectedError: No address accepted the connection.
        FedcommTimeoutError: ``deadline`` passed.
        Interrupted: ``waker.stopped()`` became true.
    """
    try:
        infos = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise PeerDisconnectedError(f"Cannot connect to {settings.where}: {error}") from error
    last: Optional[OSError] = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        waiter = Waiter(settings, sock, waker)
        try:
            code = _connect_ex(sock, address, waiter, deadline)
        except BaseException:
            sock.close()
            raise
        finally:
            waiter.close()
        if code == 0:
            return sock
        last = OSError(code, os.strerror(code))
        sock.close()
    raise PeerDisconnectedError(
        f"Cannot connect to {settings.where}: "
        f"{last.strerror if last is not None else 'no address'}"
    ) from last


def _connect_ex(sock: socket.socket, address: object, waiter: Waiter, deadline: Optional[float]) -> int:
    """Connects ``sock`` without blocking; returns the error code (0: connected)."""
    sock.setblocking(False)
    code = sock.connect_ex(address)
    if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
        waiter.wait(selectors.EVENT_WRITE, deadline, "Connect")
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        while code == 0 and not _connected(sock):  # (woken by something else)
            waiter.wait(selectors.EVENT_WRITE, deadline, "Connect")
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return code


def _connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True
