/**
 * Waiting: cancellation and time limits for the waiting calls, and the one
 * notifier they wait on.
 *
 * @module
 */

import { TimeoutError } from "../errors.ts";
import type { WaitOptions } from "../types.ts";

/** What a call that timed out says: `"<what> timed out after <ms> ms: <detail>"`. */
export interface TimeoutDetail {
  /** The call, capitalised: `"Gather"`. */
  what: string;
  /** What it was still waiting for: `"waiting for clients [1, 3]"`. */
  detail: string;
  /** The clients it was still waiting for. */
  clientIds: readonly number[];
}

/** A promise that rejects when the call is aborted or out of time; dispose it when done. */
export interface Deadline extends Disposable {
  /** Never resolves; rejects with the abort reason or the timeout error. */
  readonly promise: Promise<never>;
  /** Whether it can fire at all (there is a signal or a finite timeout). */
  readonly bounded: boolean;
}

/**
 * Waits for `promise`, or rejects when the deadline fires.
 *
 * @param promise What to wait for.
 * @param deadline The deadline of the call.
 * @returns What `promise` resolved to.
 */
export function within<T>(promise: Promise<T>, deadline: Deadline): Promise<T> {
  return deadline.bounded ? Promise.race([promise, deadline.promise]) : promise;
}

/** The deadline of a call with neither signal nor timeout: it never fires. */
export const NO_DEADLINE: Deadline = {
  promise: new Promise<never>(() => {}),
  bounded: false,
  [Symbol.dispose]() {},
};

/**
 * Validates a timeout option.
 *
 * @param timeout Milliseconds, or `undefined` for none.
 * @throws {RangeError} If it is negative or not a number.
 */
export function checkTimeout(timeout: number | undefined): void {
  if (timeout !== undefined && !(typeof timeout === "number" && timeout >= 0)) {
    throw new RangeError(`Invalid timeout: "${timeout}" is not a non-negative number of ms`);
  }
}

/**
 * Starts a deadline for one waiting call; the one place a `TimeoutError` is made.
 *
 * @param options The signal and timeout of the call.
 * @param describe Says, when time runs out, what the call was waiting for.
 * @returns The deadline; dispose it to clear its timer and listener.
 * @throws {RangeError} If the timeout is invalid.
 */
export function startDeadline(
  options: WaitOptions | undefined,
  describe: () => TimeoutDetail,
): Deadline {
  const { signal, timeout } = options ?? {};
  checkTimeout(timeout);
  if (signal === undefined && (timeout === undefined || timeout === Infinity)) return NO_DEADLINE;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const promise = new Promise<never>((_, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    if (signal !== undefined) {
      onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    if (timeout !== undefined && timeout !== Infinity) {
      timer = setTimeout(() => {
        const { what, detail, clientIds } = describe();
        reject(new TimeoutError(`${what} timed out after ${timeout} ms: ${detail}`, { clientIds }));
      }, timeout);
    }
  });
  promise.catch(() => {});
  return {
    promise,
    bounded: true,
    [Symbol.dispose]() {
      if (timer !== undefined) clearTimeout(timer);
      if (onAbort !== undefined) signal!.removeEventListener("abort", onAbort);
    },
  };
}

/**
 * Waits `ms`, or less if `signal` aborts (it never rejects): the pause of a
 * retry loop that must stop at once when its owner closes.
 *
 * @param ms Milliseconds.
 * @param signal Ends the pause early.
 * @returns Resolves after `ms` or at the abort.
 */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * The pauses of a retry loop: `first` ms, doubled after each one up to `max`,
 * each within ±20 % so that clients turned away together do not come back
 * together.
 */
export class Backoff {
  readonly #max: number;
  #next: number;

  /**
   * Creates the schedule.
   *
   * @param first The first pause, in ms.
   * @param max The longest pause, in ms.
   */
  constructor(first: number, max: number) {
    this.#next = first;
    this.#max = max;
  }

  /**
   * The next pause (jittered), and doubles the one after it.
   *
   * @returns Milliseconds to wait.
   */
  next(): number {
    const ms = this.#next * (0.8 + 0.4 * Math.random());
    this.#next = Math.min(this.#max, this.#next * 2);
    return ms;
  }
}

/**
 * Something that changes, and one waiter at a time for its next change: the
 * register/wait/unregister loop of every waiting call, written once.
 */
export class Notifier {
  #wake: (() => void) | undefined;
  #pending = false;

  /** Wakes the waiter, or marks the change for the next {@linkcode Notifier.changed}. */
  notify(): void {
    const wake = this.#wake;
    if (wake === undefined) {
      this.#pending = true;
      return;
    }
    this.#wake = undefined;
    wake();
  }

  /**
   * Waits for the next change (returns at once if one happened since the last wait).
   *
   * @param deadline The caller's deadline.
   * @returns Resolves on a change.
   * @throws {TimeoutError} Or the abort reason, when the deadline fires first.
   */
  async changed(deadline: Deadline): Promise<void> {
    if (this.#pending) {
      this.#pending = false;
      return;
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#wake = resolve;
    try {
      await within(promise, deadline);
    } finally {
      if (this.#wake === resolve) this.#wake = undefined;
    }
  }
}
