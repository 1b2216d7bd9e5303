"""Receiving, in the caller's thread: :class:`_Inbox`, a mixin of
:class:`~fedcomm.Client`, takes the values the I/O thread queued (and
remembers the number of the last one taken, for a reply)."""

from __future__ import annotations

import time
from typing import Any, Iterator, Optional

from ._io import _IOLoop
from ._options import _fmt
from .errors import FedcommTimeoutError, PeerDisconnectedError


class _Inbox(_IOLoop):
    """:meth:`recv` and iteration of :class:`~fedcomm.Client`."""

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
            ProtocolError: The server broke the protocol (the session is over).
        """
        self._check_not_io_thread("recv")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise PeerDisconnectedError("Connection closed: close() was called")
                if self._inbox:
                    paused = self._paused()
                    value, size, number = self._inbox.popleft()
                    self._queued_bytes -= size
                    self._last_taken = number
                    if paused and not self._paused():
                        self._wake()
                    return value
                if self._error is not None:
                    raise self._error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise FedcommTimeoutError(f"Receive timed out after {_fmt(timeout)} s")
                self._cond.wait(remaining)

    def __iter__(self) -> Iterator[Any]:
        """Yields every message until the server ends the session (a close,
        or a disconnect it does not resume) or :meth:`close` is called; other
        errors (a session that could not be resumed among them) are raised."""
        while True:
            try:
                message = self.recv()
            except PeerDisconnectedError:
                if self._eof or self._closed:
                    return
                raise
            yield message
