import assert from "node:assert/strict";
import { NdArray } from "../tensor.ts";
import { decode, encode } from "../codec.ts";
import { WeightedSum } from "./aggregate.ts";
import { FedAdam, FedYogi } from "./fed_opt.ts";
import type { Weights } from "./weights.ts";

/** A round: the sum of `updates` ([w values, b value, samples]) of the model `w` [2], `b` [1, 1]. */
function round(updates: [number[], number, number][]): WeightedSum {
  const sum = new WeightedSum(global([0, 0], 0));
  for (const [w, b, samples] of updates) {
    sum.add({ w: new Float64Array(w), b: new NdArray(new Float32Array([b]), [1, 1]) }, samples);
  }
  return sum;
}

function global(w: number[], b: number): Weights {
  return { w: new Float64Array(w), b: new NdArray(new Float32Array([b]), [1, 1]) };
}

const values = (weights: Weights): number[] =>
  Object.values(weights).flatMap((t) => [...(t instanceof NdArray ? t.data : t)]);

const options = { eta: 0.5, beta1: 0.5, beta2: 0.75, tau: 0.25 };

/** One Adam or Yogi step on one element, written out as in Reddi et al. 2021, Algorithm 2. */
function byHand(
  rule: "adam" | "yogi",
  x: number,
  mean: number,
  state: { m: number; v: number },
): number {
  const { eta, beta1, beta2, tau } = options;
  const delta = mean - x;
  state.m = beta1 * state.m + (1 - beta1) * delta;
  state.v = rule === "adam"
    ? beta2 * state.v + (1 - beta2) * delta ** 2
    : state.v - (1 - beta2) * delta ** 2 * Math.sign(state.v - delta ** 2);
  return x + eta * state.m / (Math.sqrt(state.v) + tau);
}

for (const [Strategy, rule] of [[FedAdam, "adam"], [FedYogi, "yogi"]] as const) {
  const name = Strategy.name;

  Deno.test(`${name}.update() matches two rounds computed by hand`, () => {
    const strategy = new Strategy(options);
    const tau2 = options.tau ** 2;
    const states = [0, 1, 2].map(() => ({ m: 0, v: tau2 }));
    // Round 1: means w = [(1·3 + 3·1)/4, (1·-2 + 3·2)/4] = [1.5, 1], b = 2; Δ = [0.5, 3], b: 2.
    let x = [1, -2, 0];
    const next1 = strategy.update(global([1, -2], 0), round([[[3, -2], 5, 1], [[1, 2], 1, 3]]), 1);
    const want1 = [1.5, 1, 2].map((mean, i) => byHand(rule, x[i], mean, states[i]));
    assert.deepStrictEqual(values(next1), [want1[0], want1[1], Math.fround(want1[2])]);
    assert.ok(next1.b instanceof NdArray && next1.b.data instanceof Float32Array);
    assert.deepStrictEqual(next1.b.shape, [1, 1]);
    // Round 2 from round 1's model: a small Δ, so Yogi's v shrinks where Adam's decays.
    x = values(next1);
    const next2 = strategy.update(next1, round([[[x[0] + 0.1, x[1] - 0.1], x[2] + 0.1, 2]]), 2);
    const want2 = [x[0] + 0.1, x[1] - 0.1, Math.fround(x[2] + 0.1)]
      .map((mean, i) => byHand(rule, x[i], mean, states[i]));
    assert.deepStrictEqual(values(next2), [want2[0], want2[1], Math.fround(want2[2])]);
    const { m, v } = strategy.state() as Record<string, Record<string, Float64Array>>;
    assert.deepStrictEqual([...m.w, ...m.b], states.map((s) => s.m));
    assert.deepStrictEqual([...v.w, ...v.b], states.map((s) => s.v));
  });

  Deno.test(`${name}.state() round-trips through restore() and the codec`, () => {
    const first = new Strategy(options);
    const model = first.update(global([1, 2], 3), round([[[2, 0], 1, 5]]), 1);
    const state = first.state();
    assert.equal(state.strategy, name);
    const second = new Strategy(options);
    second.restore(decode(encode(state)) as Record<string, unknown>);
    const third = new Strategy(options);
    third.restore(structuredClone(state));
    const next = round([[[0, 1], -1, 2], [[4, 4], 4, 1]]);
    const a = first.update(model, next, 2), b = second.update(model, next, 2);
    assert.deepStrictEqual(values(b), values(a));
    assert.deepStrictEqual(values(third.update(model, next, 2)), values(a));
    // Without the moments the step differs: the restore mattered.
    assert.notDeepStrictEqual(values(new Strategy(options).update(model, next, 2)), values(a));
  });

  Deno.test(`${name}.restore() refuses a state it cannot use`, () => {
    const strategy = new Strategy();
    const other = name === "FedAdam" ? "FedYogi" : "FedAdam";
    assert.throws(() => strategy.restore({ strategy: other }), {
      name: "TypeError",
      message: `Cannot restore ${name}: the state is "${other}"'s`,
    });
    const moments = { w: new Float64Array(2), b: new Float64Array(1) };
    assert.throws(
      () => strategy.restore({ strategy: name, m: moments }),
      /the state has "m" or "v" but not both/,
    );
    assert.throws(
      () => strategy.restore({ strategy: name, m: { w: [0, 0] }, v: moments }),
      /"m" of "w" is not a Float64Array/,
    );
    assert.throws(() => strategy.restore({ strategy: name, m: 3, v: moments }), /"m" is not a map/);
    // Before the first update there are no moments: that restores too.
    strategy.restore(new Strategy().state());
    // Moments of another model are found at the next update.
    strategy.restore({ strategy: name, m: { w: new Float64Array(5) }, v: moments });
    assert.throws(() => strategy.update(global([0, 0], 0), round([[[1, 1], 1, 1]]), 1), {
      name: "TypeError",
      message: `${name} moments do not match the global model: "w" has 5 values, the model 2`,
    });
  });

  Deno.test(`${name}.update() into the global model itself gives the bits of a new model`, () => {
    const fresh = new Strategy(options), inPlace = new Strategy(options);
    let model = global([1, -2], 0.5);
    const mine = global([1, -2], 0.5);
    const { w, b } = mine;
    const rounds: [number[], number, number][][] = [
      [[[3, -2], 5, 1], [[1, 2], 1, 3]],
      [[[0.1, 0.3], -1, 2]],
      [[[7, -7], 1e-3, 4], [[-1, 1], 2, 1]],
    ];
    rounds.forEach((updates, r) => {
      model = fresh.update(model, round(updates), r + 1);
      assert.equal(inPlace.update(mine, round(updates), r + 1, mine), mine);
      assert.deepStrictEqual(values(mine), values(model), `round ${r + 1}`);
    });
    assert.equal(mine.w, w, "the tensors are written, not replaced");
    assert.equal(mine.b, b);
    assert.deepStrictEqual(inPlace.state(), fresh.state());
    // A target of another form: nothing written, the moments unchanged.
    const before = structuredClone(inPlace.state());
    const other = { w: new Float64Array(2), b: new Float32Array(1) };
    assert.throws(() => inPlace.update(mine, round([[[1, 1], 1, 1]]), 4, other), {
      name: "TypeError",
      message: `Update target has the wrong shape: "b" is [1], the model's is [1, 1]`,
    });
    assert.deepStrictEqual(other, { w: new Float64Array(2), b: new Float32Array(1) });
    assert.deepStrictEqual(inPlace.state(), before);
  });

  Deno.test(`${name}.update() refuses an empty sum or one of another model`, () => {
    const strategy = new Strategy();
    assert.throws(() => strategy.update(global([0, 0], 0), round([]), 1), {
      name: "RangeError",
      message: `Cannot average: the total weight is 0 after "0" updates`,
    });
    assert.throws(
      () => strategy.update({ w: new Float64Array(3), b: new Float32Array(1) }, round([]), 1),
      /Sum has the wrong shape: "w" is \[2\], the model's is \[3\]/,
    );
    // Neither changed the state: the first real step still starts from m = 0, v = τ².
    assert.deepStrictEqual(strategy.state(), { strategy: name, m: undefined, v: undefined });
  });

  Deno.test(`${name}() takes Flower's defaults and checks each option`, () => {
    const defaults = name === "FedAdam"
      ? { eta: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-9 }
      : { eta: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
    const strategy = new Strategy({ eta: undefined, config: { epochs: 1 } });
    const { eta, beta1, beta2, tau } = strategy;
    assert.deepStrictEqual({ eta, beta1, beta2, tau }, defaults);
    assert.equal(strategy.name, name);
    assert.deepStrictEqual(strategy.configure(1, "train"), { epochs: 1 });
    const bad: [string, unknown, string][] = [
      ["eta", 0, "a finite number > 0"],
      ["eta", -1, "a finite number > 0"],
      ["eta", Infinity, "a finite number > 0"],
      ["beta1", 1, "a number ≥ 0 and < 1"],
      ["beta1", -0.1, "a number ≥ 0 and < 1"],
      ["beta2", NaN, "a number ≥ 0 and < 1"],
      ["tau", 0, "a finite number > 0"],
      ["tau", "1e-3", "a finite number > 0"],
    ];
    for (const [key, value, range] of bad) {
      assert.throws(() => new Strategy({ [key]: value }), {
        name: "RangeError",
        message: `Invalid ${name} option: "${key}" is "${value}", not ${range}`,
      });
    }
  });
}

Deno.test("FedYogi.update() keeps v where Δ² equals it and grows it by (1 − β₂)·Δ² below", () => {
  // v starts at τ² = 0.0625 and Δ = 0.25: Δ² = v, so sign(v − Δ²) = 0.
  const yogi = new FedYogi(options), adam = new FedAdam(options);
  const sum = round([[[0.25, 0.25], 0.25, 1]]);
  yogi.update(global([0, 0], 0), sum, 1);
  adam.update(global([0, 0], 0), sum, 1);
  const v = (s: FedAdam | FedYogi) => (s.state().v as Record<string, Float64Array>).w[0];
  assert.equal(v(yogi), 0.0625);
  assert.equal(v(adam), 0.0625); // Adam: 0.75·0.0625 + 0.25·0.0625, the same value by another rule
  // A larger Δ: Yogi adds (1 − β₂)·Δ², Adam mixes.
  const big = round([[[2.25, 2.25], 2.25, 1]]); // Δ = 2 from the new model ≈ 0.25
  const yogiNext = new FedYogi(options), adamNext = new FedAdam(options);
  yogiNext.update(global([0.25, 0.25], 0.25), big, 1);
  adamNext.update(global([0.25, 0.25], 0.25), big, 1);
  assert.equal(v(yogiNext), 0.0625 + 0.25 * 4);
  assert.equal(v(adamNext), 0.75 * 0.0625 + 0.25 * 4);
});
