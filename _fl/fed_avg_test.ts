import assert from "node:assert/strict";
import { NdArray } from "../tensor.ts";
import { WeightedSum } from "./aggregate.ts";
import { FedAvg, FedProx } from "./fed_avg.ts";
import type { Weights } from "./weights.ts";

const model = (): Weights => ({
  w: new NdArray(new Float32Array([0, 0, 0, 0]), [2, 2]),
  b: new Float64Array([0]),
});

function sumOf(updates: [number[], number, number][]): WeightedSum {
  const sum = new WeightedSum(model());
  for (const [w, b, samples] of updates) {
    sum.add({ w: new NdArray(new Float32Array(w), [2, 2]), b: new Float64Array([b]) }, samples);
  }
  return sum;
}

Deno.test("FedAvg.update() is the mean weighted by sample count, in the model's form", () => {
  const global = model();
  const sum = sumOf([[[1, 2, 3, 4], 1, 10], [[5, 6, 7, 8], 2, 30], [[9, 9, 9, 9], 100, 0]]);
  const next = new FedAvg().update(global, sum, 1);
  // (10·x₁ + 30·x₂ + 0·x₃) / 40
  assert.ok(next.w instanceof NdArray);
  assert.deepStrictEqual(next.w.shape, [2, 2]);
  assert.deepStrictEqual(next.w.data, new Float32Array([4, 5, 6, 7]));
  assert.deepStrictEqual(next.b, new Float64Array([(10 * 1 + 30 * 2) / 40]));
  assert.deepStrictEqual(global, model(), "the global model changed");
});

Deno.test("FedAvg.update() refuses a sum of another model and an empty sum", () => {
  const flat = new WeightedSum({ w: new Float32Array(4), b: new Float64Array(1) });
  flat.add({ w: new Float32Array(4), b: new Float64Array(1) }, 1);
  assert.throws(() => new FedAvg().update(model(), flat, 1), {
    name: "TypeError",
    message: `Sum has the wrong shape: "w" is [4], the model's is [2, 2]`,
  });
  const f64 = new WeightedSum({ ...model(), b: new Float32Array(1) });
  assert.throws(
    () => new FedAvg().update(model(), f64, 1),
    /Sum has the wrong dtype: "b" is float32/,
  );
  const missing = new WeightedSum({ w: new Float32Array(4) });
  missing.add({ w: new Float32Array(4) }, 1);
  assert.throws(() => new FedAvg().update(model(), missing, 1), /Sum is missing a tensor: "b"/);
  const extra = new WeightedSum({ ...model(), c: new Float32Array(1) });
  assert.throws(() => new FedAvg().update(model(), extra, 1), /Sum has an extra tensor: "c"/);
  assert.throws(() => new FedAvg().update(model(), new WeightedSum(model()), 1), {
    name: "RangeError",
    message: `Cannot average: the total weight is 0 after "0" updates`,
  });
});

Deno.test("FedAvg.configure() gives a fresh copy of the fixed or computed config", () => {
  assert.deepStrictEqual(new FedAvg().configure(1, "train"), {});
  const fixed = { epochs: 2, optimizer: "sgd" };
  const strategy = new FedAvg({ config: fixed });
  const config = strategy.configure(1, "train");
  assert.deepStrictEqual(config, fixed);
  config.epochs = 7;
  assert.deepStrictEqual(strategy.configure(2, "evaluate"), { epochs: 2, optimizer: "sgd" });
  const calls: [number, string][] = [];
  const computed = new FedAvg({
    config: (
      round,
      kind,
    ) => (calls.push([round, kind]), { lr: 1 / round, full: kind === "evaluate" }),
  });
  assert.deepStrictEqual(computed.configure(4, "evaluate"), { lr: 0.25, full: true });
  assert.deepStrictEqual(calls, [[4, "evaluate"]]);
});

Deno.test("FedAvg.state() round-trips and restore() refuses another strategy's", () => {
  const strategy = new FedAvg();
  assert.deepStrictEqual(strategy.state(), { strategy: "FedAvg" });
  strategy.restore(structuredClone(strategy.state()));
  assert.throws(() => strategy.restore({ strategy: "FedAdam" }), {
    name: "TypeError",
    message: `Cannot restore FedAvg: the state is "FedAdam"'s`,
  });
  assert.throws(() => strategy.restore({}), /the state is null's/);
  assert.throws(() => new FedProx({ mu: 1 }).restore(strategy.state()), /Cannot restore FedProx/);
});

Deno.test("FedProx.configure() puts proximal_mu in train tasks only", () => {
  const strategy = new FedProx({ mu: 0.01, config: (round) => ({ epochs: round }) });
  assert.equal(strategy.name, "FedProx");
  assert.equal(strategy.mu, 0.01);
  assert.deepStrictEqual(strategy.configure(3, "train"), { epochs: 3, proximal_mu: 0.01 });
  assert.deepStrictEqual(strategy.configure(3, "evaluate"), { epochs: 3 });
  // μ = 0 is FedAvg with the term switched off, still sent.
  assert.deepStrictEqual(new FedProx({ mu: 0 }).configure(1, "train"), { proximal_mu: 0 });
  assert.deepStrictEqual(new FedProx({ mu: 0.5 }).state(), { strategy: "FedProx" });
});

Deno.test("FedProx.update() aggregates like FedAvg", () => {
  const updates: [number[], number, number][] = [[[1, 2, 3, 4], 1, 3], [[3, 2, 1, 0], 5, 1]];
  assert.deepStrictEqual(
    new FedProx({ mu: 0.1 }).update(model(), sumOf(updates), 1),
    new FedAvg().update(model(), sumOf(updates), 1),
  );
});

Deno.test("FedProx() throws a RangeError for a bad mu", () => {
  for (const mu of [-0.1, NaN, Infinity, "0.1", undefined]) {
    assert.throws(() => new FedProx({ mu: mu as number }), {
      name: "RangeError",
      message: `Invalid FedProx option: "mu" is "${mu}", not a finite number ≥ 0`,
    });
  }
  assert.throws(() => new FedProx(undefined as unknown as { mu: number }), RangeError);
});

Deno.test("FedAvg.update() writes the mean into the global model when it is passed as into", () => {
  const updates: [number[], number, number][] = [[[1, 2, 3, 4], 1, 10], [[5, 6, 7, 8], 2, 30]];
  const fresh = new FedAvg().update(model(), sumOf(updates), 1);
  const global = model();
  const { w, b } = global;
  const next = new FedAvg().update(global, sumOf(updates), 1, global);
  assert.equal(next, global);
  assert.equal(next.w, w);
  assert.equal(next.b, b);
  assert.deepStrictEqual(next, fresh);
  // A target of another form: nothing written.
  const other = { w: new Float32Array(4), b: new Float64Array(1) };
  assert.throws(() => new FedAvg().update(model(), sumOf(updates), 1, other), {
    name: "TypeError",
    message: `Mean target has the wrong shape: "w" is [4], the model's is [2, 2]`,
  });
  assert.deepStrictEqual(other, { w: new Float32Array(4), b: new Float64Array(1) });
});
