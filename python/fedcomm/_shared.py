"""The session and the lock around it, shared by the threads of a client:
the ones that call its methods and its I/O thread."""

from __future__ import annotations

import threading

from ._protocol.session import Session


class Shared:
    """:attr:`session`, guarded by the lock of :attr:`cond`: hold it around
    every use of the session, and ``notify_all`` after a change, for the
    threads waiting on it (a send, a receive)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cond = threading.Condition()

    def fail(self, error: BaseException) -> None:
        """Ends the session with ``error`` (see :meth:`Session.fail`)."""
        with self.cond:
            self.session.fail(error)
            self.cond.notify_all()

    def lost(self, error: BaseException, eof: bool = False) -> None:
        """The connection dropped (see :meth:`Session.lost`)."""
        with self.cond:
            self.session.lost(error, eof)
            self.cond.notify_all()
