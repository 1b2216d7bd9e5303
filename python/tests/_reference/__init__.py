"""A small, strict fedcomm protocol version 3 server, for tests.

``wire`` holds the framing, the values and the proofs; ``session`` the
:class:`Session`; ``conn`` the :class:`Conn` and its I/O loop; ``frames``
the handling of the frames a client sends; ``handshake`` the server side of
the handshake; ``server`` the :class:`ReferenceServer`.

It is written independently of the ``fedcomm`` package (it decodes with
``msgpack_numpy`` itself), so that a bug shared by the client's encoder and
decoder cannot hide. Every protocol violation it sees from a client is
recorded in :attr:`ReferenceServer.errors`; tests assert that list is empty.

Sessions: each welcomed client has a :class:`Session` (its id, token, props,
the messages numbered each way, what was acknowledged) that outlives its
connections: with ``grace`` > 0 a dropped connection can be resumed (hello
``resume: {id, token, received}``); retained messages the client did not
receive are sent again. The server acknowledges the client's messages as the
design says (at once after a body of 64 KiB or more, else within 10 ms, and
in front of the pong of a ping that arrives while it owes an ack).

Threads: one accepting connections (it also ends sessions whose grace ran
out), and one per connection that owns its socket (non-blocking, driven by
``select``), so a TLS socket is never used by two threads at once. Tests talk
to a session through :class:`Session` (``srv.session(id)``) or to its current
connection through :class:`Conn` (``srv.conn(id)``), which forwards messages
to its session.

Fault injection: ``answer_pings=False`` / :attr:`Conn.silent` (a dead or hung
server), :meth:`Conn.send_raw` (garbage), :meth:`Conn.send_slowly` (a large
frame trickling in), :meth:`Conn.cut` / :meth:`Conn.cut_after` (a connection
dropped, mid-frame), ``acks`` (a server that does not acknowledge),
``refuse_live`` (resumes refused as "still connected"), :meth:`ReferenceServer.forget`
(a session lost), ``reject=...`` (any reject reason), ``plain_reject`` (a
reject in the version 1 form), ``skip_challenge`` (a server that does not
authenticate), ``challenge=...`` (a replayed challenge), ``server_secret`` (a
server with another secret), ``welcome_extra`` / ``welcome_override``.
"""

from .conn import Conn
from .server import ReferenceServer
from .session import Session
from .wire import (
    CLIENT_LABEL,
    SERVER_LABEL,
    Message,
    decode_value,
    encode_value,
    frame,
    handshake_body,
    is_application,
    long_frames,
    proof,
    wait_until,
)

__all__ = [
    "CLIENT_LABEL",
    "Conn",
    "Message",
    "ReferenceServer",
    "SERVER_LABEL",
    "Session",
    "decode_value",
    "encode_value",
    "frame",
    "handshake_body",
    "is_application",
    "long_frames",
    "proof",
    "wait_until",
]
