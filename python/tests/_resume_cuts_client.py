"""The Python side of resume_cuts_test.ts (not a pytest module: run by the Deno test).

Usage: _resume_cuts_client.py PYTHON_DIR PORT SECRET NAME WORDS

Connects with the secret, then takes the server's messages one by one. Each
carries ``seq`` (it must be the next number: 1, 2, 3, ...), a payload checked
here (``text``, or ``big``: a uint32 array whose word i is i + 1000 + seq) and
``then``: what to do after taking it, in order: ``{"sleep": ms}``,
``{"send": k, "big": bool}`` (an unsolicited message number k of the client)
or ``{"reply": k}`` (message number k, a reply to the message just taken). A
message with ``end`` true is the last: the client then waits 300 ms to see
that nothing more comes, closes (which waits for the server's acks of what
it sent) and prints a JSON summary on stdout.
"""

import json
import sys
import time

sys.path.insert(0, sys.argv[1])

import numpy as np  # noqa: E402

import fedcomm  # noqa: E402

PORT, SECRET, NAME, WORDS = int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])


def pattern(salt):
    return (np.arange(WORDS, dtype=np.uint64) + salt).astype(np.uint32)


def up_value(seq, big=False, reply_to=None):
    value = {"dir": "up", "seq": seq, "text": "u%d" % seq, "x": seq * 1.5}
    if big:
        value["big"] = pattern(2000 + seq)
    if reply_to is not None:
        value["reply_to"] = reply_to
    return value


def main():
    received = []
    client = fedcomm.connect("127.0.0.1", PORT, timeout=10, name=NAME, secret=SECRET)
    try:
        while True:
            message = client.recv(timeout=30)
            seq = message["seq"]
            assert message["dir"] == "down", message
            assert seq == len(received) + 1, "got %r after %r" % (seq, received)
            if "big" in message:
                big = message["big"]
                assert big.dtype == np.uint32 and big.shape == (WORDS,), (big.dtype, big.shape)
                assert np.array_equal(big, pattern(1000 + seq)), "message %d: big corrupt" % seq
            else:
                assert message["text"] == "d%d" % seq, message
            received.append(seq)
            for action in message["then"]:
                if "sleep" in action:
                    time.sleep(action["sleep"] / 1000)
                elif "reply" in action:
                    client.reply(up_value(action["reply"], reply_to=client.last_received),
                                 timeout=20)
                else:
                    client.send(up_value(action["send"], big=action.get("big", False)),
                                timeout=20)
            if message.get("end"):
                break
        try:
            extra = client.recv(timeout=0.3)
        except fedcomm.FedcommTimeoutError:
            pass
        else:
            raise AssertionError("a message after the end: %r" % (extra,))
        summary = {
            "id": client.id,
            "received": received,
            "messagesReceived": client.messages_received,
            "messagesSent": client.messages_sent,
            "resumes": client.resumes,
        }
    finally:
        client.close()
    print(json.dumps(summary))


main()
