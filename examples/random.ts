/**
 * A small seeded random number generator, so that a demo run (data split,
 * partition, initial weights, batch order) is the same every time.
 *
 * @module
 */

/** A source of uniform numbers in [0, 1), like `Math.random`. */
export type Random = () => number;

/**
 * Creates a seeded generator (mulberry32: 32 bits of state, fast, and good
 * enough for shuffling and initialisation; not for cryptography).
 *
 * @param seed Any integer; the same seed gives the same sequence.
 * @returns A function returning uniform numbers in [0, 1).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { seededRandom } from "./random.ts";
 *
 * const a = seededRandom(7), b = seededRandom(7);
 * assert.equal(a(), b());
 * ```
 */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Shuffles an array in place (Fisher–Yates).
 *
 * @param array The array to shuffle.
 * @param random The source of randomness.
 * @returns The same array, shuffled.
 */
export function shuffle<T extends { length: number; [index: number]: unknown }>(
  array: T,
  random: Random,
): T {
  for (let i = array.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = array[i];
    array[i] = array[j];
    array[j] = t;
  }
  return array;
}

/**
 * Draws from the standard normal distribution (Box–Muller).
 *
 * @param random The source of randomness.
 * @returns A sample with mean 0 and variance 1.
 */
export function normal(random: Random): number {
  const u = 1 - random(); // in (0, 1]: the logarithm stays finite
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}
