"""The ``props`` of a hello: client metadata the server sees (its
``stats()``), checked here as the server would check them, so that a bad map
fails in :func:`~fedcomm.connect` with a clear ``TypeError`` or
``ValueError`` instead of a ``malformed`` reject."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

__all__ = ["MAX_PROPS", "MAX_PROP_KEY_BYTES", "MAX_PROP_STR_BYTES", "PropValue", "check_props"]

#: The most entries ``props`` may have.
MAX_PROPS = 16
#: The longest key, in UTF-8 bytes (at least 1).
MAX_PROP_KEY_BYTES = 64
#: The longest str value, in UTF-8 bytes.
MAX_PROP_STR_BYTES = 256

#: The type of a ``props`` value.
PropValue = Union[None, bool, int, float, str]

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _utf8_length(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as error:
        raise ValueError(f"Invalid props: {what} {text!r} is not valid Unicode") from error


def check_props(props: Optional[Mapping[str, PropValue]]) -> Optional[Dict[str, PropValue]]:
    """Checks ``props`` and returns a copy (``None`` stays ``None``).

    Raises:
        TypeError: ``props`` is not a mapping, a key is not a ``str``, or a
            value is not ``None``, ``bool``, ``int``, ``float`` or ``str``.
        ValueError: more than 16 entries, a key of 0 or more than 64 UTF-8
            bytes, a str value over 256 UTF-8 bytes, or an int beyond 64 bits.
    """
    if props is None:
        return None
    if not isinstance(props, Mapping):
        raise TypeError(f"Invalid props: expected a dict, got {type(props).__name__}")
    if len(props) > MAX_PROPS:
        raise ValueError(f"Invalid props: {len(props)} entries, at most {MAX_PROPS} allowed")
    checked: Dict[str, PropValue] = {}
    for key, value in props.items():
        if not isinstance(key, str):
            raise TypeError(f"Invalid props: key {key!r} is not a str")
        if not 1 <= _utf8_length(key, "key") <= MAX_PROP_KEY_BYTES:
            raise ValueError(
                f"Invalid props: key {key!r} must be 1 to {MAX_PROP_KEY_BYTES} bytes of UTF-8"
            )
        if isinstance(value, str):
            size = _utf8_length(value, f"the value of {key!r},")
            if size > MAX_PROP_STR_BYTES:
                raise ValueError(
                    f"Invalid props: the value of {key!r} is {size} bytes of UTF-8, "
                    f"at most {MAX_PROP_STR_BYTES} allowed"
                )
        elif isinstance(value, int) and not isinstance(value, bool):
            if not _INT_MIN <= value <= _INT_MAX:
                raise ValueError(f"Invalid props: the value of {key!r}, {value}, exceeds 64 bits")
            value = int(value)
        elif isinstance(value, float):
            value = float(value)
        elif value is not None and not isinstance(value, bool):
            raise TypeError(
                f"Invalid props: the value of {key!r} is a {type(value).__name__}; "
                "expected None, bool, int, float or str"
            )
        checked[key] = value
    return checked
