"""Acks and pings (PROTOCOL.md §8.3): the client writes the ack it owes before
the pong of a ping, and asks a server that delays its acks for them with a
ping, once per wait (close(), a send waiting for room, a long send waiting
for its ack)."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import fedcomm
from fedcomm._protocol.framing import ACK, CLOSE, PONG
from fedcomm._protocol.handshake import Welcome
from fedcomm._protocol.outframe import OutFrame, message_frame
from fedcomm._protocol.session import Session
from _reference import encode_value, frame, handshake_body, wait_until

U64 = struct.Struct(">Q")
KiB = 1024

#: The kinds of the control frames the fake server tells apart.
CONTROL_KINDS = {0x01: "ping", 0x02: "pong", 0x04: "ack", 0x05: "reply", 0x06: "close",
                 0x07: "long", 0x08: "part"}


def recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    """``n`` bytes from ``sock`` (``None``: it closed first)."""
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


class LazyAckServer:
    """A raw fedcomm server for one client, on 127.0.0.1, written by hand: it
    welcomes the client (no grace), writes ``after_welcome``, then records
    every frame the client writes, in order (:attr:`frames`), and answers
    pings. It never acknowledges on a timer: only in front of the pong of a
    ping, when it owes an ack (as a server that delays its acks longer than
    any test waits would, when asked). It stops at the client's ``c1 06``
    or when the client closes the connection."""

    def __init__(self, max_frame_bytes: int = 1 << 20, max_message_bytes: int = 0,
                 after_welcome: bytes = b"") -> None:
        self._welcome: Dict[str, Any] = {
            "fedcomm": 3, "type": "welcome", "id": 0, "clients": 1, "maxFrameBytes": max_frame_bytes,
        }
        if max_message_bytes:
            self._welcome["maxMessageBytes"] = max_message_bytes
        self._after_welcome = after_welcome
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(10)
        self.port: int = self._listener.getsockname()[1]
        #: ``(kind, body)`` of every frame the client wrote after its hello.
        self.frames: List[Tuple[str, bytes]] = []
        #: The counts of the acks this server wrote (each one in front of a pong).
        self.acks_sent: List[int] = []
        self.error: Optional[BaseException] = None
        self._received = 0
        self._acked = 0
        self._thread = threading.Thread(target=self._run, name="lazy-ack-server", daemon=True)
        self._thread.start()

    def kinds(self) -> List[str]:
        return [kind for kind, _ in self.frames]

    def join(self) -> None:
        self._thread.join(10)
        assert not self._thread.is_alive(), "the fake server did not finish"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            sock, _ = self._listener.accept()
            with sock:
                sock.settimeout(10)
                self._serve(sock)
        except BaseException as error:  # reported by join()
            self.error = error
        finally:
            self._listener.close()

    def _serve(self, sock: socket.socket) -> None:
        header = recv_exact(sock, 4)
        assert header is not None
        hello = recv_exact(sock, int.from_bytes(header, "big"))
        assert hello is not None and hello[:2] == b"\xc1\x03"
        sock.sendall(frame(handshake_body(self._welcome)) + self._after_welcome)
        while True:
            header = recv_exact(sock, 4)
            if header is None:
                return
            body = recv_exact(sock, int.from_bytes(header, "big"))
            assert body is not None, "a frame cut by the client"
            kind = CONTROL_KINDS.get(body[1], "?") if body[:1] == b"\xc1" else "value"
            self.frames.append((kind, body))
            if kind in ("value", "reply", "long"):  # (a long message counts at its header)
                self._received += 1
            elif kind == "ping":
                out = b""
                if self._received > self._acked:
                    self._acked = self._received
                    self.acks_sent.append(self._acked)
                    out = frame(b"\xc1\x04" + U64.pack(self._acked))
                sock.sendall(out + frame(b"\xc1\x02" + body[2:]))
            elif kind == "close":
                return


def connect(srv: LazyAckServer, **options: Any) -> fedcomm.Client:
    """A client without heartbeat pings: every ping it writes asks for acks."""
    return fedcomm.connect("127.0.0.1", srv.port, heartbeat=None, idle_timeout=None, **options)


def test_close_asks_for_the_acks_with_a_ping() -> None:
    srv = LazyAckServer()
    client = connect(srv)
    client.send("update")
    client.close()
    srv.join()
    # The ping came after the message; the server's ack (in front of the pong)
    # let close() write c1 06: without the ping it would have given up after
    # 5 s with no close frame and no ping.
    assert srv.kinds() == ["value", "ping", "close"]
    assert srv.acks_sent == [1]
    assert client.retained_bytes == 0 and client.messages_sent == 1


def test_a_send_waiting_for_room_asks_for_acks_once_per_wait() -> None:
    srv = LazyAckServer()
    client = connect(srv, retain_bytes=100)
    try:
        client.send(b"x" * 200)  # retained: 200 bytes, over retain_bytes (nothing waits yet)
        client.send("second", timeout=5)  # waits for room: one ping, answered with ack 1
        assert client.messages_sent == 2
    finally:
        client.close()
    srv.join()
    assert srv.kinds() == ["value", "ping", "value", "ping", "close"]
    assert srv.acks_sent == [1, 2]


def test_a_long_send_asks_for_its_ack() -> None:
    srv = LazyAckServer(max_frame_bytes=16 * KiB, max_message_bytes=1 << 20)
    client = connect(srv)
    try:
        client.send({"blob": b"y" * (64 * KiB)}, timeout=5)
        # It returned once acknowledged (not at the timeout, with a copy for a resume).
        assert client.retained_bytes == 0
        kinds = srv.kinds()
        assert kinds[0] == "long" and kinds[-1] == "ping" and kinds.count("ping") == 1
        assert set(kinds[1:-1]) == {"part"} and len(kinds) >= 6
    finally:
        client.close()
    srv.join()
    assert srv.kinds()[-1] == "close" and srv.kinds().count("ping") == 1  # nothing more to ask for
    assert srv.acks_sent == [1]


def test_the_ack_owed_goes_before_the_pong() -> None:
    payload = os.urandom(8)
    srv = LazyAckServer(after_welcome=frame(encode_value("round 1")) + frame(b"\xc1\x01" + payload))
    with connect(srv) as client:
        assert client.recv(timeout=5) == "round 1"
        wait_until(lambda: "pong" in srv.kinds(), timeout=5)
        time.sleep(0.05)  # (past the 10 ms ack timer: a late ack would show)
    srv.join()
    frames = srv.frames
    assert [kind for kind, _ in frames] == ["ack", "pong", "close"]
    assert frames[0][1] == b"\xc1\x04" + U64.pack(1)
    assert frames[1][1] == b"\xc1\x02" + payload


def small_frame(value: Any = "x") -> OutFrame:
    return message_frame(value, 0, 1 << 20, 1 << 20).out_frame(report=False)


def drain(session: Session) -> List[Tuple[int, bytes]]:
    """Writes what the session has to write now; returns the control frames
    among them as ``(kind, payload)``, in order."""
    out = []
    while True:
        current = session.next_frame(time.monotonic())
        if current is None:
            return out
        data = b"".join(bytes(part) for part in current.parts)
        if not current.app:
            out.append((data[5], data[6:]))
        session.written(current, finished=True)
        session.frame_ended(current)


def resume_welcome(received: int) -> Welcome:
    return Welcome({}, 0, 1, 1 << 20, bytes(16), 1000, received, True)


def test_session_on_ping_puts_the_ack_owed_first() -> None:
    session = Session(1 << 20, resume=False)
    session.deliver("a", 1, time.monotonic())
    session.deliver("b", 1, time.monotonic())
    session.on_ping(b"p" * 8)
    assert drain(session) == [(ACK, U64.pack(2)), (PONG, b"p" * 8)]
    session.on_ping(b"q" * 8)  # nothing owed: the pong alone
    assert drain(session) == [(PONG, b"q" * 8)]


def test_session_ask_for_acks_once_per_wait() -> None:
    session = Session(1 << 20, resume=True)
    assert not session.ask_for_acks()  # nothing sent
    session.submit(small_frame())
    drain(session)
    assert not session.ask_for_acks()  # sent, but nothing waits for the ack
    session.ack_waits = 1  # (a long send waiting for its ack)
    assert session.ask_for_acks()
    assert not session.ask_for_acks()  # asked already for message 1
    session.ack_waits = 0
    session.close(time.monotonic() + 5)
    assert not session.ask_for_acks()  # (still message 1)
    session.begin_resume()  # a new connection: the ping went with the old one
    session.resumed(resume_welcome(received=0))
    assert not session.ask_for_acks()  # message 1 is to be written again first
    drain(session)
    assert session.ask_for_acks()
    session.on_ack(1)
    assert not session.ask_for_acks()  # nothing left to acknowledge
    assert drain(session) == [(CLOSE, b"")]


def test_session_a_send_waiting_for_room_asks() -> None:
    session = Session(10, resume=False)
    session.submit(small_frame("a" * 20))
    drain(session)
    assert not session.ask_for_acks()  # nothing waits for room yet
    session.submit(small_frame("b"))
    assert drain(session) == []  # "b" waits for room
    assert session.ask_for_acks() and not session.ask_for_acks()
    session.on_ack(1)
    drain(session)  # "b" goes out
    assert not session.ask_for_acks()
