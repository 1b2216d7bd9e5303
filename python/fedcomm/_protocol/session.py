"""The session: the protocol state that outlives its connections.

:class:`Session` holds what a client and the server know of each other on a
session: the welcome, the messages received (numbered, acknowledged, queued
in the inbox) and sent (numbered, retained until acknowledged), the frames
due to be written and in what order, how the session ends and whether it is
being resumed. It does no I/O: the I/O thread feeds it what it reads and asks
it what to write. The client's threads share it, so the caller holds one lock
around every call and notifies waiters after changes.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, List, Optional, Tuple

from .._progress import Progress
from ..errors import PeerDisconnectedError
from .acks import AckState
from .framing import CLOSE, MAX_REQUEST, PONG
from .handshake import ResumeRequest, Welcome
from .inbox import Inbox
from .outframe import OutFrame, control
from .retention import Retention

__all__ = ["Session"]

_CLOSED = "Connection closed: close() was called"


class Session:
    """The protocol state of one session.

    Args:
        retain_bytes: New messages wait while this many bytes of sent
            messages are unacknowledged.
        resume: Whether a dropped connection is resumed (when the server
            offers a grace period).
    """

    def __init__(self, retain_bytes: int, resume: bool) -> None:
        self.retain_bytes = retain_bytes
        self._resume = resume
        self.acks = AckState()
        self.retention = Retention()
        self.inbox = Inbox()
        #: The latest welcome (``None`` before the first).
        self.welcome: Optional[Welcome] = None
        #: The resume token, from the first welcome.
        self.token: Optional[bytes] = None
        #: Application messages written whole (once each).
        self.messages_sent = 0
        # Frames to write: new application frames, control frames (between
        # application frames), retained frames to write again after a resume
        # (before new ones), the frame being written, the close frame (c1 06).
        self.outbox: Deque[OutFrame] = deque()
        self.control: Deque[OutFrame] = deque()
        self.resend: Deque[OutFrame] = deque()
        self.current: Optional[OutFrame] = None
        self.bye: Optional[OutFrame] = None
        #: The error that ended the session (the first one).
        self.error: Optional[BaseException] = None
        #: close() was called; until ``close_deadline`` the acks are awaited.
        self.closed = False
        self.close_deadline: Optional[float] = None
        #: The server ended the session cleanly: iteration ends quietly.
        self.eof = False
        self.resuming = False
        self.resumes = 0
        #: Why the connection dropped, while a resume is due.
        self.drop_error: Optional[BaseException] = None
        #: Sends waiting for the server's ack of their long message.
        self.ack_waits = 0
        # The number of the last message a ping asked the server to
        # acknowledge (0: none on this connection): one ping per wait.
        self._asked = 0

    def start(self, welcome: Welcome) -> None:
        """The session begins with the first welcome."""
        self.welcome = welcome
        self.token = welcome.token

    @property
    def grace(self) -> float:
        """Seconds the server keeps the session after a drop (0: no resume)."""
        return 0.0 if self.welcome is None else self.welcome.grace / 1000

    @property
    def over(self) -> bool:
        """Whether the session ended (close() or an error)."""
        return self.closed or self.error is not None

    def check_usable(self) -> None:
        """Raises the reason the session cannot send or receive any more, if any."""
        if self.closed:
            raise PeerDisconnectedError(_CLOSED)
        if self.error is not None:
            raise self.error

    # -- ending -----------------------------------------------------------------

    def _pending_frames(self) -> List[OutFrame]:
        frames = list(self.outbox) + list(self.control) + list(self.resend)
        frames += [frame for frame in self.retention.frames() if not frame.done]
        if self.current is not None:
            frames.append(self.current)
        return frames

    def fail(self, error: BaseException) -> None:
        """Ends the session with ``error`` (the first error is kept); every
        frame a sender may wait for fails with it."""
        if self.error is None:
            self.error = error
        for frame in self._pending_frames():
            if frame.error is None and not frame.done:
                frame.error = self.error

    def lost(self, error: BaseException, eof: bool = False) -> None:
        """The connection dropped (``eof``: the server closed it between
        frames): a resume is due if the server keeps the session for a while
        and close() was not called, else the session ends."""
        if self._resume and self.grace > 0 and self.error is None and not self.closed:
            if self.drop_error is None:
                self.drop_error = error
        else:
            if eof:
                self.eof = True
            self.fail(error)

    def close(self, deadline: float) -> bool:
        """close() was called: sends that did not start are refused, values
        not taken are dropped, and the acks are awaited until ``deadline``.
        Returns whether close() had been called already."""
        already, self.closed = self.closed, True
        if not already:
            self.close_deadline = deadline
            closed = PeerDisconnectedError(_CLOSED)
            for frame in self.outbox:
                if frame.error is None:
                    frame.error = closed
            self.outbox.clear()
            self.inbox.clear()
        return already

    def close_expired(self, now: float) -> bool:
        """Whether close() waited long enough for acks and writes: the
        connection ends without the close frame."""
        return (
            self.closed
            and self.close_deadline is not None
            and now >= self.close_deadline
            and not (self.bye is not None and self.bye.started)
        )

    def outcome(self) -> str:
        """How a connection ended: ``"dropped"`` (a resume is due) or ``"ended"``."""
        return "dropped" if self.error is None and self.drop_error is not None else "ended"

    def finish(self) -> None:
        """The I/O thread stopped: nothing more can happen on the session."""
        self.resuming = False
        self.fail(PeerDisconnectedError(_CLOSED if self.closed else "Connection closed"))

    # -- receiving --------------------------------------------------------------

    def deliver(self, value: Any, size: int, now: float) -> None:
        """An application value of ``size`` body bytes arrived: it is numbered
        (an ack becomes owed) and queued in the inbox."""
        self.inbox.add(value, size, self.acks.message(size, now))

    def take(self) -> Optional[Tuple[Any, bool]]:
        """The oldest value received and whether reading may go on (see
        :meth:`Inbox.take`); ``None`` while none is waiting.

        Raises:
            PeerDisconnectedError: close() was called.
            BaseException: The session's error, once no value is left.
        """
        if self.closed:
            raise PeerDisconnectedError(_CLOSED)
        if self.inbox:
            return self.inbox.take()
        if self.error is not None:
            raise self.error
        return None

    def reply_target(self, to: Optional[int]) -> int:
        """The number of the server's message a reply answers: ``to``, or the
        last value taken.

        Raises:
            ValueError: No value was taken yet (and no ``to``), or ``to`` is
                not the number of a message received.
            TypeError: ``to`` is not an int.
        """
        if to is None:
            if self.inbox.last_taken == 0:
                raise ValueError(
                    "Nothing to reply to: no message was taken with recv() yet "
                    "(pass to=<message number>)"
                )
            return self.inbox.last_taken
        if isinstance(to, bool) or not isinstance(to, int):
            raise TypeError(f"Invalid to: expected an int, got {type(to).__name__}")
        received = self.acks.received
        if not 1 <= to <= min(received, MAX_REQUEST):
            raise ValueError(
                f"Invalid to: {to!r} is not the number of a message received from the server "
                + (f"(1 to {received})" if received else "(none received yet)")
            )
        return to

    def on_ping(self, payload: bytes) -> None:
        """A ping: its pong is written next, behind the ack owed, if any
        (PROTOCOL.md §8.3: the server may be waiting for it)."""
        if self.acks.pending:
            self.control.append(self.acks.frame())
        self.control.append(control(PONG, payload))

    def on_ack(self, count: int) -> bool:
        """An ack: returns whether it freed retained messages."""
        return self.retention.ack(count)

    def on_close(self) -> None:
        """The server's close frame: the session is over for good."""
        self.eof = True
        self.fail(PeerDisconnectedError("Server closed the session: it ended it for good"))

    # -- sending ----------------------------------------------------------------

    def submit(self, frame: OutFrame) -> None:
        """Queues an application frame (raises as :meth:`check_usable`)."""
        self.check_usable()
        self.outbox.append(frame)

    def withdraw(self, frame: OutFrame) -> None:
        """Takes back an application frame that was not started."""
        if not frame.started and frame in self.outbox:
            self.outbox.remove(frame)

    def settled(self) -> bool:
        """Whether everything sent was acknowledged and nothing is being written."""
        return (
            self.current is None
            and not self.resend
            and not self.control
            and len(self.retention) == 0
        )

    def ask_for_acks(self) -> bool:
        """Whether a ping should ask the server for its acks now (it answers
        with the ack it owes before the pong, PROTOCOL.md §8.3): something
        waits for them (close(), a send for room under ``retain_bytes``, a
        send for the ack of its long message), everything sent is written
        whole, and no ping asked since the last message was written (one
        ping per wait). When it says yes, the caller queues the ping."""
        retention = self.retention
        if (
            self.current is not None
            or self.control
            or self.resend
            or self.resuming
            or len(retention) == 0
            or retention.sent <= self._asked
        ):
            return False
        full = bool(self.outbox) and retention.bytes >= self.retain_bytes
        if not (self.closed or full or self.ack_waits > 0):
            return False
        self._asked = retention.sent
        return True

    def next_frame(self, now: float) -> Optional[OutFrame]:
        """The frame being written, or the next one to write (it becomes
        :attr:`current`): control frames (an ack due, pongs, pings) first,
        between application frames; an ack owed goes in front of an
        application frame; messages to send again after a resume go before
        new ones, which wait while ``retain_bytes`` are unacknowledged. After
        close(), once everything sent is acknowledged: the close frame."""
        if self.current is not None:
            return self.current
        if self.acks.due(now):
            self.control.append(self.acks.frame())
        if self.closed and self.bye is None and self.settled():
            self.bye = control(CLOSE, b"")
            self.control.append(self.bye)
        frame: Optional[OutFrame] = None
        if self.control:
            frame = self.control.popleft()
        elif self.resend or self._may_start():
            if self.acks.pending:
                frame = self.acks.frame()  # piggyback: the ack goes right before
            elif self.resend:
                frame = self.resend.popleft()
            else:
                frame = self.outbox.popleft()
                self.retention.add(frame)
        if frame is not None:
            frame.started = True
            self.current = frame
        return frame

    def _may_start(self) -> bool:
        return bool(self.outbox) and not self.closed and self.retention.bytes < self.retain_bytes

    def written(self, frame: OutFrame, finished: bool, event: Optional[Progress] = None) -> None:
        """Bytes of ``frame`` were written: all of it (``finished``), or up to
        a progress ``event`` for its sender."""
        if event is not None:
            frame.events.append(event)
        if finished and not frame.done:
            frame.done = True
            if frame.app:
                self.messages_sent += 1

    def frame_ended(self, frame: OutFrame) -> bool:
        """The current frame was written whole or failed; returns whether it
        was the close frame (the session is then over)."""
        self.current = None
        return frame is self.bye

    # -- resuming ---------------------------------------------------------------

    def resume_request(self) -> ResumeRequest:
        """What the hello of a resume says: the session and what was received."""
        assert self.welcome is not None and self.token is not None
        return ResumeRequest(self.welcome.id, self.token, self.acks.received)

    def begin_resume(self) -> Optional[BaseException]:
        """A resume starts: what was being written on the old connection is
        dropped (the retained messages are written again once resumed).
        Returns why the connection dropped."""
        self.resuming = True
        self.current = None
        self.control.clear()  # pongs and pings of the old connection
        self.resend.clear()
        self._asked = 0  # (a ping that asked for acks went with it)
        return self.drop_error

    def resumed(self, welcome: Welcome) -> int:
        """Applies a resume welcome: drops what the server received and queues
        the rest to be written again. Returns how many.

        Raises:
            ProtocolError: The welcome's ``received`` does not fit what was sent.
        """
        frames = self.retention.resume(welcome.received)
        self.resend = deque(frames)
        self.acks.settled(self.acks.received)  # the hello told the server
        self.resuming = False
        self.drop_error = None
        self.resumes += 1
        self.welcome = welcome
        return len(frames)

    def give_up(self, error: BaseException) -> None:
        """The session could not be resumed: it ends with ``error``."""
        self.resuming = False
        self.fail(error)
