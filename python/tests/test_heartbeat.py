"""Liveness: the I/O thread answers pings while the application is busy, pings
an idle server, and declares a silent server dead after idle_timeout."""

from __future__ import annotations

import threading
import time
from typing import Callable, List

import numpy as np
import pytest

import fedcomm
from fedcomm._protocol.codec import encode_parts
from _reference import ReferenceServer, encode_value, frame

Server = Callable[..., ReferenceServer]
MiB = 1024 * 1024


@pytest.mark.parametrize("busy", ["sleeping", "computing"])
def test_pings_answered_while_the_user_thread_trains(server: Server, busy: str) -> None:
    srv = server(1)
    client = fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.2, idle_timeout=1.0)
    conn = srv.conn(0)
    done = threading.Event()

    def train() -> None:  # never calls recv() while "training"
        end = time.monotonic() + 1.5
        if busy == "sleeping":
            time.sleep(1.5)
        else:
            x = 0
            while time.monotonic() < end:  # pure Python: holds the GIL most of the time
                x += 1
        done.set()

    trainer = threading.Thread(target=train)
    trainer.start()
    rtts = []
    while not done.is_set():
        rtts.append(conn.ping(timeout=1.0))
        time.sleep(0.2)
    trainer.join()
    assert len(rtts) >= 4
    assert max(rtts) < 0.5, rtts  # prompt, while the "training" takes 1.5 s
    assert not client.closed
    conn.send("next round")
    assert client.recv(timeout=5) == "next round"
    client.close()


def test_client_pings_when_it_writes_nothing(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=0.5) as client:
        conn = srv.conn(0)
        time.sleep(0.75)
        assert 3 <= conn.pings_received <= 8
        assert client.rtt is not None and 0 < client.rtt < 0.5
        assert time.monotonic() - client.last_heard < 0.2
        # Writing postpones the pings.
        pings = conn.pings_received
        for _ in range(8):
            client.send("busy")
            time.sleep(0.05)
        assert conn.pings_received == pings
        assert [conn.recv() for _ in range(8)] == ["busy"] * 8


def test_idle_timeout_on_a_silent_server(server: Server) -> None:
    srv = server(1, answer_pings=False)
    client = fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=0.5)
    conn = srv.conn(0)
    conn.send("last words")
    start = time.monotonic()
    assert client.recv(timeout=5) == "last words"
    with pytest.raises(fedcomm.PeerDisconnectedError) as info:
        client.recv(timeout=5)
    assert 0.4 <= time.monotonic() - start < 3
    assert str(info.value).startswith("Server silent for 0.5 s: ")
    assert conn.pings_received >= 3  # it was asked
    with pytest.raises(fedcomm.PeerDisconnectedError, match="Server silent"):
        client.send("anyone?")
    with pytest.raises(fedcomm.PeerDisconnectedError):
        list(client)  # a dead server is not a clean end: iteration raises
    client.close()


def test_pending_recv_fails_when_server_goes_silent(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=0.4) as client:
        conn = srv.conn(0)
        time.sleep(0.5)
        assert not client.closed  # the pings were answered
        conn.silent = True
        with pytest.raises(fedcomm.PeerDisconnectedError, match="Server silent for 0.4 s"):
            client.recv(timeout=5)


def test_long_silent_trainer_not_declared_dead(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=0.6) as client:
        conn = srv.conn(0)
        time.sleep(2.4)  # four idle timeouts without touching the client
        assert not client.closed
        assert conn.pings_received >= 10
        conn.send({"round": 2})
        assert client.recv(timeout=5) == {"round": 2}
        client.send("update")
        assert conn.recv() == "update"


def test_server_pings_keep_a_non_pinging_client_alive(server: Server) -> None:
    srv = server(1, ping_interval=0.1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=None, idle_timeout=0.6) as client:
        conn = srv.conn(0)
        time.sleep(1.5)
        assert not client.closed
        assert conn.pings_received == 0
        assert conn.frames.count(("pong", 10)) >= 8


def test_heartbeat_frames_count_as_heard(server: Server) -> None:
    srv = server(1, answer_pings=False)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=None, idle_timeout=0.6) as client:
        conn = srv.conn(0)
        for _ in range(12):
            conn.send_raw(bytes(4))  # empty frames
            time.sleep(0.1)
        assert not client.closed


def test_large_frame_trickling_in(server: Server) -> None:
    srv = server(1, answer_pings=False)
    events: List[tuple] = []
    body = encode_value({"w": np.ones(3 * MiB, np.float32)})  # 12 MiB
    with fedcomm.connect(
        "127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=1.0,
        on_progress=lambda e: events.append((time.monotonic(), e)),
    ) as client:
        conn = srv.conn(0)
        start = time.monotonic()
        # 2 MiB every 0.3 s: about 2 s in all, twice the idle timeout, but never silent.
        conn.send_slowly(frame(body), 2 * MiB, 0.3)
        message = client.recv(timeout=20)
        assert time.monotonic() - start > 1.8
        assert np.array_equal(message["w"], np.ones(3 * MiB, np.float32))
        progress = [e for _, e in events]
        assert [p.done for p in progress] == [4 * MiB, 8 * MiB, 12 * MiB, len(body)]
        times = [t for t, _ in events]
        assert times[1] - times[0] > 0.4 and times[2] - times[1] > 0.4  # reported as bytes came


def test_slow_upload_to_a_quiet_server_not_declared_dead(server: Server) -> None:
    """A server that answers nothing during a long upload (it cannot send a
    pong in the middle of our frame) is alive as long as it takes our bytes."""
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=1.0) as client:
        conn = srv.conn(0)
        conn.reading = False
        big = np.ones(16 * MiB, np.float32)  # 64 MiB
        stop = threading.Event()

        def read_slowly() -> None:  # 8 MiB every 0.3 s
            while not stop.wait(0.3):
                conn.allow(8 * MiB)
            conn.reading = True

        reader = threading.Thread(target=read_slowly)
        reader.start()
        start = time.monotonic()
        try:
            client.send(big)
        finally:
            stop.set()
            reader.join()
        assert time.monotonic() - start > 1.2  # longer than the idle timeout
        body = conn.recv_body(timeout=10)
        assert not client.closed
        assert len(body) == encode_parts(big)[1] and bytes(body[-8:]) == big[-2:].tobytes()
