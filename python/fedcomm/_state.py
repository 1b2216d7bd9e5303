"""The state of a :class:`~fedcomm.Client` that its parts share:
:class:`_ClientState` declares it (with its types) and sets its initial
values, for the connection setup (``_setup.py``), the I/O thread (``_io.py``)
and the public methods (``client.py``)."""

from __future__ import annotations

import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple, Union

from ._framing import FrameReader
from ._outframe import _OutFrame
from ._progress import ProgressCallback


class _ClientState:
    """The attributes shared by the mixins of :class:`~fedcomm.Client`.

    ``Client.__init__`` sets the arguments and the socket declared here, and
    calls :meth:`_init_state` for the rest.
    """

    # Set by Client.__init__ from its checked arguments.
    host: str
    port: int
    heartbeat: Optional[float]
    idle_timeout: Optional[float]
    _on_progress: Optional[ProgressCallback]
    _timeout: Optional[float]

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
        self._messages_received = 0
        self._rtt: Optional[float] = None
        self._last_heard = time.monotonic()
        self._last_write = time.monotonic()
        self._alive_hint = 0.0
        self._pings: Dict[bytes, float] = {}
        self._rx_reported = 0

        self._cond = threading.Condition()
        self._inbox: Deque[Tuple[Any, int]] = deque()
        self._queued_bytes = 0
        self._outbox: Deque[_OutFrame] = deque()
        self._control: Deque[_OutFrame] = deque()
        self._current: Optional[_OutFrame] = None
        self._error: Optional[BaseException] = None
        self._closed = False
        self._eof = False
        self._thread: Optional[threading.Thread] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
