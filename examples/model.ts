/**
 * The model of the demo: a multilayer perceptron with ReLU hidden layers and
 * a softmax output, trained with cross-entropy. With no hidden layer it is
 * softmax (multinomial logistic) regression.
 *
 * All parameters live in one flat `Float32Array`, layer after layer, each
 * layer's weight matrix (row-major, one row of fan-out weights per input
 * unit) followed by its biases: the form that goes over the wire and that
 * federated averaging adds up element by element. Rows per input let every
 * pass skip the inputs that are zero: blank pixels and inactive ReLUs, about
 * half of them.
 *
 * @module
 */

import type { Dataset } from "./data.ts";
import { normal, type Random } from "./random.ts";

/** The layer sizes of a network. */
export interface Architecture {
  /** Features per sample. */
  readonly inputs: number;
  /** The width of each hidden layer, in order; empty for softmax regression. */
  readonly hidden: readonly number[];
  /** Output classes. */
  readonly classes: number;
}

/** Loss and accuracy of a model on a data set. */
export interface Evaluation {
  /** Mean cross-entropy, in nats. */
  readonly loss: number;
  /** The share of samples whose most likely class is the label, from 0 to 1. */
  readonly accuracy: number;
}

/** Where one layer's parameters sit in the flat array. */
interface Layer {
  readonly inputs: number;
  readonly outputs: number;
  /** Offset of the weight matrix (`inputs × outputs`, row-major: row `i` fans out of input `i`). */
  readonly weights: number;
  /** Offset of the `outputs` biases. */
  readonly biases: number;
}

/**
 * Checks the layer sizes and returns them in order, input to output.
 *
 * @throws {RangeError} If a size is not a positive integer.
 */
function sizesOf(architecture: Architecture): number[] {
  const sizes = [architecture.inputs, ...architecture.hidden, architecture.classes];
  for (const size of sizes) {
    if (!Number.isSafeInteger(size) || size < 1) {
      throw new RangeError(`Invalid layer size: "${size}" is not a positive integer`);
    }
  }
  if (architecture.classes < 2) {
    throw new RangeError(`Invalid classes: "${architecture.classes}" is less than 2`);
  }
  return sizes;
}

function layersOf(architecture: Architecture): Layer[] {
  const sizes = sizesOf(architecture);
  const layers: Layer[] = [];
  let offset = 0;
  for (let l = 0; l + 1 < sizes.length; l++) {
    const inputs = sizes[l], outputs = sizes[l + 1];
    layers.push({ inputs, outputs, weights: offset, biases: offset + inputs * outputs });
    offset += (inputs + 1) * outputs;
  }
  return layers;
}

/**
 * Counts the parameters (weights and biases) of a network.
 *
 * @param architecture The layer sizes.
 * @returns The length of the flat parameter array.
 * @throws {RangeError} If a layer size is not a positive integer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parameterCount } from "./model.ts";
 *
 * assert.equal(parameterCount({ inputs: 64, hidden: [], classes: 10 }), 650);
 * ```
 */
export function parameterCount(architecture: Architecture): number {
  return layersOf(architecture).reduce((sum, l) => sum + (l.inputs + 1) * l.outputs, 0);
}

/**
 * Names a network for people: `"64 → 10 softmax regression"` or
 * `"64 → 32 → 10 MLP (ReLU)"`.
 *
 * @param architecture The layer sizes.
 * @returns The description.
 */
export function describeArchitecture(architecture: Architecture): string {
  const sizes = sizesOf(architecture).join(" → ");
  return architecture.hidden.length === 0 ? `${sizes} softmax regression` : `${sizes} MLP (ReLU)`;
}

/**
 * Makes initial parameters: He-normal weights for the ReLU layers,
 * Glorot-scaled normal weights for the output layer, zero biases.
 *
 * @param architecture The layer sizes.
 * @param random The source of randomness.
 * @returns A new flat parameter array.
 */
export function initParameters(architecture: Architecture, random: Random): Float32Array {
  const layers = layersOf(architecture);
  const params = new Float32Array(parameterCount(architecture));
  layers.forEach((layer, l) => {
    const relu = l + 1 < layers.length;
    const std = Math.sqrt((relu ? 2 : 1) / layer.inputs);
    for (let i = 0; i < layer.inputs * layer.outputs; i++) {
      params[layer.weights + i] = std * normal(random);
    }
  });
  return params;
}

/** `Σ a[ai + k] · b[bi + k]` for `k < n`. */
function dot(a: Float32Array, ai: number, b: Float32Array, bi: number, n: number): number {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  let k = 0;
  for (; k + 3 < n; k += 4) {
    s0 += a[ai + k] * b[bi + k];
    s1 += a[ai + k + 1] * b[bi + k + 1];
    s2 += a[ai + k + 2] * b[bi + k + 2];
    s3 += a[ai + k + 3] * b[bi + k + 3];
  }
  for (; k < n; k++) s0 += a[ai + k] * b[bi + k];
  return s0 + s1 + s2 + s3;
}

/** `y[yi + k] += alpha · x[xi + k]` for `k < n`. */
function axpy(
  y: Float32Array,
  yi: number,
  alpha: number,
  x: Float32Array,
  xi: number,
  n: number,
): void {
  let k = 0;
  for (; k + 3 < n; k += 4) {
    y[yi + k] += alpha * x[xi + k];
    y[yi + k + 1] += alpha * x[xi + k + 1];
    y[yi + k + 2] += alpha * x[xi + k + 2];
    y[yi + k + 3] += alpha * x[xi + k + 3];
  }
  for (; k < n; k++) y[yi + k] += alpha * x[xi + k];
}

/**
 * A network of a given architecture, with the scratch memory to run it on
 * batches. It holds no parameters: every call takes the flat array, so one
 * network serves any number of models of its shape.
 *
 * @example One gradient step on a tiny problem
 * ```ts
 * import assert from "node:assert/strict";
 * import { initParameters, Network } from "./model.ts";
 * import { seededRandom } from "./random.ts";
 *
 * const architecture = { inputs: 2, hidden: [4], classes: 2 };
 * const data = {
 *   features: new Float32Array([0, 1, 1, 0]), labels: new Uint8Array([0, 1]),
 *   count: 2, dims: 2, classes: 2,
 * };
 * const network = new Network(architecture);
 * const params = initParameters(architecture, seededRandom(1));
 * const grad = new Float32Array(network.size);
 * const before = network.lossAndGradient(params, data, [0, 1], grad);
 * for (let i = 0; i < params.length; i++) params[i] -= 0.5 * grad[i];
 * assert.ok(network.evaluate(params, data).loss < before);
 * ```
 */
export class Network {
  /** The layer sizes. */
  readonly architecture: Architecture;
  /** The number of parameters. */
  readonly size: number;
  readonly #layers: Layer[];
  /** Activations per layer boundary: `#activations[0]` holds the batch's inputs. */
  #activations: Float32Array[] = [];
  /** Two buffers for the backward pass's error signals, used in turn. */
  #deltas: [Float32Array, Float32Array] = [new Float32Array(0), new Float32Array(0)];
  #capacity = 0;

  /**
   * Creates a network.
   *
   * @param architecture The layer sizes.
   * @throws {RangeError} If a layer size is not a positive integer.
   */
  constructor(architecture: Architecture) {
    this.architecture = architecture;
    this.#layers = layersOf(architecture);
    this.size = parameterCount(architecture);
  }

  /** Makes sure the scratch buffers hold a batch of `batch` samples. */
  #reserve(batch: number): void {
    if (batch <= this.#capacity) return;
    const sizes = [this.#layers[0].inputs, ...this.#layers.map((l) => l.outputs)];
    const widest = Math.max(...sizes);
    this.#activations = sizes.map((size) => new Float32Array(batch * size));
    this.#deltas = [new Float32Array(batch * widest), new Float32Array(batch * widest)];
    this.#capacity = batch;
  }

  #check(params: Float32Array, dataset: Dataset): void {
    if (params.length !== this.size) {
      throw new RangeError(`Invalid parameters: ${params.length} values, expected ${this.size}`);
    }
    const { inputs, classes } = this.architecture;
    if (dataset.dims !== inputs || dataset.classes !== classes) {
      throw new RangeError(
        `Invalid data set: ${dataset.dims} features and ${dataset.classes} classes, ` +
          `expected ${inputs} and ${classes}`,
      );
    }
  }

  /** Runs the batch forward; the logits end up in the last activation buffer. */
  #forward(params: Float32Array, dataset: Dataset, batch: ArrayLike<number>): Float32Array {
    const n = batch.length;
    this.#reserve(n);
    const input = this.#activations[0];
    const dims = dataset.dims;
    for (let s = 0; s < n; s++) {
      const from = batch[s] * dims;
      input.set(dataset.features.subarray(from, from + dims), s * dims);
    }
    const last = this.#layers.length - 1;
    this.#layers.forEach((layer, l) => {
      const x = this.#activations[l], y = this.#activations[l + 1];
      const { inputs, outputs } = layer;
      const biases = params.subarray(layer.biases, layer.biases + outputs);
      for (let s = 0; s < n; s++) y.set(biases, s * outputs);
      // Row by row: each weight row is read once per batch, while it is in
      // cache, and only for the samples where its input is not zero.
      for (let i = 0; i < inputs; i++) {
        const row = layer.weights + i * outputs;
        for (let s = 0; s < n; s++) {
          const xi = x[s * inputs + i];
          if (xi !== 0) axpy(y, s * outputs, xi, params, row, outputs);
        }
      }
      if (l < last) { for (let k = 0; k < n * outputs; k++) if (y[k] < 0) y[k] = 0; }
    });
    return this.#activations[this.#layers.length];
  }

  /**
   * Computes the mean cross-entropy of a batch and its gradient.
   *
   * @param params The flat parameters.
   * @param dataset The data the batch indexes into.
   * @param batch The sample indices of the batch (at least one).
   * @param grad Receives the gradient of the mean loss; overwritten, length {@linkcode Network.size}.
   * @returns The mean loss of the batch, before any update.
   * @throws {RangeError} If a length does not match the architecture, or the batch is empty.
   */
  lossAndGradient(
    params: Float32Array,
    dataset: Dataset,
    batch: ArrayLike<number>,
    grad: Float32Array,
  ): number {
    this.#check(params, dataset);
    if (grad.length !== this.size) {
      throw new RangeError(`Invalid gradient buffer: ${grad.length} values, expected ${this.size}`);
    }
    const n = batch.length;
    if (n === 0) throw new RangeError("Invalid batch: it is empty");
    const logits = this.#forward(params, dataset, batch);
    const classes = this.architecture.classes;

    // Softmax and cross-entropy; the output error is (p − onehot) / n.
    let delta = this.#deltas[0];
    let loss = 0;
    for (let s = 0; s < n; s++) {
      const label = dataset.labels[batch[s]];
      const at = s * classes;
      let max = -Infinity;
      for (let k = 0; k < classes; k++) max = Math.max(max, logits[at + k]);
      let sum = 0;
      for (let k = 0; k < classes; k++) sum += Math.exp(logits[at + k] - max);
      loss += Math.log(sum) + max - logits[at + label];
      for (let k = 0; k < classes; k++) {
        const p = Math.exp(logits[at + k] - max) / sum;
        delta[at + k] = (p - (k === label ? 1 : 0)) / n;
      }
    }

    for (let l = this.#layers.length - 1; l >= 0; l--) {
      const layer = this.#layers[l];
      const { inputs, outputs } = layer;
      const x = this.#activations[l];
      const back = l > 0;
      const next = this.#deltas[delta === this.#deltas[0] ? 1 : 0];
      for (let j = 0; j < outputs; j++) {
        let biasGrad = 0;
        for (let s = 0; s < n; s++) biasGrad += delta[s * outputs + j];
        grad[layer.biases + j] = biasGrad;
      }
      for (let i = 0; i < inputs; i++) {
        const row = layer.weights + i * outputs;
        grad.fill(0, row, row + outputs);
        for (let s = 0; s < n; s++) {
          const at = s * inputs + i;
          const xi = x[at];
          if (xi === 0) {
            // A zero input adds nothing to the gradient; if it is an
            // inactive ReLU (any zero of a hidden layer), nothing passes back.
            if (back) next[at] = 0;
            continue;
          }
          axpy(grad, row, xi, delta, s * outputs, outputs);
          // x > 0 here: the ReLU that produced it passes the error unchanged.
          if (back) next[at] = dot(params, row, delta, s * outputs, outputs);
        }
      }
      if (back) delta = next;
    }
    return loss / n;
  }

  /**
   * Measures loss and accuracy on a whole data set.
   *
   * @param params The flat parameters.
   * @param dataset The data.
   * @param batchSize Samples per forward pass (default 128).
   * @returns The mean loss and the accuracy.
   * @throws {RangeError} If a length does not match the architecture.
   */
  evaluate(params: Float32Array, dataset: Dataset, batchSize = 128): Evaluation {
    this.#check(params, dataset);
    const classes = this.architecture.classes;
    let loss = 0, correct = 0;
    for (let from = 0; from < dataset.count; from += batchSize) {
      const n = Math.min(batchSize, dataset.count - from);
      const batch = Array.from({ length: n }, (_, s) => from + s);
      const logits = this.#forward(params, dataset, batch);
      for (let s = 0; s < n; s++) {
        const at = s * classes;
        const label = dataset.labels[from + s];
        let best = 0, max = -Infinity;
        for (let k = 0; k < classes; k++) {
          if (logits[at + k] > max) [best, max] = [k, logits[at + k]];
        }
        let sum = 0;
        for (let k = 0; k < classes; k++) sum += Math.exp(logits[at + k] - max);
        loss += Math.log(sum) + max - logits[at + label];
        if (best === label) correct++;
      }
    }
    const count = Math.max(dataset.count, 1);
    return { loss: loss / count, accuracy: correct / count };
  }
}
