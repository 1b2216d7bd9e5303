/**
 * Local training: what each client does with the global model in a round of
 * federated averaging, a few epochs of minibatch SGD on its own samples.
 *
 * @module
 */

import type { Dataset } from "./data.ts";
import type { Network } from "./model.ts";
import { type Random, shuffle } from "./random.ts";

/** Options for {@linkcode trainLocal}. */
export interface TrainOptions {
  /** Passes over the samples. */
  readonly epochs: number;
  /** Samples per SGD step (the last batch of an epoch may be smaller). */
  readonly batchSize: number;
  /** The SGD step size. */
  readonly learningRate: number;
  /** Stop after this many SGD steps even if the epochs are not done (default: no limit). */
  readonly maxSteps?: number;
  /** Shuffles the samples before each epoch. */
  readonly random: Random;
}

/** What {@linkcode trainLocal} reports. */
export interface TrainResult {
  /** The mean training loss over all steps, weighted by batch size. */
  readonly loss: number;
  /** How many samples the client holds (the weight of its model in the average). */
  readonly samples: number;
  /** How many SGD steps were taken. */
  readonly steps: number;
}

/**
 * Trains `params` in place with minibatch SGD on the given samples, for
 * `epochs` passes or `maxSteps` steps, whichever ends first.
 *
 * @param network The network (its scratch memory is reused).
 * @param params The flat parameters, updated in place.
 * @param dataset The data the indices point into.
 * @param indices The samples this client may train on.
 * @param options Epochs, batch size, learning rate and randomness.
 * @returns The mean loss seen during training, the sample count and the step count.
 * @throws {RangeError} If `indices` is empty or an option is out of range.
 */
export function trainLocal(
  network: Network,
  params: Float32Array,
  dataset: Dataset,
  indices: ArrayLike<number>,
  options: TrainOptions,
): TrainResult {
  const { epochs, batchSize, learningRate, random, maxSteps = Infinity } = options;
  if (!Number.isSafeInteger(epochs) || epochs < 1) {
    throw new RangeError(`Invalid epochs: "${epochs}" is not a positive integer`);
  }
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new RangeError(`Invalid batch size: "${batchSize}" is not a positive integer`);
  }
  if (!(maxSteps === Infinity || Number.isSafeInteger(maxSteps) && maxSteps > 0)) {
    throw new RangeError(`Invalid max steps: "${maxSteps}" is not a positive integer`);
  }
  if (!(learningRate > 0)) {
    throw new RangeError(`Invalid learning rate: "${learningRate}" is not positive`);
  }
  if (indices.length === 0) throw new RangeError("Invalid samples: the client has none");
  const order = Uint32Array.from(indices);
  const grad = new Float32Array(network.size);
  let lossSum = 0, seen = 0, steps = 0;
  for (let epoch = 0; epoch < epochs && steps < maxSteps; epoch++) {
    shuffle(order, random);
    for (let from = 0; from < order.length && steps < maxSteps; from += batchSize) {
      const batch = order.subarray(from, Math.min(from + batchSize, order.length));
      lossSum += network.lossAndGradient(params, dataset, batch, grad) * batch.length;
      seen += batch.length;
      for (let i = 0; i < params.length; i++) params[i] -= learningRate * grad[i];
      steps++;
    }
  }
  return { loss: lossSum / seen, samples: indices.length, steps };
}
