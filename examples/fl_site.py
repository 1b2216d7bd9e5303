"""The Python site of the FL job (``fl_job.ts``): numpy training of the digits MLP.

It answers the coordinator's tasks with ``fedcomm.fl.run_site``: a train
task runs a few epochs of minibatch SGD on the site's training share of the
UCI digits (``examples/data/digits.csv.gz``), an evaluate task measures the
model on its test share. The model is the one the Deno sites train
(``model.ts``): per layer ``fcN.weight`` of shape ``[inputs, outputs]`` and
``fcN.bias``, ReLU between layers, softmax cross-entropy at the end. It
connects over TLS with its own secret (from provisioning) and connects again,
with the same name, when the coordinator restarts.

Usage: ``python3 fl_site.py --name NAME --port P --pki DIR --data FILE``
(``PYTHONPATH`` must reach the ``fedcomm`` package: ``python/`` in a checkout).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from fedcomm import fl

DIGITS = Path(__file__).resolve().parent / "data" / "digits.csv.gz"

Layers = List[Tuple[np.ndarray, np.ndarray]]


def load_digits() -> Tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits: features scaled to [0, 1] (float32) and labels."""
    with gzip.open(DIGITS, "rt") as file:
        table = np.loadtxt(file, delimiter=",", dtype=np.int64)
    return (table[:, :64] / 16).astype(np.float32), table[:, 64]


def layers_of(weights: Dict[str, np.ndarray]) -> Layers:
    """The (weight, bias) pairs, as writable float32 copies."""
    layers = []
    while f"fc{len(layers) + 1}.weight" in weights:
        n = len(layers) + 1
        layers.append((weights[f"fc{n}.weight"].copy(), weights[f"fc{n}.bias"].copy()))
    if 2 * len(layers) != len(weights):
        raise TypeError(f"Invalid model: tensors {sorted(weights)}")
    return layers


def forward(layers: Layers, x: np.ndarray) -> List[np.ndarray]:
    """The activations of every layer; the last is the logits."""
    activations = [x]
    for i, (w, b) in enumerate(layers):
        z = activations[-1] @ w + b
        activations.append(np.maximum(z, 0) if i + 1 < len(layers) else z)
    return activations


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> Tuple[float, np.ndarray]:
    """The mean loss and the softmax probabilities."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(len(labels)), labels] + 1e-12).mean()
    return float(loss), p


def sgd_step(layers: Layers, x: np.ndarray, y: np.ndarray, lr: float) -> float:
    """One minibatch step of SGD on the mean cross-entropy, in place; returns the loss."""
    activations = forward(layers, x)
    loss, p = cross_entropy(activations[-1], y)
    delta = p
    delta[np.arange(len(y)), y] -= 1
    delta /= len(y)
    for i in range(len(layers) - 1, -1, -1):
        w, b = layers[i]
        grad_w = activations[i].T @ delta
        grad_b = delta.sum(axis=0)
        if i > 0:
            delta = (delta @ w.T) * (activations[i] > 0)
        w -= lr * grad_w.astype(np.float32)
        b -= lr * grad_b.astype(np.float32)
    return loss


class Site:
    """The handlers of one site over its share of the data."""

    def __init__(self, data: Dict[str, Any]) -> None:
        features, labels = load_digits()
        self.train_x, self.train_y = features[data["train"]], labels[data["train"]]
        self.test_x, self.test_y = features[data["test"]], labels[data["test"]]
        self.seed = int(data["seed"])

    def train(self, task: fl.Task) -> Dict[str, Any]:
        """Local epochs of SGD, stopping early if the task turns stale."""
        layers = layers_of(task.weights)
        epochs = int(task.config.get("epochs", 1))
        batch = int(task.config.get("batch", 16))
        lr = float(task.config.get("lr", 0.1))
        rng = np.random.default_rng(self.seed * 1000 + task.round)
        loss = 0.0
        for _ in range(epochs):
            if task.stale:
                break  # cancelled or superseded: the answer would be dropped anyway
            order = rng.permutation(len(self.train_y))
            total = 0.0
            for start in range(0, len(order), batch):
                rows = order[start:start + batch]
                total += sgd_step(layers, self.train_x[rows], self.train_y[rows], lr) * len(rows)
            loss = total / len(order)  # the last epoch's mean loss
        weights = {}
        for n, (w, b) in enumerate(layers, start=1):
            weights[f"fc{n}.weight"], weights[f"fc{n}.bias"] = w, b
        return {"weights": weights, "samples": len(self.train_y), "metrics": {"loss": loss}}

    def evaluate(self, task: fl.Task) -> Dict[str, Any]:
        """Loss and accuracy of the task's model on the test share."""
        logits = forward(layers_of(task.weights), self.test_x)[-1]
        loss, _ = cross_entropy(logits, self.test_y)
        accuracy = float((logits.argmax(axis=1) == self.test_y).mean())
        return {"samples": len(self.test_y), "metrics": {"loss": loss, "accuracy": accuracy}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pki", required=True, help="the site's folder from provisioning")
    parser.add_argument("--data", required=True, help="the site's data file (JSON)")
    args = parser.parse_args()
    site = Site(json.loads(Path(args.data).read_text()))
    secret = (Path(args.pki) / "secret").read_text().strip()
    sessions = []

    def connected(client: Any) -> None:
        if sessions:
            print(f"  {args.name}: connected again (new session)", flush=True)
        sessions.append(client)

    connect = {"host": "127.0.0.1", "port": args.port, "name": args.name, "secret": secret,
               "tls": str(Path(args.pki) / "ca.pem"), "props": {"runtime": "python"}}
    outcome = fl.run_site(connect, train=site.train, evaluate=site.evaluate,
                          reconnect_timeout=60, on_session=connected)
    return 0 if outcome.stop_reason == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
