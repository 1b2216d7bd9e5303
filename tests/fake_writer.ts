/**
 * A fake socket writer for the unit tests of `_link/write_queue.ts`
 * ({@linkcode FakeWriter}), and a queue over it ({@linkcode newQueue}).
 * Not published.
 *
 * @module
 */

import { WriteQueue, type Writer } from "../_link/write_queue.ts";
import { concat } from "./test_util.ts";

/** One `write(p)` call as the fake writer saw it. */
interface Call {
  /** A copy of `p`, taken when the call was made. */
  bytes: Uint8Array;
  /** `p.buffer`, to tell a copy from the caller's memory. */
  buffer: ArrayBufferLike;
  /** `p.byteOffset`. */
  byteOffset: number;
}

/**
 * A socket's write side: records every call, can take only part of a buffer
 * per call, can be paused (calls wait until released) and can fail.
 */
export class FakeWriter implements Writer {
  readonly calls: Call[] = [];
  /** The bytes taken by each call, in order. */
  readonly taken: Uint8Array[] = [];
  /** The most bytes one call takes. */
  maxPerCall = Infinity;
  /** Calls under way now, and the most ever at once. */
  inFlight = 0;
  maxInFlight = 0;
  #paused = false;
  #waiting: (() => void)[] = [];
  #failure: unknown;

  async write(p: Uint8Array): Promise<number> {
    this.calls.push({ bytes: p.slice(), buffer: p.buffer, byteOffset: p.byteOffset });
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      if (this.#paused) await new Promise<void>((resolve) => this.#waiting.push(resolve));
      if (this.#failure !== undefined) throw this.#failure;
      const n = Math.min(p.byteLength, this.maxPerCall);
      this.taken.push(p.slice(0, n));
      return n;
    } finally {
      this.inFlight--;
    }
  }

  /** Makes later calls wait until released. */
  pause(): void {
    this.#paused = true;
  }

  /** Calls waiting to be released. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Lets the oldest waiting call finish; later calls still wait. */
  release(): void {
    this.#waiting.shift()?.();
  }

  /** Lets every call finish at once from now on. */
  resume(): void {
    this.#paused = false;
    for (const wake of this.#waiting.splice(0)) wake();
  }

  /** Makes the waiting call and every later one reject with `error`. */
  fail(error: unknown): void {
    this.#failure = error;
    this.resume();
  }

  /** Every byte taken, in order. */
  get bytes(): Uint8Array {
    return concat(this.taken);
  }

  /** How many bytes were taken. */
  get bytesTaken(): number {
    return this.taken.reduce((n, t) => n + t.byteLength, 0);
  }
}

/** The error a queue makes of a writer's failure. */
export class DescribedError extends Error {
  constructor(cause: unknown) {
    super("Peer disconnected", { cause });
    this.name = "DescribedError";
  }
}

/** A queue over `writer` that describes its failures as {@linkcode DescribedError}s. */
export function newQueue(
  writer: Writer,
  options?: { idleMs?: number; onIdle?: () => void },
): WriteQueue {
  return new WriteQueue(writer, {
    describeError: (cause) => new DescribedError(cause),
    ...options,
  });
}

/** A frame header alone. */
export function head(length: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, length);
  return out;
}
