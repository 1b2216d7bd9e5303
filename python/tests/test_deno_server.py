"""The client against the real Deno server (``deno_server.ts`` runs ``listen()``).

Skipped until the Deno library speaks protocol version 2 (``_handshake.ts``
with ``PROTOCOL_VERSION = 2``). Deno is run as ``$DENO`` if set, else ``deno``
if on PATH, else ``npx -y deno@2.9.6``.
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


def deno_speaks_v2() -> bool:
    handshake = REPO / "_handshake.ts"
    return handshake.is_file() and "PROTOCOL_VERSION = 2" in handshake.read_text()


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
        not deno_speaks_v2(),
        reason="the Deno library does not speak protocol version 2 yet "
        "(_handshake.ts lacks PROTOCOL_VERSION = 2)",
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
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True),
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

    def next(self, timeout: float = 30) -> Dict[str, Any]:
        """The next JSON line the script printed."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"deno printed nothing in {timeout} s; stderr: {''.join(self.stderr)}"
            ) from None
        if line is None:
            raise AssertionError(f"deno exited ({self.proc.wait()}); stderr: {''.join(self.stderr)}")
        return json.loads(line)

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
                    client.send({"round": message["round"], "weights": weights * 2 + client.id,
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
        fedcomm.connect("127.0.0.1", server.port, secret="incorrect horse battery staple 1")
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
    clients = Clients(1, server.port, tls=certs["ca"], secret=SECRET)
    check_rounds(server, 1, 1000, 1)
    clients.join()


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
        client.send({"round": 1, "weights": message["weights"] * 2})
        sent = [e for e in events if e.direction == "send"]
        assert sent[-1].done == sent[-1].total
        line = server.next()
        assert line["answers"][0]["sum"] == 2 * size
        assert server.next() == {"done": True}
        with pytest.raises(fedcomm.PeerDisconnectedError):
            client.recv(timeout=10)


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
    with fedcomm.connect("127.0.0.1", server.port) as client:
        assert client.server_max_frame_bytes == 10_000
        with pytest.raises(fedcomm.RejectedError) as info:
            fedcomm.connect("127.0.0.1", server.port)
        assert info.value.reason == "full"
        message = client.recv(timeout=30)
        with pytest.raises(fedcomm.FrameTooLargeError):
            client.send({"round": 1, "weights": np.zeros(10_000, np.float32)})
        client.send({"round": 1, "weights": message["weights"] * 2})
        assert server.next()["answers"][0]["sum"] == 2 * 1000
        assert server.next() == {"done": True}
