/**
 * Cancellation and time limits for the waiting calls.
 *
 * @module
 */

/** How long a waiting call may take, and a signal to cancel it. */
export interface WaitOptions {
  /** Cancels the call: it rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * The most milliseconds the call may take (default: no limit). It then
   * rejects with a `TimeoutError` that names the clients it still awaited.
   */
  timeout?: number;
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
const NO_DEADLINE: Deadline = {
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
 * Starts a deadline for one waiting call.
 *
 * @param options The signal and timeout of the call.
 * @param onTimeout Makes the error to reject with when time runs out.
 * @returns The deadline; dispose it to clear its timer and listener.
 * @throws {RangeError} If the timeout is invalid.
 */
export function startDeadline(options: WaitOptions | undefined, onTimeout: () => Error): Deadline {
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
      timer = setTimeout(() => reject(onTimeout()), timeout);
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
