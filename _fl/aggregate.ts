/**
 * Streaming aggregation: updates folded into a weighted sum as they arrive,
 * so a round never holds more than the accumulator and the one update being
 * folded; and the sample-weighted mean of the sites' metrics.
 *
 * @module
 */

import { NdArray } from "../tensor.ts";
import { checkCompatible, checkFinite, describe, firstNonFinite, tensorData } from "./weights.ts";
import type { TensorInfo, Weights } from "./weights.ts";

/**
 * A weighted sum as plain data, to send (an edge aggregator's partial sum) or
 * to merge into another {@linkcode WeightedSum}: each tensor's Σ wᵢ·xᵢ in C
 * order, Σ wᵢ, and how many updates were folded.
 */
export interface PartialSum {
  /** Per tensor name, the weighted sums of its values (flattened, C order). */
  sums: Record<string, Float64Array>;
  /** The sum of the weights. */
  weight: number;
  /** How many updates were folded. */
  count: number;
}

function checkWeight(weight: unknown, label: string): asserts weight is number {
  if (typeof weight !== "number" || !Number.isFinite(weight) || weight < 0) {
    throw new RangeError(`${label} is not a finite non-negative number: "${weight}"`);
  }
}

/**
 * A running weighted sum of model updates, Σ wᵢ·xᵢ and Σ wᵢ, whose mean is
 * the FedAvg aggregate.
 *
 * **Memory.** One `Float64Array` accumulator per tensor: one f64 copy of the
 * model, whatever the number of updates (for an f32 model that is 2× the
 * model). Each update is read once, in place, by a plain typed-array loop.
 *
 * **Validation first.** {@linkcode WeightedSum.add} checks the update's
 * names, dtypes and shapes against the template, every value for NaN and
 * ±Infinity, and the weight, before it touches the sum: an update that
 * throws leaves the sum as it was.
 *
 * **Order.** f64 accumulation; each product `x·w` of an f32 value and an
 * integer weight below 2^29 is exact in f64, sums are rounded to f64 per add,
 * and the final f32 rounding makes the result identical for any arrival order
 * unless a sum lies within 2^-29 (relative) of an f32 rounding boundary. (The
 * rounding error of a sum of n terms is at most (n−1)·2^-53 of the sum of
 * their magnitudes, so 2^-29 covers up to 2^24 updates whose values do not
 * cancel.) A float64 model's mean is the f64 sum divided by the weight, which
 * may differ in its last bits from one arrival order to another. Merging
 * partial sums ({@linkcode WeightedSum.merge}) is the same: a different
 * grouping of the same additions.
 *
 * @example Folding updates as they arrive
 * ```ts
 * import assert from "node:assert/strict";
 * import { WeightedSum } from "@fedcomm/fedcomm/fl";
 *
 * const model = { b: new Float32Array([0, 0]) };
 * const sum = new WeightedSum(model);
 * sum.add({ b: new Float32Array([1, 2]) }, 10);
 * sum.add({ b: new Float32Array([3, 4]) }, 30);
 * assert.throws(() => sum.add({ b: new Float32Array([NaN, 0]) }, 5), RangeError);
 * assert.equal(sum.count, 2);
 * assert.equal(sum.weight, 40);
 * assert.deepStrictEqual(sum.mean(), { b: new Float32Array([2.5, 3.5]) });
 * ```
 */
export class WeightedSum {
  #model: TensorInfo[];
  /** Per tensor, whether the template's is an `NdArray` (the mean's form). */
  #nd: boolean[];
  #sums: Record<string, Float64Array> = {};
  #weight = 0;
  #count = 0;

  /**
   * Starts an empty sum of updates shaped like `template`.
   *
   * @param template The model: its names, dtypes and shapes are what every
   * update must have; its values are not read or kept.
   * @throws {TypeError} If the template is not a map of float tensors.
   */
  constructor(template: Weights) {
    this.#model = describe(template).map((info) =>
      Object.freeze({ ...info, shape: Object.freeze([...info.shape]) })
    );
    this.#nd = Object.values(template).map((tensor) => tensor instanceof NdArray);
    for (const { name, size } of this.#model) this.#sums[name] = new Float64Array(size);
  }

  /** The template's tensors: what every update must have. */
  get model(): readonly TensorInfo[] {
    return this.#model;
  }

  /** The sum of the weights of the updates folded so far. */
  get weight(): number {
    return this.#weight;
  }

  /** How many updates were folded so far (merged partial sums count theirs). */
  get count(): number {
    return this.#count;
  }

  /**
   * Folds one update into the sum: adds `weight · update` to it.
   *
   * @param update The update, as received: the template's tensors, each of
   * its dtype and shape, every value finite.
   * @param weight Its weight, e.g. the site's sample count: a finite number
   * ≥ 0 (an integer below 2^29 for the order independence described above).
   * @throws {TypeError} If the update is not a map of float tensors, misses
   * or adds a tensor, or a tensor's dtype or shape differs, naming the tensor.
   * @throws {RangeError} If a value is NaN or infinite (naming the tensor and
   * the first bad index) or the weight is not a finite non-negative number.
   * Either way the sum is unchanged.
   */
  add(update: Weights, weight: number): void {
    checkWeight(weight, "Update weight");
    checkCompatible(this.#model, update);
    checkFinite(update);
    for (const name of Object.keys(this.#sums)) {
      foldInto(this.#sums[name], tensorData(update[name]), weight);
    }
    this.#weight += weight;
    this.#count++;
  }

  /**
   * Adds another sum of the same model, e.g. one an edge aggregator folded
   * and sent: the result is the sum over both sets of updates.
   *
   * @param partial The other sum ({@linkcode WeightedSum.toPartial}).
   * @throws {TypeError} If its tensor names or lengths differ from the
   * template's, or a sum is not a `Float64Array`.
   * @throws {RangeError} If a sum holds NaN or ±Infinity, or its weight or
   * count is invalid. Either way this sum is unchanged.
   */
  merge(partial: PartialSum): void {
    checkPartial(this.#sums, partial);
    for (const name of Object.keys(this.#sums)) {
      const sum = this.#sums[name], other = partial.sums[name];
      for (let i = 0; i < sum.length; i++) sum[i] += other[i];
    }
    this.#weight += partial.weight;
    this.#count += partial.count;
  }

  /**
   * The weighted mean Σ wᵢ·xᵢ / Σ wᵢ, computed in f64 and rounded once to
   * each tensor's dtype, in the template's form (same names, dtypes, shapes).
   *
   * @example Into memory that is reused round after round
   * ```ts
   * import assert from "node:assert/strict";
   * import { WeightedSum } from "@fedcomm/fedcomm/fl";
   *
   * const model = { b: new Float32Array([0, 0]) };
   * const sum = new WeightedSum(model);
   * sum.add({ b: new Float32Array([1, 3]) }, 2);
   * assert.equal(sum.mean(model), model);
   * assert.deepStrictEqual(model.b, new Float32Array([1, 3]));
   * ```
   *
   * @param into Tensors of the template's names, dtypes and shapes to write
   * the mean into (the same values as new ones would get), instead of new
   * memory; e.g. last round's model, once nothing else reads it.
   * @returns New tensors, or `into`; the sum is unchanged.
   * @throws {RangeError} If the total weight is 0 (no update, or only
   * weight-0 ones).
   * @throws {TypeError} If `into` does not match the template (nothing is written then).
   */
  mean(into?: Weights): Weights {
    if (this.#weight === 0) {
      throw new RangeError(
        `Cannot average: the total weight is 0 after "${this.#count}" updates`,
      );
    }
    if (into !== undefined) checkCompatible(this.#model, into, "Mean target");
    const mean: Weights = into ?? {};
    const weight = this.#weight;
    this.#model.forEach(({ name, dtype, shape }, index) => {
      const sum = this.#sums[name];
      const out = into !== undefined
        ? tensorData(into[name])
        : dtype === "float32"
        ? new Float32Array(sum.length)
        : new Float64Array(sum.length);
      for (let i = 0; i < sum.length; i++) out[i] = sum[i] / weight;
      if (into === undefined) mean[name] = this.#nd[index] ? new NdArray(out, shape) : out;
    });
    return mean;
  }

  /**
   * Empties the sum for the next round, keeping its accumulators: a sum
   * reused across rounds allocates (and has the system map in) its
   * model-sized f64 memory once, not every round.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { WeightedSum } from "@fedcomm/fedcomm/fl";
   *
   * const sum = new WeightedSum({ b: new Float32Array(1) });
   * sum.add({ b: new Float32Array([8]) }, 2);
   * sum.reset();
   * assert.equal(sum.count, 0);
   * sum.add({ b: new Float32Array([1]) }, 1);
   * assert.deepStrictEqual(sum.mean(), { b: new Float32Array([1]) });
   * ```
   */
  reset(): void {
    for (const sum of Object.values(this.#sums)) sum.fill(0);
    this.#weight = 0;
    this.#count = 0;
  }

  /**
   * The sum as plain data, to send or to {@linkcode WeightedSum.merge} into
   * another sum. The arrays are this sum's own accumulators, not copies (so
   * that sending them costs no memory): later adds change them.
   *
   * @example Two edges' sums merged at the root
   * ```ts
   * import assert from "node:assert/strict";
   * import { WeightedSum } from "@fedcomm/fedcomm/fl";
   *
   * const model = { b: new Float32Array(1) };
   * const edge = new WeightedSum(model), root = new WeightedSum(model);
   * edge.add({ b: new Float32Array([4]) }, 1);
   * root.add({ b: new Float32Array([1]) }, 3);
   * root.merge(edge.toPartial());
   * assert.deepStrictEqual(root.mean(), { b: new Float32Array([1.75]) });
   * assert.equal(root.count, 2);
   * ```
   *
   * @returns The sums, the total weight and the count.
   */
  toPartial(): PartialSum {
    return { sums: { ...this.#sums }, weight: this.#weight, count: this.#count };
  }
}

/** sum += weight · values: the hot loop, no allocation. */
function foldInto(sum: Float64Array, values: Float32Array | Float64Array, weight: number): void {
  const n = sum.length;
  for (let i = 0; i < n; i++) sum[i] += values[i] * weight;
}

/** Checks a partial sum against the accumulators it is to be merged into. */
function checkPartial(sums: Record<string, Float64Array>, partial: PartialSum): void {
  const other = (partial as Partial<PartialSum> | null)?.sums;
  if (typeof other !== "object" || other === null) {
    throw new TypeError(`Partial sum has no "sums" map`);
  }
  for (const name of Object.keys(sums)) {
    if (!Object.hasOwn(other, name)) {
      throw new TypeError(`Partial sum is missing a tensor: "${name}"`);
    }
  }
  for (const [name, values] of Object.entries(other)) {
    if (!Object.hasOwn(sums, name)) {
      throw new TypeError(`Partial sum has an extra tensor: "${name}"`);
    }
    if (!(values instanceof Float64Array)) {
      throw new TypeError(`Partial sum has an invalid tensor: "${name}" is not a Float64Array`);
    }
    if (values.length !== sums[name].length) {
      throw new TypeError(
        `Partial sum has the wrong size: "${name}" has ${values.length} values, ` +
          `the model's ${sums[name].length}`,
      );
    }
    const index = firstNonFinite(values);
    if (index >= 0) {
      throw new RangeError(
        `Partial sum has a non-finite value: "${name}"[${index}] is ${values[index]}`,
      );
    }
  }
  checkWeight(partial.weight, "Partial sum weight");
  if (!Number.isSafeInteger(partial.count) || partial.count < 0) {
    throw new RangeError(`Partial sum count is not a non-negative integer: "${partial.count}"`);
  }
}

/** One site's metrics and the number of samples they were measured on. */
export interface MetricsItem {
  /** The site's sample count: the weight of its metrics. */
  samples: number;
  /** Its metrics. */
  metrics: Record<string, number>;
}

/**
 * The sample-weighted mean of each metric over the sites that report it: a
 * metric missing from some sites is averaged over the others. A metric whose
 * reporters all have 0 samples gets their plain mean.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { aggregateMetrics } from "@fedcomm/fedcomm/fl";
 *
 * const metrics = aggregateMetrics([
 *   { samples: 100, metrics: { loss: 1, accuracy: 0.5 } },
 *   { samples: 300, metrics: { loss: 2 } },
 * ]);
 * assert.deepStrictEqual(metrics, { loss: 1.75, accuracy: 0.5 });
 * ```
 *
 * @param items Each site's sample count and metrics.
 * @returns Metric name → weighted mean; empty for no items.
 * @throws {RangeError} If a sample count is not a finite non-negative number,
 * or a metric value is not a finite number, naming the item and metric.
 */
export function aggregateMetrics(items: readonly MetricsItem[]): Record<string, number> {
  const totals = new Map<string, { sum: number; weight: number; plain: number; n: number }>();
  items.forEach(({ samples, metrics }, index) => {
    checkWeight(samples, `Metrics item ${index}: the sample count`);
    for (const [name, value] of Object.entries(metrics)) {
      if (typeof value !== "number" || !Number.isFinite(value)) {
        throw new RangeError(`Metrics item ${index}: "${name}" is not a finite number: "${value}"`);
      }
      let total = totals.get(name);
      if (total === undefined) totals.set(name, total = { sum: 0, weight: 0, plain: 0, n: 0 });
      total.sum += samples * value;
      total.weight += samples;
      total.plain += value;
      total.n++;
    }
  });
  const result: Record<string, number> = {};
  for (const [name, { sum, weight, plain, n }] of totals) {
    result[name] = weight > 0 ? sum / weight : plain / n;
  }
  return result;
}
