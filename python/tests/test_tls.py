"""TLS: a throwaway CA and server certificate made with openssl; framing over
TLS is identical, and only the I/O thread touches the SSL socket."""

from __future__ import annotations

import ssl
import threading
from typing import Callable, Dict

import numpy as np
import pytest

import fedcomm
from _reference import ReferenceServer, wait_until

Server = Callable[..., ReferenceServer]
MiB = 1024 * 1024


def tls_server(server: Server, certs: Dict[str, str], **kwargs: object) -> ReferenceServer:
    return server(1, tls=(certs["cert"], certs["key"]), **kwargs)


def test_right_ca(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs)
    with fedcomm.connect("127.0.0.1", srv.port, tls=certs["ca"]) as client:
        assert client.tls and "tls" in repr(client)
        conn = srv.conn(0)
        weights = np.linspace(-1, 1, 100_000, dtype=np.float32)
        conn.send({"weights": weights})
        got = client.recv(timeout=5)["weights"]
        assert np.array_equal(got, weights)
        client.send({"weights": got * 2})
        assert np.array_equal(conn.recv()["weights"], weights * 2)


def test_ssl_context_and_server_hostname(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs)
    context = ssl.create_default_context(cafile=certs["ca"])
    with fedcomm.connect("127.0.0.1", srv.port, tls=context, server_hostname="localhost") as client:
        assert client.id == 0


def test_wrong_ca(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs, allow_errors=True)
    with pytest.raises(fedcomm.AuthenticationError) as info:
        fedcomm.connect("127.0.0.1", srv.port, tls=certs["other_ca"])
    message = str(info.value)
    assert message.startswith(f"TLS certificate verification failed for 127.0.0.1:{srv.port}")
    assert "certificate" in message.split(": ", 1)[1]
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_system_cas_do_not_know_a_private_ca(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs, allow_errors=True)
    with pytest.raises(fedcomm.AuthenticationError, match="TLS certificate verification failed"):
        fedcomm.connect("127.0.0.1", srv.port, tls=True)


def test_hostname_mismatch(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs, allow_errors=True)
    with pytest.raises(fedcomm.AuthenticationError, match="example.org"):
        fedcomm.connect("127.0.0.1", srv.port, tls=certs["ca"], server_hostname="example.org")


def test_plain_client_to_tls_server(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs, allow_errors=True)
    # Python's ssl server resets the connection (a Deno server answers with a
    # TLS alert, which the client names: test_deno_server.py).
    with pytest.raises(fedcomm.FedcommError):
        fedcomm.connect("127.0.0.1", srv.port, timeout=3)


def test_tls_client_to_plain_server(server: Server) -> None:
    srv = server(1, allow_errors=True)
    with pytest.raises(fedcomm.PeerDisconnectedError, match=r"during the TLS handshake: .*it may not speak TLS"):
        fedcomm.connect("127.0.0.1", srv.port, tls=True, timeout=3)


def test_tls_and_auth(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs, secret="correct horse battery staple 42")
    with fedcomm.connect("127.0.0.1", srv.port, tls=certs["ca"], secret="correct horse battery staple 42", name="a") as client:
        assert client.id == 0


def test_full_duplex_with_pings_over_tls(server: Server, certs: Dict[str, str]) -> None:
    """Large frames both ways at once while both sides ping when idle for 20 ms:
    reads and writes of one SSL socket interleave inside frames without
    corruption, and heartbeats flow both ways over TLS."""
    srv = tls_server(server, certs, ping_interval=0.02)
    with fedcomm.connect("127.0.0.1", srv.port, tls=certs["ca"], heartbeat=0.02, idle_timeout=5) as client:
        conn = srv.conn(0)
        down = [np.full(2 * MiB, i, np.float32) for i in range(4)]
        up = [np.full(2 * MiB, -i, np.float32) for i in range(4)]
        for array in down:
            conn.send({"down": array})
        sender = threading.Thread(target=lambda: [client.send({"up": a}) for a in up])
        sender.start()
        for array in down:
            assert np.array_equal(client.recv(timeout=20)["down"], array)
        sender.join(20)
        for array in up:
            assert np.array_equal(conn.recv(timeout=20)["up"], array)
        # Heartbeats go out only after 20 ms without a write, which the transfers
        # above may never leave: once idle, both sides must ping within the second.
        wait_until(lambda: conn.pings_received > 0 and conn.frames.count(("pong", 10)) > 0, timeout=5)


def test_resume_over_tls(server: Server, certs: Dict[str, str]) -> None:
    srv = tls_server(server, certs, grace=5, secret="correct horse battery staple 42")
    with fedcomm.connect("127.0.0.1", srv.port, tls=certs["ca"], secret="correct horse battery staple 42") as client:
        session = srv.session(0)
        first = session.conns[-1]
        weights = np.arange(4 * MiB, dtype=np.float32)
        session.send("one")
        first.flush()
        first.cut_after(sent=first.bytes_sent + 5 * MiB)
        session.send({"weights": weights})
        assert client.recv(timeout=10) == "one"
        assert np.array_equal(client.recv(timeout=30)["weights"], weights)
        client.send({"weights": weights * 2})
        assert np.array_equal(session.recv(timeout=30)["weights"], weights * 2)
        assert client.resumes == 1 and len(session.conns) == 2
