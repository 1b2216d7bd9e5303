"""Mutual authentication: HMAC-SHA256 over both nonces and the client's name.

Each side proves it knows the shared secret without sending it::

    server proof = HMAC(secret, b"fedcomm server proof\\0" + client nonce + server nonce + name)
    client proof = HMAC(secret, b"fedcomm client proof\\0" + client nonce + server nonce + name)

The labels keep a proof of one side from passing for the other's; the fresh
nonces of both sides keep a recorded handshake from being replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["NONCE_BYTES", "PROOF_BYTES", "client_proof", "new_nonce", "proof_matches", "server_proof"]

#: The size of each side's nonce.
NONCE_BYTES = 32
#: The size of an HMAC-SHA256 proof.
PROOF_BYTES = 32

_SERVER_LABEL = b"fedcomm server proof\x00"
_CLIENT_LABEL = b"fedcomm client proof\x00"


def _proof(label: bytes, secret: bytes, client_nonce: bytes, server_nonce: bytes, name: bytes) -> bytes:
    return hmac.new(secret, label + client_nonce + server_nonce + name, hashlib.sha256).digest()


def server_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes, name: bytes) -> bytes:
    """The proof a server sends in its challenge (``name``: UTF-8, ``b""`` if none)."""
    return _proof(_SERVER_LABEL, secret, client_nonce, server_nonce, name)


def client_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes, name: bytes) -> bytes:
    """The proof a client sends in its auth message (``name``: UTF-8, ``b""`` if none)."""
    return _proof(_CLIENT_LABEL, secret, client_nonce, server_nonce, name)


def proof_matches(expected: bytes, proof: object) -> bool:
    """Whether ``proof`` (as received: any type) equals ``expected``, compared
    in constant time. Anything but bytes cannot match: a failed proof."""
    return isinstance(proof, bytes) and hmac.compare_digest(expected, proof)


def new_nonce() -> bytes:
    """A fresh random nonce."""
    return secrets.token_bytes(NONCE_BYTES)
