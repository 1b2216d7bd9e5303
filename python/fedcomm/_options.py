"""The checks of the arguments of :class:`~fedcomm.Client`
(:func:`_check_arguments`, and its helpers for numbers, the secret and the TLS
option; :func:`_check_session_arguments` for props, resume and retention),
and :func:`_fmt`, which writes seconds in messages."""

from __future__ import annotations

import os
import ssl
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from ._framing import MAX_FRAME_BYTES_LIMIT
from ._handshake import MAX_NAME_BYTES
from ._progress import ProgressCallback
from ._props import PropValue, check_props

#: The shortest secret accepted (as the Deno library): a random key, not a password.
MIN_SECRET_BYTES = 16

#: The ``tls`` argument (not a string forward reference, so that
#: :func:`typing.get_type_hints` resolves it from any module).
TLSOption = Union[None, bool, ssl.SSLContext, str, os.PathLike[str]]


def _number(value: Any, what: str, allow_none: bool = True) -> Optional[float]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise TypeError(f"Invalid {what}: {value!r} is not a number")
    if value < 0:
        raise ValueError(f"Invalid {what}: {value!r} is negative")
    return float(value)


def _secret_bytes(secret: Union[None, str, bytes, bytearray, memoryview]) -> Optional[bytes]:
    if secret is None:
        return None
    if isinstance(secret, str):
        data = secret.encode("utf-8")
    elif isinstance(secret, (bytes, bytearray, memoryview)):
        data = bytes(secret)
    else:
        raise TypeError(f"Invalid secret: expected str or bytes, got {type(secret).__name__}")
    if len(data) < MIN_SECRET_BYTES:
        raise ValueError(
            f"Invalid secret: {len(data)} bytes is shorter than {MIN_SECRET_BYTES}; "
            'use a random key such as "openssl rand -hex 32"'
        )
    return data


def _tls_context(tls: TLSOption) -> Optional[ssl.SSLContext]:
    if tls is None or tls is False:
        return None
    if tls is True:
        return ssl.create_default_context()
    if isinstance(tls, ssl.SSLContext):
        return tls
    if isinstance(tls, (str, os.PathLike)):
        # The file is the only trust anchor: the system's CAs are not loaded.
        return ssl.create_default_context(cafile=os.fspath(tls))
    raise TypeError(
        f"Invalid tls: expected True, an ssl.SSLContext or a CA file path, got {tls!r}"
    )


def _fmt(seconds: Optional[float]) -> str:
    return "unlimited" if seconds is None else f"{seconds:g}"


def _check_arguments(
    host: str,
    port: int,
    timeout: Optional[float],
    name: Optional[str],
    secret: Union[None, str, bytes, bytearray],
    tls: TLSOption,
    heartbeat: Optional[float],
    idle_timeout: Optional[float],
    max_frame_bytes: int,
    on_progress: Optional[ProgressCallback],
) -> Tuple[
    Optional[float], Optional[bytes], Optional[ssl.SSLContext], Optional[float], Optional[float]
]:
    """Checks the arguments of :class:`~fedcomm.Client` (raising ``TypeError``
    or ``ValueError``), in the order given. Returns ``timeout``, the secret's
    bytes, the TLS context, ``heartbeat`` and ``idle_timeout``, normalized
    (``heartbeat`` and ``idle_timeout`` of 0 become ``None``)."""
    if not isinstance(host, str) or not host:
        raise TypeError(f"Invalid host: {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"Invalid port: {port!r}")
    timeout = _number(timeout, "timeout")
    if timeout == 0:
        raise ValueError("Invalid timeout: 0 (use None for no limit)")
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"Invalid name: expected str, got {type(name).__name__}")
        if not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
            raise ValueError(
                f"Invalid name: {name!r} must be 1 to {MAX_NAME_BYTES} bytes of UTF-8"
            )
    secret_bytes = _secret_bytes(secret)
    context = _tls_context(tls)
    heartbeat = _number(heartbeat, "heartbeat") or None
    idle_timeout = _number(idle_timeout, "idle_timeout") or None
    if heartbeat is not None and idle_timeout is not None and idle_timeout <= heartbeat:
        raise ValueError(
            f"Invalid idle_timeout: {idle_timeout:g} s must exceed heartbeat "
            f"{heartbeat:g} s, or an idle but alive server would be declared dead"
        )
    if (
        isinstance(max_frame_bytes, bool)
        or not isinstance(max_frame_bytes, int)
        or not 0 <= max_frame_bytes <= MAX_FRAME_BYTES_LIMIT
    ):
        raise ValueError(
            f"Invalid max_frame_bytes: {max_frame_bytes!r} is not an integer "
            f"from 0 to {MAX_FRAME_BYTES_LIMIT}"
        )
    if on_progress is not None and not callable(on_progress):
        raise TypeError(f"Invalid on_progress: {on_progress!r} is not callable")
    return timeout, secret_bytes, context, heartbeat, idle_timeout


def _check_session_arguments(
    props: Optional[Mapping[str, PropValue]],
    resume: bool,
    retain_bytes: int,
    on_disconnect: Optional[Callable[..., Any]],
    on_resume: Optional[Callable[..., Any]],
) -> Optional[Dict[str, PropValue]]:
    """Checks the arguments of :class:`~fedcomm.Client` about the session
    (raising ``TypeError`` or ``ValueError``); returns the checked ``props``."""
    checked = check_props(props)
    if not isinstance(resume, bool):
        raise TypeError(f"Invalid resume: expected True or False, got {resume!r}")
    if isinstance(retain_bytes, bool) or not isinstance(retain_bytes, int) or retain_bytes < 1:
        raise ValueError(f"Invalid retain_bytes: {retain_bytes!r} is not a positive integer")
    for what, callback in (("on_disconnect", on_disconnect), ("on_resume", on_resume)):
        if callback is not None and not callable(callback):
            raise TypeError(f"Invalid {what}: {callback!r} is not callable")
    return checked
