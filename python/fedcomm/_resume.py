"""Resuming the session after its connection dropped, in the I/O thread.

:class:`_Resumer`, a mixin of :class:`~fedcomm.Client`, reconnects: a first
try at once, then after 0.1 s, doubling up to 5 s (±20 % jitter), until the
server's ``grace`` has passed since the drop. Each try is a TCP connect (and
TLS), then a hello with ``resume: {id, token, received}`` (and the usual name,
props and authentication). On the welcome, the messages the server received
are dropped from retention and the rest are sent again, in order, before
anything new. A ``busy`` reject, a reject saying the old connection is still
connected (the server has not noticed the drop yet: reason ``live``, or
``resume`` with that message), or a connect error means try again; any other
reject or error ends the session.
"""

from __future__ import annotations

import logging
import select
import time
from collections import deque
from typing import Any, Callable, Optional

from ._handshake import Handshake, ResumeRequest, Welcome
from ._setup import _Backoff, _Interrupted, _Setup, _drain
from .errors import (
    FedcommError,
    FedcommTimeoutError,
    PeerDisconnectedError,
    ProtocolError,
    RejectedError,
    TruncatedFrameError,
)

_log = logging.getLogger("fedcomm")

#: The pause after the first failed try, doubled after each one ...
RESUME_FIRST_DELAY = 0.1
#: ... up to this.
RESUME_MAX_DELAY = 5.0
#: Seconds allowed for one try when the client has no ``timeout``.
_TRY_SECONDS = 10.0


def _retryable(refusal: RejectedError) -> bool:
    """Whether a refused resume may succeed later: the server is busy, or
    has not noticed yet that the old connection is dead (reason ``live``).
    Decided by the reason alone, never by the message."""
    return refusal.reason in ("busy", "live")


def _call(callback: Optional[Callable[[Any], None]], argument: Any, what: str) -> None:
    if callback is None:
        return
    try:
        callback(argument)
    except Exception:  # a broken callback must not break the session
        _log.exception("fedcomm: the %s callback raised; ignored", what)


class _Resumer(_Setup):
    """Reconnecting after a drop, in the I/O thread."""

    def _resume(self) -> bool:
        """Resumes the session on a new connection. Returns ``False`` when the
        session is over (the error is set) or close() was called."""
        with self._cond:
            dropped = self._drop_error
            self._resuming = True
            self._current = None
            self._control.clear()  # pongs and pings of the old connection
            self._resend.clear()  # (rebuilt from the retained messages)
            self._cond.notify_all()
        self._pings.clear()
        _log.info("fedcomm: connection to %s:%s dropped (%s); resuming", self.host, self.port, dropped)
        _call(self._on_disconnect, dropped, "on_disconnect")
        grace_end = time.monotonic() + self._grace
        backoff = _Backoff(RESUME_FIRST_DELAY, RESUME_MAX_DELAY)
        last: Optional[BaseException] = None
        while True:
            now = time.monotonic()
            if self._closed:
                return False
            if now >= grace_end:
                return self._give_up(
                    PeerDisconnectedError(
                        f"Session lost: not resumed within the server's grace of "
                        f"{self._grace:g} s ({self.host}:{self.port}); the connection "
                        f"dropped: {dropped}; last attempt: {last}"
                    ),
                    last,
                )
            try_seconds = self._timeout if self._timeout is not None else _TRY_SECONDS
            try:
                welcome = self._reconnect(min(grace_end, now + try_seconds))
            except _Interrupted:
                return False
            except RejectedError as refusal:
                if not _retryable(refusal):
                    return self._give_up(
                        PeerDisconnectedError(
                            f"Session lost: the server refused to resume it: "
                            f"{refusal.reason}: {refusal.message}"
                        ),
                        refusal,
                    )
                last = refusal
            except (PeerDisconnectedError, TruncatedFrameError, FedcommTimeoutError, OSError) as failure:
                # A drop again, also one inside the challenge or the welcome (§7.2): try again.
                last = failure
            except FedcommError as failure:  # protocol, authentication, frame size
                return self._give_up(
                    PeerDisconnectedError(f"Session lost: resuming it failed: {failure}"),
                    failure,
                )
            else:
                try:
                    self._resumed(welcome)
                except ProtocolError as failure:
                    return self._give_up(
                        PeerDisconnectedError(f"Session lost: resuming it failed: {failure}"),
                        failure,
                    )
                return True
            self._close_socket(graceful=False)
            if self._sleep(min(backoff.next(), grace_end - time.monotonic())):
                return False

    def _reconnect(self, deadline: float) -> Welcome:
        """One try: connect, TLS, hello with ``resume``; returns the welcome."""
        assert self._token is not None
        handshake = Handshake(
            self.name,
            self._secret,
            self._props,
            ResumeRequest(self.id, self._token, self._acks.received),
        )
        raw = self._dial_once(deadline)
        return self._open(raw, handshake, deadline)

    def _resumed(self, welcome: Welcome) -> None:
        """Applies a resume welcome: drops what the server received, queues
        the rest to be sent again, and starts serving the new connection.

        Raises:
            ProtocolError: The welcome's ``received`` does not fit what was sent.
        """
        with self._cond:
            frames = self._retention.resume(welcome.received)
            self._resend = deque(frames)
            self._acks.settled(self._acks.received)  # the hello told the server
            self._resuming = False
            self._drop_error = None
            self._resumes += 1
            self.welcome = welcome.message
            self._grace = welcome.grace / 1000
            self.clients = welcome.clients
            self.server_max_frame_bytes = welcome.max_frame_bytes
            now = time.monotonic()
            self._last_heard = self._last_write = now
            self._alive_hint = 0.0
            self._cond.notify_all()
        self._selector.close()  # (the handshake's; the I/O loop has its own)
        _log.info(
            "fedcomm: session of client %s resumed on %s:%s (%d messages sent again)",
            self.id, self.host, self.port, len(frames),
        )
        _call(self._on_resume, self._resumes, "on_resume")

    def _give_up(self, error: PeerDisconnectedError, cause: Optional[BaseException]) -> bool:
        error.__cause__ = cause
        _log.info("fedcomm: %s", error)
        with self._cond:
            self._resuming = False
            self._fail_locked(error)
        return False

    def _sleep(self, seconds: float) -> bool:
        """Sleeps, unless close() is called; returns whether it was."""
        wake = self._wake_r
        assert wake is not None
        end = time.monotonic() + seconds
        while not self._closed:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([wake], [], [], remaining)
            if readable:
                _drain(wake)
        return True
