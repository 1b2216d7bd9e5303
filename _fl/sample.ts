/**
 * Sampling sites for a round: a seeded shuffle of the available names, the
 * same for the same seed, round and names whatever their order; and the
 * wait for the cohort to change.
 *
 * @module
 */

import { compare } from "./site_history.ts";

/** Waiting for a change: {@linkcode Changes.next} resolves on the next {@linkcode Changes.notify}. */
export class Changes {
  readonly #waiters = new Set<() => void>();

  /** Wakes every waiter. */
  notify(): void {
    for (const wake of [...this.#waiters]) wake();
  }

  /**
   * Resolves on the next change, after `ms`, or rejects when `signal` aborts.
   *
   * @param ms The most milliseconds to wait (`Infinity`: no limit).
   * @param signal Cancels the wait.
   * @returns Resolves on the change or the time.
   */
  next(ms: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const finish = (error?: unknown) => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        this.#waiters.delete(wake);
        if (error === undefined) resolve();
        else reject(error);
      };
      const wake = () => finish();
      const onAbort = () => finish(signal!.reason);
      const timer = ms === Infinity ? undefined : setTimeout(wake, Math.max(0, ms));
      this.#waiters.add(wake);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/**
 * Chooses up to `k` of `names`, from a generator seeded by `seed` and `round`.
 *
 * @param names The names to choose from (not changed).
 * @param k How many.
 * @param seed The job's seed (an integer).
 * @param round The round (an integer).
 * @returns The chosen names, sorted.
 * @throws {RangeError} If `k` is not a positive integer, or the seed or round not an integer.
 */
export function sampleNames(
  names: readonly string[],
  k: number,
  seed: number,
  round: number,
): string[] {
  if (!Number.isSafeInteger(k) || k < 1) {
    throw new RangeError(`Invalid sample size: "${k}" is not a positive integer`);
  }
  for (const [key, value] of [["seed", seed], ["round", round]] as const) {
    if (!Number.isSafeInteger(value)) {
      throw new RangeError(`Invalid ${key}: "${value}" is not an integer`);
    }
  }
  const pool = [...names].sort(compare);
  const random = mulberry32(mix(mix(seed % 0x1_0000_0000) ^ (round % 0x1_0000_0000)));
  for (let i = 0; i < Math.min(k, pool.length); i++) {
    const j = i + Math.floor(random() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, k).sort(compare);
}

/** A 32-bit hash step (splitmix32's finalizer). */
function mix(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  x = Math.imul(x ^ (x >>> 16), 0x21f0aaad);
  x = Math.imul(x ^ (x >>> 15), 0x735a2d97);
  return (x ^ (x >>> 15)) >>> 0;
}

/** A small seeded generator of numbers in [0, 1). */
function mulberry32(state: number): () => number {
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
