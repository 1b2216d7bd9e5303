"""fedcomm: the Python client of the fedcomm federated-learning communication layer.

A coordinator server (the Deno ``listen()``) and N clients exchange MessagePack
values in length-delimited frames over TCP or TLS, protocol version 3 (see
``PROTOCOL.md`` at the root of the repository). numpy arrays travel in the
msgpack-numpy convention, so model weights need no conversion.

Example::

    import fedcomm

    with fedcomm.connect("127.0.0.1", 9000, wait_for_server=True) as client:
        print(f"client {client.id} of {client.clients}")
        for message in client:  # every message until the server ends the session
            update = message["weights"] * 0.5  # "training"
            client.reply({"round": message["round"], "weights": update})

A background I/O thread keeps the connection alive while your code trains: it
answers the server's pings, sends its own after ``heartbeat`` seconds without
writing, and declares the server dead after ``idle_timeout`` seconds of
silence. Messages are acknowledged each way; when the connection drops, the
thread reconnects and resumes the session within the server's grace period,
sending again what the server did not receive.
"""

from ._protocol.codec import decode, encode
from ._protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    HANDSHAKE_FRAME_BYTES,
)
from ._protocol.handshake import PROTOCOL_VERSION
from .client import (
    DEFAULT_HEARTBEAT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_RETAIN_BYTES,
    DEFAULT_TIMEOUT,
    QUEUE_LIMIT_BYTES,
    Client,
    DisconnectCallback,
    Progress,
    ProgressCallback,
    PropValue,
    ResumeCallback,
    connect,
)
from .errors import (
    AuthenticationError,
    FedcommError,
    FedcommTimeoutError,
    FrameTooLargeError,
    MessageTooLargeError,
    PeerDisconnectedError,
    ProtocolError,
    RejectedError,
    SendTimeoutError,
    TruncatedFrameError,
)
from . import fl  # the site side of the FL layer: fl.tasks(client), fl.run_site(...)

#: The version of this package.
__version__ = "0.3.0"

__all__ = [
    "AuthenticationError",
    "Client",
    "DEFAULT_HEARTBEAT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_RETAIN_BYTES",
    "DEFAULT_TIMEOUT",
    "DisconnectCallback",
    "FedcommError",
    "FedcommTimeoutError",
    "FrameTooLargeError",
    "HANDSHAKE_FRAME_BYTES",
    "MessageTooLargeError",
    "PROTOCOL_VERSION",
    "PeerDisconnectedError",
    "Progress",
    "ProgressCallback",
    "PropValue",
    "ProtocolError",
    "QUEUE_LIMIT_BYTES",
    "RejectedError",
    "ResumeCallback",
    "SendTimeoutError",
    "TruncatedFrameError",
    "__version__",
    "connect",
    "decode",
    "encode",
    "fl",
]
