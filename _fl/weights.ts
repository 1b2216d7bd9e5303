/**
 * Model weights: a map from parameter name to a float tensor, and the checks
 * an update passes before it is folded into an aggregate.
 *
 * A tensor is a `Float32Array` or `Float64Array` (one dimension) or an
 * {@linkcode NdArray} of one, which is how numpy arrays arrive: a 1-D numpy
 * array as the typed array, any other rank as an `NdArray` with its shape. A
 * 1-D typed array of `n` values and an `NdArray` of shape `[n]` have the same
 * shape, so either may answer the other.
 *
 * @module
 */

import { NdArray } from "../tensor.ts";

/** The float arrays a tensor holds its values in. */
export type FloatArray = Float32Array | Float64Array;

/** One parameter tensor: a 1-D float array, or an `NdArray` of one with its shape. */
export type Tensor = FloatArray | NdArray<FloatArray>;

/** Model weights: parameter name → tensor. */
export type Weights = Record<string, Tensor>;

/** The element types a tensor may have. */
export type Dtype = "float32" | "float64";

/** What {@linkcode describe} says about one tensor. */
export interface TensorInfo {
  /** The parameter's name. */
  readonly name: string;
  /** Its element type. */
  readonly dtype: Dtype;
  /** Its dimensions (`[n]` for a 1-D typed array). */
  readonly shape: readonly number[];
  /** Its number of elements. */
  readonly size: number;
}

/**
 * The values of a tensor, in C order: the typed array itself, or an
 * `NdArray`'s `data`. Not a copy.
 *
 * @param tensor A checked tensor.
 * @returns Its values.
 */
export function tensorData(tensor: Tensor): FloatArray {
  return tensor instanceof NdArray ? tensor.data : tensor;
}

/**
 * The dimensions of a tensor: `[length]` for a 1-D typed array.
 *
 * @param tensor A checked tensor.
 * @returns Its shape.
 */
export function tensorShape(tensor: Tensor): readonly number[] {
  return tensor instanceof NdArray ? tensor.shape : [tensor.length];
}

/**
 * A tensor of the same form as `template` (an `NdArray` of its shape, or a
 * typed array) around `data`, which must have the template's size.
 *
 * @param template The tensor whose form to copy.
 * @param data The values.
 * @returns The new tensor (not a copy of `data`).
 */
export function tensorLike(template: Tensor, data: FloatArray): Tensor {
  return template instanceof NdArray ? new NdArray(data, template.shape) : data;
}

function dtypeName(data: unknown): Dtype | undefined {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof Float64Array) return "float64";
  return undefined;
}

/**
 * How an error names a wrong value's kind: `an Int32Array`, `a number`,
 * `null`, `undefined`.
 *
 * @param value Any value.
 * @returns Its kind, with its article.
 */
export function kindOf(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value !== "object") return `a ${typeof value}`;
  if (value instanceof NdArray) return `an NdArray of ${value.data.constructor.name}`;
  const name = value.constructor?.name ?? "Object";
  return `${/^[AEIOU]/.test(name) ? "an" : "a"} ${name}`;
}

/**
 * Checks that a value is a `Weights` map: a plain object whose every value is
 * a float32 or float64 tensor. Cheap: it looks at each tensor once, not at
 * its values.
 *
 * @param value The value to check, as received.
 * @param label How the error names the value, in sentence case: `"Update"`.
 * @throws {TypeError} If it is not an object, or a tensor is not a float
 * tensor, naming the tensor.
 */
export function checkWeights(value: unknown, label = "Weights"): asserts value is Weights {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TypeError(`${label} is not a map of tensors: it is ${kindOf(value)}`);
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) {
    throw new TypeError(`${label} is not a map of tensors: it is ${kindOf(value)}`);
  }
  for (const [name, tensor] of Object.entries(value)) {
    const data = tensor instanceof NdArray ? tensor.data : tensor;
    if (dtypeName(data) === undefined) {
      throw new TypeError(
        `${label} has an invalid tensor: "${name}" is ${kindOf(tensor)}, ` +
          `not a float32 or float64 tensor`,
      );
    }
  }
}

/**
 * Describes weights: each tensor's name, dtype, shape and size, in the map's
 * order.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NdArray } from "@fedcomm/fedcomm";
 * import { describe } from "@fedcomm/fedcomm/fl";
 *
 * const info = describe({
 *   w: new NdArray(new Float32Array(6), [2, 3]),
 *   b: new Float64Array(3),
 * });
 * assert.deepStrictEqual(info, [
 *   { name: "w", dtype: "float32", shape: [2, 3], size: 6 },
 *   { name: "b", dtype: "float64", shape: [3], size: 3 },
 * ]);
 * ```
 *
 * @param weights The weights.
 * @returns One entry per tensor.
 * @throws {TypeError} If `weights` is not a map of float tensors.
 */
export function describe(weights: Weights): TensorInfo[] {
  checkWeights(weights);
  return Object.entries(weights).map(([name, tensor]) => {
    const data = tensorData(tensor);
    return { name, dtype: dtypeName(data)!, shape: [...tensorShape(tensor)], size: data.length };
  });
}

/** `[10, 3]`. */
function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/**
 * Checks that an update has exactly the template's tensors, each with the
 * template's dtype and shape. Looks at no values: see
 * {@linkcode checkFinite}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { NdArray } from "@fedcomm/fedcomm";
 * import { checkCompatible } from "@fedcomm/fedcomm/fl";
 *
 * const model = { fc1: new NdArray(new Float32Array(30), [10, 3]) };
 * checkCompatible(model, { fc1: new NdArray(new Float32Array(30), [10, 3]) });
 * assert.throws(
 *   () => checkCompatible(model, { fc1: new NdArray(new Float32Array(40), [10, 4]) }),
 *   { name: "TypeError", message: `Update has the wrong shape: "fc1" is [10, 4], the model's is [10, 3]` },
 * );
 * assert.throws(() => checkCompatible(model, {}), /missing a tensor: "fc1"/);
 * ```
 *
 * @param template The model the update must match, or its
 * {@linkcode describe} (cheaper when checking many updates).
 * @param update The update, as received.
 * @param label How the error names the update, in sentence case.
 * @throws {TypeError} If the update is not a map of float tensors, misses a
 * tensor of the template or has one the template has not, or a tensor's dtype
 * or shape differs, naming the tensor.
 */
export function checkCompatible(
  template: Weights | readonly TensorInfo[],
  update: unknown,
  label = "Update",
): asserts update is Weights {
  checkWeights(update, label);
  const model = Array.isArray(template) ? template : describe(template as Weights);
  checkSameTensors(model, describe(update), label);
}

/**
 * Checks that two descriptions ({@linkcode describe}) list the same tensors,
 * in any order, each with the same dtype and shape.
 *
 * @param model The reference: "the model's".
 * @param other The one checked, named by `label` in the error.
 * @param label How the error names `other`, in sentence case.
 * @throws {TypeError} At the first tensor missing from `other`, extra in it,
 * or of another dtype or shape, naming it.
 */
export function checkSameTensors(
  model: readonly TensorInfo[],
  other: readonly TensorInfo[],
  label: string,
): void {
  const byName = new Map(model.map((info) => [info.name, info]));
  const names = new Set(other.map((info) => info.name));
  for (const name of byName.keys()) {
    if (!names.has(name)) throw new TypeError(`${label} is missing a tensor: "${name}"`);
  }
  for (const { name, dtype, shape } of other) {
    const want = byName.get(name);
    if (want === undefined) throw new TypeError(`${label} has an extra tensor: "${name}"`);
    if (dtype !== want.dtype) {
      throw new TypeError(
        `${label} has the wrong dtype: "${name}" is ${dtype}, the model's is ${want.dtype}`,
      );
    }
    if (shape.length !== want.shape.length || shape.some((d, i) => d !== want.shape[i])) {
      throw new TypeError(
        `${label} has the wrong shape: "${name}" is ${formatShape(shape)}, ` +
          `the model's is ${formatShape(want.shape)}`,
      );
    }
  }
}

/**
 * The index of the first NaN or infinite value in `data`, or -1. One pass of
 * plain arithmetic: `x - x` is 0 for every finite `x` and NaN otherwise.
 *
 * @param data The values.
 * @returns The first bad index, or -1.
 */
export function firstNonFinite(data: ArrayLike<number>): number {
  const n = data.length;
  for (let i = 0; i < n; i++) {
    const x = data[i];
    if (x - x !== 0) return i;
  }
  return -1;
}

/**
 * Checks that every value of every tensor is finite.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { checkFinite } from "@fedcomm/fedcomm/fl";
 *
 * checkFinite({ b: new Float32Array([1, 2]) });
 * assert.throws(
 *   () => checkFinite({ b: new Float32Array([1, 2, NaN]) }),
 *   { name: "RangeError", message: `Update has a non-finite value: "b"[2] is NaN` },
 * );
 * ```
 *
 * @param update Checked weights (see {@linkcode checkWeights}).
 * @param label How the error names the weights, in sentence case.
 * @throws {RangeError} At the first NaN or ±Infinity, naming the tensor and
 * the index (in C order).
 */
export function checkFinite(update: Weights, label = "Update"): void {
  for (const [name, tensor] of Object.entries(update)) {
    const data = tensorData(tensor);
    const index = firstNonFinite(data);
    if (index >= 0) {
      throw new RangeError(
        `${label} has a non-finite value: "${name}"[${index}] is ${data[index]}`,
      );
    }
  }
}

/**
 * Copies weights: new buffers of the same dtypes, shapes and values.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { cloneWeights } from "@fedcomm/fedcomm/fl";
 *
 * const model = { b: new Float32Array([1, 2]) };
 * const copy = cloneWeights(model);
 * (copy.b as Float32Array)[0] = 9;
 * assert.deepStrictEqual(copy.b, new Float32Array([9, 2]));
 * assert.deepStrictEqual(model.b, new Float32Array([1, 2]));
 * ```
 *
 * @param weights The weights to copy.
 * @returns The copy.
 * @throws {TypeError} If `weights` is not a map of float tensors.
 */
export function cloneWeights(weights: Weights): Weights {
  checkWeights(weights);
  const copy: Weights = {};
  for (const [name, tensor] of Object.entries(weights)) {
    copy[name] = tensorLike(tensor, tensorData(tensor).slice());
  }
  return copy;
}
