/**
 * The checks of `listen()`'s options that the server itself needs (the
 * handshake's are in `admission.ts`), with their defaults.
 *
 * @module
 */

import { checkMaxFrameBytes, checkMaxMessageBytes } from "../_wire/frame.ts";
import { checkTimeout } from "../_util/wait.ts";
import type { ListenOptions } from "../types.ts";

/** The default time a dropped client has to resume its session. */
const DEFAULT_RESUME_TIMEOUT_MS = 300_000;

/** `listen()`'s options, checked, with their defaults. */
export interface CheckedListenOptions {
  /** How many clients (exactly, or at most at once with `open`). */
  readonly clients: number;
  /** Whether clients may join at any time. */
  readonly open: boolean;
  /** The largest frame body accepted and sent. */
  readonly maxFrameBytes: number;
  /** Milliseconds a dropped session waits for its resume. */
  readonly grace: number;
  /** The largest long message accepted and sent (0: none). */
  readonly maxMessageBytes: number;
}

/**
 * Checks the options.
 *
 * @param options The options of `listen()`.
 * @returns The values the server uses.
 * @throws {RangeError} If `clients` is not a positive integer or a limit is invalid.
 */
export function checkListenOptions(options: ListenOptions): CheckedListenOptions {
  const { clients } = options;
  if (!Number.isSafeInteger(clients) || clients < 1) {
    throw new RangeError(`Invalid clients: "${clients}" is not a positive integer`);
  }
  const maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
  const maxMessageBytes = checkMaxMessageBytes(options.maxMessageBytes);
  const grace = options.resumeTimeout ?? DEFAULT_RESUME_TIMEOUT_MS;
  checkTimeout(grace);
  if (grace === Infinity) {
    throw new RangeError(`Invalid resumeTimeout: "${grace}" is not a finite number of ms`);
  }
  const retain = options.retainBytes;
  if (retain !== undefined && !(Number.isSafeInteger(retain) && retain > 0)) {
    throw new RangeError(`Invalid retainBytes: "${retain}" is not a positive integer`);
  }
  return { clients, open: options.open ?? false, maxFrameBytes, grace, maxMessageBytes };
}

/**
 * Checks the count `ready()` waits for.
 *
 * @param count The count asked for, if any.
 * @param clients The server's `clients`.
 * @returns The count (default `clients`).
 * @throws {RangeError} If it is not an integer from 0 to `clients`.
 */
export function checkReadyCount(count: number | undefined, clients: number): number {
  count ??= clients;
  if (!Number.isSafeInteger(count) || count < 0 || count > clients) {
    throw new RangeError(`Invalid clients for ready: "${count}" is not from 0 to ${clients}`);
  }
  return count;
}
