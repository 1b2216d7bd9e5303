"""Interrupting the I/O thread's waits: :class:`Waker` is a socket pair whose
reading end the I/O thread waits on along with its socket, so that another
thread (a send, a receive that made room, close()) can end its wait at once,
and the predicate that says whether the thread should stop waiting for good
(close() was called)."""

from __future__ import annotations

import select
import socket
import time
from typing import Callable


class Waker:
    """A socket pair: :meth:`wake` makes :attr:`socket` readable; ``stopped()``
    is checked after each wake-up."""

    def __init__(self, stopped: Callable[[], bool]) -> None:
        self.stopped = stopped
        self.socket, self._writer = socket.socketpair()
        self.socket.setblocking(False)
        self._writer.setblocking(False)

    def wake(self) -> None:
        """Wakes the waiting thread up (from any thread)."""
        try:
            self._writer.send(b"\x00")
        except OSError:
            pass  # full (a wake-up is already pending) or closed (the thread is gone)

    def drain(self) -> None:
        """Reads every pending wake-up byte."""
        try:
            while self.socket.recv(4096):
                pass
        except OSError:
            pass

    def sleep(self, seconds: float) -> bool:
        """Sleeps for ``seconds`` unless ``stopped()`` becomes true (checked
        on each wake-up); returns whether it did."""
        end = time.monotonic() + seconds
        while not self.stopped():
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            readable, _, _ = select.select([self.socket], [], [], remaining)
            if readable:
                self.drain()
        return True

    def close(self) -> None:
        for sock in (self._writer, self.socket):
            try:
                sock.close()
            except OSError:
                pass
