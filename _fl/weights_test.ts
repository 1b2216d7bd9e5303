import assert from "node:assert/strict";
import { NdArray } from "../tensor.ts";
import {
  checkCompatible,
  checkFinite,
  checkWeights,
  cloneWeights,
  describe,
  firstNonFinite,
  type Weights,
} from "./weights.ts";

Deno.test("checkWeights() accepts float tensors and names the first other value", () => {
  checkWeights({});
  checkWeights({ a: new Float32Array(1), b: new NdArray(new Float64Array(4), [2, 2]) });
  checkWeights(Object.assign(Object.create(null), { a: new Float32Array(1) }));
  const cases: [unknown, string][] = [
    [null, "Weights is not a map of tensors: it is null"],
    [[new Float32Array(1)], "Weights is not a map of tensors: it is an Array"],
    [new Map(), "Weights is not a map of tensors: it is a Map"],
    [7, "Weights is not a map of tensors: it is a number"],
    [
      { a: new Float32Array(1), b: 1.5 },
      `Weights has an invalid tensor: "b" is a number, not a float32 or float64 tensor`,
    ],
    [
      { a: new Int32Array(1) },
      `Weights has an invalid tensor: "a" is an Int32Array, not a float32 or float64 tensor`,
    ],
    [
      { a: new Float16Array(1) },
      `Weights has an invalid tensor: "a" is a Float16Array, not a float32 or float64 tensor`,
    ],
    [
      { a: new NdArray(new Uint8Array(2), [2]) },
      `Weights has an invalid tensor: "a" is an NdArray of Uint8Array, not a float32 or float64 tensor`,
    ],
    [
      { a: [1, 2] },
      `Weights has an invalid tensor: "a" is an Array, not a float32 or float64 tensor`,
    ],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => checkWeights(value), { name: "TypeError", message });
  }
  assert.throws(() => checkWeights(null, "Update"), /^TypeError: Update is not a map/);
});

Deno.test("describe() lists names, dtypes, shapes and sizes in order", () => {
  assert.deepStrictEqual(describe({}), []);
  assert.deepStrictEqual(
    describe({
      scalar: new NdArray(new Float64Array(1), []),
      conv: new NdArray(new Float32Array(2 * 3 * 4), [2, 3, 4]),
      bias: new Float32Array(5),
    }),
    [
      { name: "scalar", dtype: "float64", shape: [], size: 1 },
      { name: "conv", dtype: "float32", shape: [2, 3, 4], size: 24 },
      { name: "bias", dtype: "float32", shape: [5], size: 5 },
    ],
  );
  assert.throws(() => describe({ a: new Int8Array(1) } as unknown as Weights), TypeError);
});

Deno.test("checkCompatible() takes the template or its description and names the bad tensor", () => {
  const model = { fc1: new NdArray(new Float32Array(30), [10, 3]), bias: new Float64Array(3) };
  const update = {
    bias: new NdArray(new Float64Array(3), [3]),
    fc1: new NdArray(new Float32Array(30), [10, 3]),
  };
  checkCompatible(model, update);
  checkCompatible(describe(model), update);
  const cases: [unknown, string][] = [
    [{ fc1: update.fc1 }, `Update is missing a tensor: "bias"`],
    [{ ...update, fc2: new Float32Array(1) }, `Update has an extra tensor: "fc2"`],
    [
      { ...update, fc1: new NdArray(new Float32Array(40), [10, 4]) },
      `Update has the wrong shape: "fc1" is [10, 4], the model's is [10, 3]`,
    ],
    [
      { ...update, fc1: new Float32Array(30) },
      `Update has the wrong shape: "fc1" is [30], the model's is [10, 3]`,
    ],
    [
      { ...update, fc1: new NdArray(new Float32Array(30), [3, 10]) },
      `Update has the wrong shape: "fc1" is [3, 10], the model's is [10, 3]`,
    ],
    [
      { ...update, bias: new Float32Array(3) },
      `Update has the wrong dtype: "bias" is float32, the model's is float64`,
    ],
    ["weights", "Update is not a map of tensors: it is a string"],
  ];
  for (const [value, message] of cases) {
    assert.throws(() => checkCompatible(model, value), { name: "TypeError", message });
    assert.throws(() => checkCompatible(describe(model), value), { name: "TypeError", message });
  }
  assert.throws(
    () => checkCompatible(model, {}, "Result"),
    /^TypeError: Result is missing a tensor/,
  );
});

Deno.test("checkFinite() names the tensor and the first bad index", () => {
  checkFinite({
    a: new Float32Array([0, -0, 3.4e38, -1e-45]),
    b: new Float64Array([Number.MAX_VALUE]),
  });
  const cases: [Weights, string][] = [
    [{ a: new Float32Array([0, NaN, Infinity]) }, `Update has a non-finite value: "a"[1] is NaN`],
    [
      { a: new Float32Array(3), b: new Float64Array([1, 2, -Infinity]) },
      `Update has a non-finite value: "b"[2] is -Infinity`,
    ],
    [
      { w: new NdArray(new Float32Array([1, 2, 3, Infinity]), [2, 2]) },
      `Update has a non-finite value: "w"[3] is Infinity`,
    ],
  ];
  for (const [weights, message] of cases) {
    assert.throws(() => checkFinite(weights), { name: "RangeError", message });
  }
  assert.throws(
    () => checkFinite({ a: new Float32Array([NaN]) }, "Model"),
    /^RangeError: Model has/,
  );
});

Deno.test("firstNonFinite() finds NaN and both infinities anywhere, and -1 for none", () => {
  assert.equal(firstNonFinite(new Float64Array(0)), -1);
  assert.equal(firstNonFinite(new Float64Array([1, 2, 3])), -1);
  for (const bad of [NaN, Infinity, -Infinity]) {
    for (const at of [0, 500, 999]) {
      const data = new Float32Array(1000).fill(0.5);
      data[at] = bad;
      if (at < 999) data[999] = NaN; // a later one does not count
      assert.equal(firstNonFinite(data), at, `${bad} at ${at}`);
    }
  }
});

Deno.test("cloneWeights() copies into new buffers of the same form", () => {
  const weights = {
    w: new NdArray(new Float32Array([1, 2, 3, 4]), [2, 2]),
    b: new Float64Array([5]),
  };
  const copy = cloneWeights(weights);
  assert.deepStrictEqual(copy, weights);
  assert.ok(copy.w instanceof NdArray && copy.w.data.buffer !== weights.w.data.buffer);
  assert.ok(copy.b instanceof Float64Array && copy.b.buffer !== weights.b.buffer);
  (copy.b as Float64Array)[0] = 6;
  assert.equal(weights.b[0], 5);
  // A view into a larger buffer is copied alone.
  const big = new Float32Array(1000);
  const view = cloneWeights({ v: big.subarray(10, 12) }).v as Float32Array;
  assert.equal(view.buffer.byteLength, 8);
  assert.throws(() => cloneWeights({ v: "x" } as unknown as Weights), TypeError);
});
