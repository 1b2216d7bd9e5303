"""The session: values both ways, progress, counters, limits, errors, closing."""

from __future__ import annotations

import threading
import time
from typing import Callable, List

import msgpack
import numpy as np
import pytest

import fedcomm
from _reference import ReferenceServer, encode_value, frame, wait_until

Server = Callable[..., ReferenceServer]
MiB = 1024 * 1024



def test_float32_weights_bit_for_bit(server: Server) -> None:
    srv = server(1)
    bits = np.array(
        [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0x7FA00000,
         0x00000001, 0x807FFFFF, 0x3F800000, 0x12345678], dtype=np.uint32,
    )
    rng = np.random.default_rng(7)
    weights = np.concatenate([bits.view(np.float32), rng.standard_normal(100_000).astype(np.float32)])
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        conn.send({"round": 1, "weights": weights, "layers": [weights.reshape(-1, 10)[:5]]})
        message = client.recv(timeout=10)
        got = message["weights"]
        assert got.dtype == np.float32 and got.shape == weights.shape
        assert np.array_equal(got.view(np.uint32), weights.view(np.uint32))
        assert not got.flags.writeable
        assert message["layers"][0].shape == (5, 10)
        client.send({"round": message["round"], "weights": got, "samples": 600})
        answer = conn.recv()
        assert answer["round"] == 1 and answer["samples"] == 600
        assert np.array_equal(answer["weights"].view(np.uint32), weights.view(np.uint32))


def check_progress(events: List[fedcomm.Progress], direction: str, total: int) -> None:
    assert events, "no progress reported"
    assert all(e.direction == direction and e.total == total for e in events)
    done = [e.done for e in events]
    assert done[-1] == total
    assert all(b > a for a, b in zip(done, done[1:])), "not strictly increasing"
    steps = [b - a for a, b in zip([0] + done, done)]
    assert max(steps) <= 4 * MiB
    assert len(events) == -(-total // (4 * MiB))  # one per 4 MiB, the last one partial
    assert events[-1].fraction == 1.0


def test_64_mib_both_ways_with_progress(server: Server) -> None:
    srv = server(1)
    received: List[fedcomm.Progress] = []
    sent: List[fedcomm.Progress] = []
    threads: List[str] = []

    def on_receive(event: fedcomm.Progress) -> None:
        received.append(event)
        threads.append(threading.current_thread().name)

    weights = np.arange(16 * MiB, dtype=np.float32)  # 64 MiB
    with fedcomm.connect("127.0.0.1", srv.port, on_progress=on_receive) as client:
        conn = srv.conn(0)
        body = encode_value({"weights": weights})
        conn.send_body(body)
        message = client.recv(timeout=30)
        assert np.array_equal(message["weights"], weights)
        check_progress(received, "receive", len(body))
        assert threads[0].startswith("fedcomm-io")  # receive events come from the I/O thread

        received.clear()
        def on_send(event: fedcomm.Progress) -> None:
            sent.append(event)
            threads.append(threading.current_thread().name)
        threads.clear()
        client.send({"weights": weights}, on_progress=on_send)
        raw, value = conn.recv_frame(timeout=30)
        assert np.array_equal(value["weights"], weights)
        check_progress(sent, "send", len(raw))
        assert set(threads) == {threading.current_thread().name}  # send events: the caller's thread
        assert received == []  # the per-call callback replaced the client's for this send


def test_small_messages_report_once(server: Server) -> None:
    srv = server(1)
    events: List[fedcomm.Progress] = []
    with fedcomm.connect("127.0.0.1", srv.port, on_progress=events.append) as client:
        conn = srv.conn(0)
        client.send("hi")
        assert conn.recv() == "hi"
        conn.send([1, 2, 3])
        assert client.recv(timeout=5) == [1, 2, 3]
        assert events == [fedcomm.Progress("send", 3, 3), fedcomm.Progress("receive", 4, 4)]


def test_counters_equal_bytes_moved(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=None, idle_timeout=None) as client:
        conn = srv.conn(0)
        values = ["a", {"w": np.ones(1000, np.float32)}, b"x" * 100_000, list(range(100))]
        for value in values:
            client.send(value)
        for value in values[::-1]:
            conn.send(value)
        for _ in values:
            conn.recv()
            client.recv(timeout=5)
        conn.flush()
        # (Acks go both ways a few ms after the messages: wait until they are through.)
        time.sleep(0.1)
        wait_until(lambda: client.bytes_received == conn.bytes_sent)
        wait_until(lambda: client.bytes_sent == conn.bytes_received)
        assert client.bytes_sent == sum(4 + size for _, size in conn.frames)
        assert client.messages_sent == len(values) == client.messages_received
        assert client.bytes_received > sum(len(encode_value(v)) + 4 for v in values)


def test_frame_too_large_to_send(server: Server) -> None:
    srv = server(1, max_frame_bytes=1000)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=None, idle_timeout=None) as client:
        conn = srv.conn(0)
        before = conn.bytes_received
        with pytest.raises(fedcomm.FrameTooLargeError) as info:
            client.send(np.zeros(1000, np.float32))
        assert isinstance(info.value, ValueError)
        assert info.value.limit == 1000 and info.value.size > 4000
        assert "the server's maxFrameBytes 1000" in str(info.value)
        time.sleep(0.1)
        assert conn.bytes_received == before and client.messages_sent == 0
        client.send("still usable")
        assert conn.recv() == "still usable"


def test_frame_too_large_from_server(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, max_frame_bytes=1000) as client:
        conn = srv.conn(0)
        conn.send("first")
        conn.send(b"x" * 2000)
        assert client.recv(timeout=5) == "first"  # delivered before the error
        with pytest.raises(fedcomm.FrameTooLargeError, match="max_frame_bytes 1000"):
            client.recv(timeout=5)
        with pytest.raises(fedcomm.FrameTooLargeError):
            client.send("no")  # the connection failed
        assert client.closed


@pytest.mark.parametrize(
    "garbage, error, match",
    [
        (frame(b"\xc1\x09abc"), fedcomm.ProtocolError, "Unknown control frame: kind 0x09"),
        (frame(b"\xc1\x07abc"), fedcomm.ProtocolError, "Invalid long message header: 5 bytes"),
        (frame(b"\xc1\x08" + bytes(6)), fedcomm.ProtocolError, "Invalid long message part: 8 bytes"),
        (frame(b"\xc1"), fedcomm.ProtocolError, "Unknown control frame: kind none"),
        (frame(b"\xc1\x01" + bytes(7)), fedcomm.ProtocolError, "Invalid ping: 9 bytes"),
        (frame(b"\xc1\x02" + bytes(9)), fedcomm.ProtocolError, "Invalid pong: 11 bytes"),
        (frame(b"\xc1\x03" + msgpack.packb({"fedcomm": 2, "type": "welcome"})),
         fedcomm.ProtocolError, "Unexpected handshake message after the welcome"),
        (frame(b"\x92\x01"), fedcomm.ProtocolError, "Malformed MessagePack"),
        (frame(b"\x01\x02"), fedcomm.ProtocolError, "Malformed MessagePack"),
        ((100).to_bytes(4, "big") + b"cut", fedcomm.TruncatedFrameError, "Truncated frame: expected 100 bytes, received 3"),
        (b"\x00\x00", fedcomm.TruncatedFrameError, "Truncated frame: expected 4 header bytes"),
    ],
)
def test_garbage_from_server(server: Server, garbage: bytes, error: type, match: str) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        conn.send("before")
        conn.send_raw(garbage)
        conn.close()  # (a truncation needs the EOF)
        assert client.recv(timeout=5) == "before"
        with pytest.raises(error, match=match):
            client.recv(timeout=5)
        with pytest.raises(error, match=match):
            client.send("after")
        with pytest.raises(error):
            list(client)  # iteration raises errors other than a clean close


def test_iteration_until_server_closes(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        for i in range(3):
            conn.send({"round": i})
        conn.send_raw(bytes(4))  # a heartbeat is not a message
        conn.close()
        assert [m["round"] for m in client] == [0, 1, 2]
        with pytest.raises(fedcomm.PeerDisconnectedError, match="closed the connection"):
            client.recv(timeout=1)


def test_recv_timeout_loses_nothing(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        with pytest.raises(fedcomm.FedcommTimeoutError, match="Receive timed out after 0.1 s") as info:
            client.recv(timeout=0.1)
        assert isinstance(info.value, TimeoutError)
        srv.conn(0).send("late")
        assert client.recv(timeout=5) == "late"


def test_close(server: Server) -> None:
    srv = server(1)
    client = fedcomm.connect("127.0.0.1", srv.port)
    waiting: List[BaseException] = []

    def wait() -> None:
        try:
            client.recv()
        except BaseException as error:
            waiting.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    client.close()
    thread.join(5)
    assert isinstance(waiting[0], fedcomm.PeerDisconnectedError)
    assert "close() was called" in str(waiting[0])
    client.close()  # twice is fine
    assert client.closed
    with pytest.raises(fedcomm.PeerDisconnectedError, match="close\\(\\) was called"):
        client.send(1)
    assert list(client) == []
    srv.conn(0).closed.wait(5)
    assert srv.conn(0).close_reason == "bye"  # c1 06, then the socket closed
    assert srv.conn(0).frames[-1] == ("close", 2)


def test_concurrent_senders_never_interleave(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)

        def sender(k: int) -> None:
            for i in range(30):
                client.send({"k": k, "i": i, "data": np.full(20_000 + 1000 * k, k, np.int32)})

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        seen = {k: [] for k in range(4)}
        for _ in range(120):
            value = conn.recv()
            assert np.all(value["data"] == value["k"]) and len(value["data"]) == 20_000 + 1000 * value["k"]
            seen[value["k"]].append(value["i"])
        assert all(seen[k] == list(range(30)) for k in range(4))


def test_send_timeout_before_and_during_a_frame(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        conn = srv.conn(0)
        conn.reading = False
        big = np.ones(12 * MiB, np.float32)  # 48 MiB: more than the kernel buffers hold (32 + 4 MiB)
        errors: List[BaseException] = []

        def upload() -> None:
            try:
                client.send({"big": big})
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        thread = threading.Thread(target=upload)
        thread.start()
        time.sleep(0.3)
        # Queued behind the big frame, nothing of it written: the connection stays usable.
        with pytest.raises(fedcomm.SendTimeoutError, match="not queued: nothing was sent") as info:
            client.send("small", timeout=0.2)
        assert info.value.queued is False
        conn.reading = True
        thread.join(30)
        assert errors == []
        assert np.array_equal(conn.recv()["big"], big)
        client.send("after")
        assert conn.recv() == "after"

        # Partly written: the message stays queued (it has its number) and is delivered whole.
        conn.reading = False
        with pytest.raises(fedcomm.SendTimeoutError, match="partly written: queued") as info:
            client.send({"big": big}, timeout=0.3)
        assert info.value.queued is True
        assert not client.closed
        big[:] = 7  # the client kept its own copy of the rest
        conn.reading = True
        assert np.array_equal(conn.recv(timeout=30)["big"], np.ones(12 * MiB, np.float32))
        client.send("usable")
        assert conn.recv() == "usable"


def test_queue_limit_pauses_reading(server: Server) -> None:
    """Past 64 MiB of unread messages the client stops reading (TCP pushes
    back), without declaring the server dead, and resumes when they are taken."""
    srv = server(1)
    body = encode_value(np.zeros(4 * MiB, np.float32))  # 16 MiB
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=0.8) as client:
        conn = srv.conn(0)
        for _ in range(7):
            conn.send_body(body)
        # It reads until more than 64 MiB wait: 4 bodies of 16 MiB and a few bytes.
        expected = 64 * MiB // len(body) + 1
        assert expected == 4
        wait_until(lambda: client.messages_received >= expected)
        time.sleep(1.6)  # twice the idle timeout, while paused
        assert not client.closed
        assert client.messages_received == expected
        assert client.bytes_received < (expected + 1) * (len(body) + 4)
        for _ in range(7):
            assert client.recv(timeout=10).shape == (4 * MiB,)
        assert client.messages_received == 7
        client.send("alive")
        assert conn.recv() == "alive"


def test_send_from_a_receive_callback_is_refused(server: Server) -> None:
    srv = server(1)
    errors: List[BaseException] = []

    def callback(event: fedcomm.Progress) -> None:
        for call in (lambda: client.send("x"), lambda: client.recv(timeout=0)):
            try:
                call()
            except BaseException as error:
                errors.append(error)

    client = fedcomm.connect("127.0.0.1", srv.port, on_progress=callback)
    with client:
        srv.conn(0).send("hi")
        assert client.recv(timeout=5) == "hi"
    assert [type(e) for e in errors] == [RuntimeError, RuntimeError]
    assert "I/O thread" in str(errors[0])
