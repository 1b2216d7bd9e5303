"""Connecting: waiting for the server, refusals, the handshake and its rejects."""

from __future__ import annotations

import socket
import threading
import time
from typing import Callable, List

import msgpack
import pytest

import fedcomm
from _reference import ReferenceServer, frame

Server = Callable[..., ReferenceServer]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connect_and_welcome(server: Server) -> None:
    srv = server(3, welcome_extra={"token": b"\x01" * 16, "future": [1, 2]})
    with fedcomm.connect("127.0.0.1", srv.port, name="hospital-a") as client:
        assert (client.id, client.clients) == (0, 3)
        assert client.server_max_frame_bytes == 512 * 1024 * 1024
        assert client.welcome["future"] == [1, 2]  # unknown keys are kept, and ignored
        assert client.name == "hospital-a"
        assert srv.conn(0).name == "hospital-a"
        assert client.rtt is None
        assert client.last_heard <= time.monotonic()
        assert "id=0" in repr(client)
    with fedcomm.Client("127.0.0.1", srv.port) as second:
        assert second.id == 1 and second.name is None
    hello = srv.conn(1).handshake_messages[0]
    assert hello == {"fedcomm": 3, "type": "hello", "maxMessageBytes": 16 * 1024**3}


def test_refused_without_waiting() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(fedcomm.PeerDisconnectedError) as info:
        fedcomm.connect("127.0.0.1", port)
    assert time.monotonic() - start < 1
    assert isinstance(info.value, ConnectionError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "refused" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_wait_for_server_with_backoff(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    attempts: List[float] = []
    real = socket.create_connection

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", counting)
    result: List[object] = []

    def run() -> None:
        try:
            with fedcomm.connect("127.0.0.1", port, wait_for_server=True, timeout=10) as client:
                result.append(client.id)
        except Exception as error:  # pragma: no cover - reported below
            result.append(error)

    start = time.monotonic()
    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)
    srv = server(1, port=port)
    thread.join(10)
    assert result == [0]
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 3
    gaps = [b - a for a, b in zip(attempts, attempts[1:])]
    # 0.1 s, doubling: 0.1, 0.2, 0.4, (0.8 ...): the connection succeeds at about 0.7 s.
    assert len(attempts) >= 4, gaps
    for gap, expected in zip(gaps, [0.1, 0.2, 0.4, 0.8]):
        assert expected * 0.9 <= gap <= expected + 0.15, gaps
    assert srv.joined() == 1


def test_wait_for_server_times_out() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(fedcomm.FedcommTimeoutError) as info:
        fedcomm.connect("127.0.0.1", port, wait_for_server=True, timeout=0.8)
    assert 0.7 <= time.monotonic() - start < 2
    assert isinstance(info.value, TimeoutError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert str(info.value).startswith("Connect timed out after 0.8 s")


def test_handshake_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # accepts (backlog), never answers
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(fedcomm.FedcommTimeoutError, match="Handshake timed out after 0.5 s"):
            fedcomm.connect("127.0.0.1", port, timeout=0.5)
        assert time.monotonic() - start < 2


@pytest.mark.parametrize("reason", ["version", "full", "malformed", "closed", "auth", "busy"])
def test_reject_reasons(server: Server, reason: str) -> None:
    srv = server(1, reject=reason)
    start = time.monotonic()
    with pytest.raises(fedcomm.RejectedError) as info:
        fedcomm.connect("127.0.0.1", srv.port, timeout=1)  # busy: tried again until then
    elapsed = time.monotonic() - start
    if reason == "busy":
        assert 0.5 < elapsed < 3 and len(srv.conns) >= 4, (elapsed, len(srv.conns))
    else:
        assert len(srv.conns) == 1
    assert info.value.reason == reason
    assert info.value.message == f"Rejected by the test server: {reason}"
    assert str(info.value) == f"Server rejected the connection: {reason}: {info.value.message}"
    assert isinstance(info.value, fedcomm.ProtocolError)


def test_busy_is_tried_again_with_backoff(server: Server) -> None:
    srv = server(1, busy_first=3)
    start = time.monotonic()
    with fedcomm.connect("127.0.0.1", srv.port, timeout=10) as client:
        assert client.id == 0
    # Pauses of 50, 100 and 200 ms (each within 20 %) before the fourth try.
    assert 0.28 < time.monotonic() - start < 3
    assert len(srv.conns) == 4


def test_reject_in_version_1_form(server: Server) -> None:
    """A v2 server answers a v1 hello with a plain-MessagePack reject: accepted too."""
    srv = server(1, reject="version", plain_reject=True)
    with pytest.raises(fedcomm.RejectedError) as info:
        fedcomm.connect("127.0.0.1", srv.port)
    assert info.value.reason == "version"


def test_full(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as first:
        with pytest.raises(fedcomm.RejectedError) as info:
            fedcomm.connect("127.0.0.1", srv.port)
        assert info.value.reason == "full"
        srv.conn(0).send("still fine")
        assert first.recv(timeout=5) == "still fine"


def one_shot_server(answer: Callable[[socket.socket], None]):  # type: ignore[no-untyped-def]
    """A raw server that accepts one connection, reads the hello and calls ``answer``."""
    listener = socket.create_server(("127.0.0.1", 0))
    hellos: List[bytes] = []

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            header = conn.recv(4, socket.MSG_WAITALL)
            hellos.append(conn.recv(int.from_bytes(header, "big"), socket.MSG_WAITALL))
            answer(conn)
            time.sleep(0.2)
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, hellos


def test_version_1_server() -> None:
    welcome = {"fedcomm": 1, "type": "welcome", "id": 0, "clients": 1, "maxFrameBytes": 1000}
    port, thread, hellos = one_shot_server(lambda c: c.sendall(frame(msgpack.packb(welcome))))
    with pytest.raises(fedcomm.ProtocolError, match="version 1 server"):
        fedcomm.connect("127.0.0.1", port)
    thread.join(5)
    assert hellos[0][:2] == b"\xc1\x03"
    assert msgpack.unpackb(hellos[0][2:]) == {"fedcomm": 3, "type": "hello", "maxMessageBytes": 16 * 1024**3}


@pytest.mark.parametrize(
    "body, match",
    [
        (b"\xc1\x01" + bytes(8), "expected a handshake control frame"),
        (b"\xc1\x03" + msgpack.packb([1, 2]), "expected a map"),
        (b"\xc1\x03\xc1", "Malformed handshake message"),
        (b"\xc1\x03" + msgpack.packb({"fedcomm": 2, "type": "welcome"}), "Unsupported protocol version"),
        (b"\xc1\x03" + msgpack.packb({"fedcomm": 3, "type": "hi"}), "Unsupported handshake message"),
        (b"\xc1\x03" + msgpack.packb({"fedcomm": 3, "type": "welcome", "id": -1, "clients": 2,
                                      "maxFrameBytes": 9}), "Invalid welcome"),
        (b"\xc1\x03" + msgpack.packb({"fedcomm": 3, "type": "welcome", "id": 0, "clients": 2,
                                      "maxFrameBytes": 9, "grace": 1000}), "needs a token of 16 bytes"),
        (b"\xc1\x03" + msgpack.packb({"fedcomm": 3, "type": "welcome", "id": 0, "clients": 2,
                                      "maxFrameBytes": 9, "received": 2}), "a new session with"),
        (b"\xc1\x03" + msgpack.packb({"fedcomm": 3, "type": "welcome", "id": 0, "clients": 2,
                                      "maxFrameBytes": 9, "grace": "x"}), "Invalid welcome: grace"),
        (b"\xc1\x03" + msgpack.packb({"fedcomm": 3, "type": "challenge", "nonce": bytes(32),
                                      "proof": bytes(32)}), "Unexpected challenge"),
    ],
)
def test_bad_handshake_answers(body: bytes, match: str) -> None:
    port, thread, _ = one_shot_server(lambda c: c.sendall(frame(body)))
    with pytest.raises(fedcomm.ProtocolError, match=match):
        fedcomm.connect("127.0.0.1", port)
    thread.join(5)


def test_handshake_frame_limit() -> None:
    port, thread, _ = one_shot_server(lambda c: c.sendall((70_000).to_bytes(4, "big")))
    with pytest.raises(fedcomm.FrameTooLargeError, match="handshake limit 65536"):
        fedcomm.connect("127.0.0.1", port)
    thread.join(5)


def test_server_closes_during_handshake() -> None:
    port, thread, _ = one_shot_server(lambda c: None)
    with pytest.raises(fedcomm.PeerDisconnectedError, match="during the handshake"):
        fedcomm.connect("127.0.0.1", port)
    thread.join(5)


def test_heartbeats_during_handshake_are_skipped(server: Server) -> None:
    welcome = {"fedcomm": 3, "type": "welcome", "id": 0, "clients": 1, "maxFrameBytes": 99}
    port, thread, _ = one_shot_server(
        lambda c: c.sendall(bytes(4) + frame(b"\xc1\x03" + msgpack.packb(welcome)) + frame(msgpack.packb("hi")))
    )
    with fedcomm.connect("127.0.0.1", port) as client:
        assert client.server_max_frame_bytes == 99
        assert client.recv(timeout=5) == "hi"  # sent right behind the welcome
    thread.join(5)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"name": ""}, ValueError),
        ({"name": "é" * 65}, ValueError),  # 130 bytes
        ({"name": 3}, TypeError),
        ({"secret": ""}, ValueError),
        ({"secret": "fifteen bytes!!"}, ValueError),
        ({"secret": 5}, TypeError),
        ({"heartbeat": 10, "idle_timeout": 10}, ValueError),
        ({"heartbeat": -1}, ValueError),
        ({"timeout": 0}, ValueError),
        ({"max_frame_bytes": 2**32}, ValueError),
        ({"tls": 42}, TypeError),
        ({"on_progress": 1}, TypeError),
        ({"props": [("a", 1)]}, TypeError),
        ({"props": {1: "a"}}, TypeError),
        ({"props": {"": 1}}, ValueError),
        ({"props": {"k" * 65: 1}}, ValueError),
        ({"props": {"a": [1]}}, TypeError),
        ({"props": {"a": b"bytes"}}, TypeError),
        ({"props": {"a": "é" * 129}}, ValueError),  # 258 bytes
        ({"props": {"a": 2**64}}, ValueError),
        ({"props": {str(i): i for i in range(17)}}, ValueError),
        ({"retain_bytes": 0}, ValueError),
        ({"retain_bytes": 1.5}, ValueError),
        ({"resume": 1}, TypeError),
        ({"on_disconnect": 1}, TypeError),
        ({"on_resume": "x"}, TypeError),
    ],
)
def test_invalid_options(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        fedcomm.connect("127.0.0.1", 1, **kwargs)


def test_name_of_128_bytes(server: Server) -> None:
    srv = server(1)
    name = "é" * 64
    with fedcomm.connect("127.0.0.1", srv.port, name=name):
        assert srv.conn(0).name == name


def test_props_arrive(server: Server) -> None:
    srv = server(1)
    props = {f"k{i}": v for i, v in enumerate([None, True, -(2**63), 2**64 - 1, 1.5, "é" * 128])}
    props.update({"x" * 64: "longest key", **{f"pad{i}": i for i in range(9)}})
    assert len(props) == 16
    with fedcomm.connect("127.0.0.1", srv.port, props=props) as client:
        assert client.props == props
        assert srv.session(0).props == props
        assert srv.conn(0).handshake_messages[0]["props"] == props


def test_props_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="Invalid props: 17 entries, at most 16 allowed"):
        fedcomm.connect("127.0.0.1", 1, props={str(i): i for i in range(17)})
    with pytest.raises(TypeError, match="Invalid props: the value of 'a' is a list; expected None, bool, int, float or str"):
        fedcomm.connect("127.0.0.1", 1, props={"a": [1]})
    with pytest.raises(ValueError, match="Invalid props: the value of 'a' is 257 bytes of UTF-8, at most 256 allowed"):
        fedcomm.connect("127.0.0.1", 1, props={"a": "x" * 257})
    with pytest.raises(ValueError, match="Invalid props: key '' must be 1 to 64 bytes of UTF-8"):
        fedcomm.connect("127.0.0.1", 1, props={"": 1})


def test_welcome_of_a_v3_server(server: Server) -> None:
    srv = server(1, grace=2.5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        assert client.grace == 2.5 and client.resumes == 0 and not client.resuming
        welcome = client.welcome
        assert welcome["grace"] == 2500 and welcome["received"] == 0 and welcome["resumed"] is False
        assert welcome["token"] == srv.session(0).token and len(welcome["token"]) == 16


def test_ids_beyond_clients_are_accepted() -> None:
    """An id is never reused: a replacement member may get id N or more."""
    welcome = {"fedcomm": 3, "type": "welcome", "id": 5, "clients": 2, "maxFrameBytes": 99}
    port, thread, _ = one_shot_server(lambda c: c.sendall(frame(b"\xc1\x03" + msgpack.packb(welcome))))
    with fedcomm.connect("127.0.0.1", port) as client:
        assert (client.id, client.clients) == (5, 2)
    thread.join(5)
