import assert from "node:assert/strict";
import { NdArray } from "../tensor.ts";
import { decode, encode } from "../codec.ts";
import { aggregateMetrics, type PartialSum, WeightedSum } from "./aggregate.ts";
import type { Weights } from "./weights.ts";

/** A seeded xorshift32 generator of numbers in [0, 1). */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}

function shuffled<T>(items: readonly T[], next: () => number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [copy[i], copy[j]] = [copy[j], copy[i]];
  }
  return copy;
}

interface Update {
  weights: Weights;
  weight: number;
}

/** `count` updates of a two-tensor f32 model, values over 8 binary orders of magnitude. */
function makeUpdates(count: number, seed: number): { model: Weights; updates: Update[] } {
  const next = random(seed);
  const model = { w: new NdArray(new Float32Array(64 * 48), [64, 48]), b: new Float32Array(48) };
  const value = () => (next() * 2 - 1) * 2 ** Math.floor(next() * 8 - 4);
  const updates = Array.from({ length: count }, () => ({
    weights: {
      w: new NdArray(new Float32Array(64 * 48).map(value), [64, 48]),
      b: new Float32Array(48).map(value),
    },
    weight: 1 + Math.floor(next() * 5000),
  }));
  return { model, updates };
}

/** The bits of every value of f32 weights, in order. */
function bits(weights: Weights): number[] {
  return Object.values(weights).flatMap((tensor) => {
    const data = tensor instanceof NdArray ? tensor.data : tensor;
    return [...new Uint32Array(data.buffer, data.byteOffset, data.length)];
  });
}

function fold(model: Weights, updates: readonly Update[]): WeightedSum {
  const sum = new WeightedSum(model);
  for (const { weights, weight } of updates) sum.add(weights, weight);
  return sum;
}

/** The same mean with an f32 accumulator: what the f64 one is there to avoid. */
function naiveF32Mean(updates: readonly Update[]): number[] {
  const out = new Float32Array(64 * 48 + 48);
  let total = 0;
  for (const { weights, weight } of updates) {
    const values = [...(weights.w as NdArray<Float32Array>).data, ...(weights.b as Float32Array)];
    for (let i = 0; i < out.length; i++) out[i] += values[i] * weight;
    total += weight;
  }
  return [...new Uint32Array(out.map((x) => x / total).buffer)];
}

Deno.test("WeightedSum.mean() is bit-identical in f32 whatever the arrival order", () => {
  const { model, updates } = makeUpdates(200, 17);
  const reference = bits(fold(model, updates).mean());
  const naiveReference = naiveF32Mean(updates);
  const next = random(99);
  let naiveDiffers = false;
  for (let order = 0; order < 6; order++) {
    const arrival = shuffled(updates, next);
    assert.deepStrictEqual(bits(fold(model, arrival).mean()), reference, `order ${order}`);
    naiveDiffers ||= naiveF32Mean(arrival).some((b, i) => b !== naiveReference[i]);
  }
  // The check has teeth: f32 accumulation of the same orders does not agree with itself.
  assert.ok(naiveDiffers, "an f32 accumulator gave the same bits in every order");
});

Deno.test("WeightedSum.merge() of four edges' partial sums equals the flat fold", () => {
  const { model, updates } = makeUpdates(103, 5);
  const flat = fold(model, updates);
  const arrival = shuffled(updates, random(3));
  // Uneven edges, as real ones would be: 40, 30, 20 and 13 sites.
  const edges = [
    arrival.slice(0, 40),
    arrival.slice(40, 70),
    arrival.slice(70, 90),
    arrival.slice(90),
  ]
    .map((group) => fold(model, group));
  const root = new WeightedSum(model);
  for (const edge of edges) root.merge(edge.toPartial());
  assert.equal(root.count, 103);
  assert.equal(root.weight, flat.weight);
  assert.deepStrictEqual(bits(root.mean()), bits(flat.mean()));
  // And a partial sum that went over the wire, through fedcomm's codec.
  const wired = new WeightedSum(model);
  for (const edge of edges) wired.merge(decode(encode(edge.toPartial())) as PartialSum);
  assert.deepStrictEqual(bits(wired.mean()), bits(flat.mean()));
});

Deno.test("WeightedSum.mean() computes the weighted mean in the template's form", () => {
  const model = { w: new NdArray(new Float32Array(6), [2, 3]), b: new Float64Array(2) };
  const sum = new WeightedSum(model);
  sum.add({
    w: new NdArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]),
    b: new Float64Array([1, 0.1]),
  }, 1);
  // A 1-D NdArray answers a 1-D typed array and the other way round.
  sum.add({
    w: new NdArray(new Float32Array([7, 8, 9, 10, 11, 12]), [2, 3]),
    b: new NdArray(new Float64Array([4, 0.2]), [2]),
  }, 2);
  const mean = sum.mean();
  assert.ok(mean.w instanceof NdArray);
  assert.deepStrictEqual(mean.w.shape, [2, 3]);
  assert.deepStrictEqual(mean.w.data, new Float32Array([5, 6, 7, 8, 9, 10]));
  assert.ok(mean.b instanceof Float64Array);
  assert.deepStrictEqual(mean.b, new Float64Array([3, (0.1 + 2 * 0.2) / 3]));
  assert.equal(sum.count, 2);
  assert.equal(sum.weight, 3);
  // mean() changes nothing: again gives the same.
  assert.deepStrictEqual(sum.mean(), mean);
});

Deno.test("WeightedSum.add() throws a typed error naming the tensor and changes nothing", () => {
  const model = { w: new NdArray(new Float32Array(4), [2, 2]), b: new Float32Array(2) };
  const sum = new WeightedSum(model);
  sum.add(
    { w: new NdArray(new Float32Array([1, 2, 3, 4]), [2, 2]), b: new Float32Array([1, 1]) },
    2,
  );
  const before = structuredClone(sum.toPartial());
  const good = new NdArray(new Float32Array(4), [2, 2]);
  const cases: [Weights, number, ErrorConstructor, string][] = [
    [
      { w: new NdArray(new Float32Array(4), [4, 1]), b: new Float32Array(2) },
      1,
      TypeError,
      `Update has the wrong shape: "w" is [4, 1], the model's is [2, 2]`,
    ],
    [
      { w: good, b: new Float64Array(2) },
      1,
      TypeError,
      `Update has the wrong dtype: "b" is float64, the model's is float32`,
    ],
    [{ w: good }, 1, TypeError, `Update is missing a tensor: "b"`],
    [
      { w: good, b: new Float32Array(2), c: new Float32Array(1) },
      1,
      TypeError,
      `Update has an extra tensor: "c"`,
    ],
    [
      { w: good, b: new Int32Array(2) as unknown as Float32Array },
      1,
      TypeError,
      `Update has an invalid tensor: "b" is an Int32Array, not a float32 or float64 tensor`,
    ],
    // The first tensor is fine and the second is not: nothing may be folded.
    [
      {
        w: new NdArray(new Float32Array([5, 5, 5, 5]), [2, 2]),
        b: new Float32Array([0, Infinity]),
      },
      1,
      RangeError,
      `Update has a non-finite value: "b"[1] is Infinity`,
    ],
    [
      { w: new NdArray(new Float32Array([0, 0, NaN, 0]), [2, 2]), b: new Float32Array(2) },
      1,
      RangeError,
      `Update has a non-finite value: "w"[2] is NaN`,
    ],
    [
      { w: good, b: new Float32Array(2) },
      -1,
      RangeError,
      `Update weight is not a finite non-negative number: "-1"`,
    ],
    [
      { w: good, b: new Float32Array(2) },
      NaN,
      RangeError,
      `Update weight is not a finite non-negative number: "NaN"`,
    ],
    [
      { w: good, b: new Float32Array(2) },
      Infinity,
      RangeError,
      `Update weight is not a finite non-negative number: "Infinity"`,
    ],
    [
      { w: good, b: new Float32Array(2) },
      "3" as unknown as number,
      RangeError,
      `Update weight is not a finite non-negative number: "3"`,
    ],
  ];
  for (const [update, weight, type, message] of cases) {
    assert.throws(() => sum.add(update, weight), { name: type.name, message });
    assert.deepStrictEqual(sum.toPartial(), before, message);
  }
  assert.throws(() => sum.add(null as unknown as Weights, 1), TypeError);
  assert.throws(() => sum.add([] as unknown as Weights, 1), TypeError);
  assert.deepStrictEqual(sum.toPartial(), before);
});

Deno.test("WeightedSum.mean() throws a RangeError when the total weight is 0", () => {
  const sum = new WeightedSum({ b: new Float32Array(1) });
  assert.throws(() => sum.mean(), {
    name: "RangeError",
    message: `Cannot average: the total weight is 0 after "0" updates`,
  });
  sum.add({ b: new Float32Array([3]) }, 0);
  assert.throws(() => sum.mean(), /the total weight is 0 after "1" updates/);
  sum.add({ b: new Float32Array([4]) }, 1);
  assert.deepStrictEqual(sum.mean(), { b: new Float32Array([4]) });
});

Deno.test("WeightedSum.merge() refuses a bad partial sum and changes nothing", () => {
  const model = { b: new Float32Array(2) };
  const sum = new WeightedSum(model);
  sum.add({ b: new Float32Array([1, 2]) }, 1);
  const before = structuredClone(sum.toPartial());
  const ok = (): PartialSum => ({ sums: { b: new Float64Array([1, 1]) }, weight: 1, count: 1 });
  const cases: [PartialSum, ErrorConstructor, RegExp][] = [
    [{ ...ok(), sums: {} }, TypeError, /missing a tensor: "b"/],
    [
      { ...ok(), sums: { b: new Float64Array(2), c: new Float64Array(1) } },
      TypeError,
      /extra tensor: "c"/,
    ],
    [{ ...ok(), sums: { b: new Float64Array(3) } }, TypeError, /"b" has 3 values, the model's 2/],
    [
      { ...ok(), sums: { b: new Float32Array(2) as unknown as Float64Array } },
      TypeError,
      /not a Float64Array/,
    ],
    [{ ...ok(), sums: { b: new Float64Array([0, NaN]) } }, RangeError, /"b"\[1\] is NaN/],
    [{ ...ok(), weight: -2 }, RangeError, /weight is not a finite non-negative number: "-2"/],
    [{ ...ok(), count: 1.5 }, RangeError, /count is not a non-negative integer: "1.5"/],
    [null as unknown as PartialSum, TypeError, /no "sums" map/],
  ];
  for (const [partial, type, message] of cases) {
    assert.throws(() => sum.merge(partial), (error: Error) => {
      assert.ok(error instanceof type, `${error}`);
      assert.match(error.message, message);
      return true;
    });
    assert.deepStrictEqual(sum.toPartial(), before);
  }
});

Deno.test("WeightedSum.reset() empties the sum for the next round, keeping its arrays", () => {
  const sum = new WeightedSum({ b: new Float32Array(2) });
  const arrays = sum.toPartial().sums.b;
  sum.add({ b: new Float32Array([1, 2]) }, 4);
  sum.merge({ sums: { b: new Float64Array([1, 1]) }, weight: 1, count: 1 });
  sum.reset();
  assert.deepStrictEqual(sum.toPartial(), {
    sums: { b: new Float64Array(2) },
    weight: 0,
    count: 0,
  });
  assert.equal(sum.toPartial().sums.b, arrays);
  sum.add({ b: new Float32Array([3, 5]) }, 1);
  assert.deepStrictEqual(sum.mean(), { b: new Float32Array([3, 5]) });
});

Deno.test({
  name: "WeightedSum() keeps no reference to the template's values",
  ignore: typeof (globalThis as { gc?: () => void }).gc !== "function",
  async fn() {
    let sum: WeightedSum | undefined;
    const ref = (() => {
      const template = { w: new Float32Array(1 << 20) };
      sum = new WeightedSum(template);
      return new WeakRef(template.w);
    })();
    await new Promise((resolve) => setTimeout(resolve, 0));
    (globalThis as unknown as { gc: () => void }).gc();
    assert.equal(ref.deref(), undefined, "the template's array is still reachable");
    assert.equal(sum!.toPartial().sums.w.length, 1 << 20);
  },
});

Deno.test("aggregateMetrics() takes the sample-weighted mean over the sites reporting each metric", () => {
  assert.deepStrictEqual(aggregateMetrics([]), {});
  assert.deepStrictEqual(
    aggregateMetrics([
      { samples: 10, metrics: { loss: 2, accuracy: 0.5 } },
      { samples: 30, metrics: { loss: 1 } },
      { samples: 60, metrics: { accuracy: 0.8, auc: 0.7 } },
    ]),
    { loss: (10 * 2 + 30 * 1) / 40, accuracy: (10 * 0.5 + 60 * 0.8) / 70, auc: 0.7 },
  );
  // Reporters with 0 samples only: the plain mean; with some samples, they weigh nothing.
  assert.deepStrictEqual(
    aggregateMetrics([
      { samples: 0, metrics: { loss: 1, seconds: 4 } },
      { samples: 0, metrics: { loss: 3 } },
      { samples: 5, metrics: { seconds: 2 } },
    ]),
    { loss: 2, seconds: 2 },
  );
});

Deno.test("aggregateMetrics() throws a RangeError naming the bad item", () => {
  assert.throws(
    () => aggregateMetrics([{ samples: 1, metrics: {} }, { samples: -1, metrics: {} }]),
    {
      name: "RangeError",
      message: `Metrics item 1: the sample count is not a finite non-negative number: "-1"`,
    },
  );
  assert.throws(() => aggregateMetrics([{ samples: 1, metrics: { loss: NaN } }]), {
    name: "RangeError",
    message: `Metrics item 0: "loss" is not a finite number: "NaN"`,
  });
});

Deno.test("WeightedSum.mean() writes into the given tensors the bits a new mean has", () => {
  const { model, updates } = makeUpdates(9, 11);
  const sum = fold(model, updates);
  const into: Weights = {
    w: new NdArray(new Float32Array(64 * 48).fill(7), [64, 48]),
    b: new Float32Array(48).fill(7),
  };
  const { w, b } = into;
  assert.equal(sum.mean(into), into);
  assert.equal(into.w, w, "the tensors are written, not replaced");
  assert.equal(into.b, b);
  assert.deepStrictEqual(bits(into), bits(sum.mean()));
  // The template itself may be the target: the mean does not read it.
  assert.deepStrictEqual(bits(sum.mean(model)), bits(into));
  // A float64 tensor gets the f64 mean.
  const f64 = new WeightedSum({ x: new Float64Array(1) });
  f64.add({ x: new Float64Array([1]) }, 1);
  f64.add({ x: new Float64Array([2]) }, 2);
  const x = { x: new Float64Array(1) };
  f64.mean(x);
  assert.deepStrictEqual(x.x, new Float64Array([5 / 3]));
});

Deno.test("WeightedSum.mean() refuses a target of another form and writes nothing", () => {
  const sum = new WeightedSum({ w: new NdArray(new Float32Array(4), [2, 2]) });
  sum.add({ w: new NdArray(new Float32Array([1, 2, 3, 4]), [2, 2]) }, 1);
  const flat = { w: new Float32Array(4).fill(9) };
  assert.throws(() => sum.mean(flat), {
    name: "TypeError",
    message: `Mean target has the wrong shape: "w" is [4], the model's is [2, 2]`,
  });
  assert.deepStrictEqual(flat.w, new Float32Array(4).fill(9));
  assert.throws(
    () => sum.mean({ w: new NdArray(new Float64Array(4), [2, 2]) }),
    /Mean target has the wrong dtype: "w" is float64/,
  );
  assert.throws(() => sum.mean({}), /Mean target is missing a tensor: "w"/);
  // An empty sum throws before it looks at the target.
  assert.throws(() => new WeightedSum(flat).mean(flat), RangeError);
});
