"""The package itself: its public API, typing marker, docstrings, and that it
installs with pip into a venv over Debian's numpy and msgpack."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import fedcomm
from fedcomm import errors

PYTHON_DIR = Path(__file__).resolve().parent.parent


def test_version_and_protocol() -> None:
    assert fedcomm.__version__ == "0.3.0"
    assert fedcomm.PROTOCOL_VERSION == 3
    pyproject = (PYTHON_DIR / "pyproject.toml").read_text()
    assert 'version = "0.3.0"' in pyproject


def test_all_names_exist() -> None:
    for name in fedcomm.__all__:
        assert hasattr(fedcomm, name), name
    assert sorted(fedcomm.__all__) == sorted(set(fedcomm.__all__))


def test_py_typed_marker() -> None:
    assert (Path(fedcomm.__file__).parent / "py.typed").is_file()


def test_exception_hierarchy() -> None:
    assert issubclass(fedcomm.PeerDisconnectedError, fedcomm.FedcommError)
    assert issubclass(fedcomm.PeerDisconnectedError, ConnectionError)
    assert issubclass(fedcomm.ProtocolError, fedcomm.FedcommError)
    assert issubclass(fedcomm.RejectedError, fedcomm.ProtocolError)
    assert issubclass(fedcomm.AuthenticationError, fedcomm.FedcommError)
    assert not issubclass(fedcomm.AuthenticationError, fedcomm.ProtocolError)
    assert issubclass(fedcomm.FedcommTimeoutError, fedcomm.FedcommError)
    assert issubclass(fedcomm.FedcommTimeoutError, TimeoutError)
    assert issubclass(fedcomm.FrameTooLargeError, fedcomm.FedcommError)
    assert issubclass(fedcomm.FrameTooLargeError, ValueError)
    error = fedcomm.RejectedError("full", "Server full: all 2 clients have joined")
    assert (error.reason, error.message) == ("full", "Server full: all 2 clients have joined")
    assert str(error) == "Server rejected the connection: full: Server full: all 2 clients have joined"
    assert errors.RejectedError is fedcomm.RejectedError


def test_public_docstrings() -> None:
    missing = []
    for name in fedcomm.__all__:
        obj = getattr(fedcomm, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not inspect.getdoc(obj):
                missing.append(name)
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr.startswith("_") and attr not in ("__init__", "__iter__"):
                        continue
                    if (inspect.isfunction(member) or isinstance(member, property)) and not (
                        member.__doc__ or attr == "__init__"
                    ):
                        missing.append(f"{name}.{attr}")
    assert missing == []


def test_connect_signature_matches_client() -> None:
    connect = inspect.signature(fedcomm.connect)
    client = inspect.signature(fedcomm.Client.__init__)
    assert list(connect.parameters) == list(client.parameters)[1:]
    for name, param in connect.parameters.items():
        assert param.default == client.parameters[name].default, name
    assert connect.parameters["max_frame_bytes"].default == 512 * 1024 * 1024
    assert connect.parameters["heartbeat"].default == 15.0
    assert connect.parameters["idle_timeout"].default == 60.0


def _venv_available() -> bool:
    try:
        import ensurepip  # noqa: F401
        import venv  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _venv_available(), reason="venv/ensurepip missing (Debian: apt install python3-venv)")
def test_pip_install_into_venv(tmp_path: Path) -> None:
    """Builds a venv over the system's numpy and msgpack, installs the package
    offline, and imports it from there."""
    # A copy, so that the build leaves no build/ or *.egg-info in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(PYTHON_DIR / "pyproject.toml", src)
    shutil.copy(PYTHON_DIR / "README.md", src)
    shutil.copytree(PYTHON_DIR / "fedcomm", src / "fedcomm", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-build-isolation", "--no-index", str(src)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    probe = subprocess.run(
        [str(python), "-c",
         "import fedcomm, os; print(fedcomm.__file__); print(fedcomm.__version__); "
         "print(os.path.exists(os.path.join(os.path.dirname(fedcomm.__file__), 'py.typed')))"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env,
    )
    assert probe.returncode == 0, probe.stderr
    path, version, typed = probe.stdout.split()
    assert Path(path).resolve().is_relative_to(venv.resolve())
    assert version == "0.3.0"
    assert typed == "True"
