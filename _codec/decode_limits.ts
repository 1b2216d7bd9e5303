/**
 * The decoder's limits (PROTOCOL.md §4.5): the defaults of `decode()`'s
 * options, their checks, and the cost units each decoded value is charged
 * against the budget of a body.
 *
 * @module
 */

import type { DecodeOptions } from "../types.ts";

/** Containers a value may nest, by default (the encoder's limit too). */
export const DEFAULT_MAX_DEPTH: number = 100;
/** The largest `maxDepth` allowed: the decoder recurses once per level. */
export const MAX_DEPTH_LIMIT: number = 1000;
/** Cost units a body may spend per byte of its length, by default. */
export const DEFAULT_COST_PER_BYTE: number = 2;
/** Cost units any body may spend whatever its length, by default (2²²). */
export const DEFAULT_COST_FLOOR: number = 2 ** 22;
/** Cost units no body may exceed, by default (2²⁴: ~128 MiB of heap, ~1 s of work). */
export const DEFAULT_COST_LIMIT: number = 2 ** 24;

// Cost units: each about one 8-byte word of heap and 10 to 60 ns of work, as
// measured for every kind of value. A container's own units, with one per
// element or two per entry, are charged from its header before it is
// allocated; the rest as each value is built.
export const ARRAY_UNITS = 4; // the JSArray and its elements' header
export const MAP_UNITS = 8; // the object with its first property slots
export const ENTRY_UNITS = 2; // each entry: a property slot
// Each entry beyond the first SMALL_MAP of a map, a hash table in V8: its
// slots, and interning a new key (about 2 µs).
export const SMALL_MAP = 16;
export const LARGE_ENTRY_UNITS = 48;
/**
 * Each of the first SMALL_MAP keys of a map, the first time the body adds it
 * after the same keys before it: V8 then builds a hidden class (and interns
 * the name if it is new), 1 to 3 µs. Records that repeat their keys pay it
 * once per key.
 */
export const NEW_KEY_UNITS = 64;
export const NUMBER_UNITS = 2; // a heap number: floats, 32- and 64-bit integers
export const BIGINT_UNITS = 3;
export const VIEW_UNITS = 13; // a Uint8Array view, or the typed array of a numpy map
export const EXT_UNITS = 17; // an ExtData and its view
export const DATE_UNITS = 12;
export const NDARRAY_UNITS = 8;

/** Cost units of a string of `length` UTF-8 bytes (one-character strings are shared). */
export function stringUnits(length: number): number {
  return length < 2 ? 0 : 2 + (length >> 2);
}

/**
 * Checks a decode's `maxDepth` option.
 *
 * @param options The options of `decode()`.
 * @returns How many containers a value may nest.
 * @throws {TypeError} If it is not a number.
 * @throws {RangeError} If it is not an integer from 1 to 1000.
 */
export function maxDepthOf(options: DecodeOptions | undefined): number {
  return option("maxDepth", options?.maxDepth, DEFAULT_MAX_DEPTH, isDepth);
}

/**
 * Checks a decode's cost options and computes its budget (two numbers, no
 * object: this runs for every message).
 *
 * @param options The options of `decode()`.
 * @param bytes The body's length.
 * @returns The cost units the body may spend.
 * @throws {TypeError} If a limit is not a number.
 * @throws {RangeError} If a limit is negative.
 */
export function budgetOf(options: DecodeOptions | undefined, bytes: number): number {
  const perByte = option("costPerByte", options?.costPerByte, DEFAULT_COST_PER_BYTE, isCost);
  const floor = option("costFloor", options?.costFloor, DEFAULT_COST_FLOOR, isCost);
  const limit = option("costLimit", options?.costLimit, DEFAULT_COST_LIMIT, isCost);
  return Math.min(limit, Math.max(floor, perByte * bytes));
}

/** An option's value `v`, or `fallback`; TypeError unless a number, RangeError unless `ok`. */
function option(name: string, v: unknown, fallback: number, ok: (n: number) => boolean): number {
  if (v === undefined) return fallback;
  if (typeof v !== "number") {
    throw new TypeError(`Invalid ${name}: type "${typeof v}" is not a number`);
  }
  if (ok(v)) return v;
  const range = ok === isDepth
    ? `an integer from 1 to ${MAX_DEPTH_LIMIT}`
    : "a non-negative number";
  throw new RangeError(`Invalid ${name}: "${v}" is not ${range}`);
}
const isDepth = (n: number) => Number.isInteger(n) && n >= 1 && n <= MAX_DEPTH_LIMIT;
const isCost = (n: number) => n >= 0;
