"""The background I/O thread, which alone uses the socket once connected.

:class:`IOThread` serves one connection after another for the session: a
:class:`_Serving` loop per connection reads frames into the session, writes
the frames it says are due in chunks, sends heartbeat pings and detects a
silent server; after a drop the :class:`~fedcomm._resume.Resumer` brings a new
connection. When close() or a send waits for the server's acks, it asks for
them with a ping (the server writes the ack it owes before the pong); after
close() the loop waits for the acks, then writes ``c1 06``.
"""

from __future__ import annotations

import logging
import selectors
import ssl
import threading
import time
from typing import Optional, Union

from ._connector import Connection, Connector
from ._options import Settings
from ._protocol.outframe import OutFrame
from ._protocol.traffic import Traffic
from ._reading import Receiver
from ._resume import Resumer
from ._shared import Shared
from ._waker import Waker
from .errors import FedcommError, PeerDisconnectedError

_log = logging.getLogger("fedcomm")


class IOThread:
    """The I/O thread of a client, from the connection its handshake completed on.

    Args:
        settings: The client's settings.
        shared: The session it serves.
        traffic: The byte counts and timers it keeps.
        conn: The first connection.
    """

    def __init__(self, settings: Settings, shared: Shared, traffic: Traffic, conn: Connection) -> None:
        self._settings = settings
        self._shared = shared
        self._traffic = traffic
        self._conn = conn
        self._waker = Waker(lambda: shared.session.closed)
        self._receiver = Receiver(shared, traffic, settings.on_progress)
        connector = Connector(settings, traffic, self._waker)
        self._resumer = Resumer(settings, shared, traffic, connector, self._waker)
        self._thread = threading.Thread(
            target=self._run, name=f"fedcomm-io-{settings.where}", daemon=True
        )

    def start(self) -> None:
        """Starts the thread, which owns the connection from then on."""
        try:
            self._thread.start()
        except BaseException:
            self._waker.close()
            raise

    def wake(self) -> None:
        """Wakes the thread up: there is something to write or room to read, or close() was called."""
        self._waker.wake()

    def check_caller(self, what: str) -> None:
        """Raises ``RuntimeError`` in the I/O thread, which would wait for itself in ``what``()."""
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                f"Cannot call {what}() from a callback of the client: it runs "
                "in the I/O thread, which would wait for itself"
            )

    def join(self, timeout: float) -> None:
        """Waits for the thread to finish (not from the thread itself)."""
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        graceful = False
        try:
            while True:
                outcome = _Serving(self._settings, self._shared, self._traffic, self._receiver,
                                   self._waker, self._conn).run()
                if outcome != "dropped":
                    graceful = outcome == "closed"
                    break
                self._conn.close(graceful=False)
                conn = self._resumer.resume()
                if conn is None:
                    break
                self._conn = conn
        except BaseException as error:  # a bug: fail the session rather than hang callers
            _log.exception("fedcomm: the I/O thread failed")
            self._shared.fail(FedcommError(f"I/O thread failed: {error!r}"))
        finally:
            with self._shared.cond:
                self._shared.session.finish()
                self._shared.cond.notify_all()
            self._conn.close(graceful)
            self._waker.close()


class _Serving:
    """Serves one connection until it ends (:meth:`run`): each turn reads what
    arrived (unless the inbox is full), writes what is due, fires the timers
    (heartbeat, idle timeout) and waits for the socket, a wake-up or the
    next timer."""

    def __init__(
        self,
        settings: Settings,
        shared: Shared,
        traffic: Traffic,
        receiver: Receiver,
        waker: Waker,
        conn: Connection,
    ) -> None:
        self._settings = settings
        self._shared = shared
        self._traffic = traffic
        self._receiver = receiver
        self._waker = waker
        self._conn = conn
        # The event each direction waits for (None: try now; False: failed).
        self._read_wait: Union[None, int, bool] = None
        self._write_wait: Union[None, int, bool] = None
        self._registered = 0  # the events the selector waits for on the socket
        self._paused = False  # the inbox is full: not reading
        self._current: Optional[OutFrame] = None

    def run(self) -> str:
        """Returns ``"dropped"`` (the session may resume), ``"closed"``
        (close() finished: ``c1 06`` written) or ``"ended"`` (the session is
        over, or close() gave up)."""
        selector = selectors.DefaultSelector()
        try:
            selector.register(self._waker.socket, selectors.EVENT_READ)
            # (Frames read together with the welcome.)
            if not self._receiver.drain(self._conn):
                return self._outcome()
            while True:
                outcome = self._turn(selector)
                if outcome is not None:
                    return outcome
        finally:
            selector.close()

    def _outcome(self) -> str:
        with self._shared.cond:
            return self._shared.session.outcome()

    def _turn(self, selector: selectors.BaseSelector) -> Optional[str]:
        """One turn of the loop; returns how the connection ended, if it did."""
        now = time.monotonic()
        with self._shared.cond:
            session = self._shared.session
            if session.error is not None or session.drop_error is not None:
                return session.outcome()
            if session.close_expired(now):
                return "ended"  # acks or writes took too long: no c1 06
            paused = session.inbox.full
        if paused:
            self._traffic.excuse(now)  # not reading: the silence is ours
        elif self._paused:
            self._read_wait = None
        self._paused = paused
        read_now = not paused and self._read_wait is None
        if read_now:
            self._read_wait = self._receiver.read_burst(self._conn)
            if self._read_wait is False:  # failed, dropped or ended
                return self._outcome()
        outcome = self._write()
        if outcome is not None:
            return outcome
        now = time.monotonic()
        if self._ping_due(now):
            return None  # the ping goes out on the next turn
        dead_at = self._traffic.dead_at()
        if dead_at is not None and now >= dead_at and not paused:
            if not read_now:
                # Look at the socket once more first: after a stall of this
                # process (the GIL held elsewhere, a suspended machine) the
                # answer may be waiting there.
                self._read_wait = None
                return None
            self._shared.lost(PeerDisconnectedError(
                f"Server silent for {self._traffic.idle_timeout:g} s: nothing received, "
                "not even a pong or a heartbeat; the server or the network "
                f"is down ({self._settings.where})"
            ))
            return self._outcome()
        self._wait(selector, self._wake_at(dead_at))
        return None

    def _next_frame(self) -> Optional[OutFrame]:
        with self._shared.cond:
            return self._shared.session.next_frame(time.monotonic())

    def _write(self) -> Optional[str]:
        """Writes the frames due until the socket takes no more. Returns
        ``"closed"`` once the close frame is written, or how the connection
        ended when a write failed."""
        current = self._next_frame()  # (pongs and acks queued by the read included)
        while current is not None and self._write_wait is None:
            self._write_wait = self._write_chunk(current)
            if self._write_wait is False:
                return self._outcome()
            if current.sent == current.total or current.error is not None:
                with self._shared.cond:
                    bye = self._shared.session.frame_ended(current)
                if bye:
                    return "closed"
                current = self._next_frame()
        self._current = current
        return None

    def _write_chunk(self, frame: OutFrame) -> Union[None, int, bool]:
        """Writes one chunk. Returns ``None`` (try again now), the event to wait
        for, or ``False`` when the connection failed."""
        if frame.error is not None:
            return None
        failure: Optional[OSError] = None
        with frame.guard:  # (the sender may be copying the parts: own())
            try:
                n = self._conn.sock.send(frame.chunk())
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
                return selectors.EVENT_WRITE
            except ssl.SSLWantReadError:
                return selectors.EVENT_READ
            except OSError as error:
                failure = error
            else:
                event = frame.advance(n)
        if failure is not None:
            self._shared.lost(PeerDisconnectedError(f"Server disconnected: {failure}"))
            return False
        now = time.monotonic()
        self._traffic.wrote(n, now)
        finished = frame.sent == frame.total
        if not finished:
            self._traffic.excuse(now)  # the server is taking our bytes
        if (finished and not frame.done) or event is not None:
            with self._shared.cond:
                self._shared.session.written(frame, finished, event)
                self._shared.cond.notify_all()
        if finished and frame.ping is not None:
            self._traffic.ping_written(frame.ping, now)
        return None

    def _ping_due(self, now: float) -> bool:
        """Queues a ping, unless a frame is being written: a heartbeat when
        nothing was written for ``heartbeat`` seconds, or to ask for the
        server's acks when the session waits for them (the server answers
        with its ack before the pong, so a server that delays its acks does
        not make close() or a send wait: see :meth:`Session.ask_for_acks`).
        Returns whether it did."""
        if self._current is not None:
            return False
        ping_at = self._traffic.ping_at()
        with self._shared.cond:
            session = self._shared.session
            if not session.ask_for_acks() and (ping_at is None or now < ping_at):
                return False
            session.control.append(self._traffic.new_ping())
        return True

    def _wake_at(self, dead_at: Optional[float]) -> Optional[float]:
        """When the next timer fires: the close deadline, the idle timeout,
        and, unless a frame is being written (it goes first), the ack owed
        and the heartbeat ping."""
        session = self._shared.session
        times = [session.close_deadline, dead_at]
        if self._current is None:
            times += [session.acks.deadline, self._traffic.ping_at()]
        due = [at for at in times if at is not None]
        return min(due) if due else None

    def _wait(self, selector: selectors.BaseSelector, wake_at: Optional[float]) -> None:
        """Waits for the socket, a wake-up or ``wake_at`` (not at all while
        there is reading or writing to do now)."""
        reading = not self._paused
        writing = self._current is not None
        events = 0
        if reading and self._read_wait is not None:
            events |= self._read_wait
        if writing and self._write_wait is not None:
            events |= self._write_wait
        if events != self._registered:
            if self._registered == 0:
                selector.register(self._conn.sock, events)
            elif events == 0:
                selector.unregister(self._conn.sock)
            else:
                selector.modify(self._conn.sock, events)
            self._registered = events
        if (reading and self._read_wait is None) or (writing and self._write_wait is None):
            timeout: Optional[float] = 0.0
        else:
            timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
        for key, mask in selector.select(timeout):
            if key.fileobj is self._waker.socket:
                self._waker.drain()
                continue
            for flag in (selectors.EVENT_READ, selectors.EVENT_WRITE):
                if mask & flag:
                    if self._read_wait == flag:
                        self._read_wait = None
                    if self._write_wait == flag:
                        self._write_wait = None
