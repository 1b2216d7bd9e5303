"""Long messages (PROTOCOL.md §8.8) in the protocol layer, without I/O: the
skeleton's encoding and decoding, the frames of a long message, the
assembly of one from its header and parts, the frame decoder reading large
parts into place, the errors, and the size limit."""

from __future__ import annotations

import mmap
from typing import Any, Callable, List, Optional, Tuple

import msgpack
import numpy as np
import pytest

import fedcomm
from fedcomm._protocol.assembly import Assembler, Assembly
from fedcomm._protocol.codec import decode_skeleton, encode_skeleton
from fedcomm._protocol.framing import (
    DEFAULT_MAX_MESSAGE_BYTES,
    HEADER,
    HEADER_BYTES,
    LONG,
    LONG_PREFIX_BYTES,
    PROGRESS_CHUNK_BYTES,
    FrameDecoder,
    PlacedPart,
    read_control,
)
from fedcomm._protocol.handshake import Handshake, ResumeRequest
from fedcomm._protocol.outframe import LONG_PART_BYTES, LongSend, MessageFrame, message_frame

MiB = 1024 * 1024
GiB = 1024 * MiB
PART_PREFIX = b"\xc1\x08" + bytes(6)
LONG_OK = LongSend(DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES)


def skeleton_of(value: Any, ref_min: int = 64 * 1024) -> Tuple[bytes, List[bytes]]:
    parts, size, refs = encode_skeleton(value, 0, ref_min)
    body = b"".join(bytes(p) for p in parts)[HEADER_BYTES:]
    assert len(body) == size
    return body, [bytes(r) for r in refs]


def reference(length: int) -> bytes:
    return b"\xd7\x7f" + length.to_bytes(8, "big")


def header(skeleton: bytes, request: int = 0) -> bytes:
    return bytes((0xC1, LONG)) + request.to_bytes(6, "big") + skeleton


def wire(encoded: MessageFrame) -> bytes:
    return b"".join(bytes(p) for p in encoded.parts)


def frames(data: bytes) -> List[bytes]:
    """The bodies of the frames in ``data``."""
    out = []
    while data:
        (length,) = HEADER.unpack_from(data)
        out.append(data[HEADER_BYTES : HEADER_BYTES + length])
        data = data[HEADER_BYTES + length :]
    return out


def assemble(bodies: List[bytes], limit: int = DEFAULT_MAX_MESSAGE_BYTES) -> Tuple[Any, int]:
    """Reads a long message's bodies (header, parts) with an assembler."""
    assembler = Assembler(limit)
    completed = None
    for body in bodies:
        assert completed is None
        kind, _ = read_control(body)
        completed = assembler.header(body) if kind == LONG else assembler.part(body)
    assert completed is not None
    return completed


# ---------------------------------------------------------------------------
# The skeleton


def test_skeleton_references_large_binaries_only() -> None:
    big, small = bytes(range(256)) * 256, b"tiny"
    weights = np.arange(20_000, dtype=np.float32)
    body, refs = skeleton_of({"b": big, "s": small, "w": weights, "l": [big, 1]})
    assert refs == [big, weights.tobytes(), big]  # in order of appearance
    value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    assert value["b"] == msgpack.ExtType(127, len(big).to_bytes(8, "big"))
    assert value["s"] == small
    assert value["l"][0] == msgpack.ExtType(127, len(big).to_bytes(8, "big"))
    # The numpy map of out-of-band data: the shortest headers, no padding.
    assert (b"\x85\xc4\x02nd\xc3\xc4\x04type\xa3<f4\xc4\x04kind\xc4\x00\xc4\x05shape\x91\xcd\x4e\x20"
            b"\xc4\x04data" + reference(80_000)) in body


def test_skeleton_keys_and_small_arrays_stay_inline() -> None:
    key = b"k" * 100
    small = np.arange(3, dtype=np.int16)
    body, refs = skeleton_of({key: 1, "a": small}, ref_min=16)
    assert refs == []
    back = fedcomm.decode(body)  # (no reference in it: a plain value)
    assert back[key] == 1 and np.array_equal(back["a"], small)


def test_skeleton_refuses_an_ext_that_looks_like_a_reference() -> None:
    fake = msgpack.ExtType(127, bytes(8))
    with pytest.raises(TypeError, match="type 127 with 8 bytes is a reference"):
        encode_skeleton({"x": fake}, 0)
    assert fedcomm.decode(fedcomm.encode(fake)) == fake  # in a plain message: an ordinary ext
    assert skeleton_of(msgpack.ExtType(127, bytes(4)))[1] == []  # another length: ordinary


def test_decode_skeleton_allocates_in_place() -> None:
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    blob = bytes(range(200))
    body, refs = skeleton_of({"w": weights, "blob": blob, "list": [blob, "x"]}, ref_min=16)
    charged: List[int] = []
    skeleton = decode_skeleton(body, charged.append)
    assert charged == [48, 200, 200]
    value = skeleton.value
    array = value["w"]
    assert array.shape == (3, 4) and array.dtype == np.float32
    assert skeleton.arrays == [array]
    # The reference's memory is the array's own: the parts fill it in place.
    assert np.shares_memory(np.frombuffer(skeleton.refs[0], np.uint8), array)
    assert isinstance(value["blob"], bytearray) and len(value["blob"]) == 200
    assert isinstance(value["list"][0], bytearray) and value["list"][1] == "x"
    for ref, data in zip(skeleton.refs, refs):
        ref[:] = data
    assert np.array_equal(array, weights) and value["blob"] == blob == value["list"][0]


def test_decode_skeleton_of_a_lone_reference() -> None:
    skeleton = decode_skeleton(reference(5), lambda n: None)
    assert skeleton.value == bytearray(5) and len(skeleton.refs) == 1


@pytest.mark.parametrize(
    "skeleton, match",
    [
        ({"x": msgpack.ExtType(127, bytes(8))}, "reference 1 of 0 bytes"),
        ({msgpack.ExtType(127, (4).to_bytes(8, "big")): 1}, "reference 1 is a map key"),
        ({b"nd": False, b"type": "<f4", b"data": msgpack.ExtType(127, (4).to_bytes(8, "big"))},
         "numpy scalar's data is reference 1"),
        ({b"nd": True, b"type": "<f4", b"kind": b"", b"shape": [3],
          b"data": msgpack.ExtType(127, (8).to_bytes(8, "big"))}, "needs 12 bytes, data has 8"),
        ({b"nd": True, b"type": "|O", b"kind": b"O", b"shape": [1],
          b"data": msgpack.ExtType(127, (8).to_bytes(8, "big"))}, "Unsupported numpy array"),
    ],
)
def test_decode_skeleton_errors(skeleton: Any, match: str) -> None:
    body = msgpack.packb(skeleton, use_bin_type=True)
    with pytest.raises(fedcomm.ProtocolError, match=match):
        decode_skeleton(body, lambda n: None)


def test_decode_skeleton_malformed() -> None:
    with pytest.raises(fedcomm.ProtocolError, match="Malformed MessagePack"):
        decode_skeleton(b"\x92\x01", lambda n: None)
    with pytest.raises(fedcomm.ProtocolError, match="Malformed MessagePack"):
        decode_skeleton(reference(1) + b"\x01", lambda n: None)  # extra bytes


# ---------------------------------------------------------------------------
# The frames of a long message


def test_plain_frame_when_it_fits() -> None:
    encoded = message_frame(np.zeros(1000, np.float32), 0, MiB, MiB, LONG_OK)
    assert not encoded.long and frames(wire(encoded))[0][0] != 0xC1


def test_long_message_frames() -> None:
    weights = np.arange(3 * MiB // 4 + 5, dtype=np.float32)  # 3 MiB + 20 bytes
    value = {"round": 1, "weights": weights, "tag": "r1"}
    encoded = message_frame(value, 7, MiB, 2 * MiB, LONG_OK)
    assert encoded.long
    bodies = frames(wire(encoded))
    head, parts = bodies[0], bodies[1:]
    assert head[:LONG_PREFIX_BYTES] == b"\xc1\x07" + (7).to_bytes(6, "big")
    assert len(parts) == 4 and all(p[:LONG_PREFIX_BYTES] == PART_PREFIX for p in parts)
    assert [len(p) for p in parts] == [MiB] * 3 + [weights.nbytes - 3 * (MiB - 8) + 8]
    assert encoded.size == len(head) + weights.nbytes
    assert b"".join(p[LONG_PREFIX_BYTES:] for p in parts) == weights.tobytes()
    # The data parts are views of the array's memory: not copied.
    assert any(isinstance(p, memoryview) and p.obj is not None and p.nbytes == MiB - 8
               for p in encoded.parts)
    # Read back, with the request as a server reads it (an Assembly).
    assembly = Assembly(head, DEFAULT_MAX_MESSAGE_BYTES)
    assert assembly.request == 7
    for part in parts:
        assembly.part(part[LONG_PREFIX_BYTES:])
    assert assembly.complete and np.array_equal(assembly.value["weights"], weights)


def test_part_size_is_at_most_64_mib() -> None:
    data = np.zeros(LONG_PART_BYTES + 10, np.uint8)
    encoded = message_frame(data, 0, 2**32 - 1, 2**32 - 1, LONG_OK)
    assert not encoded.long  # (it fits one frame: plain)
    limit = LONG_PART_BYTES + LONG_PREFIX_BYTES + 1  # room for 64 MiB + 1 of data per part
    encoded = message_frame(data, 0, limit, 2**32 - 1, LONG_OK)
    assert encoded.long
    lengths = [len(p) for p in frames(wire(encoded))[1:]]
    assert lengths == [LONG_PREFIX_BYTES + LONG_PART_BYTES, LONG_PREFIX_BYTES + 10]


def test_limits_when_sending() -> None:
    big = np.zeros(MiB, np.float32)  # 4 MiB
    with pytest.raises(fedcomm.FrameTooLargeError, match="the server's maxFrameBytes"):
        message_frame(big, 0, MiB, 2 * MiB, LongSend(0, DEFAULT_MAX_MESSAGE_BYTES))
    with pytest.raises(fedcomm.FrameTooLargeError, match="max_frame_bytes"):
        message_frame(big, 0, 2 * MiB, MiB, LongSend(DEFAULT_MAX_MESSAGE_BYTES, 0))
    with pytest.raises(fedcomm.MessageTooLargeError) as info:
        message_frame(big, 0, MiB, MiB, LongSend(2 * MiB, DEFAULT_MAX_MESSAGE_BYTES))
    assert isinstance(info.value, ValueError) and info.value.limit == 2 * MiB
    assert str(info.value) == (
        f"Message too large: {info.value.size} bytes exceeds the server's maxMessageBytes {2 * MiB}"
    )
    with pytest.raises(fedcomm.MessageTooLargeError, match="exceeds max_message_bytes 3145728"):
        message_frame(big, 0, MiB, MiB, LongSend(DEFAULT_MAX_MESSAGE_BYTES, 3 * MiB))
    # A skeleton that alone does not fit a frame.
    many = [b"x" * 100] * 100
    with pytest.raises(fedcomm.FrameTooLargeError, match="a long message's header"):
        message_frame(many, 0, 1000, 1000, LONG_OK)


def test_a_binary_of_4_gib_goes_as_a_long_message() -> None:
    """MessagePack's bin32 cannot hold 4 GiB: such a value is a long message
    (the memory is an anonymous mapping: nothing of it is touched)."""
    with mmap.mmap(-1, 4 * GiB) as huge:
        view = memoryview(huge)
        try:
            with pytest.raises(ValueError, match="4 GiB MessagePack limit"):
                message_frame({"blob": view}, 0, 2**32 - 1, 2**32 - 1, LongSend(0, 0))
            encoded = message_frame({"blob": view}, 0, 2**32 - 1, 2**32 - 1, LONG_OK)
            assert encoded.long and encoded.size > 4 * GiB
            parts = encoded.parts
            assert bytes(parts[0][HEADER_BYTES + LONG_PREFIX_BYTES :]).endswith(reference(4 * GiB))
            assert sum(len(p) for p in parts[2::2]) == 4 * GiB
            del parts, encoded
        finally:
            view.release()


def test_progress_of_a_long_message_counts_its_size() -> None:
    weights = np.ones(5 * MiB, np.float32)  # 20 MiB
    encoded = message_frame({"w": weights}, 0, 3 * MiB, 3 * MiB, LONG_OK)
    frame = encoded.out_frame(report=True)
    written, events = bytearray(), []
    while frame.sent < frame.total:
        chunk = frame.chunk()
        written += chunk
        event = frame.advance(len(chunk))
        if event is not None:
            events.append(event)
    assert bytes(written) == wire(encoded) and frame.total == len(written)
    assert [e.done for e in events][-1] == encoded.size
    assert all(e.total == encoded.size for e in events)
    assert all(b.done > a.done for a, b in zip(events, events[1:]))
    assert len(events) == -(-encoded.size // PROGRESS_CHUNK_BYTES)
    frame.rewind()
    assert frame.sent == frame.counted == 0 and bytes(frame.chunk()) == bytes(written[: len(frame.chunk())])


# ---------------------------------------------------------------------------
# Assembly and its errors


def long_bodies(value: Any, limit: int = 1000) -> List[bytes]:
    return frames(wire(message_frame(value, 0, limit, limit, LongSend(2**40, 2**40, 16, 32))))


def test_assembler_reads_a_long_message() -> None:
    weights = np.arange(100, dtype=np.float32)
    bodies = long_bodies({"w": weights, "b": bytes(range(100))}, limit=200)
    value, size = assemble(bodies)
    assert np.array_equal(value["w"], weights) and value["b"] == bytes(range(100))
    assert not value["w"].flags.writeable  # read-only, as the arrays of a plain message
    assert size == len(bodies[0]) + 500


def test_a_header_without_references_is_complete() -> None:
    assembler = Assembler(1000)
    assert assembler.header(header(msgpack.packb({"a": 1}))) == ({"a": 1}, 12)
    assert assembler.current is None


def test_size_limit_before_allocating() -> None:
    """The running size is checked before each reference is allocated: a
    header that announces 2**60 bytes fails without allocating them."""
    body = header(msgpack.packb([msgpack.ExtType(127, (10).to_bytes(8, "big")),
                                 msgpack.ExtType(127, (2**60).to_bytes(8, "big"))]))
    with pytest.raises(fedcomm.MessageTooLargeError) as info:
        Assembler(4 * GiB).header(body)
    assert info.value.size == len(body) + 10 + 2**60 and info.value.limit == 4 * GiB
    assert str(info.value) == (
        f"Message too large: {len(body) + 10 + 2**60} bytes exceeds max_message_bytes {4 * GiB}"
    )
    exact = header(msgpack.packb(msgpack.ExtType(127, (10).to_bytes(8, "big"))))
    assert Assembler(len(exact) + 10).header(exact) is None  # exactly the limit: taken
    with pytest.raises(fedcomm.MessageTooLargeError):
        Assembler(len(exact) + 9).header(exact)


def under_way(length: int = 64) -> Assembler:
    assembler = Assembler(DEFAULT_MAX_MESSAGE_BYTES)
    assert assembler.header(header(reference(length))) is None
    return assembler


def test_errors_while_a_long_message_is_under_way() -> None:
    with pytest.raises(fedcomm.ProtocolError, match="a plain frame before reference 1 of 1"):
        under_way().check_between("a plain frame")
    with pytest.raises(fedcomm.ProtocolError, match="a long message header before reference 1"):
        under_way().header(header(reference(3)))
    with pytest.raises(fedcomm.ProtocolError, match="a part of 65 bytes, but reference 1 of 1 has 64"):
        under_way().part(PART_PREFIX + bytes(65))
    with pytest.raises(fedcomm.ProtocolError, match="a part of 0 bytes"):
        under_way().part(PART_PREFIX)
    with pytest.raises(fedcomm.ProtocolError, match="prefix is not c1 08 and six zero"):
        under_way().part(b"\xc1\x08" + bytes(5) + b"\x01" + bytes(8))
    assembler = under_way(64)
    assert assembler.part(PART_PREFIX + bytes(60)) is None
    with pytest.raises(fedcomm.ProtocolError, match="a part of 8 bytes, but reference 1 of 1 has 4"):
        assembler.part(PART_PREFIX + bytes(8))


def test_errors_of_a_header_or_part_alone() -> None:
    with pytest.raises(fedcomm.ProtocolError, match="a part with no header"):
        Assembler(1000).part(PART_PREFIX + b"x")
    with pytest.raises(fedcomm.ProtocolError, match="a part with no header"):
        Assembler(1000).place(PART_PREFIX, 1)
    with pytest.raises(fedcomm.ProtocolError, match="answers message 2, but a server sends no replies"):
        Assembler(1000).header(header(reference(1), request=2))
    with pytest.raises(fedcomm.ProtocolError, match="this client takes none"):
        Assembler(0).header(header(reference(1)))
    with pytest.raises(fedcomm.ProtocolError, match="reference 1 of 0 bytes"):
        Assembler(1000).header(header(reference(0)))
    with pytest.raises(fedcomm.ProtocolError, match="Invalid long message header: 8 bytes"):
        read_control(header(b""))
    with pytest.raises(fedcomm.ProtocolError, match="Invalid long message part: 8 bytes"):
        read_control(PART_PREFIX)


# ---------------------------------------------------------------------------
# The frame decoder: large parts read straight into place


def feed(
    decoder: FrameDecoder, data: bytes, step: int, handle: Optional[Callable[[Any], None]] = None
) -> List[Any]:
    """Feeds ``data`` to the decoder at most ``step`` bytes a read; returns the
    bodies, each handled first (as the client does, before the next one)."""
    out: List[Any] = []
    view = memoryview(data)
    while view:
        target = decoder.target()
        n = min(len(target), len(view), step)
        target[:n] = view[:n]
        decoder.filled(n)
        view = view[n:]
        while True:
            body = decoder.next_body()
            if body is None:
                break
            out.append(body if isinstance(body, PlacedPart) else bytes(body))
            if handle is not None:
                handle(out[-1])
    return out


@pytest.mark.parametrize("step", [7, 100_003, 1 << 30])
def test_large_parts_are_read_into_the_array(step: int) -> None:
    weights = np.arange(600_000, dtype=np.float32)  # 2.4 MB
    value = {"w": weights, "small": np.arange(3, dtype=np.int8)}
    encoded = message_frame(value, 0, 1_000_000, 1_000_000, LONG_OK)
    data = wire(encoded)
    decoder = FrameDecoder(1_000_000, "max_frame_bytes")
    assembler = Assembler(DEFAULT_MAX_MESSAGE_BYTES)
    decoder.sink = assembler
    completed: List[Tuple[Any, int]] = []
    kinds = []
    arrays = []

    def handle(body: Any) -> None:
        if not kinds:
            assert not isinstance(body, PlacedPart)
            assert assembler.header(body) is None
            arrays.append(assembler.current.value["w"])  # type: ignore[union-attr]
            kinds.append("header")
            return
        assert isinstance(body, PlacedPart), "every part is large: read into place"
        kinds.append(body.length)
        done = assembler.placed(body.length)
        if done is not None:
            completed.append(done)

    feed(decoder, data, step, handle)
    target_array = arrays[0]
    assert kinds[1:] == [1_000_000 - 8, 1_000_000 - 8, weights.nbytes - 2 * (1_000_000 - 8)]
    assert len(completed) == 1
    got, size = completed[0]
    assert got["w"] is target_array and np.array_equal(got["w"], weights)
    assert size == encoded.size
    decoder.check_eof()


def test_a_large_part_with_no_header_fails_before_it_is_read() -> None:
    decoder = FrameDecoder(10 * MiB, "max_frame_bytes")
    decoder.sink = Assembler(DEFAULT_MAX_MESSAGE_BYTES)
    part = HEADER.pack(8 + MiB) + PART_PREFIX + bytes(100)
    target = decoder.target()
    target[: len(part)] = part
    decoder.filled(len(part))
    with pytest.raises(fedcomm.ProtocolError, match="a part with no header"):
        decoder.next_body()


def test_a_part_cut_by_the_drop_is_truncated() -> None:
    decoder = FrameDecoder(10 * MiB, "max_frame_bytes")
    assembler = under_way(2 * MiB)
    decoder.sink = assembler
    part = HEADER.pack(8 + 2 * MiB) + PART_PREFIX + bytes(MiB)
    assert feed(decoder, part, 1 << 20) == []
    assert decoder.placed == MiB and assembler.progress(decoder.placed) == (
        len(header(reference(2 * MiB))) + MiB, len(header(reference(2 * MiB))) + 2 * MiB
    )
    with pytest.raises(fedcomm.TruncatedFrameError, match=f"expected {2 * MiB + 8} bytes, received {MiB + 8}"):
        decoder.check_eof()


# ---------------------------------------------------------------------------
# The handshake and the options


def test_hello_announces_max_message_bytes_in_order() -> None:
    resume = ResumeRequest(3, bytes(16), 2)
    hello = Handshake("a", None, {"k": 1}, resume, max_message_bytes=5).hello()
    message = msgpack.unpackb(hello[HEADER_BYTES + 2 :])
    assert list(message) == ["fedcomm", "type", "name", "props", "maxMessageBytes", "resume"]
    assert message["maxMessageBytes"] == 5
    assert "maxMessageBytes" not in msgpack.unpackb(Handshake(None, None).hello()[HEADER_BYTES + 2 :])


def test_invalid_welcome_max_message_bytes() -> None:
    handshake = Handshake(None, None, max_message_bytes=5)
    welcome = {"fedcomm": 3, "type": "welcome", "id": 0, "clients": 1, "maxFrameBytes": 100,
               "grace": 0, "received": 0, "resumed": False, "maxMessageBytes": -1}
    with pytest.raises(fedcomm.ProtocolError, match="Invalid welcome: maxMessageBytes -1"):
        handshake.answer(welcome)


@pytest.mark.parametrize("bad", [-1, 2**53, 1.5, True, "1"])
def test_invalid_max_message_bytes_option(bad: Any) -> None:
    with pytest.raises(ValueError, match="Invalid max_message_bytes"):
        fedcomm.connect("127.0.0.1", 1, max_message_bytes=bad)
