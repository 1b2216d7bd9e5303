"""The protocol test vectors of ``testdata/vectors/protocol_v3.json`` (format:
``testdata/vectors/README.md``) against the Python client.

For every case, two tests:

- ``test_encodes_to_vector_bytes``: the client's own encoders produce exactly
  the vector's frame. What the client sends comes from where the client makes
  it: the handshake state machine (hello, auth; its nonce fixed to the
  vector's), the session (acks due, the pong of a ping, the close frame, an
  ack in front of a reply), the message frame encoder (replies) and the
  traffic timer (pings; its random payload fixed to the vector's). What only a
  server sends (welcomes, challenges, rejects, broadcasts) is checked against
  the client's generic encoders, ``handshake_frame`` and ``message_frame``,
  so that the same bytes come out of the codec on both sides.
- ``test_decodes_to_vector_value``: the frame cut by the client's frame
  decoder and read as the client reads it (``parse_handshake``, ``decode``,
  ``read_control`` and the session's handling of pings, pongs, acks and
  close frames) gives the vector's value. The client never reads replies (a
  server sends none): those are read with ``decode`` after the 8-byte prefix.

Long messages (``long`` cases, PROTOCOL.md §8.8): the header and its part
frames come out of ``message_frame`` with the case's ``sender`` choices
(frame limit, ``refMinBytes``, ``partBytes``), and are read back through the
frame decoder and the connection's ``Assembler`` (small parts copied into
place, and once more with the parts read straight into place, as large parts
are). A client's long message (``long-reply``: request 2, which a server's
header may not carry) is read by an ``Assembly``, as the server would.

And for every proof of the file, the HMAC-SHA256 computation of §7.1.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import pytest

from fedcomm._protocol import handshake as handshake_module
from fedcomm._protocol import traffic as traffic_module
from fedcomm._protocol.acks import ACK_DELAY
from fedcomm._protocol.assembly import Assembler, Assembly
from fedcomm._protocol.auth import client_proof, proof_matches, server_proof
from fedcomm._protocol.codec import decode
from fedcomm._protocol.framing import (
    ACK,
    CLOSE,
    CONTROL,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    HANDSHAKE,
    HEADER,
    HEADER_BYTES,
    LONG,
    LONG_PREFIX_BYTES,
    PING,
    PONG,
    REPLY,
    REPLY_PREFIX_BYTES,
    FrameDecoder,
    PlacedPart,
    read_control,
)
from fedcomm._protocol.handshake import (
    PROTOCOL_VERSION,
    Handshake,
    ResumeRequest,
    handshake_frame,
    parse_handshake,
)
from fedcomm._protocol.outframe import LongSend, OutFrame, message_frame
from fedcomm._protocol.session import Session
from fedcomm._protocol.traffic import Traffic
from fedcomm.errors import PeerDisconnectedError, RejectedError

VECTORS_FILE = Path(__file__).resolve().parents[2] / "testdata" / "vectors" / "protocol_v3.json"
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
CASES: Dict[str, Dict[str, Any]] = {c["name"]: c for c in VECTORS["cases"]}
SITE_A = next(p for p in VECTORS["proofs"] if p["name"] == "site-a")
NOW = 1000.0


# ---------------------------------------------------------------------------
# The value form (testdata/vectors/README.md)

#: The dtypes of the ``$ndarray`` form that these tests handle.
DTYPES = {"|i1", "<i2", "<u2", "<i4", "<u4", "<f4", "<f8"}


def frame_of(name: str) -> bytes:
    return bytes.fromhex(CASES[name]["hex"])


def parts_of(name: str) -> List[bytes]:
    """A long message's part frames (none for the other kinds)."""
    return [bytes.fromhex(part) for part in CASES[name].get("parts", [])]


def wire_of(name: str) -> bytes:
    """Every frame of a case: the frame, then a long message's parts."""
    return frame_of(name) + b"".join(parts_of(name))


def body_of(name: str) -> bytes:
    return frame_of(name)[HEADER_BYTES:]


def value_of(name: str) -> Any:
    return from_json(CASES[name]["decoded"]["value"])


def from_json(v: Any) -> Any:
    """The JSON form of a vector value → the value the client encodes and decodes."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    assert not isinstance(v, float), f"a plain JSON number is an integer: {v}"
    if isinstance(v, list):
        return [from_json(item) for item in v]
    if list(v) == ["$bin"]:
        return bytes.fromhex(v["$bin"])
    if list(v) == ["$ndarray"]:
        spec = v["$ndarray"]
        assert spec["type"] in DTYPES, f"unsupported $ndarray type {spec['type']!r}"
        data = bytes.fromhex(spec["data"])
        array = np.frombuffer(data, dtype=spec["type"]).reshape(spec["shape"])
        assert array.reshape(-1).tolist() == spec["values"], "the values are the data's elements"
        return array
    return {key: from_json(item) for key, item in v.items()}


def to_json(value: Any) -> Any:
    """A value from the client → the JSON form (keys in their order)."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, list):
        return [to_json(item) for item in value]
    if isinstance(value, (bytes, bytearray)):  # (a bin received out of band: a bytearray)
        return {"$bin": bytes(value).hex()}
    if isinstance(value, np.ndarray):
        assert value.dtype.str in DTYPES, f"unsupported dtype {value.dtype.str}"
        return {
            "$ndarray": {
                "type": value.dtype.str,
                "shape": list(value.shape),
                "data": value.tobytes().hex(),
                "values": value.reshape(-1).tolist(),
            }
        }
    assert isinstance(value, dict), f"no JSON form for {value!r}"
    return {key: to_json(item) for key, item in value.items()}


def frame_bytes(frame: OutFrame) -> bytes:
    return b"".join(bytes(part) for part in frame.parts)


def parts_bytes(parts: List[Any]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def as_json_text(value: Any) -> str:
    """Order-sensitive comparison: dict equality ignores the order of keys."""
    return json.dumps(value, sort_keys=False)


# ---------------------------------------------------------------------------
# Encoders: what the client's code writes for each case


def welcome_session(welcome: str = "welcome", max_message_bytes: int = 0) -> Session:
    """A session started with the ``welcome`` vector, as the client sees it."""
    handshake = Handshake(None, None, max_message_bytes=max_message_bytes)
    assert handshake.answer(parse_handshake(body_of(welcome))) is None
    session = Session(retain_bytes=64 * 1024 * 1024, resume=True)
    assert handshake.welcome is not None
    session.start(handshake.welcome)
    return session


def next_frame(session: Session, now: float) -> bytes:
    """The next frame the session writes, written whole."""
    frame = session.next_frame(now)
    assert frame is not None, "a frame is due"
    session.written(frame, True)
    session.frame_ended(frame)
    return frame_bytes(frame)


def authenticated(monkeypatch: pytest.MonkeyPatch) -> List[bytes]:
    """The client's frames of the authenticated handshake: ``hello-auth`` and ``auth``."""
    monkeypatch.setattr(handshake_module, "new_nonce", lambda: bytes.fromhex(SITE_A["clientNonce"]))
    handshake = Handshake(SITE_A["clientName"], SITE_A["secret"].encode())
    hello = handshake.hello()
    auth = handshake.answer(parse_handshake(body_of("challenge")))
    assert auth is not None
    assert handshake.answer(parse_handshake(body_of("welcome-auth"))) is None
    assert handshake.welcome is not None and handshake.welcome.clients == 1
    return [hello, auth]


def reply(message: str, name: str) -> bytes:
    """The client receives ``message`` (the server's message 1), replies with
    the value of ``name``: the ack it owes goes right before the reply."""
    session = welcome_session()
    session.deliver(decode(body_of(message)), len(body_of(message)), NOW)
    assert session.take() is not None
    request = session.reply_target(None)  # the last value taken
    assert request == CASES[name]["decoded"]["request"]
    limit = DEFAULT_MAX_FRAME_BYTES
    session.submit(message_frame(value_of(name), request, limit, limit).out_frame(report=False))
    assert next_frame(session, NOW) == frame_of("ack-1")  # piggybacked
    return next_frame(session, NOW)


def acks(count: int) -> bytes:
    """The ack a client owes ``ACK_DELAY`` after ``count`` messages arrived together."""
    session = welcome_session()
    for _ in range(count):
        session.deliver({"round": 1}, 8, NOW)
    assert session.next_frame(NOW) is None, "not due yet"
    return next_frame(session, NOW + ACK_DELAY)


def ping(monkeypatch: pytest.MonkeyPatch) -> bytes:
    payload = bytes.fromhex(CASES["ping"]["decoded"]["payload"])
    fixed = SimpleNamespace(token_bytes=lambda n: payload[:n])
    monkeypatch.setattr(traffic_module, "secrets", fixed)
    traffic = Traffic(heartbeat=15.0, idle_timeout=60.0, now=NOW)
    return frame_bytes(traffic.new_ping())


def pong() -> bytes:
    session = welcome_session()
    kind, payload = read_control(body_of("ping"))
    assert kind == PING
    session.on_ping(payload)
    return next_frame(session, NOW)


def close() -> bytes:
    session = welcome_session()
    session.close(NOW + 5)
    return next_frame(session, NOW)


def plain(name: str) -> bytes:
    """A plain frame, as the client's message frame encoder writes it."""
    encoded = message_frame(value_of(name), 0, DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_FRAME_BYTES)
    assert not encoded.long
    return parts_bytes(encoded.parts)


def long_message(name: str) -> bytes:
    """A long message's header and parts, as the message frame encoder
    writes them with the case's choices; for a client's message (a request),
    as the session writes it: a reply to the server's message of that
    number, the ack owed going right before."""
    case = CASES[name]
    sender, decoded = case["sender"], case["decoded"]
    limit = sender["maxFrameBytes"]
    long = LongSend(DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
                    sender["refMinBytes"], sender["partBytes"])
    value, request = value_of(name), decoded["request"]
    plain_size = message_frame(value, request, 2**32 - 1, 2**32 - 1, long).size
    assert plain_size > limit, "a long message only when the plain frame does not fit"
    encoded = message_frame(value, request, limit, limit, long)
    assert encoded.long and encoded.size == decoded["size"]
    frame = encoded.out_frame(report=False)
    if request == 0:
        return frame_bytes(frame)
    session = welcome_session("welcome-long", DEFAULT_MAX_MESSAGE_BYTES)
    for number in range(1, request + 1):
        session.deliver({"round": number}, 8, NOW)
    session.submit(frame)
    assert next_frame(session, NOW) == HEADER.pack(10) + bytes((CONTROL, ACK)) + request.to_bytes(8, "big")
    written = next_frame(session, NOW)
    assert session.retention.sent == 1, "one message, numbered once"
    return written


def server_handshake(name: str) -> bytes:
    """A handshake message only a server sends, through the client's encoder."""
    return handshake_frame(value_of(name))


def resume_hello() -> bytes:
    token = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf")
    handshake = Handshake(None, None, None, ResumeRequest(0, token, 1))
    hello = handshake.hello()
    assert handshake.answer(parse_handshake(body_of("welcome-resumed"))) is None
    assert handshake.welcome is not None and handshake.welcome.resumed
    return hello


ENCODERS: Dict[str, Callable[[pytest.MonkeyPatch], bytes]] = {
    # Client → server: the client's own frames.
    "hello": lambda mp: Handshake(None, None).hello(),
    "hello-name-props": lambda mp: Handshake("site-a", None, {"gpus": 2, "region": "eu"}).hello(),
    "hello-resume": lambda mp: resume_hello(),
    "hello-long": lambda mp: Handshake(None, None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES).hello(),
    "long-reply": lambda mp: long_message("long-reply"),
    "hello-auth": lambda mp: authenticated(mp)[0],
    "auth": lambda mp: authenticated(mp)[1],
    "reply-tensor": lambda mp: reply("broadcast-tensor", "reply-tensor"),
    "reply-done": lambda mp: reply("broadcast-round-2", "reply-done"),
    "ack-1": lambda mp: acks(1),
    "ack-2": lambda mp: acks(2),
    "ping": ping,
    "pong": lambda mp: pong(),
    "close": lambda mp: close(),
    # (The client sends pings, never heartbeats, nor a version 1 or 2 hello.)
    "heartbeat": lambda mp: HEADER.pack(0),
    "hello-v1": lambda mp: plain("hello-v1"),
    "hello-v2": lambda mp: server_handshake("hello-v2"),
    # Server → client: the client's generic encoders.
    "welcome": lambda mp: server_handshake("welcome"),
    "welcome-no-resume": lambda mp: server_handshake("welcome-no-resume"),
    "welcome-resumed": lambda mp: server_handshake("welcome-resumed"),
    "welcome-auth": lambda mp: server_handshake("welcome-auth"),
    "welcome-long": lambda mp: server_handshake("welcome-long"),
    "long-broadcast": lambda mp: long_message("long-broadcast"),
    "challenge": lambda mp: server_handshake("challenge"),
    "reject-full": lambda mp: server_handshake("reject-full"),
    "reject-version-v2": lambda mp: server_handshake("reject-version-v2"),
    "reject-version-plain": lambda mp: plain("reject-version-plain"),
    "broadcast-tensor": lambda mp: plain("broadcast-tensor"),
    "broadcast-round-2": lambda mp: plain("broadcast-round-2"),
}


# ---------------------------------------------------------------------------
# Decoding: what the client makes of each frame


def read_long(wire: bytes, in_place: bool) -> Dict[str, Any]:
    """A long message's frames read by the frame decoder and the
    connection's assembler, as the client reads a server's: the parts copied
    from the read buffer, or (``in_place``) read straight into place."""
    decoder = FrameDecoder(DEFAULT_MAX_FRAME_BYTES, "maxFrameBytes")
    assembler = Assembler(DEFAULT_MAX_MESSAGE_BYTES)
    decoder.sink = assembler
    completed = None
    header = wire[HEADER_BYTES : HEADER_BYTES + HEADER.unpack_from(wire)[0]]
    rest = memoryview(wire)
    if in_place:
        # The parts as the decoder reads large ones: into the reference's memory.
        completed = assembler.header(header)
        rest = rest[HEADER_BYTES + len(header) :]
        while rest:
            (length,) = HEADER.unpack_from(rest)
            body = rest[HEADER_BYTES : HEADER_BYTES + length]
            target = assembler.place(bytes(body[:LONG_PREFIX_BYTES]), length - LONG_PREFIX_BYTES)
            target[:] = body[LONG_PREFIX_BYTES:]
            completed = assembler.placed(length - LONG_PREFIX_BYTES)
            rest = rest[HEADER_BYTES + length :]
    else:
        target = decoder.target()
        target[: len(wire)] = wire
        decoder.filled(len(wire))
        while True:
            body = decoder.next_body()
            if body is None:
                break
            assert not isinstance(body, PlacedPart), "small parts are cut from the read buffer"
            assert completed is None, "nothing after the last part"
            kind, _ = read_control(body)
            completed = assembler.header(body) if kind == LONG else assembler.part(body)
        decoder.check_eof()
    assert completed is not None and assembler.current is None, "complete at its last part"
    value, size = completed
    return {"kind": "long", "request": 0, "size": size, "value": to_json(value)}


def cut(frame: bytes) -> bytes:
    """The one body in ``frame``, cut by the client's frame decoder."""
    decoder = FrameDecoder(DEFAULT_MAX_FRAME_BYTES, "maxFrameBytes")
    target = decoder.target()
    target[: len(frame)] = frame
    decoder.filled(len(frame))
    body = decoder.next_body()
    assert body is not None, "a whole frame"
    assert decoder.next_body() is None, "one frame"
    decoder.check_eof()
    return bytes(body)


def decode_frame(frame: bytes, parts: Sequence[bytes] = ()) -> Dict[str, Any]:
    if frame[HEADER_BYTES : HEADER_BYTES + 2] == bytes((CONTROL, LONG)):
        body = frame[HEADER_BYTES:]
        request = int.from_bytes(body[2:LONG_PREFIX_BYTES], "big")
        if request == 0:
            wire = frame + b"".join(parts)
            decoded = read_long(wire, in_place=False)
            assert read_long(wire, in_place=True) == decoded
            return decoded
        # A client's long message: read as the server reads one.
        assembly = Assembly(body, DEFAULT_MAX_MESSAGE_BYTES)
        for part in parts:
            assert part[HEADER_BYTES : HEADER_BYTES + LONG_PREFIX_BYTES] == b"\xc1\x08" + bytes(6)
            assembly.part(part[HEADER_BYTES + LONG_PREFIX_BYTES :])
        assert assembly.complete
        return {"kind": "long", "request": request, "size": assembly.size,
                "value": to_json(assembly.value)}
    assert not parts, "parts follow a long message's header only"
    body = cut(frame)
    if len(body) == 0:
        return {"kind": "heartbeat"}
    if body[0] != CONTROL:
        value = decode(body)
        if isinstance(value, dict) and value.get("type") == "reject":
            # A reject in a plain frame (to a version 1 client): the client reads it too.
            assert parse_handshake(body) == value
        return {"kind": "plain", "value": to_json(value)}
    if body[1] == HANDSHAKE:
        return {"kind": "handshake", "value": to_json(parse_handshake(body))}
    if body[1] == REPLY:
        return {
            "kind": "reply",
            "request": int.from_bytes(body[2:REPLY_PREFIX_BYTES], "big"),
            "value": to_json(decode(body[REPLY_PREFIX_BYTES:])),
        }
    kind, rest = read_control(body)
    session = welcome_session()
    if kind == PING:
        session.on_ping(rest)
        pong_frame = next_frame(session, NOW)  # the pong that answers it
        return {"kind": "ping", "payload": pong_frame[HEADER_BYTES + 2 :].hex()}
    if kind == PONG:
        traffic = Traffic(heartbeat=15.0, idle_timeout=60.0, now=NOW)
        traffic.ping_written(rest, NOW)
        traffic.pong(rest, NOW + 0.25)
        assert traffic.rtt == 0.25, "the pong answers the ping with these bytes"
        return {"kind": "pong", "payload": rest.hex()}
    if kind == ACK:
        count = int.from_bytes(rest, "big")
        return {"kind": "ack", "count": count}
    assert kind == CLOSE
    session.on_close()
    assert session.eof and isinstance(session.error, PeerDisconnectedError)
    return {"kind": "close"}


# ---------------------------------------------------------------------------
# The tests


def test_file() -> None:
    assert VECTORS["protocol"] == PROTOCOL_VERSION
    assert len(CASES) == len(VECTORS["cases"]), "unique case names"
    for case in VECTORS["cases"]:
        assert case["direction"] in ("client-to-server", "server-to-client", "both"), case["name"]
        for frame in [frame_of(case["name"])] + parts_of(case["name"]):
            assert HEADER.unpack_from(frame)[0] == len(frame) - HEADER_BYTES, case["name"]
        assert ("parts" in case) == ("sender" in case) == (case["decoded"]["kind"] == "long")


def test_every_case_has_an_encoder() -> None:
    assert sorted(ENCODERS) == sorted(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_encodes_to_vector_bytes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert ENCODERS[name](monkeypatch).hex() == wire_of(name).hex()


@pytest.mark.parametrize("name", list(CASES))
def test_decodes_to_vector_value(name: str) -> None:
    decoded = decode_frame(frame_of(name), parts_of(name))
    expected = CASES[name]["decoded"]
    assert decoded == expected
    assert as_json_text(decoded) == as_json_text(expected), "keys in the same order"


def test_server_messages_as_the_handshake_reads_them() -> None:
    """The welcomes and rejects, through the client's handshake state machine."""
    handshake = Handshake(None, None)
    assert handshake.answer(parse_handshake(body_of("welcome"))) is None
    welcome = handshake.welcome
    assert welcome is not None
    fields = (welcome.id, welcome.clients, welcome.max_frame_bytes, welcome.grace)
    assert fields == (0, 2, DEFAULT_MAX_FRAME_BYTES, 300_000)
    assert welcome.token == bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")
    assert welcome.max_message_bytes == 0
    handshake = Handshake(None, None)
    assert handshake.answer(parse_handshake(body_of("welcome-no-resume"))) is None
    assert handshake.welcome is not None and handshake.welcome.token is None
    handshake = Handshake(None, None, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES)
    assert handshake.answer(parse_handshake(body_of("welcome-long"))) is None
    assert handshake.welcome is not None
    assert handshake.welcome.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    handshake = Handshake(None, None)  # (a client that announced none sends none)
    assert handshake.answer(parse_handshake(body_of("welcome-long"))) is None
    assert handshake.welcome is not None and handshake.welcome.max_message_bytes == 0
    rejects = [
        ("reject-full", "full"),
        ("reject-version-v2", "version"),
        ("reject-version-plain", "version"),
    ]
    for name, reason in rejects:
        with pytest.raises(RejectedError) as info:
            Handshake(None, None).answer(parse_handshake(body_of(name)))
        assert info.value.reason == reason
        assert info.value.message == value_of(name)["message"]


@pytest.mark.parametrize("proof", VECTORS["proofs"], ids=[p["name"] for p in VECTORS["proofs"]])
def test_proof(proof: Dict[str, str]) -> None:
    secret = proof["secret"].encode("utf-8")
    nc, ns = bytes.fromhex(proof["clientNonce"]), bytes.fromhex(proof["serverNonce"])
    name = proof["clientName"].encode("utf-8")
    assert server_proof(secret, nc, ns, name).hex() == proof["serverProof"]
    assert client_proof(secret, nc, ns, name).hex() == proof["clientProof"]
    assert proof_matches(server_proof(secret, nc, ns, name), bytes.fromhex(proof["serverProof"]))
    assert server_proof(secret, nc, ns, name) != client_proof(secret, nc, ns, name)


def test_authenticated_cases_carry_the_site_a_proofs() -> None:
    hello = CASES["hello-auth"]["decoded"]["value"]
    challenge = CASES["challenge"]["decoded"]["value"]
    auth = CASES["auth"]["decoded"]["value"]
    assert hello["name"] == SITE_A["clientName"]
    assert hello["nonce"] == {"$bin": SITE_A["clientNonce"]}
    assert challenge["nonce"] == {"$bin": SITE_A["serverNonce"]}
    assert challenge["proof"] == {"$bin": SITE_A["serverProof"]}
    assert auth["proof"] == {"$bin": SITE_A["clientProof"]}
