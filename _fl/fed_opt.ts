/**
 * The adaptive strategies of Reddi et al. 2021, "Adaptive Federated
 * Optimization": a server optimizer ({@linkcode FedOpt}) on the
 * pseudo-gradient Δ = mean − global, with Adam's ({@linkcode FedAdam}) or
 * Yogi's ({@linkcode FedYogi}) second moment.
 *
 * @module
 */

import type { WeightedSum } from "./aggregate.ts";
import { checkNumber, checkStrategyName, checkSum, FedAvg, type FedAvgOptions } from "./fed_avg.ts";
import {
  checkCompatible,
  type FloatArray,
  tensorData,
  tensorLike,
  type Weights,
} from "./weights.ts";

/** Options of {@linkcode FedAdam} and {@linkcode FedYogi}: Reddi et al.'s server optimizer. */
export interface FedOptOptions extends FedAvgOptions {
  /** The server learning rate η > 0. */
  eta?: number;
  /** The first moment's decay β₁ in [0, 1). */
  beta1?: number;
  /** The second moment's decay β₂ in [0, 1). */
  beta2?: number;
  /** The adaptivity τ > 0: added to √v; v starts at τ². */
  tau?: number;
}

/**
 * The adaptive server optimizers of Reddi et al. 2021 ("Adaptive Federated
 * Optimization", Algorithm 2), on the pseudo-gradient Δ = mean − global:
 * m = β₁·m + (1 − β₁)·Δ; v by the subclass's rule
 * ({@linkcode FedOpt.secondMoment}); x = global + η·m / (√v + τ). There is no
 * bias correction, as in the paper. m starts at 0 and v at τ² (the paper's
 * v₋₁ ≥ τ²; Flower starts v at 0, a difference below τ²). Both are kept in
 * f64, one copy of the model each, and go into checkpoints through
 * {@linkcode FedOpt.state}.
 *
 * @example A subclass: momentum only (v stays τ²)
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedOpt, WeightedSum } from "@fedcomm/fedcomm/fl";
 *
 * class FedAvgM extends FedOpt {
 *   constructor() {
 *     super("FedAvgM", {}, { eta: 1, beta1: 0.5, beta2: 0, tau: 1 });
 *   }
 *   protected secondMoment(v: number): number {
 *     return v;
 *   }
 * }
 * const global = { b: new Float64Array([0]) };
 * const sum = new WeightedSum(global);
 * sum.add({ b: new Float64Array([4]) }, 1);
 * // m = 0.5·0 + 0.5·4 = 2; x = 0 + 1·2 / (√1 + 1) = 1
 * assert.deepStrictEqual(new FedAvgM().update(global, sum, 1), { b: new Float64Array([1]) });
 * ```
 */
export abstract class FedOpt extends FedAvg {
  /** The strategy's name. */
  override readonly name: string;
  /** The server learning rate η. */
  readonly eta: number;
  /** The first moment's decay β₁. */
  readonly beta1: number;
  /** The second moment's decay β₂. */
  readonly beta2: number;
  /** The adaptivity τ. */
  readonly tau: number;
  #m: Record<string, Float64Array> | undefined;
  #v: Record<string, Float64Array> | undefined;

  /**
   * Creates the optimizer.
   *
   * @param name The strategy's name.
   * @param options η, β₁, β₂, τ (each defaulting to `defaults`') and the sites' settings.
   * @param defaults The subclass's defaults.
   * @throws {RangeError} If η or τ is not a finite number > 0, or β₁ or β₂ is
   * not in [0, 1).
   */
  constructor(
    name: string,
    options: FedOptOptions,
    defaults: Required<Omit<FedOptOptions, "config">>,
  ) {
    super(options);
    this.name = name;
    const { eta, beta1, beta2, tau } = { ...defaults, ...definedOnly(options) };
    checkNumber(name, "eta", eta, 0, Infinity, false);
    checkNumber(name, "beta1", beta1, 0, 1, true);
    checkNumber(name, "beta2", beta2, 0, 1, true);
    checkNumber(name, "tau", tau, 0, Infinity, false);
    this.eta = eta;
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.tau = tau;
  }

  /**
   * The second moment's next value, for one element.
   *
   * @param v Its current value.
   * @param delta2 The pseudo-gradient's square, Δ².
   * @param beta2 β₂.
   * @returns The new v.
   */
  protected abstract secondMoment(v: number, delta2: number, beta2: number): number;

  /**
   * One step of the server optimizer on the round's mean (computed in f64
   * from the sum, not rounded to the model's dtype first).
   *
   * @param global The current global model (not changed, but through `into`).
   * @param sum The round's updates.
   * @param _round The round (unused).
   * @param into Memory to write the new model into (e.g. `global` itself:
   * each value is read before the same index is written), instead of new tensors.
   * @returns The new global model, in the global model's dtypes and shapes:
   * new tensors, or `into`.
   * @throws {TypeError} If the sum's tensors, `into`'s or restored moments do
   * not match the global model's (nothing is written then).
   * @throws {RangeError} If the sum's total weight is 0.
   */
  override update(global: Weights, sum: WeightedSum, _round: number, into?: Weights): Weights {
    const sums = checkSum(global, sum);
    if (sum.weight === 0) {
      throw new RangeError(`Cannot average: the total weight is 0 after "${sum.count}" updates`);
    }
    if (into !== undefined) checkCompatible(global, into, "Update target");
    const m = this.#m ??= filled(global, 0);
    const v = this.#v ??= filled(global, this.tau * this.tau);
    checkMomentSizes(this.name, global, m, v);
    const next: Weights = into ?? {};
    for (const [name, tensor] of Object.entries(global)) {
      const x = tensorData(tensor);
      const out = into !== undefined
        ? tensorData(into[name])
        : x instanceof Float32Array
        ? new Float32Array(x.length)
        : new Float64Array(x.length);
      this.#step(x, sums[name], sum.weight, m[name], v[name], out);
      if (into === undefined) next[name] = tensorLike(tensor, out);
    }
    return next;
  }

  #step(
    x: FloatArray,
    sums: Float64Array,
    weight: number,
    m: Float64Array,
    v: Float64Array,
    out: FloatArray,
  ): void {
    const { eta, beta1, beta2, tau } = this;
    const n = x.length;
    for (let i = 0; i < n; i++) {
      const xi = x[i];
      const delta = sums[i] / weight - xi;
      const mi = beta1 * m[i] + (1 - beta1) * delta;
      const vi = this.secondMoment(v[i], delta * delta, beta2);
      m[i] = mi;
      v[i] = vi;
      out[i] = xi + eta * mi / (Math.sqrt(vi) + tau);
    }
  }

  /**
   * The moments, for a checkpoint: `{ strategy, m, v }`, each moment a map
   * of `Float64Array`s (the optimizer's own: not copies), or absent before
   * the first update.
   *
   * @returns The state.
   */
  override state(): Record<string, unknown> {
    return { strategy: this.name, m: this.#m, v: this.#v };
  }

  /**
   * Puts back the moments of {@linkcode FedOpt.state}; the next update checks
   * them against the global model.
   *
   * @param state From `state()`, e.g. read back from a checkpoint.
   * @throws {TypeError} If it is another strategy's, or a moment is not a map
   * of `Float64Array`s, or only one of the two is there.
   */
  override restore(state: Record<string, unknown>): void {
    checkStrategyName(state, this.name);
    const m = checkMoments(this.name, "m", state.m), v = checkMoments(this.name, "v", state.v);
    if ((m === undefined) !== (v === undefined)) {
      throw new TypeError(`Cannot restore ${this.name}: the state has "m" or "v" but not both`);
    }
    this.#m = m;
    this.#v = v;
  }
}

/** The options that are set: `{ eta: undefined }` does not override a default. */
function definedOnly(options: FedOptOptions): Partial<FedOptOptions> {
  const { eta, beta1, beta2, tau } = options ?? {};
  return Object.fromEntries(
    Object.entries({ eta, beta1, beta2, tau }).filter(([, value]) => value !== undefined),
  );
}

function filled(global: Weights, fill: number): Record<string, Float64Array> {
  const moments: Record<string, Float64Array> = {};
  for (const [name, tensor] of Object.entries(global)) {
    moments[name] = new Float64Array(tensorData(tensor).length).fill(fill);
  }
  return moments;
}

function checkMoments(
  who: string,
  key: string,
  value: unknown,
): Record<string, Float64Array> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError(`Cannot restore ${who}: "${key}" is not a map of Float64Arrays`);
  }
  for (const [name, moment] of Object.entries(value)) {
    if (!(moment instanceof Float64Array)) {
      throw new TypeError(`Cannot restore ${who}: "${key}" of "${name}" is not a Float64Array`);
    }
  }
  return { ...value } as Record<string, Float64Array>;
}

function checkMomentSizes(
  who: string,
  global: Weights,
  ...moments: Record<string, Float64Array>[]
): void {
  for (const [name, tensor] of Object.entries(global)) {
    const size = tensorData(tensor).length;
    for (const moment of moments) {
      if (moment[name]?.length !== size) {
        throw new TypeError(
          `${who} moments do not match the global model: "${name}" has ` +
            `${moment[name]?.length ?? "no"} values, the model ${size}`,
        );
      }
    }
  }
}

/**
 * FedAdam (Reddi et al. 2021): {@linkcode FedOpt} with Adam's second moment,
 * v = β₂·v + (1 − β₂)·Δ².
 *
 * Defaults are Flower's `FedAdam` (flwr `server/strategy/fedadam.py`):
 * η = 0.1, β₁ = 0.9, β₂ = 0.99, τ = 1e-9. (Flower's client learning rate
 * `eta_l` is the sites' business here: put it in `config`.)
 *
 * @example One step by hand
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedAdam, WeightedSum } from "@fedcomm/fedcomm/fl";
 *
 * const global = { b: new Float64Array([1]) };
 * const sum = new WeightedSum(global);
 * sum.add({ b: new Float64Array([3]) }, 1); // Δ = 2
 * const adam = new FedAdam({ eta: 0.5, beta1: 0.5, beta2: 0.75, tau: 0.5 });
 * // m = 0.5·2 = 1; v = 0.75·0.25 + 0.25·4 = 1.1875; x = 1 + 0.5·1 / (√1.1875 + 0.5)
 * const next = adam.update(global, sum, 1).b as Float64Array;
 * assert.equal(next[0], 1 + 0.5 / (Math.sqrt(1.1875) + 0.5));
 * ```
 */
export class FedAdam extends FedOpt {
  /**
   * Creates the strategy.
   *
   * @param options η, β₁, β₂, τ and the sites' settings.
   * @throws {RangeError} If an option is out of range.
   */
  constructor(options: FedOptOptions = {}) {
    super("FedAdam", options, { eta: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-9 });
  }

  /**
   * Adam: v = β₂·v + (1 − β₂)·Δ².
   *
   * @param v The current value.
   * @param delta2 Δ².
   * @param beta2 β₂.
   * @returns The new v.
   */
  protected secondMoment(v: number, delta2: number, beta2: number): number {
    return beta2 * v + (1 - beta2) * delta2;
  }
}

/**
 * FedYogi (Reddi et al. 2021): {@linkcode FedOpt} with Yogi's second moment,
 * v = v − (1 − β₂)·Δ²·sign(v − Δ²), which grows v only as fast as Δ² asks.
 *
 * Defaults are Flower's `FedYogi` (flwr `server/strategy/fedyogi.py`):
 * η = 0.01, β₁ = 0.9, β₂ = 0.99, τ = 1e-3.
 *
 * @example One step by hand
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedYogi, WeightedSum } from "@fedcomm/fedcomm/fl";
 *
 * const global = { b: new Float64Array([1]) };
 * const sum = new WeightedSum(global);
 * sum.add({ b: new Float64Array([3]) }, 1); // Δ = 2
 * const yogi = new FedYogi({ eta: 0.5, beta1: 0.5, beta2: 0.75, tau: 0.5 });
 * // m = 1; v = 0.25 − 0.25·4·sign(0.25 − 4) = 1.25; x = 1 + 0.5·1 / (√1.25 + 0.5)
 * const next = yogi.update(global, sum, 1).b as Float64Array;
 * assert.equal(next[0], 1 + 0.5 / (Math.sqrt(1.25) + 0.5));
 * ```
 */
export class FedYogi extends FedOpt {
  /**
   * Creates the strategy.
   *
   * @param options η, β₁, β₂, τ and the sites' settings.
   * @throws {RangeError} If an option is out of range.
   */
  constructor(options: FedOptOptions = {}) {
    super("FedYogi", options, { eta: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
  }

  /**
   * Yogi: v = v − (1 − β₂)·Δ²·sign(v − Δ²).
   *
   * @param v The current value.
   * @param delta2 Δ².
   * @param beta2 β₂.
   * @returns The new v.
   */
  protected secondMoment(v: number, delta2: number, beta2: number): number {
    return v - (1 - beta2) * delta2 * Math.sign(v - delta2);
  }
}
