"""A handshake flood for `bench/admission.ts`: keeps COUNT connections open to
127.0.0.1:PORT from ADDRESSES source addresses (127.0.0.2, 127.0.0.3, ...),
each silent (`idle`) or dripping a hello one byte per second, never its
last byte (`drip`), renewing each one after RENEW seconds and reconnecting at once
whenever the server closes one, for SECONDS seconds. Prints one JSON line:
how many connections it made, how many `busy` rejects it read, how many the
server closed.

    python3 bench/_flood.py PORT MODE COUNT ADDRESSES RENEW SECONDS
"""

import json
import resource
import selectors
import socket
import sys
import time

port, mode, count, addresses, renew, seconds = (
    int(sys.argv[1]),
    sys.argv[2],
    int(sys.argv[3]),
    int(sys.argv[4]),
    float(sys.argv[5]),
    float(sys.argv[6]),
)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 64)), hard))

#: A hello frame (c1 03 + {fedcomm: 3, type: "hello"}), dripped one byte per second.
HELLO = bytes([0, 0, 0, 23, 0xC1, 0x03, 0x82, 0xA7]) + b"fedcomm" + bytes([3, 0xA4]) + b"type" + bytes([0xA5]) + b"hello"
assert len(HELLO) == 4 + 23

selector = selectors.DefaultSelector()
made = busy = closed = 0
slot = 0


def open_one(now: float) -> None:
    """Opens one connection (non-blocking) from the next source address."""
    global made, slot
    source = f"127.0.0.{2 + slot % addresses}"
    slot += 1
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((source, 0))
        sock.connect_ex(("127.0.0.1", port))
    except OSError:
        sock.close()
        return
    made += 1
    selector.register(sock, selectors.EVENT_READ, {"born": now, "dripped": now, "sent": 0})


end = time.monotonic() + seconds
for _ in range(count):
    open_one(time.monotonic())
while True:
    now = time.monotonic()
    if now >= end:
        break
    for key, _ in selector.select(timeout=0.05):
        sock = key.fileobj
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        if b"busy" in data:
            busy += 1
        if data == b"" or b"busy" in data:
            closed += 1
            selector.unregister(sock)
            sock.close()
            open_one(now)
    for key in list(selector.get_map().values()):
        state = key.data
        sock = key.fileobj
        if now - state["born"] >= renew:
            selector.unregister(sock)
            sock.close()
            open_one(now)
        elif mode == "drip" and now - state["dripped"] >= 1.0 and state["sent"] < len(HELLO) - 1:
            state["dripped"] = now
            try:
                sock.send(HELLO[state["sent"] : state["sent"] + 1])
                state["sent"] += 1
            except OSError:
                pass
print(json.dumps({"made": made, "busy": busy, "closed": closed}))
