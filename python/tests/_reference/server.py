"""The reference server itself: it accepts connections on 127.0.0.1 and
keeps the sessions (see the package's docstring)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from typing import Any, Dict, List, Optional, Tuple, Union

from .conn import Conn
from .session import Session
from .wire import secret_bytes


class ReferenceServer:
    """A strict protocol version 3 server on 127.0.0.1 (a free port).

    Args:
        clients: How many clients it admits.
        secret: Require authentication with this secret.
        server_secret: Compute the server's proof with this secret instead (a
            server that does not know the right one).
        tls: ``(certfile, keyfile)`` to serve TLS.
        max_frame_bytes: Announced in the welcome and enforced.
        max_message_bytes: The largest long message taken (PROTOCOL.md §8.8),
            announced in the welcome to a client whose hello announced one;
            ``None`` (default): a server without long messages, whose welcome
            leaves the key out.
        answer_pings: Answer pings with pongs (``False``: a hung server).
        ping_interval: Send a ping after this many seconds without writing.
        grace: Seconds a session waits for a resume after a drop (0: none).
        acks: Acknowledge the clients' messages (settable later).
        refuse_live: Refuse this many resumes as "still connected".
        live_reason: The reason of those rejects: "live", as PROTOCOL.md §6.3
            says ("resume", which means the session is over, to test that the
            client decides by the reason alone).
        reject: Reject every hello with this reason.
        busy_first: Reject this many hellos first with ``busy``.
        plain_reject: Send that reject as plain MessagePack (the version 1 form).
        skip_challenge: Welcome at once even if authentication is configured.
        challenge: ``(nonce, proof)`` to send instead of a fresh challenge (replay).
        welcome_extra: Extra keys for the welcome.
        welcome_override: Send exactly this map as the welcome.
        handshake_timeout: Seconds a client has to complete the handshake.
    """

    def __init__(
        self,
        clients: int = 1,
        *,
        secret: Union[None, str, bytes] = None,
        server_secret: Union[None, str, bytes] = None,
        tls: Optional[Tuple[str, str]] = None,
        max_frame_bytes: int = 512 * 1024 * 1024,
        max_message_bytes: Optional[int] = None,
        answer_pings: bool = True,
        ping_interval: Optional[float] = None,
        grace: float = 0.0,
        acks: bool = True,
        refuse_live: int = 0,
        live_reason: str = "live",
        reject: Optional[str] = None,
        busy_first: int = 0,
        plain_reject: bool = False,
        skip_challenge: bool = False,
        challenge: Optional[Tuple[bytes, bytes]] = None,
        welcome_extra: Optional[Dict[str, Any]] = None,
        welcome_override: Optional[Dict[str, Any]] = None,
        handshake_timeout: float = 10.0,
        port: int = 0,
    ) -> None:
        self.clients = clients
        self.secret = secret_bytes(secret)
        self.server_secret = secret_bytes(server_secret)
        self.max_frame_bytes = max_frame_bytes
        self.max_message_bytes = max_message_bytes
        self.answer_pings = answer_pings
        self.ping_interval = ping_interval
        self.grace = grace
        self.acks = acks
        self.refuse_live = refuse_live
        self.live_reason = live_reason
        #: Resumes refused as "still connected" because of ``refuse_live``.
        self.live_refusals = 0
        #: Resumes refused because the old connection was still open here.
        self.early_refusals = 0
        self.reject = reject
        self.busy_first = busy_first
        self.plain_reject = plain_reject
        self.skip_challenge = skip_challenge
        self.challenge = challenge
        self.welcome_extra = welcome_extra or {}
        self.welcome_override = welcome_override
        self.handshake_timeout = handshake_timeout
        self.tls_context: Optional[ssl.SSLContext] = None
        if tls is not None:
            self.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_context.load_cert_chain(*tls)
        #: Protocol violations seen from clients.
        self.errors: List[str] = []
        #: TLS handshakes that failed.
        self.tls_failures: List[str] = []
        #: ``(client nonce, server nonce, server proof)`` of every challenge sent.
        self.challenges: List[Tuple[bytes, bytes, bytes]] = []
        self.lock = threading.Lock()
        self.joined_cond = threading.Condition(self.lock)
        self.next_id = 0
        self.sessions: Dict[int, Session] = {}
        self.stopping = False
        self.closing = False
        self.conns: List[Conn] = []
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)
        #: The port it listens on.
        self.port: int = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept, name="refserver-accept", daemon=True)
        self._accept_thread.start()

    def joined(self) -> int:
        """How many sessions were started."""
        return self.next_id

    def _accept(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            with self.lock:
                sessions = list(self.sessions.values())
            for session in sessions:
                session._expire(now)
            try:
                sock, addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(self, sock, addr)
            with self.lock:
                self.conns.append(conn)
            conn.thread.start()

    def wait_clients(self, count: Optional[int] = None, timeout: float = 10.0) -> List[Conn]:
        """Waits until ``count`` (default: all) sessions started; returns their
        current (latest) connections by id."""
        count = self.clients if count is None else count
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.next_id < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"only {self.next_id} of {count} clients joined")
                self.joined_cond.wait(remaining)
            sessions = sorted(self.sessions.values(), key=lambda s: s.id)
        return [s.conns[-1] for s in sessions]

    def session(self, id_: int = 0, timeout: float = 10.0) -> Session:
        """The session with this id, waiting for it."""
        self.wait_clients(id_ + 1, timeout)
        with self.lock:
            return self.sessions[id_]

    def conn(self, id_: int = 0, timeout: float = 10.0) -> Conn:
        """The current connection of the session with this id, waiting for it."""
        return self.session(id_, timeout).conns[-1]

    def wait_connections(self, count: int, timeout: float = 10.0) -> List[Conn]:
        """Waits until ``count`` connections were accepted (welcomed or not)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.conns) >= count:
                    return list(self.conns)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(self.conns)} connections")
            time.sleep(0.01)

    def forget(self, id_: int) -> None:
        """Loses a session (as a restarted server would): resumes are refused."""
        with self.lock:
            session = self.sessions[id_]
        with session.cond:
            session._end_locked("forgotten")

    def close(self) -> None:
        """Stops accepting, closes every connection and joins every thread."""
        self.stopping = True
        try:
            self._listener.close()
        except OSError:
            pass
        self._accept_thread.join(5)
        for conn in list(self.conns):
            conn._wake()
            conn.thread.join(5)

    def __enter__(self) -> "ReferenceServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
