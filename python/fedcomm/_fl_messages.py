"""The messages of the "fl" convention, version 1, on the site's side: the
check of a ``task`` the coordinator sends, and of the ``result`` a site
answers with (the Deno side: ``_fl/messages.ts``). Used by :mod:`fedcomm.fl`."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Dict, Mapping, Optional

import numpy as np

#: The version of the "fl" message convention this module speaks.
FL_VERSION = 1
#: The kinds of task.
KINDS = ("train", "evaluate")
#: Why a coordinator cancels a task.
CANCEL_REASONS = ("stale", "removed", "stopped")
Weights = Dict[str, np.ndarray]
#: The element types of a tensor (as the Deno side: float32 and float64).
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _fail(what: str, problem: str) -> TypeError:
    return TypeError(f"{what} has the wrong shape: {problem}")


def _integer(message: Mapping[str, Any], key: str, what: str) -> int:
    value = message.get(key)
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise _fail(what, f'"{key}" is "{value!r}", expected an integer >= 0')
    return int(value)


def _map(value: Any, what: str, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(what, f'"{key}" is a {type(value).__name__}, expected a map')
    for name in value:
        if not isinstance(name, str):
            raise _fail(what, f'"{key}" has a key "{name!r}" that is not a string')
    return value


def _check_weights(value: Any, what: str) -> Weights:
    weights = _map(value, what, "weights")
    for name, array in weights.items():
        if not isinstance(array, np.ndarray) or array.dtype not in _DTYPES:
            kind = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise _fail(what, f'weights "{name}" is {kind}, expected a float32 or float64 array')
    return dict(weights)


def parse_task(value: Any) -> Dict[str, Any]:
    """Checks a ``task`` message of the "fl" convention.

    Args:
        value: A decoded message.

    Returns:
        The message as a dict: ``job``, ``task``, ``round``, ``kind``,
        ``config`` and ``weights`` (a dict of float32 or float64 numpy arrays).

    Raises:
        TypeError: The message is not a task of "fl" version 1, or a field
            has the wrong type, naming it.
    """
    what = "Task message"
    if not isinstance(value, Mapping):
        raise _fail(what, f"it is a {type(value).__name__}, expected a map")
    if value.get("fl") != FL_VERSION or value.get("type") != "task":
        raise _fail(what, f'"fl" is "{value.get("fl")!r}" and "type" is "{value.get("type")!r}", '
                    f'expected {FL_VERSION} and "task"')
    if not isinstance(value.get("job"), str) or value["job"] == "":
        raise _fail(what, f'"job" is "{value.get("job")!r}", expected a non-empty string')
    if value.get("kind") not in KINDS:
        raise _fail(what, f'"kind" is "{value.get("kind")!r}", expected "train" or "evaluate"')
    config = _map(value.get("config"), what, "config")
    for key, setting in config.items():
        if not isinstance(setting, (str, bool, Real)):
            raise _fail(what, f'config "{key}" is a {type(setting).__name__}, '
                        "expected a number, a string or a boolean")
    return {
        "job": value["job"],
        "task": _integer(value, "task", what),
        "round": _integer(value, "round", what),
        "kind": value["kind"],
        "config": dict(config),
        "weights": _check_weights(value.get("weights"), what),
    }


def check_update(kind: str, model: Weights, weights: Any) -> Optional[Weights]:
    """The update of a result, checked against the task's model.

    Raises:
        TypeError: Weights with an evaluate result, none with a train result, or
            weights whose names, shapes or dtypes differ from the model's.
    """
    if kind == "evaluate":
        if weights is not None:
            raise TypeError("Invalid result: an evaluate task is answered without weights")
        return None
    if not isinstance(weights, Mapping):
        raise TypeError(f"Invalid result: a train task needs weights, got {type(weights).__name__}")
    missing = sorted(set(model) - set(weights))
    extra = sorted(set(weights) - set(model))
    if missing or extra:
        raise TypeError(f"Update has the wrong names: missing {missing}, extra {extra}")
    for name, tensor in model.items():
        array = weights[name]
        if not isinstance(array, np.ndarray):
            raise TypeError(f'Update has the wrong type: "{name}" is a {type(array).__name__}, '
                            "expected a numpy array")
        if array.shape != tensor.shape:
            raise TypeError(f'Update has the wrong shape: "{name}" is {list(array.shape)}, '
                            f"the model's is {list(tensor.shape)}")
        if array.dtype != tensor.dtype:
            raise TypeError(f'Update has the wrong dtype: "{name}" is {array.dtype}, '
                            f"the model's is {tensor.dtype}")
    return {name: weights[name] for name in model}


def check_metrics(metrics: Optional[Mapping[str, Any]]) -> Dict[str, float]:
    """Metrics as floats.

    Raises:
        TypeError: Not a dict of numbers by string keys.
        ValueError: A number that is not finite.
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"Invalid metrics: a {type(metrics).__name__}, expected a dict")
    checked: Dict[str, float] = {}
    for key, number in metrics.items():
        if not isinstance(key, str):
            raise TypeError(f'Invalid metrics: key "{key!r}" is not a string')
        if isinstance(number, bool) or not isinstance(number, Real):
            raise TypeError(f'Invalid metrics: "{key}" is a {type(number).__name__}, expected a number')
        if not math.isfinite(number):
            raise ValueError(f'Invalid metrics: "{key}" is "{number}", expected a finite number')
        checked[key] = float(number)
    return checked



def failure_message(task: int, round_: int, error: str) -> Dict[str, Any]:
    return {"fl": FL_VERSION, "type": "failure", "task": task, "round": round_, "error": error}

