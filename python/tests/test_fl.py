"""The site side of the FL layer (``fedcomm.fl``) against the reference server
standing in for the coordinator: the task loop, results and failures, cancels
and newer tasks while a task trains, malformed tasks, stop, and ``run_site``
reconnecting to a restarted coordinator with the same name."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import numpy as np
import pytest

import fedcomm
from fedcomm import fl
from _reference import ReferenceServer, wait_until

Server = Callable[..., ReferenceServer]


def task(number: int, kind: str = "train", round_: int = 1, **extra: Any) -> Dict[str, Any]:
    message: Dict[str, Any] = {
        "fl": 1, "type": "task", "job": "digits", "task": number, "round": round_, "kind": kind,
        "config": {"lr": 0.5, "epochs": 1, "proximal_mu": 0.0, "tag": "x", "last": False},
        "weights": {
            "fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
            "fc.bias": np.zeros(3, dtype=np.float32),
        },
    }
    message.update(extra)
    return message


@contextlib.contextmanager
def connected(server: Server) -> Iterator[Tuple[fedcomm.Client, Any]]:
    """A client connected to a reference server standing in for the coordinator, and its session."""
    srv = server(1)
    with fedcomm.connect("127.0.0.1", srv.port) as client:
        yield client, srv.session(0)


def stop(reason: str = "done") -> Dict[str, Any]:
    return {"fl": 1, "type": "stop", "reason": reason}


def cancel(number: int, reason: str = "stale") -> Dict[str, Any]:
    return {"fl": 1, "type": "cancel", "task": number, "round": 1, "reason": reason}


def doubled(t: fl.Task) -> Dict[str, np.ndarray]:
    return {name: array * 2 for name, array in t.weights.items()}


def test_the_loop_yields_tasks_and_sends_results(server: Server) -> None:
    with connected(server) as (client, session):
        session.send(task(1))
        loop = fl.tasks(client, timeout=10)
        seen: List[fl.Task] = []
        for t in loop:
            seen.append(t)
            if t.kind == "train":
                assert t.weights["fc.weight"].shape == (2, 3)
                assert not t.weights["fc.weight"].flags.writeable  # a view of the frame
                assert t.config == {"lr": 0.5, "epochs": 1, "proximal_mu": 0.0, "tag": "x",
                                    "last": False}
                assert t.reply(weights=doubled(t), samples=10, metrics={"loss": 0.25})
                session.send(task(2, kind="evaluate"))
            else:
                assert t.reply(samples=7, metrics={"accuracy": 0.5})
                assert t.reply(samples=7) is False  # answered already
                session.send(stop("finished"))
        assert loop.stop_reason == "finished"
        assert [(t.id, t.kind, t.number, t.job) for t in seen] == [
            (1, "train", 1, "digits"), (2, "evaluate", 2, "digits")]
        assert [t.stale for t in seen] == [True, True]  # the second by the stop
        first, second = session.recv_message(timeout=5), session.recv_message(timeout=5)
        assert (first.request, first.value()["type"], first.value()["task"]) == (1, "result", 1)
        assert second.request == 2
        assert second.value() == {"fl": 1, "type": "result", "task": 2, "round": 1, "samples": 7,
                                  "metrics": {"accuracy": 0.5}}


def test_a_train_result_carries_the_weights(server: Server) -> None:
    with connected(server) as (client, session):
        session.send(task(5, round_=3))
        for t in fl.tasks(client, timeout=10):
            assert (t.id, t.round, t.stale, t.answered) == (5, 3, False, False)
            assert t.reply(weights=doubled(t), samples=np.int64(12), metrics={"loss": np.float32(1.5)})
            assert t.answered
            session.send(stop())
        message = session.recv_message(timeout=5)
        value = message.value()
        assert message.request == 1
        assert (value["type"], value["task"], value["round"], value["samples"]) == ("result", 5, 3, 12)
        assert value["metrics"] == {"loss": 1.5}
        np.testing.assert_array_equal(value["weights"]["fc.weight"],
                                      np.arange(6, dtype=np.float32).reshape(2, 3) * 2)
        assert value["weights"]["fc.bias"].dtype == np.float32


def test_a_cancel_makes_the_task_at_work_stale(server: Server) -> None:
    with connected(server) as (client, session):
        session.send(task(1))
        for t in fl.tasks(client, timeout=10):
            if t.id == 1:
                session.send(cancel(1, "removed"))
                assert t.cancelled.wait(5)  # arrives while "training"
                assert (t.stale, t.reason) == (True, "removed")
                assert t.reply(weights=doubled(t), samples=1) is False
                assert t.fail("too late") is False
                session.send(task(2))
            else:
                assert t.reply(weights=doubled(t), samples=3)
                session.send(stop())
        message = session.recv_message(timeout=5)
        assert (message.request, message.value()["task"]) == (3, 2)  # nothing for task 1
        time.sleep(0.1)
        assert session.pending() == 0


def test_a_newer_task_supersedes_the_one_at_work(server: Server) -> None:
    with connected(server) as (client, session):
        session.send(task(1))
        ids = []
        for t in fl.tasks(client, timeout=10):
            ids.append(t.id)
            if t.id == 1:
                session.send(task(2, round_=2))
                assert t.cancelled.wait(5)
                assert t.reason == "superseded"
                assert not t.reply(weights=doubled(t), samples=1)
            else:
                assert t.reply(weights=doubled(t), samples=2)
                session.send(stop())
        assert ids == [1, 2]
        assert session.recv(timeout=5)["task"] == 2


def test_tasks_superseded_before_they_are_taken_are_skipped(server: Server) -> None:
    with connected(server) as (client, session):
        for number in (1, 2, 3):
            session.send(task(number, round_=number))
        session.send(cancel(3))
        session.send(task(4, round_=4))
        wait_until(lambda: client.messages_received == 5)
        loop = fl.tasks(client, timeout=10)
        ids = []
        for t in loop:
            ids.append(t.id)
            session.send(stop())
        assert ids == [4]


def test_malformed_tasks_get_a_failure_and_the_loop_goes_on(server: Server) -> None:
    with connected(server) as (client, session):
        session.send(task(1, kind="predict"))
        session.send(task(2, weights={"w": np.arange(3, dtype=np.int32)}))
        session.send("hello")
        session.send(task(3, config={"nested": {"a": 1}}))
        session.send(task(4))
        for t in fl.tasks(client, timeout=10):
            assert t.id == 4
            t.reply(weights=doubled(t), samples=1)
            session.send(stop())
        failures = [session.recv_message(timeout=5) for _ in range(4)]
        assert [m.request for m in failures] == [1, 2, 3, 4]
        values = [m.value() for m in failures]
        assert [(v["type"], v["task"]) for v in values] == [
            ("failure", 1), ("failure", 2), ("failure", 0), ("failure", 3)]
        assert values[0]["error"] == ('Task message has the wrong shape: "kind" is "\'predict\'", '
                                      'expected "train" or "evaluate"')
        assert 'weights "w" is int32, expected a float32 or float64 array' in values[1]["error"]
        assert "it is a str, expected a map" in values[2]["error"]
        assert 'config "nested" is a dict' in values[3]["error"]
        assert session.recv(timeout=5)["type"] == "result"


def test_reply_checks_the_update_against_the_model(server: Server) -> None:
    with connected(server) as (client, session):
        session.send(task(1))
        for t in fl.tasks(client, timeout=10):
            good = doubled(t)
            with pytest.raises(TypeError, match=r'Update has the wrong shape: "fc.weight" is \[3, 2\], '
                                                r"the model's is \[2, 3\]"):
                t.reply(weights={**good, "fc.weight": good["fc.weight"].reshape(3, 2)}, samples=1)
            with pytest.raises(TypeError, match=r'wrong dtype: "fc.bias" is float64'):
                t.reply(weights={**good, "fc.bias": np.zeros(3)}, samples=1)
            with pytest.raises(TypeError, match=r"missing \['fc.bias'\], extra \['x'\]"):
                t.reply(weights={"fc.weight": good["fc.weight"], "x": good["fc.bias"]}, samples=1)
            with pytest.raises(TypeError, match="a train task needs weights"):
                t.reply(samples=1)
            with pytest.raises(ValueError, match='Invalid samples: "-1" is negative'):
                t.reply(weights=good, samples=-1)
            with pytest.raises(ValueError, match='"loss" is "nan"'):
                t.reply(weights=good, samples=1, metrics={"loss": float("nan")})
            with pytest.raises(TypeError, match='"name" is a str'):
                t.reply(weights=good, samples=1, metrics={"name": "x"})
            assert not t.answered
            assert t.fail(RuntimeError("out of memory"))
            session.send(stop())
        value = session.recv(timeout=5)
        assert value == {"fl": 1, "type": "failure", "task": 1, "round": 1,
                         "error": "RuntimeError: out of memory"}


def test_the_loop_ends_when_the_server_closes_and_times_out_without_tasks(server: Server) -> None:
    with connected(server) as (client, session):
        with pytest.raises(fedcomm.FedcommTimeoutError, match="No task arrived within 0.2 s"):
            for _ in fl.tasks(client, timeout=0.2):
                pass
        session.end()
        loop = fl.tasks(client, timeout=10)
        assert list(loop) == []
        assert loop.stop_reason is None


def test_leaving_the_loop_stops_its_reader(server: Server) -> None:
    with connected(server) as (client, session):
        session.send(task(1))
        for t in fl.tasks(client, timeout=10):
            assert t.id == 1
            break
        wait_until(lambda: not any(th.name == "fedcomm-fl-tasks" for th in threading.enumerate()))
        session.send("after the loop")
        assert client.recv(timeout=5) == "after the loop"  # the loop's reader took nothing more


def train(t: fl.Task) -> Dict[str, Any]:
    if t.config.get("fail"):
        raise ValueError("no data for this round")
    return {"weights": doubled(t), "samples": 4, "metrics": {"loss": 0.5}}


def test_run_site_answers_with_its_handlers(server: Server) -> None:
    srv = server(1)
    outcome: List[fl.SiteResult] = []
    runner = threading.Thread(target=lambda: outcome.append(fl.run_site(
        {"port": srv.port, "name": "site-a", "timeout": 5}, train=train, task_timeout=10)))
    runner.start()
    session = srv.session(0)
    session.send(task(1))
    assert session.recv(timeout=5)["type"] == "result"
    session.send(task(2, config={"fail": True}))
    assert session.recv(timeout=5)["error"] == "ValueError: no data for this round"
    session.send(task(3, kind="evaluate"))
    assert session.recv(timeout=5)["error"] == 'This site has no handler for "evaluate" tasks'
    session.send(stop("job done"))
    runner.join(10)
    assert not runner.is_alive()
    assert outcome == [fl.SiteResult(results=1, failures=2, stale=0, reconnects=0,
                                     stop_reason="job done")]
    assert session.name == "site-a"


def test_run_site_reconnects_to_a_restarted_coordinator(server: Server) -> None:
    first = server(1, grace=30)
    port = first.port
    outcome: List[fl.SiteResult] = []
    sessions: List[fedcomm.Client] = []
    runner = threading.Thread(target=lambda: outcome.append(fl.run_site(
        {"host": "127.0.0.1", "port": port, "name": "site-b", "timeout": 2},
        train=train, reconnect_timeout=20, task_timeout=20, on_session=sessions.append)))
    runner.start()
    session = first.session(0)
    session.send(task(1))
    assert session.recv(timeout=5)["task"] == 1
    first.close()  # killed: every connection cut, the sessions lost with it
    second = server(1, grace=30, port=port)
    restarted = second.session(0, timeout=15)  # a new session, not a resume
    assert restarted.name == "site-b"
    restarted.send(task(2, round_=2))
    assert restarted.recv(timeout=5)["task"] == 2
    restarted.send(stop())
    runner.join(10)
    assert not runner.is_alive()
    assert outcome == [fl.SiteResult(results=2, failures=0, stale=0, reconnects=1, stop_reason="done")]
    assert len(sessions) == 2 and sessions[0] is not sessions[1]
    assert all(client.closed for client in sessions)


def test_run_site_gives_up_after_reconnect_timeout() -> None:
    import socket
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises((fedcomm.PeerDisconnectedError, fedcomm.FedcommTimeoutError)):
        fl.run_site({"port": port, "timeout": 0.3}, train=train, reconnect_timeout=0.8)
    assert time.monotonic() - started < 10
    with pytest.raises(ValueError, match="reconnect_timeout"):
        fl.run_site({"port": port}, train=train, reconnect_timeout=0)
