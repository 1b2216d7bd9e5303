"""Resuming the session after its connection dropped, in the I/O thread.

:class:`Resumer` reconnects: a first try at once, then after 0.1 s, doubling
up to 5 s (±20 % jitter), until the server's ``grace`` has passed since the
drop. Each try is a TCP connect (and TLS), then a hello with ``resume: {id,
token, received}`` (and the usual name, props and authentication). On the
welcome, the messages the server received are dropped from retention and the
rest are sent again, in order, before anything new. A ``busy`` reject, a
reject saying the old connection is still connected (the server has not
noticed the drop yet: reason ``live``), or a connect error means try again;
any other reject or error ends the session.
"""

from __future__ import annotations

import logging
import time
from typing import Optional, Union

from ._connector import Connection, Connector
from ._dial import Backoff, Interrupted
from ._options import Settings
from ._progress import call_back
from ._protocol.handshake import Welcome
from ._protocol.traffic import Traffic
from ._shared import Shared
from ._waker import Waker
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

#: Failures after which a resume is tried again: a drop again, also one
#: inside the challenge or the welcome (PROTOCOL.md §7.2).
_TRANSIENT = (PeerDisconnectedError, TruncatedFrameError, FedcommTimeoutError, OSError)


def _retryable(refusal: RejectedError) -> bool:
    """Whether a refused resume may succeed later: the server is busy, or
    has not noticed yet that the old connection is dead (reason ``live``).
    Decided by the reason alone, never by the message."""
    return refusal.reason in ("busy", "live")


class Resumer:
    """Resumes the session on a new connection.

    Args:
        settings: The client's settings.
        shared: The session to resume.
        traffic: Its timers (restarted on the new connection).
        connector: Opens the new connections (close() interrupts it).
        waker: Cuts the pauses between tries short, and says when to stop (close()).
    """

    def __init__(
        self, settings: Settings, shared: Shared, traffic: Traffic, connector: Connector, waker: Waker
    ) -> None:
        self._settings = settings
        self._shared = shared
        self._traffic = traffic
        self._connector = connector
        self._waker = waker

    def resume(self) -> Optional[Connection]:
        """Returns the new connection, or ``None`` when the session is over
        (its error is set) or close() was called."""
        with self._shared.cond:
            dropped = self._shared.session.begin_resume()
            self._shared.cond.notify_all()
        self._traffic.forget_pings()
        _log.info("fedcomm: connection to %s dropped (%s); resuming", self._settings.where, dropped)
        call_back(self._settings.on_disconnect, dropped, "on_disconnect")
        grace = self._shared.session.grace
        grace_end = time.monotonic() + grace
        backoff = Backoff(RESUME_FIRST_DELAY, RESUME_MAX_DELAY)
        last: Optional[BaseException] = None
        try_seconds = self._settings.timeout if self._settings.timeout is not None else _TRY_SECONDS
        while not self._waker.stopped():
            now = time.monotonic()
            if now >= grace_end:
                return self._give_up(
                    PeerDisconnectedError(
                        f"Session lost: not resumed within the server's grace of {grace:g} s "
                        f"({self._settings.where}); the connection dropped: {dropped}; "
                        f"last attempt: {last}"
                    ),
                    last,
                )
            outcome = self._try(min(grace_end, now + try_seconds))
            if outcome is None or isinstance(outcome, Connection):
                return outcome
            last = outcome
            if self._waker.sleep(min(backoff.next(), grace_end - time.monotonic())):
                return None
        return None

    def _try(self, deadline: float) -> Union[Connection, BaseException, None]:
        """One try. Returns the new connection, the failure after which to try
        again, or ``None`` when the session is over or close() was called."""
        with self._shared.cond:
            request = self._shared.session.resume_request()
        try:
            conn, welcome = self._connector.reconnect(request, deadline)
        except Interrupted:
            return None
        except RejectedError as refusal:
            if _retryable(refusal):
                return refusal
            return self._give_up(
                PeerDisconnectedError(
                    f"Session lost: the server refused to resume it: "
                    f"{refusal.reason}: {refusal.message}"
                ),
                refusal,
            )
        except _TRANSIENT as failure:
            return failure
        except FedcommError as failure:  # protocol, authentication, frame size
            return self._give_up(
                PeerDisconnectedError(f"Session lost: resuming it failed: {failure}"), failure
            )
        try:
            self._resumed(welcome)
        except ProtocolError as failure:
            conn.close(graceful=False)
            return self._give_up(
                PeerDisconnectedError(f"Session lost: resuming it failed: {failure}"), failure
            )
        return conn

    def _resumed(self, welcome: Welcome) -> None:
        """Applies a resume welcome (see :meth:`Session.resumed`).

        Raises:
            ProtocolError: The welcome's ``received`` does not fit what was sent.
        """
        session = self._shared.session
        with self._shared.cond:
            count = session.resumed(welcome)
            self._traffic.restart(time.monotonic())
            self._shared.cond.notify_all()
        _log.info(
            "fedcomm: session of client %s resumed on %s (%d messages sent again)",
            welcome.id, self._settings.where, count,
        )
        call_back(self._settings.on_resume, session.resumes, "on_resume")

    def _give_up(self, error: PeerDisconnectedError, cause: Optional[BaseException]) -> None:
        error.__cause__ = cause
        _log.info("fedcomm: %s", error)
        with self._shared.cond:
            self._shared.session.give_up(error)
            self._shared.cond.notify_all()
        return None
