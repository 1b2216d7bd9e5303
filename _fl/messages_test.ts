import assert from "node:assert/strict";
import { NdArray } from "../tensor.ts";
import { decode, encode } from "../codec.ts";
import { pythonReady, runPython } from "../tests/test_util.ts";
import * as fl from "./messages.ts";

const task = (): fl.TaskMessage => ({
  fl: 1,
  type: "task",
  job: "mnist",
  task: 12,
  round: 4,
  kind: "train",
  config: { epochs: 2, lr: 0.05, optimizer: "sgd", shuffle: true },
  weights: { w: new NdArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]), b: new Float32Array(3) },
});

const result = () => ({
  fl: 1,
  type: "result",
  task: 12,
  round: 4,
  samples: 600,
  metrics: { loss: 0.25, accuracy: 0.9 },
  weights: { w: new NdArray(new Float32Array(6), [2, 3]), b: new Float32Array(3) },
});

/** Asserts that `parse(value)` throws a TypeError with exactly `message`. */
function refuses(parse: (value: unknown) => unknown, value: unknown, message: string): void {
  assert.throws(() => parse(value), { name: "TypeError", message });
}

Deno.test("fl.parseTask() returns the known fields and survives the codec", () => {
  const parsed = fl.parseTask({ ...task(), extra: "ignored" });
  assert.deepStrictEqual(parsed, task());
  assert.equal(fl.FL_VERSION, 1);
  assert.deepStrictEqual(fl.parseTask(decode(encode(task()))), task());
  const evaluate = fl.parseTask({ ...task(), kind: "evaluate", config: {}, task: 0, round: 0 });
  assert.equal(evaluate.kind, "evaluate");
  // The config is a copy: changing it does not change the message.
  const message = task();
  fl.parseTask(message).config.epochs = 99;
  assert.equal(message.config.epochs, 2);
});

Deno.test("fl.parseTask() names the first bad field", () => {
  const cases: [unknown, string][] = [
    [null, `Invalid task message: it is "null", not a map`],
    [[1], `Invalid task message: it is an Array, not a map`],
    [{ ...task(), fl: 2 }, `Unsupported FL message: "fl" is "2", this side speaks version 1`],
    [
      { ...task(), fl: undefined },
      `Unsupported FL message: "fl" is "undefined", this side speaks version 1`,
    ],
    [{ ...task(), type: "result" }, `Invalid task message: "type" is "result", not "task"`],
    [{ ...task(), job: "" }, `Invalid task message: "job" is "", not a non-empty string`],
    [{ ...task(), job: 3 }, `Invalid task message: "job" is "3", not a non-empty string`],
    [{ ...task(), task: -1 }, `Invalid task message: "task" is "-1", not a non-negative integer`],
    [{ ...task(), task: 1.5 }, `Invalid task message: "task" is "1.5", not a non-negative integer`],
    [
      { ...task(), task: 2 ** 53 },
      `Invalid task message: "task" is "9007199254740992", not a non-negative integer`,
    ],
    [{ ...task(), round: "4" }, `Invalid task message: "round" is "4", not a non-negative integer`],
    [
      { ...task(), kind: "fit" },
      `Invalid task message: "kind" is "fit", not "train" or "evaluate"`,
    ],
    [{ ...task(), config: [] }, `Invalid task message: "config" is an Array, not a map`],
    [
      { ...task(), config: { lr: null } },
      `Invalid task message: config "lr" is "null", not a number, string or boolean`,
    ],
    [
      { ...task(), config: { lr: [1] } },
      `Invalid task message: config "lr" is an Array, not a number, string or boolean`,
    ],
    [
      { ...task(), weights: undefined },
      `Task message "weights" is not a map of tensors: it is undefined`,
    ],
    [
      { ...task(), weights: { b: new Int32Array(2) } },
      `Task message "weights" has an invalid tensor: "b" is an Int32Array, not a float32 or float64 tensor`,
    ],
  ];
  for (const [value, message] of cases) refuses(fl.parseTask, value, message);
  // A long string is shown cut, not whole.
  assert.throws(() => fl.parseTask({ ...task(), kind: "x".repeat(1000) }), (error: Error) => {
    assert.ok(error.message.length < 200, error.message);
    return error instanceof TypeError;
  });
});

Deno.test("fl.parseResult() checks weights against the task's kind", () => {
  assert.deepStrictEqual(fl.parseResult(result(), "train"), result());
  assert.deepStrictEqual(fl.parseResult(result()), result());
  const { weights: _, ...metricsOnly } = result();
  assert.deepStrictEqual(fl.parseResult(metricsOnly, "evaluate"), metricsOnly);
  assert.deepStrictEqual(
    fl.parseResult({ ...metricsOnly, weights: null }, "evaluate"),
    metricsOnly,
  );
  assert.ok(!("weights" in fl.parseResult(metricsOnly)));
  refuses(
    (v) => fl.parseResult(v, "train"),
    metricsOnly,
    `Invalid result message: a train result has no "weights"`,
  );
  refuses(
    (v) => fl.parseResult(v, "evaluate"),
    result(),
    `Invalid result message: an evaluate result has "weights"`,
  );
  assert.deepStrictEqual(fl.parseResult(decode(encode(result())), "train"), result());
  assert.equal(fl.parseResult({ ...metricsOnly, samples: 0, metrics: {} }).samples, 0);
});

Deno.test("fl.parseResult() names the first bad field", () => {
  const cases: [unknown, string][] = [
    [{ ...result(), type: "failure" }, `Invalid result message: "type" is "failure", not "result"`],
    [
      { ...result(), task: undefined },
      `Invalid result message: "task" is "undefined", not a non-negative integer`,
    ],
    [
      { ...result(), round: -2 },
      `Invalid result message: "round" is "-2", not a non-negative integer`,
    ],
    [
      { ...result(), samples: 12.5 },
      `Invalid result message: "samples" is "12.5", not a non-negative integer`,
    ],
    [
      { ...result(), samples: 10n },
      `Invalid result message: "samples" is "10", not a non-negative integer`,
    ],
    [
      { ...result(), metrics: undefined },
      `Invalid result message: "metrics" is "undefined", not a map`,
    ],
    [
      { ...result(), metrics: { loss: NaN } },
      `Invalid result message: metric "loss" is "NaN", not a finite number`,
    ],
    [
      { ...result(), metrics: { loss: "low" } },
      `Invalid result message: metric "loss" is "low", not a finite number`,
    ],
    [
      { ...result(), weights: { b: 1 } },
      `Result message "weights" has an invalid tensor: "b" is a number, not a float32 or float64 tensor`,
    ],
  ];
  for (const [value, message] of cases) refuses(fl.parseResult, value, message);
});

Deno.test("fl.parseFailure(), fl.parseCancel() and fl.parseStop() check their fields", () => {
  const failure = { fl: 1, type: "failure", task: 3, round: 1, error: "CUDA out of memory" };
  assert.deepStrictEqual(fl.parseFailure({ ...failure, trace: "…" }), failure);
  refuses(
    fl.parseFailure,
    { ...failure, error: undefined },
    `Invalid failure message: "error" is "undefined", not a string`,
  );
  refuses(
    fl.parseFailure,
    { ...failure, round: null },
    `Invalid failure message: "round" is "null", not a non-negative integer`,
  );
  for (const reason of ["stale", "removed", "stopped"] as const) {
    const cancel = { fl: 1, type: "cancel", task: 3, round: 1, reason };
    assert.deepStrictEqual(fl.parseCancel(cancel), cancel);
  }
  refuses(
    fl.parseCancel,
    { fl: 1, type: "cancel", task: 3, round: 1, reason: "late" },
    `Invalid cancel message: "reason" is "late", not "stale" or "removed" or "stopped"`,
  );
  refuses(
    fl.parseCancel,
    { fl: 1, type: "cancel", round: 1, reason: "stale" },
    `Invalid cancel message: "task" is "undefined", not a non-negative integer`,
  );
  assert.deepStrictEqual(fl.parseStop({ fl: 1, type: "stop", reason: "" }), {
    fl: 1,
    type: "stop",
    reason: "",
  });
  refuses(
    fl.parseStop,
    { fl: 1, type: "stop" },
    `Invalid stop message: "reason" is "undefined", not a string`,
  );
  refuses(
    fl.parseStop,
    { fl: "1", type: "stop", reason: "x" },
    `Unsupported FL message: "fl" is "1", this side speaks version 1`,
  );
});

Deno.test("fl.parseServerMessage() and fl.parseSiteMessage() dispatch on the type", () => {
  assert.equal(fl.parseServerMessage(task()).type, "task");
  assert.equal(
    fl.parseServerMessage({ fl: 1, type: "cancel", task: 1, round: 1, reason: "stale" }).type,
    "cancel",
  );
  assert.equal(fl.parseServerMessage({ fl: 1, type: "stop", reason: "done" }).type, "stop");
  assert.equal(fl.parseSiteMessage(result(), "train").type, "result");
  assert.equal(
    fl.parseSiteMessage({ fl: 1, type: "failure", task: 1, round: 1, error: "x" }).type,
    "failure",
  );
  refuses(
    fl.parseServerMessage,
    result(),
    `Invalid FL message from the server: "type" is "result", not one of "task", "cancel", "stop"`,
  );
  refuses(
    fl.parseServerMessage,
    new Float32Array(1),
    `Invalid FL message from the server: it is a Float32Array, not a map, not one of "task", "cancel", "stop"`,
  );
  refuses(
    fl.parseSiteMessage,
    task(),
    `Invalid FL message from the site: "type" is "task", not one of "result", "failure"`,
  );
  // The dispatched parser still checks every field.
  refuses(
    (v) => fl.parseSiteMessage(v, "evaluate"),
    result(),
    `Invalid result message: an evaluate result has "weights"`,
  );
  refuses(
    fl.parseServerMessage,
    { ...task(), round: -1 },
    `Invalid task message: "round" is "-1", not a non-negative integer`,
  );
});

Deno.test({
  name: "fl.parseResult() reads a result that numpy and msgpack_numpy wrote",
  ignore: !pythonReady("msgpack", "numpy", "msgpack_numpy"),
  async fn() {
    const bytes = await runPython(
      `
import sys, msgpack, numpy as np, msgpack_numpy
weights = {
    "w": np.arange(6, dtype=np.float32).reshape(2, 3),
    "b": np.array([0.5, -1.5], dtype=np.float64),
    "s": np.array(2.0, dtype=np.float32),
}
message = {"fl": 1, "type": "result", "task": 9, "round": 2, "samples": 40,
           "metrics": {"loss": 0.125}, "weights": weights}
sys.stdout.buffer.write(msgpack.packb(message, default=msgpack_numpy.encode))
`,
      [],
    );
    const parsed = fl.parseResult(decode(bytes), "train");
    assert.equal(parsed.samples, 40);
    assert.deepStrictEqual(parsed.metrics, { loss: 0.125 });
    const { w, b, s } = parsed.weights!;
    assert.ok(w instanceof NdArray);
    assert.deepStrictEqual(w.shape, [2, 3]);
    assert.deepStrictEqual(w.data, new Float32Array([0, 1, 2, 3, 4, 5]));
    assert.deepStrictEqual(b, new Float64Array([0.5, -1.5]));
    assert.ok(s instanceof NdArray);
    assert.deepStrictEqual(s.shape, []);
  },
});
