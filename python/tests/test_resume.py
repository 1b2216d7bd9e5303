"""Resume: after a drop the client reconnects within the server's grace and
the session goes on, nothing lost or duplicated; refusals, giving up, and
close() (c1 06: the server does not wait for a resume)."""

from __future__ import annotations

import socket
import time
from typing import Any, Callable, List, Tuple

import msgpack
import numpy as np
import pytest

import fedcomm
from _reference import ReferenceServer, frame, handshake_body, wait_until

Server = Callable[..., ReferenceServer]
MiB = 1024 * 1024
SECRET = "correct horse battery staple 42"



class Events:
    """Records the on_disconnect and on_resume callbacks."""

    def __init__(self) -> None:
        self.log: List[Tuple[str, Any]] = []

    def disconnect(self, error: BaseException) -> None:
        self.log.append(("disconnect", error))

    def resume(self, count: int) -> None:
        self.log.append(("resume", count))

    def kinds(self) -> List[str]:
        return [kind for kind, _ in self.log]


def test_resume_mid_frame_server_to_client(server: Server) -> None:
    srv = server(1, grace=5)
    events = Events()
    big = np.arange(16 * MiB, dtype=np.float32)  # 64 MiB
    with fedcomm.connect(
        "127.0.0.1", srv.port, on_disconnect=events.disconnect, on_resume=events.resume
    ) as client:
        session = srv.session(0)
        first = session.conns[-1]
        session.send({"n": 1})
        first.flush()
        first.cut_after(sent=first.bytes_sent + 20 * MiB)  # inside the 64 MiB frame
        session.send({"n": 2, "weights": big})
        session.send({"n": 3})
        got = [client.recv(timeout=30) for _ in range(3)]
        assert [m["n"] for m in got] == [1, 2, 3]
        assert np.array_equal(got[1]["weights"], big)
        with pytest.raises(fedcomm.FedcommTimeoutError):
            client.recv(timeout=0.3)  # nothing duplicated
        assert first.close_reason == "cut"
        assert client.resumes == 1 and not client.resuming
        assert client.messages_received == 3 and client.last_received == 3
        assert events.kinds() == ["disconnect", "resume"] and events.log[1][1] == 1
        assert isinstance(events.log[0][1], fedcomm.FedcommError)
        second = session.conns[-1]
        assert len(session.conns) == 2 and second is not first
        hello = second.handshake_messages[0]
        assert hello["resume"]["id"] == 0 and hello["resume"]["token"] == session.token
        assert hello["resume"]["received"] <= 1  # (message 1, unless the drop lost it too)
        wait_until(lambda: not session.retained)
        client.reply("thanks for 3", timeout=30)  # numbering goes on across the resume
        message = session.recv_message()
        assert (message.number, message.request) == (1, 3)


def test_resume_mid_frame_client_to_server(server: Server) -> None:
    srv = server(1, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        first = session.conns[-1]
        client.send({"n": 1}, timeout=30)
        assert session.recv()["n"] == 1
        first.cut_after(received=first.bytes_received + 20 * MiB)
        big = np.arange(16 * MiB, dtype=np.float32)  # 64 MiB
        client.send({"n": 2, "weights": big}, timeout=30)  # returns once written whole, on the new connection
        big[:] = -1  # the client keeps its own copy until the server acknowledges it
        client.send({"n": 3}, timeout=30)
        two, three = session.recv(timeout=30), session.recv(timeout=30)
        assert (two["n"], three["n"]) == (2, 3)
        assert np.array_equal(two["weights"], np.arange(16 * MiB, dtype=np.float32))
        with pytest.raises(TimeoutError):
            session.recv(timeout=0.3)  # nothing duplicated
        assert session.log == [(1, None), (2, None), (3, None)]
        assert first.truncated and first.close_reason == "cut"
        assert client.resumes == 1 and client.messages_sent == 3
        wait_until(lambda: client.retained_bytes == 0)
        assert session.conns[-1].handshake_messages[0]["resume"]["received"] == 0
        assert client.welcome["received"] == 1 and client.welcome["resumed"] is True


def test_messages_sent_while_resuming_arrive_in_order(server: Server) -> None:
    srv = server(1, grace=5, refuse_live=3)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        session.conns[-1].cut()
        wait_until(lambda: client.resuming)
        for i in range(5):
            session.send(i)  # retained by the server until the resume
        for i in range(5, 10):
            client.send(i, timeout=30)  # waits for the resume
        assert [client.recv(timeout=10) for _ in range(5)] == list(range(5))
        assert [session.recv(timeout=10) for _ in range(5)] == list(range(5, 10))
        assert srv.live_refusals == 3 and client.resumes == 1


def test_a_resume_reject_is_final_whatever_its_message(server: Server) -> None:
    """Only the reason decides (PROTOCOL.md §6.3): ``resume`` means the
    session is over, even with the words of a ``live`` reject."""
    srv = server(1, grace=5, refuse_live=1, live_reason="resume")
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        srv.session(0).conns[-1].cut()
        with pytest.raises(fedcomm.PeerDisconnectedError, match="Session lost"):
            client.recv(timeout=10)
        assert srv.live_refusals == 1 and client.resumes == 0


def test_still_connected_is_retried_with_backoff(server: Server) -> None:
    srv = server(1, grace=5, refuse_live=2)
    events = Events()
    with fedcomm.connect("127.0.0.1", srv.port, on_resume=events.resume) as client:
        session = srv.session(0)
        start = time.monotonic()
        session.conns[-1].cut()
        session.send("after")  # (written on the old connection if the cut is not through yet)
        assert client.recv(timeout=10) == "after"
        wait_until(lambda: client.resumes == 1)
        # At once (refused), after 0.1 s ± 20 % (refused), after 0.2 s ± 20 %: resumed.
        assert 0.2 < time.monotonic() - start < 2
        assert srv.live_refusals == 2 and len(srv.conns) == 4 + srv.early_refusals
        assert events.log == [("resume", 1)]


def test_idle_timeout_then_resume(server: Server) -> None:
    """The server goes silent: the client declares it dead and resumes; the
    server notices the old connection closed, so a retry succeeds."""
    srv = server(1, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port, heartbeat=0.1, idle_timeout=0.5) as client:
        session = srv.session(0)
        session.conns[-1].silent = True
        wait_until(lambda: client.resumes == 1, timeout=5)
        session.send("hello again")
        assert client.recv(timeout=5) == "hello again"
        client.send("me too", timeout=30)
        assert session.recv() == "me too"
        assert not client.closed


def test_gives_up_after_the_grace(server: Server) -> None:
    srv = server(1, grace=0.5)
    events = Events()
    client = fedcomm.connect("127.0.0.1", srv.port, on_disconnect=events.disconnect, on_resume=events.resume)
    srv.close()  # the server is gone: every try is refused
    start = time.monotonic()
    with pytest.raises(fedcomm.PeerDisconnectedError) as info:
        client.recv(timeout=10)
    assert 0.4 < time.monotonic() - start < 3
    assert str(info.value).startswith(
        f"Session lost: not resumed within the server's grace of 0.5 s (127.0.0.1:{srv.port}); "
        "the connection dropped: Server disconnected"
    )
    assert "last attempt: Cannot connect to" in str(info.value)
    with pytest.raises(fedcomm.PeerDisconnectedError, match="Session lost"):
        client.send("anyone?")
    with pytest.raises(fedcomm.PeerDisconnectedError):
        list(client)  # a lost session is not a clean end: iteration raises
    assert events.kinds() == ["disconnect"] and client.closed
    client.close()


def test_refused_resume_ends_the_session(server: Server) -> None:
    srv = server(1, grace=5)
    client = fedcomm.connect("127.0.0.1", srv.port)
    srv.forget(0)  # (a restarted server)
    srv.conn(0).cut()
    start = time.monotonic()
    with pytest.raises(fedcomm.PeerDisconnectedError) as info:
        client.recv(timeout=10)
    assert time.monotonic() - start < 2
    assert str(info.value) == (
        'Session lost: the server refused to resume it: resume: Resume refused: no session "0"'
    )
    assert isinstance(info.value.__cause__, fedcomm.RejectedError)
    assert len(srv.conns) == 2  # no retry
    client.close()


def test_wrong_token_is_refused(server: Server) -> None:
    srv = server(1, grace=5)
    client = fedcomm.connect("127.0.0.1", srv.port)
    client._shared.session.token = bytes(16)  # (not the session's token)
    srv.conn(0).cut()
    with pytest.raises(fedcomm.PeerDisconnectedError, match='wrong token for client "0"'):
        client.recv(timeout=10)
    client.close()


def raw_hello(port: int, message: dict) -> dict:
    """Sends one hello on a raw socket; returns the server's answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(frame(handshake_body(message)))
        header = sock.recv(4, socket.MSG_WAITALL)
        body = sock.recv(int.from_bytes(header, "big"), socket.MSG_WAITALL)
    assert body[:2] == b"\xc1\x03"
    return msgpack.unpackb(body[2:], raw=False)


def test_reference_server_refuses_wrong_and_live_tokens(server: Server) -> None:
    srv = server(1, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        token = srv.session(0).token
        assert client.welcome["token"] == token and client.welcome["grace"] == 5000
        hello = {"fedcomm": 3, "type": "hello", "resume": {"id": 0, "token": bytes(16), "received": 0}}
        reject = raw_hello(srv.port, hello)
        assert (reject["reason"], reject["message"]) == ("resume", 'Resume refused: wrong token for client "0"')
        hello["resume"]["token"] = token
        reject = raw_hello(srv.port, hello)
        assert (reject["reason"], reject["message"]) == ("live", 'Resume refused: client "0" is still connected')
        hello["resume"]["id"] = 7
        assert raw_hello(srv.port, hello)["message"] == 'Resume refused: no session "7"'
        client.send("still here", timeout=30)
        assert srv.session(0).recv() == "still here"


def test_resume_with_authentication_and_props(server: Server) -> None:
    srv = server(1, grace=5, secret=SECRET)
    props = {"site": "hospital-a", "gpus": 2}
    with fedcomm.connect("127.0.0.1", srv.port, name="a", secret=SECRET, props=props) as client:
        session = srv.session(0)
        session.conns[-1].cut()
        session.send("after")
        assert client.recv(timeout=10) == "after"
        wait_until(lambda: client.resumes == 1)
        hello, auth = session.conns[-1].handshake_messages
        assert set(hello) == {"fedcomm", "type", "name", "nonce", "props", "maxMessageBytes", "resume"}
        assert hello["nonce"] != session.conns[0].handshake_messages[0]["nonce"]  # fresh
        assert auth["type"] == "auth" and session.props == props


def test_no_resume_without_grace_or_when_disabled(server: Server) -> None:
    srv = server(2, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port, resume=False) as client:
        srv.conn(0).cut()
        with pytest.raises(fedcomm.PeerDisconnectedError, match="Server disconnected"):
            client.recv(timeout=5)
        assert client.resumes == 0 and len(srv.session(0).conns) == 1
    srv = server(1)  # grace 0
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        assert client.grace == 0 and "token" not in client.welcome
        srv.conn(0).close()
        assert list(client) == []  # a plain disconnect ends the session
        assert len(srv.conns) == 1


def test_close_sends_c1_06_and_the_server_does_not_wait(server: Server) -> None:
    srv = server(1, grace=60)
    client = fedcomm.connect("127.0.0.1", srv.port)
    session = srv.session(0)
    client.send("see you", timeout=30)
    client.close()
    assert session.ended.wait(2)  # at once, not after the 60 s grace
    assert session.end_reason == "closed"
    assert session.recv() == "see you"
    frames = session.conns[-1].frames
    assert frames[-1] == ("close", 2) and ("value", 8) in frames
    assert frames.index(("value", 8)) < len(frames) - 1


def test_close_waits_for_the_acks(server: Server) -> None:
    srv = server(1, grace=60, acks=False)
    client = fedcomm.connect("127.0.0.1", srv.port)
    session = srv.session(0)
    client.send(b"x" * 1000, timeout=30)
    import threading

    timer = threading.Timer(0.3, lambda: setattr(srv, "acks", True))
    timer.start()
    start = time.monotonic()
    client.close()
    timer.join()
    assert 0.25 < time.monotonic() - start < 3
    assert session.ended.wait(2) and session.end_reason == "closed"


def test_close_gives_up_waiting_for_acks(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fedcomm.client, "_CLOSE_ACK_SECONDS", 0.3)
    srv = server(1, grace=60, acks=False)
    client = fedcomm.connect("127.0.0.1", srv.port)
    session = srv.session(0)
    client.send("never acknowledged", timeout=30)
    start = time.monotonic()
    client.close()
    assert 0.25 < time.monotonic() - start < 2
    session.conns[-1].closed.wait(2)
    assert ("close", 2) not in session.conns[-1].frames  # no c1 06: the server may await a resume
    session.wait_state("resuming")


def test_close_while_resuming(server: Server) -> None:
    srv = server(1, grace=30)
    events = Events()
    client = fedcomm.connect("127.0.0.1", srv.port, on_disconnect=events.disconnect)
    srv.close()  # every try is refused: the client keeps trying for 30 s
    wait_until(lambda: client.resuming)
    time.sleep(0.3)
    start = time.monotonic()
    client.close()
    assert time.monotonic() - start < 1
    assert events.kinds() == ["disconnect"] and client.closed
    with pytest.raises(fedcomm.PeerDisconnectedError, match="close\\(\\) was called"):
        client.recv(timeout=1)


def test_message_taken_by_the_kernel_but_lost_is_sent_again(server: Server) -> None:
    """send() returned (the kernel took the bytes) and the caller changed its
    array, then the connection dropped before the server read the message:
    the client sends again the copy it kept, not the changed array."""
    srv = server(1, grace=5)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        first = session.conns[-1]
        first.reading = False
        weights = np.arange(MiB // 4, dtype=np.float32)  # 1 MiB: the kernel buffers take it all
        client.send({"weights": weights}, timeout=30)
        weights[:] = -1
        assert client.retained_bytes > MiB
        first.cut()  # the unread bytes are lost with the connection
        got = session.recv(timeout=10)["weights"]
        assert np.array_equal(got, np.arange(MiB // 4, dtype=np.float32))
        assert client.resumes == 1 and session.log == [(1, None)]
