"""Federated-learning sites: the task loop of fedcomm's FL layer (the "fl" message convention, version 1).

A coordinator (the Deno ``Coordinator`` of ``@fedcomm/fedcomm/fl``) sends each
site ``task`` messages (train or evaluate a model: ``weights``, a ``config``),
may ``cancel`` a task it no longer needs, and ends the job with ``stop``. A
site answers each task with a ``result`` (the trained weights, the sample
count, metrics) or a ``failure``. This module is the site's side::

    import fedcomm
    from fedcomm import fl

    with fedcomm.connect("127.0.0.1", 7000, name="site-a", secret=key) as client:
        for task in fl.tasks(client):  # until the coordinator says stop
            weights = {k: v.copy() for k, v in task.weights.items()}  # read-only views
            ...  # train, checking task.stale now and then
            task.reply(weights=weights, samples=1200, metrics={"loss": 0.31})

or, with reconnection when the coordinator restarts::

    fl.run_site({"host": "10.0.0.5", "port": 7000, "name": "site-a", "secret": key},
                train=train, evaluate=evaluate)

A thread of the loop reads the coordinator's messages while your code trains:
a ``cancel`` for the task at hand, a newer task, or the session's end sets
:attr:`Task.stale` (and the :attr:`Task.cancelled` event) at once; replying to a stale task
sends nothing and returns ``False``. A malformed task is answered with a
``failure`` naming the problem, and the loop goes on.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import numpy as np

from ._fl_messages import (
    CANCEL_REASONS,
    FL_VERSION,
    Weights,
    check_metrics,
    check_update,
    failure_message,
    parse_task,
)
from .client import Client, connect
from .errors import (
    AuthenticationError,
    FedcommError,
    FedcommTimeoutError,
    PeerDisconnectedError,
    ProtocolError,
    RejectedError,
    SendTimeoutError,
)

__all__ = [
    "FL_VERSION",
    "Handler",
    "SiteResult",
    "Task",
    "Tasks",
    "parse_task",
    "run_site",
    "tasks",
]

#: Seconds the reader waits in one receive before it checks whether the loop closed.
_POLL_SECONDS = 0.1
#: Reconnecting: the first pause, doubled each try up to the last (seconds).
_FIRST_PAUSE = 0.1
_MAX_PAUSE = 5.0
#: Rejects after which connecting again can succeed.
_RETRY_REASONS = ("busy", "full", "duplicate", "live", "resume")


#: Elements checked at once for NaN and infinities (bounds the temporary mask).
_FINITE_CHUNK = 1 << 20


def _check_finite(update: Weights) -> None:
    """Raises ValueError at an update's first NaN or infinity, naming the tensor and the index."""
    for name, array in update.items():
        flat = array.reshape(-1)
        for start in range(0, flat.size, _FINITE_CHUNK):
            bad = np.flatnonzero(~np.isfinite(flat[start:start + _FINITE_CHUNK]))
            if bad.size:
                index = start + int(bad[0])
                value = flat[index]
                raise ValueError(f'Update has a non-finite value: "{name}"[{index}] is {value}')


class Task:
    """One task from the coordinator, as :func:`tasks` yields it.

    Attributes:
        job: The job's name.
        id: The task's number in the job (unique, increasing).
        round: The round it belongs to.
        kind: ``"train"`` or ``"evaluate"``.
        config: The strategy's settings for this round (FedProx: ``proximal_mu``).
        weights: The model, a dict of numpy arrays: read-only views of the
            received message (``.copy()`` them to train in place).
        number: The number of the coordinator's message that carried it (what
            the answer replies to).
        cancelled: A :class:`threading.Event` set when the task turns stale.
        reason: Why it turned stale (``"stale"``, ``"removed"``,
            ``"stopped"``: the job stopped or the session ended,
            ``"superseded"``: a newer task came), or ``None``.
    """

    def __init__(self, client: Client, message: Dict[str, Any], number: int) -> None:
        self.job: str = message["job"]
        self.id: int = message["task"]
        self.round: int = message["round"]
        self.kind: str = message["kind"]
        self.config: Dict[str, Any] = message["config"]
        self.weights: Weights = message["weights"]
        self.number = number
        self.cancelled = threading.Event()
        self.reason: Optional[str] = None
        self._client = client
        self._lock = threading.Lock()
        self._answered = False

    @property
    def stale(self) -> bool:
        """Whether the coordinator cancelled this task or sent a newer one: an answer would be wasted."""
        return self.cancelled.is_set()

    @property
    def answered(self) -> bool:
        """Whether :meth:`reply` or :meth:`fail` sent this task's answer."""
        return self._answered

    def reply(
        self,
        weights: Optional[Mapping[str, np.ndarray]] = None,
        samples: int = 0,
        metrics: Optional[Mapping[str, float]] = None,
        timeout: Optional[float] = None,
    ) -> bool:
        """Sends the task's ``result``.

        Args:
            weights: The trained model (train tasks; none for evaluate): the
                same names, shapes and dtypes as :attr:`weights`.
            samples: How many samples it was trained or evaluated on (the
                weight of this site in the average), an int >= 0.
            metrics: Numbers by name (``{"loss": 0.3}``), finite.
            timeout: Seconds the send may wait (as :meth:`Client.send`).

        Returns:
            ``True`` if the result was sent; ``False`` (nothing sent) if the
            task is stale or was already answered.

        Raises:
            TypeError: Weights missing, extra, or of another name, shape or
                dtype than the model's; a sample count or metric of the wrong type.
            ValueError: A negative sample count, a metric or weight that is not
                finite (naming the tensor and the index, in C order).
            PeerDisconnectedError, FedcommTimeoutError: As :meth:`Client.send`;
                after a :class:`SendTimeoutError` that sent nothing
                (``queued`` false), the task is not answered: reply again.
        """
        if isinstance(samples, bool) or not isinstance(samples, Integral):
            raise TypeError(f'Invalid samples: "{samples!r}" is not an int')
        if samples < 0:
            raise ValueError(f'Invalid samples: "{samples}" is negative')
        message: Dict[str, Any] = {
            "fl": FL_VERSION, "type": "result", "task": self.id, "round": self.round,
            "samples": int(samples), "metrics": check_metrics(metrics),
        }
        update = check_update(self.kind, self.weights, weights)
        if update is not None:
            _check_finite(update)
            message["weights"] = update
        return self._answer(message, timeout)

    def fail(self, error: Any, timeout: Optional[float] = None) -> bool:
        """Sends a ``failure`` for the task: it could not be done.

        Args:
            error: The exception (sent as ``"Type: message"``) or a message.
            timeout: Seconds the send may wait.

        Returns:
            ``True`` if sent; ``False`` if the task is stale or was already answered.

        Raises:
            PeerDisconnectedError, FedcommTimeoutError: As :meth:`reply`.
        """
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        return self._answer(failure_message(self.id, self.round, text), timeout)

    def _answer(self, message: Dict[str, Any], timeout: Optional[float]) -> bool:
        with self._lock:
            if self._answered or self.stale:
                return False
            self._answered = True
        try:
            self._client.reply(message, to=self.number, timeout=timeout)
        except SendTimeoutError as error:
            if not error.queued:  # nothing was sent: the task may be answered again
                with self._lock:
                    self._answered = False
            raise
        return True

    def _cancel(self, reason: str) -> None:
        if not self.cancelled.is_set():
            self.reason = reason
            self.cancelled.set()

    def __repr__(self) -> str:
        state = f"stale: {self.reason}" if self.stale else "answered" if self._answered else "open"
        return f"<Task {self.id} {self.kind} round {self.round} of {self.job!r} ({state})>"



def _ended_cleanly(client: Client) -> bool:
    """After a receive raised PeerDisconnectedError: whether the server closed the session."""
    try:
        for _ in client:  # ends at once when the server closed it; raises when it was lost
            return False
    except FedcommError:
        return False
    return True


class Tasks:
    """The coordinator's tasks for one client, in order: iterate it (see :func:`tasks`).

    Attributes:
        stop_reason: The reason of the coordinator's ``stop``, once it came
            (``None``: no stop; the session then ended otherwise).
    """

    def __init__(self, client: Client, timeout: Optional[float] = None) -> None:
        self.stop_reason: Optional[str] = None
        self._client = client
        self._timeout = timeout
        self._cond = threading.Condition()
        self._pending: Optional[Task] = None
        self._current: Optional[Task] = None
        self._done = False
        self._error: Optional[BaseException] = None
        self._closing = False
        self._thread: Optional[threading.Thread] = None

    def __iter__(self) -> Iterator[Task]:
        """Yields each task until the coordinator says ``stop`` or closes the
        session; raises the error that ended the session otherwise
        (:class:`PeerDisconnectedError` when it was lost), or
        :class:`FedcommTimeoutError` when ``timeout`` passes without a task."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="fedcomm-fl-tasks", daemon=True)
            self._thread.start()
        try:
            while True:
                task = self._next()
                if task is None:
                    return
                yield task
        finally:
            self.close()

    def close(self) -> None:
        """Stops reading the coordinator's messages (the client stays open). Safe to call twice."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5 * _POLL_SECONDS + 5)

    def _next(self) -> Optional[Task]:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        with self._cond:
            while self._pending is None and not self._done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise FedcommTimeoutError(f"No task arrived within {self._timeout} s")
                self._cond.wait(left)
            if self._pending is not None:
                self._current, self._pending = self._pending, None
                return self._current
            if self._error is not None:
                raise self._error
            return None

    def _read(self) -> None:
        """The reader thread: takes every message and files it, until stop, an end, or close."""
        error: Optional[BaseException] = None
        ended = False  # the session ended (cleanly or not): no task of it can be answered
        try:
            while not self._closing:
                try:
                    value = self._client.recv(timeout=_POLL_SECONDS)
                except FedcommTimeoutError:
                    continue
                if self._handle(value, self._client.last_received):
                    break
        except PeerDisconnectedError as lost:
            ended = True
            error = None if _ended_cleanly(self._client) else lost
        except BaseException as other:  # noqa: BLE001: handed to the iterating thread
            ended = True
            error = other
        with self._cond:
            self._done = True
            self._error = error
            if ended:
                self._cancel_all("stopped")
            self._cond.notify_all()

    def _handle(self, value: Any, number: int) -> bool:
        """Files one message; returns whether the loop is over (a stop)."""
        kind = value.get("type") if isinstance(value, Mapping) and value.get("fl") == FL_VERSION else None
        if kind == "stop":
            with self._cond:
                reason = value.get("reason")
                self.stop_reason = reason if isinstance(reason, str) else ""
                self._cancel_all("stopped")
            return True
        if kind == "cancel":
            self._cancel_one(value)
            return False
        try:
            task = Task(self._client, parse_task(value), number)
        except TypeError as error:
            self._refuse(value, number, str(error))
            return False
        with self._cond:
            for old in (self._current, self._pending):
                if old is not None:
                    old._cancel("superseded")
            self._pending = task
            self._cond.notify_all()
        return False

    def _cancel_one(self, value: Mapping[str, Any]) -> None:
        reason = value.get("reason")
        with self._cond:
            for task in (self._current, self._pending):
                if task is not None and task.id == value.get("task"):
                    task._cancel(reason if reason in CANCEL_REASONS else "stale")
            if self._pending is not None and self._pending.stale:
                self._pending = None

    def _cancel_all(self, reason: str) -> None:
        for task in (self._current, self._pending):
            if task is not None:
                task._cancel(reason)
        self._pending = None

    def _refuse(self, value: Any, number: int, problem: str) -> None:
        """Answers a malformed task with a failure naming the problem."""
        fields = value if isinstance(value, Mapping) else {}
        ids = [fields.get(key) for key in ("task", "round")]
        task, round_ = (v if isinstance(v, int) and not isinstance(v, bool) else 0 for v in ids)
        try:
            self._client.reply(failure_message(task, round_, problem), to=number)
        except FedcommError:
            pass  # the session is over: the next receive says so


def tasks(client: Client, timeout: Optional[float] = None) -> Tasks:
    """The coordinator's tasks for ``client``: ``for task in fl.tasks(client): ...``.

    The loop ends when the coordinator sends ``stop`` (:attr:`Tasks.stop_reason`)
    or closes the session. A thread reads the coordinator's messages meanwhile
    (so that a cancel reaches a task while your code trains it); it stops when
    the loop ends or is left. Take no other messages from ``client`` while
    iterating.

    Args:
        client: A connected client.
        timeout: Seconds to wait for each next task (default: no limit).

    Returns:
        The iterable of :class:`Task`.

    Raises:
        PeerDisconnectedError: (while iterating) the session was lost, not closed.
        FedcommTimeoutError: (while iterating) no task within ``timeout``.
    """
    return Tasks(client, timeout)


#: A site's handler: takes the task, returns its result as a dict (``weights``
#: for train, ``samples``, ``metrics``), or ``None`` if it answered itself.
Handler = Callable[[Task], Optional[Mapping[str, Any]]]


@dataclass
class SiteResult:
    """What :func:`run_site` did."""

    #: Tasks answered with a result.
    results: int = 0
    #: Tasks answered with a failure (the handler raised, or there was none for the kind).
    failures: int = 0
    #: Tasks that turned stale before their answer: nothing was sent.
    stale: int = 0
    #: New sessions after the first (the coordinator restarted, or the session was lost).
    reconnects: int = 0
    #: The reason of the coordinator's stop (``None``: the coordinator closed the session).
    stop_reason: Optional[str] = None


def _work(task: Task, handler: Optional[Handler], outcome: SiteResult) -> None:
    if handler is None:
        task.fail(f'This site has no handler for "{task.kind}" tasks')
        outcome.failures += 1
        return
    try:
        result = handler(task)
        if result is None and not task.answered and not task.stale:
            raise TypeError("The handler returned nothing and did not answer the task")
        if result is not None:
            task.reply(result.get("weights"), result.get("samples", 0), result.get("metrics"))
    except PeerDisconnectedError:
        raise  # the session: run_site connects again
    except Exception as error:  # noqa: BLE001: the coordinator is told
        if task.fail(error):
            outcome.failures += 1
        elif task.stale:
            outcome.stale += 1
        return
    if task.answered:
        outcome.results += 1
    else:
        outcome.stale += 1


def _connect(kwargs: Mapping[str, Any], deadline: float) -> Client:
    """Connects with backoff until ``deadline``; gives up at once on a reject that will not change."""
    options = dict(kwargs)
    host, port = options.pop("host", "127.0.0.1"), options.pop("port")
    per_try = options.pop("timeout", 10.0)
    options["wait_for_server"] = True
    pause = _FIRST_PAUSE
    while True:
        left = deadline - time.monotonic()
        try:
            return connect(host, port, timeout=max(0.05, min(left, per_try or left)), **options)
        except AuthenticationError:
            raise
        except RejectedError as error:
            if error.reason not in _RETRY_REASONS or time.monotonic() + pause > deadline:
                raise
        except (PeerDisconnectedError, FedcommTimeoutError, ProtocolError):  # a drop in the handshake
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, _MAX_PAUSE)


def run_site(
    connect_kwargs: Mapping[str, Any],
    train: Optional[Handler] = None,
    evaluate: Optional[Handler] = None,
    *,
    reconnect_timeout: float = 300.0,
    task_timeout: Optional[float] = None,
    on_session: Optional[Callable[[Client], None]] = None,
) -> SiteResult:
    """Runs a site until the coordinator says ``stop``, reconnecting when it restarts.

    Connects with ``connect_kwargs`` (``host``, ``port``, and any option of
    :func:`fedcomm.connect`: ``name``, ``secret``, ``tls``, ``props``…; it
    waits for the server), then answers each task with ``train(task)`` or
    ``evaluate(task)``: a handler returns ``{"weights": …, "samples": n,
    "metrics": {…}}`` (no weights for evaluate), or answers the task itself
    and returns ``None``; an exception is sent as the task's failure. When
    the session is lost (a coordinator killed and started again cannot
    resume it), it connects again with the same options, and so the same
    name, pausing from 0.1 s doubling to 5 s, for at most
    ``reconnect_timeout`` seconds.

    Args:
        connect_kwargs: ``host`` (default ``"127.0.0.1"``), ``port``, and
            options of :func:`fedcomm.connect` (``timeout``: per try).
        train: The handler of train tasks.
        evaluate: The handler of evaluate tasks (none: they fail).
        reconnect_timeout: Seconds to keep trying to connect, from the start
            and after each loss.
        task_timeout: Seconds to wait for each next task (default: no limit).
        on_session: Called with each new session's client (the first, and
            each after a reconnect).

    Returns:
        A :class:`SiteResult`.

    Raises:
        AuthenticationError, RejectedError: Connecting was refused for a
            reason that does not change (``auth``, ``version``).
        PeerDisconnectedError, FedcommTimeoutError: No connection within
            ``reconnect_timeout``, or (the latter) no task within ``task_timeout``.
        ValueError: ``reconnect_timeout`` is not positive.
    """
    if not reconnect_timeout > 0:
        raise ValueError(f'Invalid reconnect_timeout: "{reconnect_timeout}" is not positive')
    outcome = SiteResult()
    handlers = {"train": train, "evaluate": evaluate}
    sessions = 0
    while True:
        client = _connect(connect_kwargs, time.monotonic() + reconnect_timeout)
        outcome.reconnects = sessions
        sessions += 1
        try:
            if on_session is not None:
                on_session(client)
            loop = tasks(client, timeout=task_timeout)
            for task in loop:
                _work(task, handlers[task.kind], outcome)
            outcome.stop_reason = loop.stop_reason
            return outcome
        except PeerDisconnectedError:
            continue  # lost: connect again
        finally:
            client.close()
