"""Long messages (PROTOCOL.md §8.8) on real sockets, against the reference
server (which encodes and assembles them independently of the package):
negotiation, both directions, progress, limits, the frames allowed between
a header and its last part, protocol errors, and resumes in the middle."""

from __future__ import annotations

import time
from typing import Callable, List

import msgpack
import numpy as np
import pytest

import fedcomm
from _reference import ReferenceServer, frame, long_frames, wait_until

Server = Callable[..., ReferenceServer]
MiB = 1024 * 1024
GiB = 1024 * MiB
LONG = 16 * GiB  # the reference server's maxMessageBytes when it takes long messages


def ramp(n: int, seed: int = 0) -> np.ndarray:
    return ((np.arange(n) % 1000) + seed).astype(np.float32)


# ---------------------------------------------------------------------------
# Negotiation


def test_negotiated_in_the_handshake(server: Server) -> None:
    srv = server(1, max_message_bytes=LONG)
    with fedcomm.connect("127.0.0.1", srv.port, max_message_bytes=5 * GiB) as client:
        hello = srv.conn(0).handshake_messages[0]
        assert hello["maxMessageBytes"] == 5 * GiB
        assert client.max_message_bytes == 5 * GiB
        assert client.server_max_message_bytes == LONG == client.welcome["maxMessageBytes"]


def test_no_long_messages_with_a_server_that_takes_none(server: Server) -> None:
    srv = server(1, max_frame_bytes=MiB)  # (no maxMessageBytes in its welcome)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        assert client.server_max_message_bytes == 0
        with pytest.raises(fedcomm.FrameTooLargeError, match="the server's maxFrameBytes"):
            client.send(np.zeros(MiB, np.float32))
        client.send("still usable")
        assert srv.conn(0).recv() == "still usable"


def test_no_long_messages_when_the_client_takes_none(server: Server) -> None:
    srv = server(1, max_frame_bytes=MiB, max_message_bytes=LONG)
    with fedcomm.connect("127.0.0.1", srv.port, max_message_bytes=0) as client:
        assert "maxMessageBytes" not in srv.conn(0).handshake_messages[0]
        assert "maxMessageBytes" not in client.welcome and client.server_max_message_bytes == 0
        with pytest.raises(fedcomm.FrameTooLargeError):
            client.send(np.zeros(MiB, np.float32))


# ---------------------------------------------------------------------------
# Both directions


def test_server_to_client_in_place(server: Server) -> None:
    srv = server(1, max_frame_bytes=MiB, max_message_bytes=LONG)
    events: List[fedcomm.Progress] = []
    weights = ramp(3 * MiB // 4 + 5)  # 3 MiB and 20 bytes
    blob = bytes(range(256)) * 1024  # 256 KiB: out of band too
    with fedcomm.connect("127.0.0.1", srv.port, on_progress=events.append) as client:
        session = srv.session(0)
        frames = long_frames({"round": 1, "weights": weights, "blob": blob, "tag": "r1"},
                             part_bytes=MiB - 8)
        session.send_long({"round": 1, "weights": weights, "blob": blob, "tag": "r1"},
                          part_bytes=MiB - 8)
        message = client.recv(timeout=30)
        assert message["round"] == 1 and message["tag"] == "r1"
        got = message["weights"]
        assert got.dtype == np.float32 and np.array_equal(got, weights)
        assert got.base is None and not got.flags.writeable  # its own memory, read-only
        assert isinstance(message["blob"], bytearray) and message["blob"] == blob
        size = len(frames[0]) - 4 + weights.nbytes + len(blob)
        received = [e for e in events if e.direction == "receive"]
        assert received[-1] == fedcomm.Progress("receive", size, size)
        assert all(b.done > a.done for a, b in zip(received, received[1:]))
        assert client.messages_received == 1
        wait_until(lambda: session.acked == 1)  # acknowledged at once: it is large
        session.send("next")
        assert client.recv(timeout=5) == "next" and client.last_received == 2


def test_client_to_server_waits_for_the_ack(server: Server) -> None:
    srv = server(1, max_frame_bytes=MiB, max_message_bytes=LONG)
    events: List[fedcomm.Progress] = []
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        session.send({"round": 1})
        assert client.recv(timeout=5) == {"round": 1}
        update = ramp(MiB, 3)  # 4 MiB
        client.reply({"round": 1, "update": update, "raw": b"\x07" * 100_000}, timeout=30,
                     on_progress=events.append)
        assert client.retained_bytes == 0  # returned once acknowledged: nothing copied
        message = session.recv_message(timeout=30)
        assert message.request == 1 and message.long is not None
        value = message.value()
        assert np.array_equal(value["update"], update) and value["raw"] == b"\x07" * 100_000
        assert events[-1].done == events[-1].total == message.long.size
        assert all(b.done > a.done for a, b in zip(events, events[1:]))
        kinds = [kind for kind, _ in srv.conn(0).frames]
        assert kinds.count("long") == 1 and kinds.count("part") == 6  # 4 MiB, then 100 KB
        client.send("after")
        assert session.recv() == "after"
        assert session.log == [(1, 1), (2, None)] and client.messages_sent == 2


def test_message_too_large_to_send(server: Server) -> None:
    srv = server(1, max_frame_bytes=MiB, max_message_bytes=2 * MiB)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=None) as client:
        conn = srv.conn(0)
        before = conn.bytes_received
        with pytest.raises(fedcomm.MessageTooLargeError) as info:
            client.send(np.zeros(MiB, np.float32))
        assert isinstance(info.value, ValueError) and info.value.limit == 2 * MiB
        assert "the server's maxMessageBytes 2097152" in str(info.value)
        time.sleep(0.1)
        assert conn.bytes_received == before and client.messages_sent == 0
        client.send("still usable")
        assert conn.recv() == "still usable"


def test_own_max_message_bytes_bounds_what_is_sent(server: Server) -> None:
    srv = server(2, max_frame_bytes=MiB, max_message_bytes=LONG)
    with fedcomm.connect("127.0.0.1", srv.port, max_message_bytes=2 * MiB) as client:
        with pytest.raises(fedcomm.MessageTooLargeError, match="exceeds max_message_bytes 2097152"):
            client.send(np.zeros(MiB, np.float32))


def test_message_too_large_from_the_server(server: Server) -> None:
    srv = server(1, max_frame_bytes=MiB, max_message_bytes=LONG)
    with fedcomm.connect("127.0.0.1", srv.port, max_message_bytes=2 * MiB) as client:
        session = srv.session(0)
        session.send("before")
        session.send_long(np.zeros(MiB, np.float32))  # 4 MiB
        assert client.recv(timeout=5) == "before"
        with pytest.raises(fedcomm.MessageTooLargeError, match=r"exceeds max_message_bytes 2097152"):
            client.recv(timeout=5)
        assert client.closed


# ---------------------------------------------------------------------------
# Between a header and its last part


def test_pings_acks_and_heartbeats_between_parts(server: Server) -> None:
    srv = server(1, max_message_bytes=LONG)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        conn = srv.conn(0)
        client.send("one")  # (so that the server's ack of 1 between the parts is valid)
        assert session.recv() == "one"
        wait_until(lambda: session.received == 1)
        between = [frame(b"\xc1\x01" + b"pingpong"), frame(b""), frame(b"\xc1\x04" + (1).to_bytes(8, "big"))]
        session.send_long({"w": ramp(100_000)}, part_bytes=128 * 1024, between=between)
        message = client.recv(timeout=10)
        assert np.array_equal(message["w"], ramp(100_000))
        wait_until(lambda: ("pong", 10) in conn.frames)  # the ping was answered
        assert not client.closed


def test_close_in_the_middle_ends_the_session(server: Server) -> None:
    srv = server(1, max_message_bytes=LONG, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        frames = long_frames(ramp(100_000), part_bytes=128 * 1024)
        conn.send_raw(frames[0] + frames[1] + frame(b"\xc1\x06"))
        with pytest.raises(fedcomm.PeerDisconnectedError, match="Server closed the session"):
            client.recv(timeout=5)
        assert client.resumes == 0 and client.messages_received == 0


def test_eof_in_the_middle_without_grace_is_a_truncation(server: Server) -> None:
    srv = server(1, max_message_bytes=LONG)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        frames = long_frames(ramp(100_000), part_bytes=128 * 1024)
        conn.send_raw(frames[0] + frames[1])
        conn.close()
        with pytest.raises(fedcomm.TruncatedFrameError):
            client.recv(timeout=5)


HEADER_64 = long_frames(b"\x01" * 64, ref_min=16, part_bytes=64)[0]
PART = b"\xc1\x08" + bytes(6)


@pytest.mark.parametrize(
    "garbage, match",
    [
        (frame(PART + b"x"), "a part with no header"),
        (frame(PART + bytes(300 * 1024)), "a part with no header"),  # a large one: refused at once
        (HEADER_64 + frame(msgpack.packb("plain")), "a plain frame before reference 1 of 1"),
        (HEADER_64 + HEADER_64, "a long message header before reference 1 of 1"),
        (HEADER_64 + frame(b"\xc1\x05" + bytes(6) + b"\x01"), "Unexpected reply"),
        (HEADER_64 + frame(PART + bytes(65)), "a part of 65 bytes, but reference 1 of 1 has 64 left"),
        (HEADER_64 + frame(b"\xc1\x08" + bytes(5) + b"\x01" + b"x"), "prefix is not c1 08"),
        (HEADER_64 + frame(PART), "Invalid long message part: 8 bytes"),
        (frame(b"\xc1\x07" + bytes(6) + b"\xd7\x7f" + bytes(8)), "reference 1 of 0 bytes"),
        (frame(b"\xc1\x07" + (1).to_bytes(6, "big") + b"\x01"), "a server sends no replies"),
        (frame(b"\xc1\x07" + bytes(6) + b"\x92"), "Malformed MessagePack"),
    ],
)
def test_protocol_errors(server: Server, garbage: bytes, match: str) -> None:
    srv = server(1, max_message_bytes=LONG, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        conn.send("before")
        conn.send_raw(garbage)
        assert client.recv(timeout=5) == "before"
        with pytest.raises(fedcomm.ProtocolError, match=match):
            client.recv(timeout=5)
        assert client.resumes == 0  # a protocol error is not a drop
        with pytest.raises(fedcomm.ProtocolError, match=match):
            client.send("after")


def test_a_long_message_to_a_client_that_takes_none(server: Server) -> None:
    srv = server(1, max_message_bytes=LONG)
    with fedcomm.connect("127.0.0.1", srv.port, max_message_bytes=0) as client:
        srv.conn(0).send_raw(long_frames(b"x" * 100, ref_min=16)[0])
        with pytest.raises(fedcomm.ProtocolError, match="this client takes none"):
            client.recv(timeout=5)


# ---------------------------------------------------------------------------
# Resumes in the middle


# Where the cut falls, counted from the first part: in the second part's data,
# or 3 bytes into the third part's frame header (each part frame: MiB + 4 bytes).
@pytest.mark.parametrize("offset", [2 * MiB - 100, 2 * (MiB + 4) + 3], ids=["data", "frame-header"])
def test_resume_in_the_middle_server_to_client(server: Server, offset: int) -> None:
    srv = server(1, max_frame_bytes=MiB, max_message_bytes=LONG, grace=5)
    weights = ramp(2 * MiB)  # 8 MiB
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        first = session.conns[-1]
        session.send({"n": 1})
        first.flush()
        frames = long_frames({"n": 2, "w": weights}, part_bytes=MiB - 8)
        head = first.bytes_sent + len(frames[0])
        first.cut_after(sent=head + offset)
        session.send_long({"n": 2, "w": weights}, part_bytes=MiB - 8)
        session.send({"n": 3})
        got = [client.recv(timeout=30) for _ in range(3)]
        assert [m["n"] for m in got] == [1, 2, 3]
        assert np.array_equal(got[1]["w"], weights)
        with pytest.raises(fedcomm.FedcommTimeoutError):
            client.recv(timeout=0.3)  # delivered exactly once
        assert first.close_reason == "cut" and client.resumes == 1
        assert client.messages_received == 3
        wait_until(lambda: not session.retained)


def test_resume_in_the_middle_client_to_server(server: Server) -> None:
    srv = server(1, max_frame_bytes=MiB, max_message_bytes=LONG, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        first = session.conns[-1]
        client.send({"n": 1}, timeout=30)
        assert session.recv()["n"] == 1
        first.cut_after(received=first.bytes_received + 5 * MiB)
        big = ramp(4 * MiB)  # 16 MiB: 17 parts
        client.send({"n": 2, "w": big}, timeout=30)  # returns once acknowledged, after the resume
        assert client.retained_bytes == 0
        big[:] = -1  # (nothing of it is retained any more)
        client.send({"n": 3}, timeout=30)
        two, three = session.recv(timeout=30), session.recv(timeout=30)
        assert (two["n"], three["n"]) == (2, 3)
        assert np.array_equal(two["w"], ramp(4 * MiB))
        with pytest.raises(TimeoutError):
            session.recv(timeout=0.3)  # delivered exactly once
        assert session.log == [(1, None), (2, None), (3, None)]
        assert first.close_reason == "cut" and client.resumes == 1
        assert client.messages_sent == 3
        hello = session.conns[-1].handshake_messages[0]
        assert hello["maxMessageBytes"] == fedcomm.DEFAULT_MAX_MESSAGE_BYTES  # as the first hello
