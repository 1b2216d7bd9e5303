"""Protocol version 3 in a session: message numbers, replies (c1 05), acks
(c1 04), retention bounded by retain_bytes, and the server's close (c1 06)."""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
import pytest

import fedcomm
from fedcomm._protocol.acks import ACK_DELAY, AckState
from _reference import ReferenceServer, frame, wait_until

Server = Callable[..., ReferenceServer]
MiB = 1024 * 1024



def test_replies_carry_the_request_number(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        assert client.last_received == 0
        with pytest.raises(ValueError, match="Nothing to reply to"):
            client.reply("too early")
        for round_ in (1, 2, 3):
            session.send({"round": round_})
        assert client.recv(timeout=5) == {"round": 1}
        assert client.last_received == 1
        client.reply("answer to 1")
        client.send("unsolicited")  # send() stays a plain frame
        assert client.recv(timeout=5) == {"round": 2}
        assert client.recv(timeout=5) == {"round": 3}
        assert client.last_received == 3
        client.reply("answer to 3")
        client.reply("late answer to 2", to=2)
        session.send({"round": 4})
        wait_until(lambda: client.messages_received == 4)
        client.reply("answer to 4, not taken yet", to=4)  # received is enough
        assert client.last_received == 3
        with pytest.raises(ValueError, match=r"Invalid to: 5 is not the number of a message received from the server \(1 to 4\)"):
            client.reply("x", to=5)
        with pytest.raises(ValueError, match="Invalid to: 0"):
            client.reply("x", to=0)
        with pytest.raises(TypeError, match="Invalid to: expected an int, got str"):
            client.reply("x", to="1")  # type: ignore[arg-type]
        got = [session.recv_message() for _ in range(5)]
        assert [(m.number, m.request, m.value()) for m in got] == [
            (1, 1, "answer to 1"),
            (2, None, "unsolicited"),
            (3, 3, "answer to 3"),
            (4, 2, "late answer to 2"),
            (5, 4, "answer to 4, not taken yet"),
        ]
        kinds = [kind for kind, _ in session.conns[-1].frames if kind in ("value", "reply")]
        assert kinds == ["reply", "value", "reply", "reply", "reply"]
        assert client.messages_sent == 5


def test_iteration_sets_last_received(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        for i in range(3):
            session.send(i)
        for i, message in zip(range(3), client):
            assert client.last_received == i + 1 and message == i
            client.reply({"echo": message})
        got = [session.recv_message() for _ in range(3)]
        assert [(m.request, m.value()) for m in got] == [(i + 1, {"echo": i}) for i in range(3)]


@pytest.mark.parametrize("length", [1000, 50_000])  # inline in the first part, and a part of its own
def test_reply_keeps_array_data_aligned(server: Server, length: int) -> None:
    srv = server(1)
    weights = np.arange(length, dtype=np.float64) + 0.5
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        session.send("go")
        client.recv(timeout=5)
        client.reply({"weights": weights, "odd": "x" * 3})
        message = session.recv_message()
        assert message.request == 1
        offset = bytes(message.body).find(weights.tobytes())
        assert offset > 0 and offset % 8 == 0  # aligned from the start of the value (and of the body: +8)
        assert np.array_equal(message.value()["weights"], weights)


def test_acks_drop_retained_messages(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=None, idle_timeout=None) as client:
        session = srv.session(0)
        weights = np.ones(MiB, np.float32)
        client.send({"weights": weights})
        client.send("small")
        wait_until(lambda: client.retained_bytes == 0, timeout=2)
        assert session.recv()["weights"].shape == (MiB,)
        assert session.recv() == "small"
        # The client acknowledges the server's messages: the server's retention empties too.
        for i in range(5):
            session.send(i)
        session.send({"big": np.zeros(MiB, np.float32)})
        wait_until(lambda: session.acked == 6 and not session.retained, timeout=2)
        assert [client.recv(timeout=5) for _ in range(5)] == list(range(5))


def test_client_acks_soon(server: Server) -> None:
    """Small messages are acknowledged within about 10 ms, large ones at once."""
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=None, idle_timeout=None):
        session = srv.session(0)
        for _ in range(20):
            session.send("tick")
            start = time.monotonic()
            wait_until(lambda: not session.retained, timeout=2)
            assert time.monotonic() - start < 0.5
        session.send(b"x" * 100_000)
        wait_until(lambda: not session.retained, timeout=2)
        assert session.conns[-1].frames.count(("ack", 10)) >= 2


def test_ack_state_rules() -> None:
    acks = AckState()
    assert not acks.pending and acks.deadline is None
    assert acks.message(100, 10.0) == 1
    assert acks.pending and not acks.urgent
    assert acks.deadline == pytest.approx(10.0 + ACK_DELAY)
    assert not acks.due(10.005) and acks.due(10.0 + ACK_DELAY)
    assert acks.message(64 * 1024, 10.002) == 2  # 64 KiB: at once
    assert acks.urgent and acks.due(10.002)
    body = bytes(b"".join(acks.frame().parts))
    assert body == b"\x00\x00\x00\x0a\xc1\x04" + (2).to_bytes(8, "big")
    assert not acks.pending
    for i in range(1023):
        acks.message(10, 11.0)
    assert not acks.urgent
    acks.message(10, 11.0)  # the 1024th unacknowledged message
    assert acks.urgent
    acks.settled(acks.received)
    for _ in range(16):
        acks.message(64 * 1024 - 1, 12.0)
    assert not acks.urgent
    acks.message(16, 12.0)
    assert acks.urgent  # 1 MiB pending


def test_retention_bound_blocks_sends(server: Server) -> None:
    srv = server(1, acks=False)
    chunk = b"x" * (600 * 1024)
    with fedcomm.connect("127.0.0.1", srv.port, retain_bytes=MiB, heartbeat=None, idle_timeout=None) as client:
        session = srv.session(0)
        client.send(chunk)
        client.send(chunk)  # 600 KiB retained < 1 MiB: it goes
        assert client.retained_bytes > MiB
        with pytest.raises(fedcomm.SendTimeoutError) as info:
            client.send(chunk, timeout=0.3)
        assert info.value.queued is False
        assert str(info.value) == (
            f"Send timed out after 0.3 s: {client.retained_bytes} bytes of earlier messages "
            "await the server's acknowledgement (retain_bytes 1048576): not queued: nothing was "
            "sent, send it again"
        )
        done = threading.Event()

        def blocked() -> None:
            client.send(b"y" * 1000)
            done.set()

        sender = threading.Thread(target=blocked)
        sender.start()
        time.sleep(0.3)
        assert not done.is_set()
        assert session.received == 2
        srv.acks = True  # the acks free the room
        assert done.wait(5)
        sender.join(5)
        wait_until(lambda: client.retained_bytes == 0)
        assert [len(session.recv_body()) for _ in range(3)] == [len(chunk) + 5] * 2 + [1003]


def test_server_ends_the_session(server: Server) -> None:
    """c1 06 from the server: iteration ends, recv raises once the queue is
    drained, and the client does not try to resume (despite the grace)."""
    srv = server(1, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        assert client.grace == 5
        session = srv.session(0)
        session.send("last words")
        session.end()
        assert list(client) == ["last words"]
        with pytest.raises(fedcomm.PeerDisconnectedError, match="Server closed the session"):
            client.recv(timeout=1)
        time.sleep(0.2)
        assert client.resumes == 0 and not client.resuming and len(srv.conns) == 1
        assert client.closed


@pytest.mark.parametrize(
    "body, match",
    [
        (b"\xc1\x04" + bytes(7), "Invalid ack: 9 bytes, expected 10"),
        (b"\xc1\x04" + (1).to_bytes(8, "big"), "Invalid ack: the server acknowledged 1 messages, this client sent 0"),
        (b"\xc1\x05" + (1).to_bytes(6, "big") + b"\xa1x", r"Unexpected reply \(c1 05\) from the server"),
        (b"\xc1\x06\x00", "Invalid close: 3 bytes, expected 2"),
    ],
)
def test_invalid_v3_control_frames(server: Server, body: bytes, match: str) -> None:
    srv = server(1, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        conn.send("before")
        conn.send_raw(frame(body))
        assert client.recv(timeout=5) == "before"
        with pytest.raises(fedcomm.ProtocolError, match=match):
            client.recv(timeout=5)
        assert client.resumes == 0 and len(srv.conns) == 1  # a protocol error is not resumed
