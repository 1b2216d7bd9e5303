/**
 * The data set of the demo: the UCI handwritten digits, 1,797 images of
 * 8×8 pixels with values 0–16, labelled 0–9, as scikit-learn ships them
 * (see `data/README.md` for the origin and licence).
 *
 * @module
 */

import { type Random, shuffle } from "./random.ts";

/** A labelled classification data set held in flat typed arrays. */
export interface Dataset {
  /** The features, row-major: sample `i` is `features[i * dims … (i + 1) * dims]`. */
  readonly features: Float32Array;
  /** The class of each sample, `0 … classes − 1`. */
  readonly labels: Uint8Array;
  /** The number of samples. */
  readonly count: number;
  /** The number of features per sample. */
  readonly dims: number;
  /** The number of classes. */
  readonly classes: number;
}

/** Where the digits file lives: beside this module, in `data/`. */
export const DIGITS_PATH: URL = new URL("./data/digits.csv.gz", import.meta.url);

const DIGITS_DIMS = 64;
const DIGITS_CLASSES = 10;
/** Pixels count 0–16 set bits of a 4×4 block; features are scaled to [0, 1]. */
const DIGITS_MAX_PIXEL = 16;

/**
 * Loads the handwritten digits: a gzipped CSV of 1,797 rows, 64 pixel
 * values and then the label. Pixels are scaled to [0, 1].
 *
 * @param path The file (default {@linkcode DIGITS_PATH}).
 * @returns The data set.
 * @throws {SyntaxError} If a row does not have 65 integer fields or a value is out of range.
 */
export async function loadDigits(path: string | URL = DIGITS_PATH): Promise<Dataset> {
  using file = await Deno.open(path);
  const text = await new Response(
    file.readable.pipeThrough(new DecompressionStream("gzip")),
  ).text();
  return parseDigits(text);
}

/**
 * Parses the digits CSV text (one sample per line: 64 pixels 0–16, then the label 0–9).
 *
 * @param text The CSV text.
 * @returns The data set, with pixels scaled to [0, 1].
 * @throws {SyntaxError} If a row is malformed.
 */
export function parseDigits(text: string): Dataset {
  const rows = text.split("\n").filter((line) => line.trim() !== "");
  const features = new Float32Array(rows.length * DIGITS_DIMS);
  const labels = new Uint8Array(rows.length);
  rows.forEach((row, i) => {
    const fields = row.split(",").map(Number);
    if (fields.length !== DIGITS_DIMS + 1 || !fields.every(Number.isInteger)) {
      throw new SyntaxError(
        `Invalid digits row ${i + 1}: expected ${DIGITS_DIMS + 1} integers, got "${row}"`,
      );
    }
    for (let j = 0; j < DIGITS_DIMS; j++) {
      const pixel = fields[j];
      if (pixel < 0 || pixel > DIGITS_MAX_PIXEL) {
        throw new SyntaxError(`Invalid digits row ${i + 1}: pixel ${j} is "${pixel}"`);
      }
      features[i * DIGITS_DIMS + j] = pixel / DIGITS_MAX_PIXEL;
    }
    const label = fields[DIGITS_DIMS];
    if (label < 0 || label >= DIGITS_CLASSES) {
      throw new SyntaxError(`Invalid digits row ${i + 1}: label is "${label}"`);
    }
    labels[i] = label;
  });
  return { features, labels, count: rows.length, dims: DIGITS_DIMS, classes: DIGITS_CLASSES };
}

/**
 * Copies the chosen samples into a new data set.
 *
 * @param dataset The source.
 * @param indices The samples to take, in order.
 * @returns A data set of `indices.length` samples.
 */
export function subset(dataset: Dataset, indices: ArrayLike<number>): Dataset {
  const { dims } = dataset;
  const features = new Float32Array(indices.length * dims);
  const labels = new Uint8Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const from = indices[i];
    features.set(dataset.features.subarray(from * dims, (from + 1) * dims), i * dims);
    labels[i] = dataset.labels[from];
  }
  return { features, labels, count: indices.length, dims, classes: dataset.classes };
}

/**
 * Splits sample indices at random into a training and a test set.
 *
 * @param count The number of samples.
 * @param testFraction The share held out for testing, from 0 to 1.
 * @param random The source of randomness.
 * @returns The indices of each part, each sorted.
 * @throws {RangeError} If `testFraction` is not from 0 to 1.
 */
export function splitTrainTest(
  count: number,
  testFraction: number,
  random: Random,
): { train: Uint32Array; test: Uint32Array } {
  if (!(testFraction >= 0 && testFraction <= 1)) {
    throw new RangeError(`Invalid test fraction: "${testFraction}" is not from 0 to 1`);
  }
  const order = shuffle(Uint32Array.from({ length: count }, (_, i) => i), random);
  const tests = Math.round(count * testFraction);
  return { train: order.slice(tests).sort(), test: order.slice(0, tests).sort() };
}

/**
 * Counts the samples of each class among the given indices.
 *
 * @param dataset The data set.
 * @param indices The samples to count (default: all).
 * @returns The count per class.
 */
export function classCounts(dataset: Dataset, indices?: ArrayLike<number>): number[] {
  const counts = new Array<number>(dataset.classes).fill(0);
  const n = indices?.length ?? dataset.count;
  for (let i = 0; i < n; i++) counts[dataset.labels[indices ? indices[i] : i]]++;
  return counts;
}
