"""Shared fixtures: the reference server, throwaway TLS certificates, and a
check that every test stops the threads and processes it started."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

TESTS = Path(__file__).resolve().parent
PYTHON_DIR = TESTS.parent
REPO = PYTHON_DIR.parent

# Run from a checkout without installing: use the package next to the tests.
# With the package installed (as .ci/run does, in a venv), use the installed one.
if importlib.util.find_spec("fedcomm") is None:
    sys.path.insert(0, str(PYTHON_DIR))
sys.path.insert(0, str(TESTS))

from _reference import ReferenceServer  # noqa: E402

import fedcomm  # noqa: E402

if os.environ.get("FEDCOMM_EXPECT_INSTALLED") == "1":
    # .ci/run sets this: the tests must exercise the pip-installed package.
    assert PYTHON_DIR not in Path(fedcomm.__file__).resolve().parents, fedcomm.__file__

OPENSSL = "/usr/bin/openssl"


@pytest.fixture
def server() -> Iterator[Callable[..., ReferenceServer]]:
    """Starts reference servers; closes them after the test and checks that
    they saw no protocol violation (unless the test set ``allow_errors``)."""
    servers: List[ReferenceServer] = []

    def start(*args: object, allow_errors: bool = False, **kwargs: object) -> ReferenceServer:
        srv = ReferenceServer(*args, **kwargs)  # type: ignore[arg-type]
        srv.allow_errors = allow_errors  # type: ignore[attr-defined]
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()
    for srv in servers:
        if not srv.allow_errors:  # type: ignore[attr-defined]
            assert srv.errors == [], srv.errors


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fails a test that leaves a fedcomm I/O thread or server thread running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [
            t for t in threading.enumerate()
            if t not in before and t.is_alive()
            and (t.name.startswith("fedcomm-io") or t.name.startswith("refserver"))
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads left running: {[t.name for t in leaked]}"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, str]:
    """A throwaway CA, a server certificate it signed (for 127.0.0.1 and
    localhost), and an unrelated second CA, made with the openssl CLI."""
    if not os.path.exists(OPENSSL):
        pytest.skip(f"{OPENSSL} is not installed")
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other_ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-subj", f"/CN=fedcomm test {ca}",
            cwd=d,
        )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost", cwd=d,
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d,
    )
    return {
        "ca": str(d / "ca.pem"),
        "other_ca": str(d / "other_ca.pem"),
        "cert": str(d / "server.pem"),
        "key": str(d / "server.key"),
    }
