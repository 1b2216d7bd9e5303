"""The site side of the FL layer (``fedcomm.fl``) where an answer cannot go as
planned: the session closed by the coordinator while a task trains, an update
that is not finite, and a reply that timed out with nothing sent."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, List

import numpy as np
import pytest

import fedcomm
from fedcomm import fl
from _reference import ReferenceServer, wait_until
from test_fl import doubled, task

Server = Callable[..., ReferenceServer]


def test_run_site_returns_when_the_coordinator_closes_the_session_during_a_task(
    server: Server,
) -> None:
    srv = server(1)
    started, seen = threading.Event(), []
    outcome: List[fl.SiteResult] = []

    def train(t: fl.Task) -> Dict[str, Any]:
        started.set()
        seen.append(t.cancelled.wait(5))  # "training" until the task turns stale
        seen.append(t.reason)
        return {"weights": doubled(t), "samples": 4}

    runner = threading.Thread(target=lambda: outcome.append(fl.run_site(
        {"port": srv.port, "name": "site-a", "timeout": 2}, train=train, task_timeout=30)))
    runner.start()
    session = srv.session(0)
    session.send(task(1))
    assert started.wait(5)
    session.end()  # closed for good, without a stop: the site must not reconnect
    runner.join(10)
    assert not runner.is_alive()
    assert seen == [True, "stopped"]
    assert outcome == [fl.SiteResult(results=0, failures=0, stale=1, reconnects=0,
                                     stop_reason=None)]
    assert session.pending() == 0


def test_a_task_taken_before_a_clean_end_is_not_yielded_after_it(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        session.send(task(1))
        session.send(task(2))
        session.end()
        wait_until(lambda: client.closed)
        loop = fl.tasks(client, timeout=10)
        yielded = list(loop)  # those the loop hands out before its reader sees the end
        assert loop.stop_reason is None
        # Task 1 is superseded by task 2, and task 2 is stopped by the end: no answer is due.
        assert [(t.id, t.stale) for t in yielded] == [(t.id, True) for t in yielded]
        assert {t.reason for t in yielded} <= {"superseded", "stopped"}


def test_reply_refuses_an_update_that_is_not_finite(server: Server) -> None:
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        session = srv.session(0)
        session.send(task(1))
        for t in fl.tasks(client, timeout=10):
            update = doubled(t)
            update["fc.weight"][1, 0] = np.nan
            with pytest.raises(ValueError, match=r'Update has a non-finite value: "fc.weight"\[3\] '
                                                 r"is nan"):
                t.reply(weights=update, samples=1)
            update["fc.weight"][1, 0] = 0
            update["fc.bias"][2] = -np.inf
            with pytest.raises(ValueError, match=r'"fc.bias"\[2\] is -inf'):
                t.reply(weights=update, samples=1)
            assert not t.answered
            update["fc.bias"][2] = 0
            assert t.reply(weights=update, samples=1)
            session.send({"fl": 1, "type": "stop", "reason": "done"})
        assert session.recv(timeout=5)["type"] == "result"


class _Refusing:
    """A client whose first reply times out with nothing sent, then sends."""

    def __init__(self) -> None:
        self.sent: List[Any] = []

    def reply(self, value: Any, to: int, timeout: Any = None) -> None:
        if not self.sent:
            self.sent.append(None)
            raise fedcomm.SendTimeoutError("Send timed out after 1 s: nothing was sent", False)
        self.sent.append((to, value["type"]))


def test_a_reply_that_sent_nothing_can_be_sent_again() -> None:
    client = _Refusing()
    t = fl.Task(client, fl.parse_task(task(1)), 1)  # type: ignore[arg-type]
    with pytest.raises(fedcomm.SendTimeoutError):
        t.reply(weights=doubled(t), samples=1, timeout=1)
    assert not t.answered
    assert t.reply(weights=doubled(t), samples=1)
    assert t.answered
    assert t.fail("again") is False
    assert client.sent == [None, (1, "result")]
