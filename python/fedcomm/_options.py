"""The options of :func:`~fedcomm.connect` and :class:`~fedcomm.Client`.

:class:`Options` declares them once, with their defaults; both functions take
them as ``**options`` and show them in their signature
(:func:`options_signature`). :func:`check_options` checks them in a fixed
order (raising ``TypeError`` or ``ValueError``) into :class:`Settings`, the
normalized values the parts of the client are given.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import ssl
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, TypeVar, Union

from ._progress import ProgressCallback
from ._protocol.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_FRAME_BYTES_LIMIT,
    MAX_MESSAGE_BYTES_LIMIT,
)
from ._protocol.handshake import MAX_NAME_BYTES
from ._protocol.props import PropValue, check_props
from ._protocol.retention import DEFAULT_RETAIN_BYTES

#: Seconds for connecting and the handshake, by default.
DEFAULT_TIMEOUT = 10.0
#: Seconds without writing after which the client sends a ping, by default.
DEFAULT_HEARTBEAT = 15.0
#: Seconds without receiving anything after which the server is declared dead, by default.
DEFAULT_IDLE_TIMEOUT = 60.0
#: The shortest secret accepted (as the Deno library): a random key, not a password.
MIN_SECRET_BYTES = 16

#: The type of an ``on_disconnect`` callback: called with the error that dropped the connection.
DisconnectCallback = Callable[[BaseException], None]
#: The type of an ``on_resume`` callback: called with the number of resumes so far.
ResumeCallback = Callable[[int], None]
#: The ``tls`` argument (not a string forward reference, so that
#: :func:`typing.get_type_hints` resolves it from any module).
TLSOption = Union[None, bool, ssl.SSLContext, str, os.PathLike[str]]


@dataclass(frozen=True)
class Options:
    """The keyword options, as given (see :class:`~fedcomm.Client` for their meaning)."""

    timeout: Optional[float] = DEFAULT_TIMEOUT
    wait_for_server: bool = False
    name: Optional[str] = None
    secret: Union[None, str, bytes, bytearray] = None
    tls: TLSOption = None
    server_hostname: Optional[str] = None
    heartbeat: Optional[float] = DEFAULT_HEARTBEAT
    idle_timeout: Optional[float] = DEFAULT_IDLE_TIMEOUT
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    on_progress: Optional[ProgressCallback] = None
    props: Optional[Mapping[str, PropValue]] = None
    resume: bool = True
    retain_bytes: int = DEFAULT_RETAIN_BYTES
    on_disconnect: Optional[DisconnectCallback] = None
    on_resume: Optional[ResumeCallback] = None

    @classmethod
    def from_keywords(cls, where: str, keywords: Mapping[str, Any]) -> "Options":
        """The options of a call to ``where`` (``TypeError`` for an unknown keyword,
        worded as Python words it)."""
        known = {field.name for field in dataclasses.fields(cls)}
        for keyword in keywords:
            if keyword not in known:
                raise TypeError(f"{where}() got an unexpected keyword argument {keyword!r}")
        return cls(**keywords)


@dataclass(frozen=True)
class Settings:
    """The checked options of a client, for the server at ``host``:``port``
    (``heartbeat`` and ``idle_timeout`` of 0 are ``None``; ``hostname``: the
    name checked against the server's certificate)."""

    host: str
    port: int
    timeout: Optional[float]
    wait_for_server: bool
    name: Optional[str]
    secret: Optional[bytes]
    context: Optional[ssl.SSLContext]
    hostname: str
    heartbeat: Optional[float]
    idle_timeout: Optional[float]
    max_frame_bytes: int
    max_message_bytes: int
    on_progress: Optional[ProgressCallback]
    props: Optional[Dict[str, PropValue]]
    resume: bool
    retain_bytes: int
    on_disconnect: Optional[DisconnectCallback]
    on_resume: Optional[ResumeCallback]

    @property
    def where(self) -> str:
        """``host:port``, for messages."""
        return f"{self.host}:{self.port}"


def fmt_seconds(seconds: Optional[float]) -> str:
    """Seconds in a message (``None``: unlimited)."""
    return "unlimited" if seconds is None else f"{seconds:g}"


def _number(value: Any, what: str) -> Optional[float]:
    if value is None:
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


def _check_address(host: Any, port: Any, options: Options) -> Optional[float]:
    """Checks the address, ``timeout`` and ``name``; returns ``timeout``."""
    if not isinstance(host, str) or not host:
        raise TypeError(f"Invalid host: {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"Invalid port: {port!r}")
    timeout = _number(options.timeout, "timeout")
    if timeout == 0:
        raise ValueError("Invalid timeout: 0 (use None for no limit)")
    name = options.name
    if name is not None:
        if not isinstance(name, str):
            raise TypeError(f"Invalid name: expected str, got {type(name).__name__}")
        if not 1 <= len(name.encode("utf-8")) <= MAX_NAME_BYTES:
            raise ValueError(
                f"Invalid name: {name!r} must be 1 to {MAX_NAME_BYTES} bytes of UTF-8"
            )
    return timeout


def _check_link(options: Options) -> Dict[str, Any]:
    """Checks the options about the connection after ``name``, in order."""
    secret = _secret_bytes(options.secret)
    context = _tls_context(options.tls)
    heartbeat = _number(options.heartbeat, "heartbeat") or None
    idle_timeout = _number(options.idle_timeout, "idle_timeout") or None
    if heartbeat is not None and idle_timeout is not None and idle_timeout <= heartbeat:
        raise ValueError(
            f"Invalid idle_timeout: {idle_timeout:g} s must exceed heartbeat "
            f"{heartbeat:g} s, or an idle but alive server would be declared dead"
        )
    limit = options.max_frame_bytes
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_FRAME_BYTES_LIMIT:
        raise ValueError(
            f"Invalid max_frame_bytes: {limit!r} is not an integer "
            f"from 0 to {MAX_FRAME_BYTES_LIMIT}"
        )
    long_limit = options.max_message_bytes
    if (
        isinstance(long_limit, bool)
        or not isinstance(long_limit, int)
        or not 0 <= long_limit <= MAX_MESSAGE_BYTES_LIMIT
    ):
        raise ValueError(
            f"Invalid max_message_bytes: {long_limit!r} is not an integer "
            f"from 0 to {MAX_MESSAGE_BYTES_LIMIT}"
        )
    if options.on_progress is not None and not callable(options.on_progress):
        raise TypeError(f"Invalid on_progress: {options.on_progress!r} is not callable")
    return {"secret": secret, "context": context, "heartbeat": heartbeat, "idle_timeout": idle_timeout}


def _check_session(options: Options) -> Optional[Dict[str, PropValue]]:
    """Checks the options about the session, in order; returns the checked ``props``."""
    props = check_props(options.props)
    if not isinstance(options.resume, bool):
        raise TypeError(f"Invalid resume: expected True or False, got {options.resume!r}")
    retain = options.retain_bytes
    if isinstance(retain, bool) or not isinstance(retain, int) or retain < 1:
        raise ValueError(f"Invalid retain_bytes: {retain!r} is not a positive integer")
    for what, callback in (("on_disconnect", options.on_disconnect), ("on_resume", options.on_resume)):
        if callback is not None and not callable(callback):
            raise TypeError(f"Invalid {what}: {callback!r} is not callable")
    return props


def check_options(host: str, port: int, options: Options) -> Settings:
    """Checks the address and the options (raising ``TypeError`` or
    ``ValueError`` for the first invalid one, in the order of the signature)."""
    timeout = _check_address(host, port, options)
    link = _check_link(options)
    props = _check_session(options)
    return Settings(
        host=host,
        port=port,
        timeout=timeout,
        wait_for_server=options.wait_for_server,
        name=options.name,
        hostname=options.server_hostname or host,
        max_frame_bytes=options.max_frame_bytes,
        max_message_bytes=options.max_message_bytes,
        on_progress=options.on_progress,
        props=props,
        resume=options.resume,
        retain_bytes=options.retain_bytes,
        on_disconnect=options.on_disconnect,
        on_resume=options.on_resume,
        **link,
    )


_F = TypeVar("_F", bound=Callable[..., Any])


def options_signature(function: _F) -> _F:
    """Shows the fields of :class:`Options` as the keyword-only parameters of
    ``function`` (which takes ``**options``) to :func:`inspect.signature`,
    :func:`typing.get_type_hints` and ``help()``."""
    own, hints = typing.get_type_hints(function), typing.get_type_hints(Options)
    parameters = [
        p.replace(annotation=own.get(p.name, p.annotation))
        for p in inspect.signature(function).parameters.values()
        if p.kind is not p.VAR_KEYWORD
    ]
    parameters += [
        inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                          default=field.default, annotation=hints[field.name])
        for field in dataclasses.fields(Options)
    ]
    returns = own.get("return", inspect.Signature.empty)
    function.__signature__ = inspect.Signature(parameters, return_annotation=returns)  # type: ignore[attr-defined]
    function.__annotations__ = {
        p.name: p.annotation for p in parameters if p.annotation is not inspect.Parameter.empty
    }
    if "return" in own:
        function.__annotations__["return"] = returns
    return function
