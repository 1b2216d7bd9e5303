"""The Python side of bench/python.ts: a fedcomm client that echoes the weights.

    PYTHONPATH=python /usr/bin/python3 bench/_python_client.py PORT

Connects to 127.0.0.1:PORT, then for every message: the string "stop" closes
the client and exits; anything else, ``{"round", "weights"}``, is answered
with ``client.reply({"round", "weights"})``, the received numpy array itself
(a read-only view of the received frame, not copied). Bounded: it gives up
when nothing arrives for 120 s, and a watchdog ends the process after 600 s
whatever happens.
"""
import sys
import threading
import os

import fedcomm

TIMEOUT = 120.0


def main(port: int) -> None:
    watchdog = threading.Timer(600.0, lambda: os._exit(3))
    watchdog.daemon = True
    watchdog.start()
    with fedcomm.connect(
        "127.0.0.1", port, wait_for_server=True, timeout=TIMEOUT, idle_timeout=TIMEOUT
    ) as client:
        while True:
            try:
                message = client.recv(timeout=TIMEOUT)
            except fedcomm.PeerDisconnectedError:
                return
            if message == "stop":
                return
            client.reply({"round": message["round"], "weights": message["weights"]})


if __name__ == "__main__":
    main(int(sys.argv[1]))
