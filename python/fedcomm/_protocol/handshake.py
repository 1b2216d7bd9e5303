"""The version 3 handshake: hello, optional challenge/auth, welcome or reject.

Every handshake message travels in a control frame ``c1 03`` followed by one
MessagePack map with str keys, among them ``fedcomm`` (3) and ``type``.
Authentication is mutual (``auth.py``): the server proves in its challenge
that it knows the secret, then the client in its auth message.

The hello may carry ``props`` (client metadata) and, to resume a session after
its connection dropped, ``resume: {id, token, received}``; the welcome names
the session (``id``, and ``token`` and ``grace`` when the server keeps sessions
for a resume) and says how many messages the server received (``received``).

Long messages (PROTOCOL.md §8.8) are negotiated here: a client that takes
them puts ``maxMessageBytes`` in its hello (after ``props``, before
``resume``); the server's welcome then carries its own ``maxMessageBytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Union, cast

import msgpack  # type: ignore[import-untyped]

from ..errors import AuthenticationError, ProtocolError, RejectedError
from .auth import NONCE_BYTES, client_proof, new_nonce, proof_matches, server_proof
from .framing import CONTROL, HANDSHAKE, HEADER

__all__ = [
    "MAX_NAME_BYTES",
    "PROTOCOL_VERSION",
    "TOKEN_BYTES",
    "Handshake",
    "ResumeRequest",
    "Welcome",
    "handshake_frame",
    "parse_handshake",
]

#: The protocol version this package speaks.
PROTOCOL_VERSION = 3
#: The size of a session's resume token.
TOKEN_BYTES = 16
#: The longest client name, in UTF-8 bytes.
MAX_NAME_BYTES = 128


@dataclass(frozen=True)
class ResumeRequest:
    """The ``resume`` of a hello: the session to resume and how many of the
    server's messages this client has received on it."""

    id: int
    token: bytes
    received: int


@dataclass(frozen=True)
class Welcome:
    """A checked welcome.

    Attributes:
        message: The whole map (a later server may add keys).
        id: The client's id.
        clients: The server's number of clients.
        max_frame_bytes: The largest body the server accepts.
        token: The session's resume token (``None`` when ``grace`` is 0).
        grace: Milliseconds the server keeps the session after a drop (0: no resume).
        received: Messages the server has received from this client on the session.
        resumed: Whether the welcome resumes the session named in the hello.
        max_message_bytes: The largest long message the server accepts (0 or
            absent: this client sends it none).
    """

    message: Dict[str, Any]
    id: int
    clients: int
    max_frame_bytes: int
    token: Optional[bytes]
    grace: int
    received: int
    resumed: bool
    max_message_bytes: int = 0


def handshake_frame(message: Dict[str, Any]) -> bytes:
    """Returns a whole frame (header included) carrying a handshake message."""
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    body = bytes((CONTROL, HANDSHAKE)) + packed
    return HEADER.pack(len(body)) + body


def parse_handshake(body: Union[bytes, bytearray, memoryview]) -> Dict[str, Any]:
    """Decodes a handshake body: ``c1 03`` + one map, or (only for a reject from
    a server answering in the version 1 form) a plain MessagePack map.

    Returns:
        The map, with bin keys turned into str.

    Raises:
        ProtocolError: Not a handshake message.
    """
    view = memoryview(body)
    if len(view) >= 1 and view[0] == CONTROL:
        if len(view) < 2 or view[1] != HANDSHAKE:
            kind = f"0x{view[1]:02x}" if len(view) >= 2 else "none"
            raise ProtocolError(
                f"Invalid handshake: expected a handshake control frame (c1 03), got kind {kind}"
            )
        view = view[2:]
        plain = False
    else:
        plain = True
    try:
        value = msgpack.unpackb(view, raw=False, strict_map_key=False)
    except Exception as error:
        detail = str(error) or type(error).__name__
        raise ProtocolError(f"Malformed handshake message: {detail}") from error
    if not isinstance(value, dict):
        raise ProtocolError("Invalid handshake: expected a map")
    message: Dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if isinstance(key, str):
            message[key] = item
    if plain and message.get("type") != "reject":
        version = message.get("fedcomm")
        raise ProtocolError(
            "Invalid handshake: expected a handshake control frame (c1 03), got a plain "
            f"MessagePack value (a version {version!r} server? this client speaks "
            f"{PROTOCOL_VERSION})"
        )
    return message


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Handshake:
    """The client side of the handshake, as a state machine fed with messages.

    Args:
        name: The client's name (validated UTF-8 bytes) or ``None``.
        secret: The shared secret or ``None``.
        props: Checked client metadata for the hello, or ``None``.
        resume: The session to resume, or ``None`` for a new session.
        max_message_bytes: The largest long message this client takes, sent
            in the hello (0: it takes none, and the hello leaves the key out).
    """

    def __init__(
        self,
        name: Optional[str],
        secret: Optional[bytes],
        props: Optional[Dict[str, Any]] = None,
        resume: Optional[ResumeRequest] = None,
        max_message_bytes: int = 0,
    ) -> None:
        self.name = name
        self._name_bytes = b"" if name is None else name.encode("utf-8")
        self.secret = secret
        self.props = props
        self.resume = resume
        self.max_message_bytes = max_message_bytes
        self.nonce: Optional[bytes] = None if secret is None else new_nonce()
        #: The checked welcome, once received.
        self.welcome: Optional[Welcome] = None
        self._verified = False
        self._challenged = False

    def hello(self) -> bytes:
        """The hello frame."""
        message: Dict[str, Any] = {"fedcomm": PROTOCOL_VERSION, "type": "hello"}
        if self.name is not None:
            message["name"] = self.name
        if self.nonce is not None:
            message["nonce"] = self.nonce
        if self.props is not None:
            message["props"] = self.props
        if self.max_message_bytes:
            message["maxMessageBytes"] = self.max_message_bytes
        if self.resume is not None:
            message["resume"] = {
                "id": self.resume.id,
                "token": self.resume.token,
                "received": self.resume.received,
            }
        return handshake_frame(message)

    def answer(self, message: Dict[str, Any]) -> Optional[bytes]:
        """Handles one message from the server.

        Returns:
            A frame to send (the auth message), or ``None`` when ``message`` is
            the welcome (then checked, in :attr:`welcome`).

        Raises:
            RejectedError: A reject.
            AuthenticationError: The server's proof does not match, or it
                welcomed a client that has a secret without authenticating.
            ProtocolError: Anything else unexpected.
        """
        kind = message.get("type")
        if not isinstance(kind, str):
            raise ProtocolError('Invalid handshake: expected a map with a str "type"')
        if kind == "reject":
            # Accepted whatever its version: a server of another version rejects us so.
            return self._reject(message)
        version = message.get("fedcomm")
        if not (_is_int(version) and version == PROTOCOL_VERSION):
            raise ProtocolError(
                f"Unsupported protocol version: server speaks {version!r}, "
                f"this client {PROTOCOL_VERSION}"
            )
        if kind == "challenge":
            return self._challenge(message)
        if kind == "welcome":
            self.welcome = self._welcome(message)
            return None
        raise ProtocolError(f"Unsupported handshake message: {kind!r}")

    @staticmethod
    def _reject(message: Dict[str, Any]) -> Optional[bytes]:
        reason, text = message.get("reason"), message.get("message")
        raise RejectedError(
            reason if isinstance(reason, str) else repr(reason),
            text if isinstance(text, str) else repr(text),
        )

    def _challenge(self, message: Dict[str, Any]) -> bytes:
        if self.secret is None or self.nonce is None:
            raise ProtocolError(
                "Unexpected challenge: this client has no secret and sent no nonce"
            )
        if self._challenged:
            raise ProtocolError("Unexpected challenge: the server already sent one")
        self._challenged = True
        nonce, proof = message.get("nonce"), message.get("proof")
        if not (isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES):
            raise ProtocolError(f"Invalid challenge: nonce must be 32 bytes of bin, got {_describe(nonce)}")
        expected = server_proof(self.secret, self.nonce, nonce, self._name_bytes)
        # (A proof that is not 32 bytes of bin cannot match: a failed proof, as in Deno.)
        if not proof_matches(expected, proof):
            raise AuthenticationError(
                "Server failed authentication: its proof does not match "
                "(wrong secret, unknown name, or not the real server)"
            )
        self._verified = True
        return handshake_frame(
            {
                "fedcomm": PROTOCOL_VERSION,
                "type": "auth",
                "proof": client_proof(self.secret, self.nonce, nonce, self._name_bytes),
            }
        )

    def _welcome(self, message: Dict[str, Any]) -> Welcome:
        if self.secret is not None and not self._verified:
            raise AuthenticationError(
                "Server did not authenticate: it welcomed this client without proving "
                "that it knows the secret (a server without authentication, or not the "
                "real server)"
            )
        id_, clients, limit = message.get("id"), message.get("clients"), message.get("maxFrameBytes")
        if not (_is_uint(id_) and _is_uint(clients) and _is_uint(limit)):
            raise ProtocolError(
                f"Invalid welcome: id {id_!r}, clients {clients!r}, maxFrameBytes {limit!r}"
            )
        grace, received = message.get("grace", 0), message.get("received", 0)
        resumed, token = message.get("resumed", False), message.get("token")
        if not (_is_uint(grace) and _is_uint(received) and isinstance(resumed, bool)):
            raise ProtocolError(
                f"Invalid welcome: grace {grace!r}, received {received!r}, resumed {resumed!r}"
            )
        if grace > 0 and not (isinstance(token, bytes) and len(token) == TOKEN_BYTES):
            raise ProtocolError(
                f"Invalid welcome: grace {grace} ms needs a token of {TOKEN_BYTES} bytes of bin, "
                f"got {_describe(token)}"
            )
        long_limit = message.get("maxMessageBytes", 0)
        if not _is_uint(long_limit):
            raise ProtocolError(f"Invalid welcome: maxMessageBytes {long_limit!r}")
        welcome = Welcome(
            message, cast(int, id_), cast(int, clients), cast(int, limit),
            token if grace > 0 else None, grace, received, resumed,
            # (Only a client that announced long messages may send them.)
            cast(int, long_limit) if self.max_message_bytes else 0,
        )
        if self.resume is None:
            if resumed or received != 0:
                raise ProtocolError(
                    f"Invalid welcome: a new session with resumed {resumed!r} and "
                    f"received {received!r}"
                )
        elif not resumed or id_ != self.resume.id:
            raise ProtocolError(
                f"Invalid welcome: asked to resume the session of client \"{self.resume.id}\", "
                f"got id {id_!r} with resumed {resumed!r} (a server that does not resume "
                "sessions started a new one)"
            )
        return welcome


def _is_uint(value: Any) -> bool:
    return _is_int(value) and value >= 0


def _describe(value: Any) -> str:
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return type(value).__name__
