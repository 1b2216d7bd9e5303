"""The state of a :class:`~fedcomm.Client` that its parts share:
:class:`_ClientState` declares it (with its types) and sets its initial
values, for the connection setup (``_setup.py``), the I/O thread (``_io.py``,
``_receive.py``, ``_resume.py``) and the public methods (``client.py``,
``_send.py``, ``_inbox.py``, ``_properties.py``).

The *session* (numbering, retention, acks, the inbox) outlives its
connections: after a drop the I/O thread resumes it on a new connection."""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union

from ._acks import _AckState
from ._framing import FrameReader
from ._outframe import _OutFrame
from ._progress import ProgressCallback
from ._retention import _Retention

#: The type of an ``on_disconnect`` callback: called with the error that dropped the connection.
DisconnectCallback = Callable[[BaseException], None]
#: The type of an ``on_resume`` callback: called with the number of resumes so far.
ResumeCallback = Callable[[int], None]


class _ClientState:
    """The attributes shared by the mixins of :class:`~fedcomm.Client`.

    ``Client.__init__`` sets the arguments and the socket declared here, and
    calls :meth:`_init_state` for the rest.
    """

    # Set by Client.__init__ from its checked arguments.
    host: str
    port: int
    name: Optional[str]
    heartbeat: Optional[float]
    idle_timeout: Optional[float]
    max_frame_bytes: int
    retain_bytes: int
    _on_progress: Optional[ProgressCallback]
    _on_disconnect: Optional[DisconnectCallback]
    _on_resume: Optional[ResumeCallback]
    _timeout: Optional[float]
    _secret: Optional[bytes]
    _context: Optional[ssl.SSLContext]
    _hostname: str
    _props: Optional[Dict[str, Any]]
    _resume_enabled: bool

    # Set from the welcome.
    id: int
    clients: int
    server_max_frame_bytes: int
    welcome: Dict[str, Any]

    # Set while connecting.
    _sock: Union[socket.socket, ssl.SSLSocket]
    _selector: selectors.BaseSelector
    _reader: FrameReader

    def _init_state(self) -> None:
        """Sets the counters, the queues and the I/O thread's state to their
        initial values (before connecting)."""
        self._bytes_sent = 0
        self._bytes_received = 0
        self._messages_sent = 0
        self._rtt: Optional[float] = None
        self._last_heard = time.monotonic()
        self._last_write = time.monotonic()
        self._alive_hint = 0.0
        self._pings: Dict[bytes, float] = {}
        self._rx_reported = 0

        self._cond = threading.Condition()
        # (value, body size, message number)
        self._inbox: Deque[Tuple[Any, int, int]] = deque()
        self._queued_bytes = 0
        self._last_taken = 0
        self._outbox: Deque[_OutFrame] = deque()
        self._control: Deque[_OutFrame] = deque()
        self._resend: Deque[_OutFrame] = deque()
        self._current: Optional[_OutFrame] = None
        self._retention = _Retention()
        self._acks = _AckState()
        self._error: Optional[BaseException] = None
        self._closed = False  # close() was called
        self._close_deadline: Optional[float] = None  # until when close() waits for acks
        self._bye: Optional[_OutFrame] = None  # the close frame (c1 06), once due
        self._eof = False  # the server ended the session cleanly: iteration ends quietly

        # Resuming (grace: seconds the server keeps the session after a drop).
        self._token: Optional[bytes] = None
        self._grace = 0.0
        self._resuming = False
        self._resumes = 0
        self._drop_error: Optional[BaseException] = None
        self._thread: Optional[threading.Thread] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None

    # -- helpers shared by the caller threads and the I/O thread ---------------

    def _pending_frames(self) -> List[_OutFrame]:
        """Every frame a sender may wait for (call with the lock held)."""
        frames = list(self._outbox) + list(self._control) + list(self._resend)
        frames += [frame for frame in self._retention.frames() if not frame.done]
        if self._current is not None:
            frames.append(self._current)
        return frames

    def _fail_locked(self, error: BaseException) -> None:
        """Ends the session with ``error`` (the first error is kept); call with the lock held."""
        if self._error is None:
            self._error = error
        for frame in self._pending_frames():
            if frame.error is None and not frame.done:
                frame.error = self._error
        self._cond.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self._cond:
            self._fail_locked(error)

    def _lost(self, error: BaseException, eof: bool = False) -> None:
        """The connection dropped (``eof``: the server closed it between
        frames): the I/O thread resumes the session if the server keeps it for
        a while and close() was not called, else the session ends."""
        with self._cond:
            if (
                self._resume_enabled
                and self._grace > 0
                and self._error is None
                and not self._closed
            ):
                if self._drop_error is None:
                    self._drop_error = error
            else:
                if eof:
                    self._eof = True
                self._fail_locked(error)

    def _wake(self) -> None:
        """Wakes the I/O thread up."""
        sock = self._wake_w
        if sock is None:
            return
        try:
            sock.send(b"\x00")
        except OSError:
            pass  # full (a wake-up is already pending) or closed (the thread is gone)
