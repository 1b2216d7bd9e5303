/**
 * Deadlines and retries for NATS operations: a NATS server that restarts
 * makes publishes, fetches and puts fail for a while; each is tried again
 * until it succeeds or its deadline passes.
 *
 * @module
 */

import { NatsError, PermanentNatsError } from "./errors.ts";

/** When a call must be done by, and a signal that cancels it. */
export interface Until {
  /** `performance.now()` at the deadline (`Infinity`: none). */
  readonly end: number;
  /** Cancels the call. */
  readonly signal?: AbortSignal;
}

/**
 * A deadline `timeout` ms from now.
 *
 * @param timeout Milliseconds, or `undefined` for none.
 * @param signal Cancels the call.
 * @returns The deadline.
 * @throws {RangeError} If `timeout` is negative or not a number.
 */
export function until(timeout: number | undefined, signal?: AbortSignal): Until {
  if (timeout !== undefined && !(typeof timeout === "number" && timeout >= 0)) {
    throw new RangeError(`Invalid timeout: "${timeout}" is not a non-negative number of ms`);
  }
  return { end: performance.now() + (timeout ?? Infinity), signal };
}

/**
 * Milliseconds left before `deadline`, at least 0.
 *
 * @param deadline The deadline.
 * @returns The milliseconds left.
 */
export function remaining(deadline: Until): number {
  return Math.max(0, deadline.end - performance.now());
}

/**
 * Waits `ms` (at most until the deadline), or rejects with the signal's reason.
 *
 * @param ms Milliseconds.
 * @param signal Cancels the wait.
 * @returns Resolves after the pause.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    };
    const abort = () => {
      done();
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      done();
      resolve();
    }, ms);
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** NATS's refusals: wrong credentials, a subject the user may not publish or subscribe to. */
const REFUSAL = /Authorization|Permission|Authentication/i;

/**
 * Whether an error, or one it wraps, is NATS refusing the user: its
 * credentials or its permissions (the client reports a refused publish as
 * a `RequestError` whose cause is the `PermissionViolationError`).
 *
 * @param error The error.
 * @returns Whether it is such a refusal.
 */
export function isRefusal(error: unknown): boolean {
  for (let e = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    if (REFUSAL.test(e.name) || /Permissions Violation|Authorization Violation/.test(e.message)) {
      return true;
    }
  }
  return false;
}

/**
 * Whether trying again cannot fix an error: bad input, a missing or corrupt
 * object, refused credentials, a forbidden subject.
 *
 * @param error The error.
 * @returns Whether it is permanent.
 */
export function isPermanent(error: unknown): boolean {
  if (error instanceof TypeError || error instanceof RangeError) return true;
  if (error instanceof PermanentNatsError) return true;
  return isRefusal(error);
}

/** The pause between two tries. */
const RETRY_MS = 200;

/**
 * Runs `operation` until it succeeds, trying again after errors that a NATS
 * restart explains, until the deadline.
 *
 * @param what The operation, for the error: `Publishing the partial aggregate`.
 * @param operation The operation.
 * @param deadline When to give up, and a signal to cancel.
 * @returns What `operation` returned.
 * @throws {NatsError} If it still failed at the deadline (the last error is the cause), or at
 * once if NATS refused it (its credentials or permissions: a `PermanentNatsError`).
 * @throws {TypeError} Or a `RangeError` or a `PermanentNatsError` from `operation`: at once.
 * @throws {Error} The signal's reason if it aborts.
 */
export async function retrying<T>(
  what: string,
  operation: () => Promise<T>,
  deadline: Until,
): Promise<T> {
  for (let tries = 1;; tries++) {
    deadline.signal?.throwIfAborted();
    try {
      return await operation();
    } catch (error) {
      deadline.signal?.throwIfAborted();
      const message = (error as Error)?.message ?? String(error);
      if (isRefusal(error) && !(error instanceof NatsError)) {
        throw new PermanentNatsError(`${what} failed: NATS refused it: ${message}`, {
          cause: error,
        });
      }
      if (isPermanent(error)) throw error;
      if (remaining(deadline) <= RETRY_MS) {
        throw new NatsError(`${what} failed after ${tries} tries: ${message}`, { cause: error });
      }
      await sleep(RETRY_MS, deadline.signal);
    }
  }
}
