/**
 * Work started in order, at most a few at once, whose results are taken in
 * the order it was started: the root reads up to 4 partial aggregates from
 * the object store at a time, and still folds them in the order they came,
 * so that its sum is the same as if it had read them one by one.
 *
 * @module
 */

/** One piece of work's outcome. */
export type Outcome<T> = { readonly ok: true; readonly value: T } | {
  readonly ok: false;
  readonly error: unknown;
};

interface Slot<T> {
  outcome: Outcome<T> | undefined;
  readonly settled: Promise<void>;
}

/**
 * A window of work in progress, oldest first.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { OrderedWindow } from "./window.ts";
 *
 * const window = new OrderedWindow<string>(2);
 * window.add(() => new Promise((resolve) => setTimeout(() => resolve("slow"), 20)));
 * window.add(() => Promise.resolve("fast"));
 * assert.equal(window.full, true);
 * await window.next; // the oldest, however long the newer ones took
 * assert.deepStrictEqual(window.take(), { ok: true, value: "slow" });
 * await window.next;
 * assert.deepStrictEqual(window.take(), { ok: true, value: "fast" });
 * assert.equal(window.size, 0);
 * ```
 */
export class OrderedWindow<T> {
  readonly #limit: number;
  readonly #slots: Slot<T>[] = [];

  /**
   * Makes an empty window.
   *
   * @param limit The most pieces of work in progress at once.
   * @throws {RangeError} If it is not a positive integer.
   */
  constructor(limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new RangeError(`Invalid limit: "${limit}" is not a positive integer`);
    }
    this.#limit = limit;
  }

  /** Pieces of work started and not taken yet. */
  get size(): number {
    return this.#slots.length;
  }

  /** Whether `limit` pieces are in the window: {@linkcode OrderedWindow.add} must wait. */
  get full(): boolean {
    return this.#slots.length >= this.#limit;
  }

  /** Whether the oldest piece is done: {@linkcode OrderedWindow.take} gives it. */
  get ready(): boolean {
    return this.#slots[0]?.outcome !== undefined;
  }

  /** Resolves (never rejects) once the oldest piece is done; `undefined` if the window is empty. */
  get next(): Promise<void> | undefined {
    return this.#slots[0]?.settled;
  }

  /**
   * Starts a piece of work at the end of the window.
   *
   * @param work The work; its rejection is its outcome, not thrown.
   * @throws {RangeError} If the window is full.
   */
  add(work: () => Promise<T>): void {
    if (this.full) throw new RangeError(`The window is full: "${this.#limit}" pieces of work`);
    const slot: Slot<T> = {
      outcome: undefined,
      settled: Promise.resolve().then(work).then(
        (value) => void (slot.outcome = { ok: true, value }),
        (error) => void (slot.outcome = { ok: false, error }),
      ),
    };
    this.#slots.push(slot);
  }

  /**
   * Takes the oldest piece's outcome.
   *
   * @returns Its value or its error.
   * @throws {RangeError} If the window is empty or the oldest piece is not done.
   */
  take(): Outcome<T> {
    const outcome = this.#slots[0]?.outcome;
    if (outcome === undefined) throw new RangeError("The oldest piece of work is not done");
    this.#slots.shift();
    return outcome;
  }
}
