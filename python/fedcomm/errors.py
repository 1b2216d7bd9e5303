"""The exceptions fedcomm raises, mirroring the Deno library's error classes.

Every condition about the connection or the server is a :class:`FedcommError`.
Some classes also derive from the built-in exception a caller would naturally
catch: :class:`PeerDisconnectedError` is a :class:`ConnectionError`,
:class:`FedcommTimeoutError` a :class:`TimeoutError`, and
:class:`FrameTooLargeError` and :class:`MessageTooLargeError` are
:class:`ValueError` (limits).

::

    FedcommError
    ├── PeerDisconnectedError   (also ConnectionError)
    ├── ProtocolError
    │   ├── RejectedError       (.reason, .message)
    │   └── TruncatedFrameError (.expected, .received)
    ├── AuthenticationError
    ├── FedcommTimeoutError     (also TimeoutError)
    │   └── SendTimeoutError    (.queued)
    ├── FrameTooLargeError      (also ValueError)
    └── MessageTooLargeError    (also ValueError)
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "FedcommError",
    "FedcommTimeoutError",
    "FrameTooLargeError",
    "MessageTooLargeError",
    "PeerDisconnectedError",
    "ProtocolError",
    "RejectedError",
    "SendTimeoutError",
    "TruncatedFrameError",
]


class FedcommError(Exception):
    """Base class of every condition fedcomm raises about the connection or the server."""


class PeerDisconnectedError(FedcommError, ConnectionError):
    """The session is over, or the connection could not be made.

    Raised when the server ended the session (a close frame), when the
    session could not be resumed after a drop (``Session lost: …``: refused,
    or not within the server's grace), when, without a grace, the server
    closed or reset the connection or went silent for longer than
    ``idle_timeout``, when it could not be reached at all (connection
    refused, host unreachable), or when this client was closed with
    :meth:`fedcomm.Client.close`.
    """


class ProtocolError(FedcommError):
    """The server broke the protocol: a malformed or truncated frame, an invalid
    MessagePack value or array, an unknown or invalid control frame (an ack
    of more messages than were sent, a reply from the server), a bad
    handshake answer, an unsupported protocol version, or a TLS handshake
    failure other than certificate verification."""


class TruncatedFrameError(ProtocolError):
    """The byte stream ended inside a frame (its 4-byte header or its body).

    On a connection this is how a dropped link looks: the session resumes
    after it as after any other drop.

    Attributes:
        expected: The bytes the frame needed (its body length, or 4 for a header).
        received: The bytes of it that arrived.
        in_header: Whether the stream ended inside the header.
    """

    def __init__(self, expected: int, received: int, in_header: bool = False) -> None:
        part = "header bytes" if in_header else "bytes"
        super().__init__(f"Truncated frame: expected {expected} {part}, received {received}")
        self.expected = expected
        self.received = received
        self.in_header = in_header

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.expected, self.received, self.in_header))


class RejectedError(ProtocolError):
    """The server refused this client in the handshake.

    Attributes:
        reason: Machine-readable: ``"version"`` (protocol version mismatch),
            ``"full"`` (all ids taken), ``"malformed"`` (bad hello),
            ``"closed"`` (the server is shutting down), ``"auth"``
            (authentication required or failed), ``"busy"`` (too many
            connections waiting for their handshake), ``"duplicate"`` (an
            authenticated name whose session is connected), ``"resume"`` or
            ``"live"`` (a resume refused; the I/O thread sees these), or a
            reason a later server version adds.
        message: The server's explanation, for humans.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"Server rejected the connection: {reason}: {message}")
        self.reason = reason
        self.message = message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.reason, self.message))


class AuthenticationError(FedcommError):
    """The server failed to prove who it is.

    Raised when this client has a secret and the server's proof does not match
    it (a wrong secret, an unknown name, or not the real server), when the
    server welcomed this client without authenticating at all, or when the
    server's TLS certificate could not be verified.
    """


class FedcommTimeoutError(FedcommError, TimeoutError):
    """A connect, handshake, receive or send ran out of time."""


class SendTimeoutError(FedcommTimeoutError):
    """A send ran out of time; ``queued`` says whether to send it again.

    Not queued: nothing was sent (earlier messages fill the retention, or the
    session is resuming): send it again. Queued: it is partly written and stays
    in the session, to be delivered whole (sent again on a resume): do not.

    Attributes:
        queued: Whether the message stays queued and will be delivered.
    """

    def __init__(self, message: str, queued: bool) -> None:
        super().__init__(message)
        self.queued = queued

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.queued))


class FrameTooLargeError(FedcommError, ValueError):
    """A frame body over a limit.

    Either the server announced a frame larger than this client's
    ``max_frame_bytes`` (the connection then fails), or a value to send encodes
    to more than the server accepts (nothing is sent; the connection stays
    usable).

    Attributes:
        size: The body size in bytes.
        limit: The limit it exceeds.
    """

    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(f"Frame too large: {size} bytes exceeds {what} {limit}")
        self.size = size
        self.limit = limit
        self.what = what

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.size, self.limit, self.what))


class MessageTooLargeError(FedcommError, ValueError):
    """A long message (PROTOCOL.md §8.8: a value sent as a header frame and
    part frames) over a ``maxMessageBytes`` limit.

    Either the server announced, in a long message's header, more than this
    client's ``max_message_bytes`` (the connection then fails, before anything
    is allocated for it), or a value to send is larger than the server's (or
    this client's) ``maxMessageBytes`` (nothing is sent; the connection stays
    usable). The size of a long message is its header body plus the lengths
    of the binaries sent out of band.

    Attributes:
        size: The message's size in bytes.
        limit: The limit it exceeds.
    """

    def __init__(self, size: int, limit: int, what: str) -> None:
        super().__init__(f"Message too large: {size} bytes exceeds {what} {limit}")
        self.size = size
        self.limit = limit
        self.what = what

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.size, self.limit, self.what))
