"""The server side of a connection's handshake: hello, challenge and auth,
then a welcome (a new session, or a resumed one) or a reject."""

from __future__ import annotations

import hmac
import os
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import msgpack

from .session import Session
from .wire import CLIENT_LABEL, SERVER_LABEL, VERSION, check_props, frame, handshake_body, proof

if TYPE_CHECKING:
    from .conn import Conn


class ServerHandshake:
    """The handshake of one :class:`~_reference.conn.Conn`, fed the handshake
    messages its connection thread reads."""

    def __init__(self, conn: "Conn") -> None:
        self._conn = conn
        self._server = conn.server
        self._client_nonce: Optional[bytes] = None
        self._server_nonce: Optional[bytes] = None
        #: "hello", "auth" (a challenge was sent) or "session" (welcomed).
        self._state = "hello"
        self._hello: Dict[str, Any] = {}

    def _send(self, message: Dict[str, Any], plain: bool = False) -> None:
        body = msgpack.packb(message, use_bin_type=True) if plain else handshake_body(message)
        self._conn.send_raw(frame(body))

    def reject(self, reason: str, message: str, plain: bool = False) -> None:
        """Sends a reject, then closes the connection once it is written."""
        self._send(
            {"fedcomm": VERSION, "type": "reject", "reason": reason, "message": message}, plain
        )
        self._conn.close_reason = "rejected"
        self._conn.close(flush=True)

    def _hello_problem(self, message: Dict[str, Any]) -> Optional[Tuple[str, str]]:
        """What is wrong with a hello, as (reject reason, message)."""
        allowed = {"fedcomm", "type", "name", "nonce", "props", "maxMessageBytes", "resume"}
        order = [key for key in message if key in allowed]
        expected = [key for key in ("fedcomm", "type", "name", "nonce", "props", "maxMessageBytes", "resume") if key in message]
        if order != expected:
            self._conn.violation(f"hello keys in the order {order}, not {expected}")
        if set(message) - allowed:
            self._conn.violation(f"unknown hello keys {sorted(set(message) - allowed)}")
        name, nonce = message.get("name"), message.get("nonce")
        if name is not None and not (isinstance(name, str) and 1 <= len(name.encode()) <= 128):
            self._conn.violation(f"invalid name {name!r}")
            return "malformed", "Invalid name"
        if nonce is not None and not (isinstance(nonce, bytes) and len(nonce) == 32):
            self._conn.violation(f"invalid nonce {nonce!r}")
            return "malformed", "Invalid nonce"
        if "props" in message:
            problem = check_props(message["props"])
            if problem is not None:
                self._conn.violation(f'invalid props: {problem}')
                return "malformed", f'Invalid hello: "props" {problem}'
        if "maxMessageBytes" in message:
            limit = message["maxMessageBytes"]
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 2**53 - 1:
                self._conn.violation(f"invalid maxMessageBytes {limit!r}")
                return "malformed", 'Invalid hello: "maxMessageBytes"'
        if "resume" in message:
            resume = message["resume"]
            valid = (
                isinstance(resume, dict)
                and set(resume) == {"id", "token", "received"}
                and isinstance(resume["id"], int) and resume["id"] >= 0
                and isinstance(resume["token"], bytes)
                and isinstance(resume["received"], int) and resume["received"] >= 0
            )
            if not valid:
                self._conn.violation(f"invalid resume {resume!r}")
                return "malformed", 'Invalid hello: "resume"'
        return None

    def handle(self, message: Any) -> bool:
        """Handles a handshake message; ``False`` to close the connection."""
        server = self._server
        if not isinstance(message, dict) or not all(isinstance(k, str) for k in message):
            self._conn.violation("handshake message is not a map with str keys")
            return False
        self._conn.handshake_messages.append(message)
        if message.get("fedcomm") != VERSION:
            self._conn.violation(f"handshake message with fedcomm {message.get('fedcomm')!r}")
            self.reject("version", "Unsupported protocol version")
            return True
        kind = message.get("type")
        if self._state == "hello":
            if kind != "hello":
                self._conn.violation(f"expected hello, got {kind!r}")
                self.reject("malformed", 'Invalid handshake: expected a "hello" map')
                return True
            problem = self._hello_problem(message)
            if problem is not None:
                self.reject(*problem)
                return True
            self._hello = message
            self._conn.name = name = message.get("name")
            self._client_nonce = nonce = message.get("nonce")
            if server.busy_first > 0:
                server.busy_first -= 1
                self.reject("busy", "Server busy: too many connections are in their handshake")
                return True
            if server.reject is not None:
                self.reject(server.reject, f"Rejected by the test server: {server.reject}", server.plain_reject)
                return True
            if server.closing:
                self.reject("closed", "Server closing")
                return True
            if server.secret is None or server.skip_challenge:
                return self._admit()
            if nonce is None:
                self.reject("auth", "Authentication required: this server needs a secret")
                return True
            secret = server.server_secret if server.server_secret is not None else server.secret
            name_bytes = b"" if name is None else name.encode()
            if server.challenge is not None:
                self._server_nonce, server_proof = server.challenge
            else:
                self._server_nonce = os.urandom(32)
                server_proof = proof(SERVER_LABEL, secret, nonce, self._server_nonce, name_bytes)
            server.challenges.append((nonce, self._server_nonce, server_proof))
            self._send(
                {"fedcomm": VERSION, "type": "challenge", "nonce": self._server_nonce, "proof": server_proof}
            )
            self._state = "auth"
            return True
        if self._state == "auth":
            if kind != "auth" or set(message) != {"fedcomm", "type", "proof"}:
                self._conn.violation(f"expected auth, got {message!r}")
                self.reject("malformed", 'Invalid handshake: expected an "auth" map')
                return True
            assert self._client_nonce is not None and self._server_nonce is not None
            name = self._conn.name
            name_bytes = b"" if name is None else name.encode()
            expected = proof(CLIENT_LABEL, server.secret, self._client_nonce, self._server_nonce, name_bytes)
            given = message.get("proof")
            if not isinstance(given, bytes) or not hmac.compare_digest(expected, given):
                self.reject("auth", "Authentication failed")
                return True
            return self._admit()
        self._conn.violation(f"handshake message in state {self._state}")
        return False

    def _admit(self) -> bool:
        resume = self._hello.get("resume")
        if resume is not None:
            return self._resume(resume)
        server = self._server
        with server.lock:
            if server.next_id >= server.clients:
                self.reject("full", f"Server full: all {server.clients} clients have joined")
                return True
            session = Session(server, server.next_id, self._conn.name, self._hello.get("props"))
            session.hello_max_message_bytes = self._hello.get("maxMessageBytes")
            server.next_id += 1
            server.sessions[session.id] = session
        with session.cond:
            self._bind(session, resumed=False)
        with server.lock:
            server.joined_cond.notify_all()
        return True

    def _resume(self, resume: Dict[str, Any]) -> bool:
        server = self._server
        id_ = resume["id"]
        with server.lock:
            session = server.sessions.get(id_)
        if session is not None:
            session._expire(time.monotonic())
        if session is None or session.state == "gone":
            self.reject("resume", f'Resume refused: no session "{id_}"')
            return True
        with session.cond:
            if not hmac.compare_digest(session.token, resume["token"]):
                self.reject("resume", f'Resume refused: wrong token for client "{id_}"')
                return True
            if session.state == "connected" or server.refuse_live > 0:
                if session.state == "connected":
                    server.early_refusals += 1  # the cut is not through on this side yet
                else:
                    server.refuse_live -= 1
                    server.live_refusals += 1
                self.reject(server.live_reason, f'Resume refused: client "{id_}" is still connected')
                return True
            if self._hello.get("maxMessageBytes") != session.hello_max_message_bytes:
                self._conn.violation(
                    f"resume hello maxMessageBytes {self._hello.get('maxMessageBytes')!r}, "
                    f"first hello {session.hello_max_message_bytes!r}"
                )
            if resume["received"] > session.sent:
                self._conn.violation(f"resume received {resume['received']} > {session.sent} sent")
                return False
            while session.retained and session.retained[0][0] <= resume["received"]:
                session.retained.popleft()
            session.resumes += 1
            self._bind(session, resumed=True)
            for _, data in session.retained:  # sent again, in order, before anything new
                self._conn.send_raw(data)
        return True

    def _bind(self, session: Session, resumed: bool) -> None:
        """Welcomes this connection into ``session`` (call with its lock held)."""
        server = self._server
        conn = self._conn
        conn.session = session
        conn.id = session.id
        session.conn = conn
        session.conns.append(conn)
        session.state = "connected"
        session.cond.notify_all()
        message: Dict[str, Any] = {
            "fedcomm": VERSION,
            "type": "welcome",
            "id": session.id,
            "clients": server.clients,
            "maxFrameBytes": server.max_frame_bytes,
        }
        if server.grace > 0:
            message["token"] = session.token
        message.update(
            {"grace": int(server.grace * 1000), "received": session.received, "resumed": resumed}
        )
        if session.hello_max_message_bytes is not None and server.max_message_bytes is not None:
            message["maxMessageBytes"] = server.max_message_bytes
        message.update(server.welcome_extra)
        if server.welcome_override is not None:
            message = dict(server.welcome_override)
        self._send(message)
        self._state = "session"
        conn.welcomed.set()
