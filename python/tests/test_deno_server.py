"""The client against the real Deno server (``deno_server.ts`` runs ``listen()``).

Skipped until the Deno library speaks protocol version 3 (``_handshake.ts``
with ``PROTOCOL_VERSION = 3``). Deno is run as ``$DENO`` if set, else ``deno``
if on PATH, else ``npx -y deno@2.9.6``. Connections are cut mid-frame through
:class:`Relay`, a TCP relay between the client and the server.
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import pytest

import fedcomm

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent.parent
SCRIPT = TESTS / "deno_server.ts"
SECRET = "correct horse battery staple 42"


def deno_speaks_v3() -> bool:
    # Wherever the library keeps the constant: its sources move between folders.
    sources = list(REPO.glob("*.ts")) + list(REPO.glob("_*/*.ts"))
    return any("PROTOCOL_VERSION = 3" in path.read_text() for path in sources)


def deno_command() -> Optional[List[str]]:
    if os.environ.get("DENO"):
        return shlex.split(os.environ["DENO"])
    if shutil.which("deno"):
        return ["deno"]
    if shutil.which("npx"):
        return ["npx", "-y", "deno@2.9.6"]
    return None


pytestmark = [
    pytest.mark.skipif(
        not deno_speaks_v3(),
        reason="the Deno library does not speak protocol version 3 yet "
        "(no PROTOCOL_VERSION = 3 in its sources)",
    ),
    pytest.mark.skipif(deno_command() is None, reason="no deno: set DENO, or install deno or npx"),
]


class DenoServer:
    """``deno run -A deno_server.ts <config>`` in its own process group."""

    def __init__(self, config: Dict[str, Any]) -> None:
        command = deno_command()
        assert command is not None
        env = dict(os.environ, NO_COLOR="1", DENO_NO_UPDATE_CHECK="1")
        self.proc = subprocess.Popen(
            [*command, "run", "-A", str(SCRIPT), json.dumps(config)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, start_new_session=True,
        )
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self.stderr: List[str] = []
        #: The event lines printed so far (``{"event": …}``), in order.
        self.events: List[Dict[str, Any]] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._line), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self.port: int = self.next(timeout=120)["port"]

    @staticmethod
    def _pump(stream: Any, sink: Callable[[Optional[str]], None]) -> None:
        for line in stream:
            sink(line)
        sink(None)

    def _line(self, line: Optional[str]) -> None:
        if line is not None and not line.startswith("{"):
            self.stderr.append(line)  # (not one of the script's lines: a diagnostic)
        elif line is not None and line.startswith('{"event"'):
            self.events.append(json.loads(line))
        else:
            self.lines.put(line)

    def wait_event(self, event: str, count: int = 1, timeout: float = 30) -> List[Dict[str, Any]]:
        """Waits until ``count`` events of this type were printed; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if e["event"] == event]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} {event!r} events in {timeout} s: {self.events}")
            time.sleep(0.01)

    def next(self, timeout: float = 30) -> Dict[str, Any]:
        """The next JSON line the script printed (events aside)."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"deno printed nothing in {timeout} s; stderr: {self.diagnostics()}"
            ) from None
        if line is None:
            raise AssertionError(f"deno exited ({self.proc.wait()}); stderr: {self.diagnostics()}")
        return json.loads(line)

    def diagnostics(self) -> str:
        """What deno wrote to stderr (and the lines that were not JSON)."""
        return "".join(line for line in self.stderr if line)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own group: npx and its deno child
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for thread in self._threads:
            thread.join(5)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()  # type: ignore[union-attr]


@pytest.fixture
def deno() -> Iterator[Callable[..., DenoServer]]:
    servers: List[DenoServer] = []

    def start(**config: Any) -> DenoServer:
        server = DenoServer(config)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


class Clients:
    """Client threads that answer each round with ``weights * 2 + id``."""

    def __init__(self, count: int, port: int, train: float = 0.0, **kwargs: Any) -> None:
        self.errors: List[BaseException] = []
        self.threads = [
            threading.Thread(target=self._main, args=(i, port, train, kwargs)) for i in range(count)
        ]
        for thread in self.threads:
            thread.start()

    def _main(self, index: int, port: int, train: float, kwargs: Dict[str, Any]) -> None:
        try:
            with fedcomm.connect("127.0.0.1", port, name=f"site-{index}", **kwargs) as client:
                for message in client:
                    weights = message["weights"]
                    assert weights.dtype == np.float32 and np.all(weights == message["round"])
                    time.sleep(train)  # not reading: the I/O thread answers the pings
                    client.reply({"round": message["round"], "weights": weights * 2 + client.id,
                                  "name": client.name})
        except BaseException as error:  # pragma: no cover - reported by join()
            self.errors.append(error)

    def join(self) -> None:
        """Waits for the clients (their loops end when the server closes)."""
        for thread in self.threads:
            thread.join(60)
        assert self.errors == []


def check_rounds(server: DenoServer, rounds: int, size: int, clients: int) -> None:
    for round_ in range(1, rounds + 1):
        line = server.next()
        assert line.get("round") == round_, line
        answers = sorted(line["answers"], key=lambda a: a["id"])
        assert [a["id"] for a in answers] == list(range(clients))
        for answer in answers:
            assert answer["round"] == round_
            assert answer["type"] == "Float32Array" and answer["length"] == size
            assert answer["sum"] == size * (2 * round_ + answer["id"])
    assert server.next() == {"done": True}


def test_fedavg_rounds(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=3, rounds=3, size=1000)
    clients = Clients(3, server.port)
    check_rounds(server, 3, 1000, 3)
    clients.join()


def test_wait_for_server(deno: Callable[..., DenoServer]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clients = Clients(2, port, wait_for_server=True, timeout=60)
    time.sleep(0.5)
    server = deno(clients=2, port=port)
    check_rounds(server, 1, 1000, 2)
    clients.join()


def test_authentication(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=1, secret=SECRET)
    with pytest.raises(fedcomm.RejectedError) as info:
        fedcomm.connect("127.0.0.1", server.port)
    assert info.value.reason == "auth"
    with pytest.raises(fedcomm.AuthenticationError, match="proof does not match"):
        fedcomm.connect("127.0.0.1", server.port, secret="incorrect horse battery staple 1", name="site-9")
    refused = server.wait_event("refuse", count=2)
    assert [(e["reason"], e.get("name")) for e in refused] == [("auth", None), ("auth", "site-9")]
    assert refused[1]["message"].startswith('Authentication failed for "site-9": the client left after')
    clients = Clients(1, server.port, secret=SECRET)
    check_rounds(server, 1, 1000, 1)
    clients.join()


def test_per_name_secrets(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=1, secrets={"site-0": SECRET})
    with pytest.raises(fedcomm.AuthenticationError, match="unknown name"):
        fedcomm.connect("127.0.0.1", server.port, name="intruder", secret=SECRET)
    clients = Clients(1, server.port, secret=SECRET)  # named site-0
    check_rounds(server, 1, 1000, 1)
    clients.join()


def test_tls(deno: Callable[..., DenoServer], certs: Dict[str, str]) -> None:
    server = deno(clients=1, tls={"cert": certs["cert"], "key": certs["key"]}, secret=SECRET)
    with pytest.raises(fedcomm.AuthenticationError, match="TLS certificate verification failed"):
        fedcomm.connect("127.0.0.1", server.port, tls=certs["other_ca"], secret=SECRET)
    with pytest.raises(fedcomm.ProtocolError, match=r"^Server speaks TLS: pass tls=.*TLS record"):
        fedcomm.connect("127.0.0.1", server.port, secret=SECRET, timeout=10)
    clients = Clients(1, server.port, tls=certs["ca"], secret=SECRET)
    check_rounds(server, 1, 1000, 1)
    clients.join()


def test_tls_client_to_plain_server(deno: Callable[..., DenoServer], certs: Dict[str, str]) -> None:
    server = deno(clients=1)
    with pytest.raises(fedcomm.PeerDisconnectedError, match=r"during the TLS handshake: .*it may not speak TLS"):
        fedcomm.connect("127.0.0.1", server.port, tls=certs["ca"], timeout=10)
    refused = server.wait_event("refuse")
    assert refused[0]["reason"] == "tls"
    clients = Clients(1, server.port)
    check_rounds(server, 1, 1000, 1)
    clients.join()


def test_max_frame_bytes_below_64_kib_applies_to_the_welcome(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=1)
    with pytest.raises(fedcomm.FrameTooLargeError) as info:
        fedcomm.connect("127.0.0.1", server.port, max_frame_bytes=64, timeout=10)
    assert info.value.limit == 64


def test_large_broadcast_progress_and_pings(deno: Callable[..., DenoServer]) -> None:
    size = 4 * 1024 * 1024  # 16 MiB of float32
    server = deno(clients=1, size=size, hold=500)
    events: List[fedcomm.Progress] = []
    with fedcomm.connect("127.0.0.1", server.port, heartbeat=0.1, idle_timeout=5,
                         on_progress=events.append) as client:
        message = client.recv(timeout=30)
        assert message["weights"].shape == (size,)
        received = [e for e in events if e.direction == "receive"]
        assert received[-1].done == received[-1].total > 16 * 1024 * 1024
        assert len(received) == -(-received[-1].total // (4 * 1024 * 1024))
        time.sleep(0.5)  # "training": the I/O thread pings, Deno answers
        assert client.rtt is not None
        client.reply({"round": 1, "weights": message["weights"] * 2})
        sent = [e for e in events if e.direction == "send"]
        assert sent[-1].done == sent[-1].total
        line = server.next()
        assert line["answers"][0]["sum"] == 2 * size
        assert server.next() == {"done": True}
        with pytest.raises(fedcomm.PeerDisconnectedError, match="Server closed the session"):
            client.recv(timeout=10)  # c1 06: no resume


def test_deno_pings_a_training_client(deno: Callable[..., DenoServer]) -> None:
    """Deno pings every 200 ms and declares a client dead after 1 s of
    silence; a client that never pings by itself and trains for 2.5 s without
    reading survives, because its I/O thread answers the pings."""
    server = deno(clients=2, rounds=1, heartbeatMs=200, idleTimeout=1000)
    clients = Clients(2, server.port, train=2.5, heartbeat=None, idle_timeout=None)
    check_rounds(server, 1, 1000, 2)
    clients.join()


def test_full_and_frame_limit(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=1, maxFrameBytes=10_000, hold=300)
    # (Without long messages: a value over the frame limit cannot be sent.)
    with fedcomm.connect("127.0.0.1", server.port, max_message_bytes=0) as client:
        assert client.server_max_frame_bytes == 10_000
        assert client.server_max_message_bytes == 0 and "maxMessageBytes" not in client.welcome
        with pytest.raises(fedcomm.RejectedError) as info:
            fedcomm.connect("127.0.0.1", server.port)
        assert info.value.reason == "full"
        message = client.recv(timeout=30)
        with pytest.raises(fedcomm.FrameTooLargeError):
            client.reply({"round": 1, "weights": np.zeros(10_000, np.float32)})
        client.reply({"round": 1, "weights": message["weights"] * 2})
        assert server.next()["answers"][0]["sum"] == 2 * 1000
        assert server.next() == {"done": True}


class Relay:
    """A TCP relay on 127.0.0.1 to the server that can drop its current
    connection after a number of bytes in either direction: mid-frame."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        #: Bytes relayed on the current connection: server to client, client to server.
        self.down = 0
        self.up = 0
        #: Connections relayed, and connections cut.
        self.connections = 0
        self.cuts = 0
        self._cut_down: Optional[int] = None
        self._cut_up: Optional[int] = None
        self._pair: List[socket.socket] = []
        self._stop = False
        self._threads: List[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def cut_after(self, down: Optional[int] = None, up: Optional[int] = None) -> None:
        """Drops the current (or next) connection once ``down`` bytes went to
        the client, or ``up`` bytes to the server, on it."""
        with self.lock:
            self._cut_down, self._cut_up = down, up

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                self.down = self.up = 0
                self._pair = [client, server]
            for args in ((server, client, "down"), (client, server, "up")):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                self._threads.append(thread)
                thread.start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while True:
                with self.lock:
                    limit = self._cut_down if direction == "down" else self._cut_up
                    done = self.down if direction == "down" else self.up
                want = 1 << 16 if limit is None else min(1 << 16, limit - done)
                if want <= 0:
                    self._cut(source, sink)
                    return
                data = source.recv(want)
                if not data:
                    break
                sink.sendall(data)
                with self.lock:
                    if direction == "down":
                        self.down += len(data)
                    else:
                        self.up += len(data)
        except OSError:
            pass
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _cut(self, *socks: socket.socket) -> None:
        with self.lock:
            self.cuts += 1
            self._cut_down = self._cut_up = None
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        with self.lock:
            pair = list(self._pair)
        self._cut(*pair)
        for thread in self._threads:
            thread.join(5)


MiB = 1024 * 1024


def test_resume_through_dropped_connections(deno: Callable[..., DenoServer]) -> None:
    """A 16 MiB broadcast cut in the middle, then a 16 MiB reply cut in the
    middle: the client resumes each time and the rounds complete, exactly."""
    size = 4 * MiB  # float32: 16 MiB
    server = deno(clients=1, rounds=2, size=size, timeout=60_000)
    relay = Relay(server.port)
    relay.cut_after(down=8 * MiB)
    resumes: List[int] = []
    try:
        with fedcomm.connect("127.0.0.1", relay.port, name="site-0", on_resume=resumes.append) as client:
            assert client.grace == 300  # the Deno default: 300,000 ms
            first = client.recv(timeout=60)
            assert first["round"] == 1 and np.all(first["weights"] == 1)
            assert resumes == [1] and relay.cuts == 1
            relay.cut_after(up=relay.up + 8 * MiB)
            client.reply({"round": 1, "weights": first["weights"] * 2 + client.id, "name": client.name})
            second = client.recv(timeout=60)
            assert second["round"] == 2 and client.last_received == 2
            client.reply({"round": 2, "weights": second["weights"] * 2 + client.id, "name": client.name})
            check_rounds(server, 2, size, 1)
            assert resumes == [1, 2] and relay.cuts == 2
        kinds = [e["event"] for e in server.events]
        assert kinds.count("disconnect") == 2 and kinds.count("resume") == 2
        assert kinds[0] == "join" and "leave" not in kinds[:-1]
    finally:
        relay.close()


def test_props_and_close_leave_at_once(deno: Callable[..., DenoServer]) -> None:
    """The props reach the server; close() sends c1 06, so the server ends the
    session at once instead of waiting 300 s for a resume."""
    server = deno(clients=1, rounds=0, hold=5000)
    props = {"site": "hospital-a", "gpus": 2, "fast": True, "note": None, "ratio": 0.5}
    client = fedcomm.connect("127.0.0.1", server.port, name="site-0", props=props)
    join = server.wait_event("join")[0]
    assert (join["id"], join["name"], join["props"]) == (0, "site-0", props)
    start = time.monotonic()
    client.close()
    leave = server.wait_event("leave", timeout=5)[0]
    assert leave["id"] == 0 and time.monotonic() - start < 3
    assert "resume" not in [e["event"] for e in server.events]
    assert server.next(timeout=30) == {"done": True}


def test_late_reply_is_not_an_answer(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=1, rounds=1, double=True)
    with fedcomm.connect("127.0.0.1", server.port, name="site-0") as client:
        first, second = client.recv(timeout=30), client.recv(timeout=30)
        assert (first["copy"], second["copy"]) == (1, 2) and client.last_received == 2
        client.reply({"round": 0, "weights": first["weights"]}, to=1)  # answers the older one: late
        client.reply({"round": 1, "weights": second["weights"] * 2 + client.id, "name": client.name})
        line = server.next()
        assert line["late"] == {"0": 1} and line["quorum"] is True and line["failed"] == {}
        assert [(a["id"], a["round"], a["sum"]) for a in line["answers"]] == [(0, 1, 2 * 1000)]
        late = server.wait_event("late")[0]
        assert (late["id"], late["replyTo"], late["latest"], late["round"]) == (0, 1, 2, 0)
        assert server.next() == {"done": True}


def test_gather_settled_with_a_straggler(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=3, rounds=1, settled={"min": 2, "grace": 200}, hold=2500, timeout=10_000)
    fast = Clients(2, server.port)
    slow_ids: List[int] = []

    def straggler() -> None:
        with fedcomm.connect("127.0.0.1", server.port, name="slow") as client:
            slow_ids.append(client.id)
            for message in client:
                time.sleep(1.5)  # training, while the server settles without it
                client.reply({"round": message["round"], "weights": message["weights"]})

    slow = threading.Thread(target=straggler)
    slow.start()
    start = time.monotonic()
    line = server.next()
    assert time.monotonic() - start < 20
    assert line["quorum"] is True and len(line["answers"]) == 2
    assert list(line["failed"]) == [str(slow_ids[0])] and "TimeoutError" in line["failed"][str(slow_ids[0])]
    assert all(a["sum"] == 1000 * (2 + a["id"]) for a in line["answers"])
    assert server.next() == {"done": True}
    fast.join()
    slow.join(30)
    assert not slow.is_alive()


def ramp(size: int, round_: int) -> np.ndarray:
    """The weights ``deno_server.ts`` sends with ``ramp``: ``(i % 1000) + round``."""
    return ((np.arange(size) % 1000) + round_).astype(np.float32)


def test_long_messages_both_ways(deno: Callable[..., DenoServer]) -> None:
    """A mixed cohort with maxFrameBytes 1 MiB: the server broadcasts 3 MiB of
    float32 and a small field as a long message, the Python client receives
    the array in place, equal, and replies with 3 MiB, a long message that
    gather() takes equal; a Deno-like client with long messages off gets
    nothing too large."""
    size = 3 * MiB // 4 + 5  # 3 MiB and 20 bytes of float32: four parts of 1 MiB - 8
    server = deno(clients=1, rounds=2, size=size, maxFrameBytes=MiB, ramp=True, tag="small")
    events: List[fedcomm.Progress] = []
    with fedcomm.connect("127.0.0.1", server.port, name="site-0", on_progress=events.append) as client:
        assert client.server_max_frame_bytes == MiB
        assert client.server_max_message_bytes == fedcomm.DEFAULT_MAX_MESSAGE_BYTES
        for round_ in (1, 2):
            message = client.recv(timeout=30)
            assert message["round"] == round_ and message["tag"] == "small"
            weights = message["weights"]
            assert weights.dtype == np.float32 and weights.shape == (size,)
            assert np.array_equal(weights, ramp(size, round_))
            assert weights.base is None or weights.base.nbytes == weights.nbytes  # its own memory
            assert not weights.flags.writeable
            received = [e for e in events if e.direction == "receive"]
            assert received[-1].done == received[-1].total > 3 * MiB  # one message of its size
            events.clear()
            client.reply({"round": round_, "weights": weights * 2 + client.id,
                          "name": client.name, "tag": message["tag"]}, timeout=30)
            assert client.retained_bytes == 0  # a long send returns once acknowledged
            sent = [e for e in events if e.direction == "send"]
            assert sent[-1].done == sent[-1].total > 3 * MiB
            assert all(b.done > a.done for a, b in zip(sent, sent[1:]))
            line = server.next()
            assert line["round"] == round_, line
            (answer,) = line["answers"]
            assert answer["exact"] is True and answer["length"] == size and answer["tag"] == "small"
            events.clear()
        assert server.next() == {"done": True}
        assert client.messages_received == 2 and client.messages_sent == 2


def test_long_message_too_large_for_the_server(deno: Callable[..., DenoServer]) -> None:
    server = deno(clients=1, rounds=1, size=1000, maxFrameBytes=MiB, maxMessageBytes=2 * MiB)
    with fedcomm.connect("127.0.0.1", server.port, name="site-0") as client:
        assert client.server_max_message_bytes == 2 * MiB
        message = client.recv(timeout=30)
        with pytest.raises(fedcomm.MessageTooLargeError) as info:
            client.reply({"round": 1, "weights": np.zeros(MiB, np.float32)})  # 4 MiB
        assert info.value.limit == 2 * MiB and "the server's maxMessageBytes" in str(info.value)
        client.reply({"round": 1, "weights": message["weights"] * 2, "name": client.name})
        assert server.next()["answers"][0]["sum"] == 2 * 1000
        assert server.next() == {"done": True}


def test_resume_in_the_middle_of_long_messages(deno: Callable[..., DenoServer]) -> None:
    """The connection is cut in the middle of a long broadcast (between its
    parts), then in the middle of a long reply: after each resume the message
    is sent again from its header and delivered exactly once."""
    size = 12 * MiB // 4  # 12 MiB of float32: 13 parts of 1 MiB - 8
    server = deno(clients=1, rounds=2, size=size, maxFrameBytes=MiB, ramp=True, tag="t",
                  timeout=60_000)
    relay = Relay(server.port)
    relay.cut_after(down=6 * MiB)
    resumes: List[int] = []
    try:
        with fedcomm.connect("127.0.0.1", relay.port, name="site-0", on_resume=resumes.append) as client:
            first = client.recv(timeout=60)
            assert first["round"] == 1 and np.array_equal(first["weights"], ramp(size, 1))
            assert resumes == [1] and relay.cuts == 1
            relay.cut_after(up=relay.up + 6 * MiB)
            client.reply({"round": 1, "weights": first["weights"] * 2 + client.id,
                          "name": client.name, "tag": "t"}, timeout=60)
            second = client.recv(timeout=60)
            assert second["round"] == 2 and client.last_received == 2  # nothing duplicated
            assert resumes == [1, 2] and relay.cuts == 2
            client.reply({"round": 2, "weights": second["weights"] * 2 + client.id,
                          "name": client.name, "tag": "t"}, timeout=60)
            for round_ in (1, 2):
                line = server.next(timeout=60)
                assert line["round"] == round_ and len(line["answers"]) == 1, line
                assert line["answers"][0]["exact"] is True
            assert server.next() == {"done": True}
            with pytest.raises(fedcomm.PeerDisconnectedError):
                client.recv(timeout=10)  # the close: no third message
        kinds = [e["event"] for e in server.events]
        assert kinds.count("disconnect") == 2 and kinds.count("resume") == 2
    finally:
        relay.close()
