"""Long messages being received (PROTOCOL.md §8.8): :class:`Assembly`, one
long message from its header to its last part, and :class:`Assembler`, the
long message under way on one connection and the rules of what may arrive
before it is complete.

A long message is a header frame (``c1 07`` + u48 request + the skeleton)
and part frames (``c1 08`` + six zero bytes + data). The header's skeleton is
decoded at once: each reference becomes memory of exactly its length (a numpy
array's own memory for array data), allocated only after the running size
(header body plus the references so far) was checked against
``max_message_bytes``. The parts then fill the references in order; large
parts are read straight into that memory by the frame decoder
(:meth:`Assembler.place`), small ones copied there (:meth:`Assembler.part`).

Between a header and its last part only pings, pongs, acks and heartbeats
(and a close, which ends the session) may come; anything else is a protocol
error. An assembler belongs to one connection: a drop discards the partial
message with it, and the server sends it again whole after the resume.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

from ..errors import MessageTooLargeError, ProtocolError
from .codec import decode_skeleton
from .framing import LONG_PREFIX_BYTES, PART

__all__ = ["Assembler", "Assembly", "Completed"]

Buffer = Union[bytes, bytearray, memoryview]
#: A complete long message: its value and its size.
Completed = Tuple[Any, int]

_PART_PREFIX = bytes((0xC1, PART)) + bytes(LONG_PREFIX_BYTES - 2)


class Assembly:
    """One long message being received.

    Args:
        body: The header's body: ``c1 07``, the request, the skeleton.
        max_message_bytes: The largest message accepted.

    Raises:
        MessageTooLargeError: The references take the message past
            ``max_message_bytes`` (nothing was allocated past it).
        ProtocolError: The skeleton is malformed (or a reference is empty).
    """

    def __init__(self, body: Buffer, max_message_bytes: int) -> None:
        #: The message it answers (0: none).
        self.request = int.from_bytes(body[2:LONG_PREFIX_BYTES], "big")
        #: The header body's size.
        self.header_bytes = len(body)
        size = len(body)

        def charge(length: int) -> None:
            nonlocal size
            size += length
            if size > max_message_bytes:
                raise MessageTooLargeError(size, max_message_bytes, "max_message_bytes")

        skeleton = decode_skeleton(memoryview(body)[LONG_PREFIX_BYTES:], charge)
        #: The value (complete once every reference is filled).
        self.value = skeleton.value
        #: The message's size: the header body plus the references' lengths.
        self.size = size
        self._refs: List[memoryview] = skeleton.refs
        self._arrays = skeleton.arrays
        self._index = 0  # the reference being filled
        self._offset = 0  # bytes of it filled
        #: Reference bytes received so far.
        self.filled = 0
        self._finish_if_complete()

    @property
    def complete(self) -> bool:
        """Whether every reference is filled."""
        return self._index == len(self._refs)

    @property
    def received(self) -> int:
        """Bytes of the message received: the header body and the data so far."""
        return self.header_bytes + self.filled

    def _left(self, length: int) -> memoryview:
        """The current reference, checking that ``length`` more bytes fit in it."""
        count = len(self._refs)
        left = len(self._refs[self._index]) - self._offset if self._index < count else 0
        if length == 0 or length > left:
            raise ProtocolError(
                f"Invalid long message: a part of {length} bytes, but reference "
                f"{self._index + 1} of {count} has {left} left"
            )
        return self._refs[self._index]

    def target(self, length: int) -> memoryview:
        """Where the next ``length`` data bytes go (then :meth:`part` with the count).

        Raises:
            ProtocolError: Empty, or more than the reference has left.
        """
        ref = self._left(length)
        return ref[self._offset : self._offset + length]

    def part(self, data: Union[Buffer, int]) -> None:
        """A part's data arrived: ``data`` to copy in place, or how many bytes
        were read into :meth:`target`.

        Raises:
            ProtocolError: Empty, or more than the reference has left.
        """
        length = data if isinstance(data, int) else len(data)
        ref = self._left(length)
        if not isinstance(data, int):
            ref[self._offset : self._offset + length] = data
        self._offset += length
        self.filled += length
        if self._offset == len(ref):
            self._index += 1
            self._offset = 0
            self._finish_if_complete()

    def _finish_if_complete(self) -> None:
        if self.complete:
            # Like the arrays of a plain message: .copy() one to change it.
            for array in self._arrays:
                array.flags.writeable = False

    def interrupted(self, what: str) -> ProtocolError:
        """The error for ``what`` (another frame) arriving before the message is complete."""
        return ProtocolError(
            f"Invalid long message: {what} before reference {self._index + 1} of "
            f"{len(self._refs)} arrived"
        )


class Assembler:
    """The long messages of one connection, as the client receives them.

    Args:
        max_message_bytes: The client's ``max_message_bytes`` (0: it takes no
            long messages, and announced none).
    """

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        #: The long message under way (``None``: none).
        self.current: Optional[Assembly] = None

    def header(self, body: Buffer) -> Optional[Completed]:
        """A header (``c1 07``, at least 9 bytes): returns the message if it
        is complete already (no references).

        Raises:
            ProtocolError: Another long message is under way, this client
                takes none, or the header answers a request (a server sends
                no replies), or the skeleton is malformed.
            MessageTooLargeError: The message exceeds ``max_message_bytes``.
        """
        self.check_between("a long message header")
        if self.max_message_bytes == 0:
            raise ProtocolError(
                "Unexpected long message (c1 07): this client takes none (max_message_bytes 0)"
            )
        request = int.from_bytes(body[2:LONG_PREFIX_BYTES], "big")
        if request != 0:
            raise ProtocolError(
                f"Invalid long message: the server's header answers message {request}, "
                "but a server sends no replies"
            )
        assembly = Assembly(body, self.max_message_bytes)
        if assembly.complete:
            return assembly.value, assembly.size
        self.current = assembly
        return None

    def _assembly(self, prefix: Buffer) -> Assembly:
        if bytes(prefix[:LONG_PREFIX_BYTES]) != _PART_PREFIX:
            raise ProtocolError(
                "Invalid long message: a part whose prefix is not c1 08 and six zero "
                f"bytes: {bytes(prefix[:LONG_PREFIX_BYTES]).hex()}"
            )
        if self.current is None:
            raise ProtocolError("Invalid long message: a part with no header")
        return self.current

    def place(self, prefix: bytes, length: int) -> memoryview:
        """Where a large part's ``length`` data bytes go (the frame decoder
        reads them there, then :meth:`placed`); see :class:`~fedcomm._protocol.framing.PartSink`.

        Raises:
            ProtocolError: A bad prefix, no header, or data that does not fit.
        """
        return self._assembly(prefix).target(length)

    def placed(self, length: int) -> Optional[Completed]:
        """A large part's data was read into place: returns the message if complete."""
        assert self.current is not None
        self.current.part(length)
        return self._completed()

    def part(self, body: Buffer) -> Optional[Completed]:
        """A part (``c1 08`` + six zero bytes + data) whose data is copied into
        place: returns the message if it is complete.

        Raises:
            ProtocolError: A bad prefix, no header, or data that does not fit.
        """
        self._assembly(body).part(memoryview(body)[LONG_PREFIX_BYTES:])
        return self._completed()

    def _completed(self) -> Optional[Completed]:
        assembly = self.current
        assert assembly is not None
        if not assembly.complete:
            return None
        self.current = None
        return assembly.value, assembly.size

    def check_between(self, what: str) -> None:
        """Raises if a long message is under way: ``what`` (an application
        message, a header) may not come before its last part.

        Raises:
            ProtocolError: A long message is under way.
        """
        if self.current is not None:
            raise self.current.interrupted(what)

    def progress(self, placing: int) -> Optional[Tuple[int, int]]:
        """``(done, total)`` bytes of the long message under way, with
        ``placing`` data bytes of a part being read into place (``None``: none
        is under way)."""
        assembly = self.current
        if assembly is None:
            return None
        return assembly.received + placing, assembly.size
