"""Mutual authentication with a shared secret (HMAC-SHA256 over both nonces
and the client's name): success, refusals, impostor servers, replays."""

from __future__ import annotations

import socket
from typing import Any, Callable, Dict, Optional

import msgpack
import pytest

import fedcomm
from fedcomm._protocol.auth import client_proof, server_proof
from _reference import CLIENT_LABEL, ReferenceServer, frame, handshake_body, proof

Server = Callable[..., ReferenceServer]

SECRET = "correct horse battery staple 42"  # (secrets are at least 16 bytes)
WRONG = "incorrect horse battery staple 1"
CLIENT_NONCE = bytes(range(32))
SERVER_NONCE = bytes(range(32, 64))


@pytest.mark.parametrize(
    "name, server_hex, client_hex",
    [
        (b"", "9dede54ddfae6ec57bf29b8846a2c9eab1f2bac2237fc243a416e96a48956661",
         "52c765c451e7babde8a7785df6a271aa5fc2f5491d9d16645d7556a7910c2b9d"),
        (b"hospital-a", "5ba308055003ec9a319e2658005ca34ba17b7fc1e1b410bae1ffa63806d87c70",
         "394aa6fc51909fbfaaf3eda28f7319bd4bb89546e0c74d193b06cdbfc61752e1"),
    ],
)
def test_known_answer(name: bytes, server_hex: str, client_hex: str) -> None:
    """Test vectors (the 32-byte secret "0123456789abcdef" twice, nonces 00..1f
    and 20..3f), checked against the Deno library's _auth.ts."""
    key = b"0123456789abcdef" * 2
    assert server_proof(key, CLIENT_NONCE, SERVER_NONCE, name).hex() == server_hex
    assert client_proof(key, CLIENT_NONCE, SERVER_NONCE, name).hex() == client_hex


@pytest.mark.parametrize("secret", [SECRET, SECRET.encode(), bytearray(SECRET.encode())])
def test_success(server: Server, secret: Any) -> None:
    srv = server(1, secret=SECRET.encode())
    with fedcomm.connect("127.0.0.1", srv.port, secret=secret, name="hospital-a") as client:
        assert client.id == 0
        conn = srv.conn(0)
        conn.send("welcome aboard")
        assert client.recv(timeout=5) == "welcome aboard"
    hello, auth = conn.handshake_messages
    assert set(hello) == {"fedcomm", "type", "name", "nonce", "maxMessageBytes"}
    assert len(hello["nonce"]) == 32 and hello["name"] == "hospital-a"
    assert set(auth) == {"fedcomm", "type", "proof"} and len(auth["proof"]) == 32
    assert SECRET.encode() not in msgpack.packb(conn.handshake_messages)  # never on the wire


def test_fresh_nonce_each_time(server: Server) -> None:
    srv = server(2, secret=SECRET)
    with fedcomm.connect("127.0.0.1", srv.port, secret=SECRET), fedcomm.connect("127.0.0.1", srv.port, secret=SECRET):
        nonces = [c.handshake_messages[0]["nonce"] for c in srv.wait_clients()]
    assert nonces[0] != nonces[1]
    assert srv.challenges[0][1] != srv.challenges[1][1]


def test_no_secret_rejected(server: Server) -> None:
    srv = server(1, secret=SECRET)
    with pytest.raises(fedcomm.RejectedError) as info:
        fedcomm.connect("127.0.0.1", srv.port)
    assert info.value.reason == "auth"


def test_wrong_secret(server: Server) -> None:
    """With mutual authentication the client notices first: the server's proof
    does not match, and the client leaves without sending a proof."""
    srv = server(1, secret=SECRET)
    with pytest.raises(fedcomm.AuthenticationError, match="Server failed authentication: its proof does not match"):
        fedcomm.connect("127.0.0.1", srv.port, secret=WRONG)
    conn = srv.wait_connections(1)[0]
    conn.closed.wait(5)
    assert [m["type"] for m in conn.handshake_messages] == ["hello"]


def test_server_with_the_wrong_secret(server: Server) -> None:
    srv = server(1, secret=SECRET, server_secret=WRONG)
    with pytest.raises(fedcomm.AuthenticationError) as info:
        fedcomm.connect("127.0.0.1", srv.port, secret=SECRET, name="a")
    assert "(wrong secret, unknown name, or not the real server)" in str(info.value)
    assert not isinstance(info.value, fedcomm.ProtocolError)


def test_server_skipping_the_challenge(server: Server) -> None:
    srv = server(1, secret=SECRET, skip_challenge=True)
    with pytest.raises(fedcomm.AuthenticationError, match="^Server did not authenticate: "):
        fedcomm.connect("127.0.0.1", srv.port, secret=SECRET)


def test_server_without_authentication(server: Server) -> None:
    srv = server(1)
    with pytest.raises(fedcomm.AuthenticationError, match="^Server did not authenticate: "):
        fedcomm.connect("127.0.0.1", srv.port, secret=SECRET)


class RawClient:
    """Speaks the handshake by hand, to send what a real client would not."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def send(self, message: Dict[str, Any]) -> None:
        self.sock.sendall(frame(handshake_body(message)))

    def recv(self) -> Optional[Dict[str, Any]]:
        header = self.sock.recv(4, socket.MSG_WAITALL)
        if len(header) < 4:
            return None
        body = self.sock.recv(int.from_bytes(header, "big"), socket.MSG_WAITALL)
        assert body[:2] == b"\xc1\x03"
        return msgpack.unpackb(body[2:], raw=False)

    def close(self) -> None:
        self.sock.close()


def test_wrong_client_proof_rejected(server: Server) -> None:
    """A client that ignores the server's proof and answers with a wrong secret is rejected with "auth"."""
    srv = server(1, secret=SECRET)
    raw = RawClient(srv.port)
    raw.send({"fedcomm": 3, "type": "hello", "nonce": CLIENT_NONCE})
    challenge = raw.recv()
    assert challenge is not None and challenge["type"] == "challenge"
    assert challenge["proof"] == server_proof(SECRET.encode(), CLIENT_NONCE, challenge["nonce"], b"")
    raw.send({"fedcomm": 3, "type": "auth", "proof": client_proof(WRONG.encode(), CLIENT_NONCE, challenge["nonce"], b"")})
    reject = raw.recv()
    assert reject is not None and (reject["type"], reject["reason"]) == ("reject", "auth")
    assert raw.recv() is None  # then the server closes
    raw.close()


def test_replayed_client_proof_fails(server: Server) -> None:
    """An eavesdropper replays a captured hello and auth: the server's fresh
    nonce makes the captured proof worthless."""
    srv = server(2, secret=SECRET)
    with fedcomm.connect("127.0.0.1", srv.port, secret=SECRET, name="alice"):
        hello, auth = srv.conn(0).handshake_messages
    raw = RawClient(srv.port)
    raw.send(hello)
    challenge = raw.recv()
    assert challenge is not None and challenge["nonce"] != srv.challenges[0][1]
    raw.send(auth)
    reject = raw.recv()
    assert reject is not None and reject["reason"] == "auth"
    raw.close()
    assert srv.joined() == 1


def test_replayed_server_challenge_fails(server: Server) -> None:
    """An impostor replays a real server's challenge: the client's fresh nonce
    makes the captured server proof worthless."""
    real = server(1, secret=SECRET)
    with fedcomm.connect("127.0.0.1", real.port, secret=SECRET, name="alice"):
        pass
    _, server_nonce, server_proof_ = real.challenges[0]
    impostor = server(1, secret=SECRET, challenge=(server_nonce, server_proof_))
    with pytest.raises(fedcomm.AuthenticationError, match="proof does not match"):
        fedcomm.connect("127.0.0.1", impostor.port, secret=SECRET, name="alice")


def test_name_is_bound_into_the_proofs(server: Server) -> None:
    srv = server(1, secret=SECRET)
    raw = RawClient(srv.port)
    raw.send({"fedcomm": 3, "type": "hello", "name": "alice", "nonce": CLIENT_NONCE})
    challenge = raw.recv()
    assert challenge is not None
    assert challenge["proof"] == server_proof(SECRET.encode(), CLIENT_NONCE, challenge["nonce"], b"alice")
    assert challenge["proof"] != server_proof(SECRET.encode(), CLIENT_NONCE, challenge["nonce"], b"")
    # The proof for another name is refused.
    raw.send({"fedcomm": 3, "type": "auth",
              "proof": proof(CLIENT_LABEL, SECRET.encode(), CLIENT_NONCE, challenge["nonce"], b"bob")})
    reject = raw.recv()
    assert reject is not None and reject["reason"] == "auth"
    raw.close()


def test_malformed_proof_is_a_failed_proof() -> None:
    from fedcomm._protocol.handshake import Handshake

    handshake = Handshake("a", SECRET.encode())
    for proof_ in (b"short", "not bytes", None):
        with pytest.raises(fedcomm.AuthenticationError, match="proof does not match"):
            Handshake("a", SECRET.encode()).answer(
                {"fedcomm": 3, "type": "challenge", "nonce": bytes(32), "proof": proof_}
            )
    with pytest.raises(fedcomm.ProtocolError, match="nonce must be 32 bytes"):
        handshake.answer({"fedcomm": 3, "type": "challenge", "nonce": b"x", "proof": bytes(32)})
