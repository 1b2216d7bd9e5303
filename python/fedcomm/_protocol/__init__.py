"""The fedcomm protocol without I/O: no sockets, no threads, no sleeping.

Each module is a piece of protocol version 3 (``PROTOCOL.md``) that the I/O
layer of the package (``_io.py``, ``_connector.py``, ``_resume.py``) drives:

- ``framing``: the frame header, the control frame kinds, and the frame
  decoder (bytes in, bodies out);
- ``outframe``: the frame encoder (a frame written in chunks, the application
  message and control frames, the frames of a long message);
- ``codec``: MessagePack values and the msgpack-numpy array convention, and
  the skeletons of long messages (PROTOCOL.md §8.8);
- ``assembly``: the long message being received on a connection;
- ``auth``, ``props`` and ``handshake``: the proofs, the hello's metadata and
  the handshake state machine;
- ``acks``, ``retention``, ``inbox`` and ``session``: the session's numbering,
  acknowledgements, unacknowledged messages, received values and frames due;
- ``traffic``: byte counts, liveness timers and pings.

Time is an argument (``now``) wherever it matters, so every decision can be
replayed in a test.
"""
