/**
 * Link shaping in userspace (there is no `tc netem` here), for the fault
 * proxy (`_fault_proxy.ts`): one {@linkcode LinkShaper} per direction of a
 * proxied connection holds the bytes read from one socket and writes them to
 * the other
 *
 * - after an added one-way **latency**, with seeded **jitter** (uniform in
 *   `latencyMs ± jitterMs`, at least 0), never reordering bytes: a slice is
 *   never delivered before the one read before it;
 * - at a **bandwidth** (bits/s) enforced by a token bucket of `burstBytes`,
 *   chunks cut into slices of at most `burstBytes` so that pacing is smooth;
 * - with **bounded memory**: once more than `queueBytes` are held,
 *   {@linkcode LinkShaper.push} waits until the queue is back under the
 *   bound, so the caller stops reading and TCP pushes back on the sender.
 *
 * ```ts ignore
 * const shaper = new LinkShaper((bytes) => writeAll(conn, bytes), {
 *   shape: { latencyMs: 50, jitterMs: 5, bitsPerSecond: 20e6 },
 *   seed: 7,
 * });
 * await shaper.push(chunk); // returns once the chunk is queued under the bound
 * await shaper.drain(); // everything queued was written
 * ```
 *
 * @module
 */

import { type Random, seededRandom } from "../examples/random.ts";

/** How one direction of a link is shaped. Every field is optional; `{}` is an unshaped link. */
export interface LinkShape {
  /** Added one-way latency in ms (default 0). */
  latencyMs?: number;
  /**
   * Jitter in ms (default 0): each slice is delayed by a seeded uniform draw
   * in `latencyMs ± jitterMs` (at least 0), but never delivered before the
   * bytes read before it, so bytes are never reordered.
   */
  jitterMs?: number;
  /** Bandwidth in bits per second (default unlimited); at least 8. */
  bitsPerSecond?: number;
  /**
   * The token bucket's size in bytes, and the largest slice a chunk is cut
   * into (default 10 ms of `bitsPerSecond`, at least 1500 and at most 64 KiB).
   */
  burstBytes?: number;
  /**
   * How many bytes may wait in the queue before {@linkcode LinkShaper.push}
   * waits for it to drain (default 4 MiB).
   */
  queueBytes?: number;
}

/** The shapes of both directions: `up` is client → server, `down` server → client. */
export interface LinkShapes {
  /** Client → server (default unshaped). */
  up?: LinkShape;
  /** Server → client (default unshaped). */
  down?: LinkShape;
}

/** The default {@linkcode LinkShape.queueBytes}: 4 MiB. */
export const DEFAULT_QUEUE_BYTES: number = 4 * 1024 * 1024;

const SHAPE_KEYS = new Set(["latencyMs", "jitterMs", "bitsPerSecond", "burstBytes", "queueBytes"]);

function number(name: string, value: unknown): number {
  if (typeof value !== "number") throw new TypeError(`${name} must be a number`);
  if (Number.isNaN(value)) throw new RangeError(`${name} must not be NaN`);
  return value;
}

/**
 * Checks a shape, throwing on the first bad field.
 *
 * @param shape The shape to check.
 * @param name How to name it in messages (default `"shape"`).
 * @returns The same shape.
 * @throws {TypeError} When it is not an object, has an unknown key, or a field is not a number.
 * @throws {RangeError} When a field is out of range: a negative or infinite
 * latency or jitter, a bandwidth below 8 bits/s or infinite, a burst or queue
 * size that is not a positive integer.
 */
export function checkLinkShape(shape: unknown, name = "shape"): LinkShape {
  if (typeof shape !== "object" || shape === null || Array.isArray(shape)) {
    throw new TypeError(`${name} must be an object`);
  }
  for (const key of Object.keys(shape)) {
    if (!SHAPE_KEYS.has(key)) throw new TypeError(`${name} has an unknown key: ${key}`);
  }
  const { latencyMs, jitterMs, bitsPerSecond, burstBytes, queueBytes } = shape as LinkShape;
  for (const [key, value] of [["latencyMs", latencyMs], ["jitterMs", jitterMs]] as const) {
    if (value === undefined) continue;
    const n = number(`${name}.${key}`, value);
    if (!(n >= 0 && n < Infinity)) throw new RangeError(`${name}.${key} must be finite and ≥ 0`);
  }
  if (bitsPerSecond !== undefined) {
    const n = number(`${name}.bitsPerSecond`, bitsPerSecond);
    if (!(n >= 8 && n < Infinity)) {
      throw new RangeError(`${name}.bitsPerSecond must be finite and ≥ 8`);
    }
  }
  for (const [key, value] of [["burstBytes", burstBytes], ["queueBytes", queueBytes]] as const) {
    if (value === undefined) continue;
    const n = number(`${name}.${key}`, value);
    if (!Number.isSafeInteger(n) || n < 1) {
      throw new RangeError(`${name}.${key} must be a positive integer`);
    }
  }
  return shape as LinkShape;
}

/**
 * Checks the shapes of both directions.
 *
 * @param shapes The shapes to check.
 * @param name How to name them in messages (default `"shapes"`).
 * @returns The same shapes.
 * @throws {TypeError} When they are not an object, have a key other than
 * `up` and `down`, or a shape is malformed ({@linkcode checkLinkShape}).
 * @throws {RangeError} When a field of a shape is out of range.
 */
export function checkLinkShapes(shapes: unknown, name = "shapes"): LinkShapes {
  if (typeof shapes !== "object" || shapes === null || Array.isArray(shapes)) {
    throw new TypeError(`${name} must be an object`);
  }
  for (const key of Object.keys(shapes)) {
    if (key !== "up" && key !== "down") throw new TypeError(`${name} has an unknown key: ${key}`);
  }
  const { up, down } = shapes as LinkShapes;
  if (up !== undefined) checkLinkShape(up, `${name}.up`);
  if (down !== undefined) checkLinkShape(down, `${name}.down`);
  return shapes as LinkShapes;
}

/** Options for {@linkcode LinkShaper}. */
export interface LinkShaperOptions {
  /** The shape (default `{}`: bytes are written at once). */
  shape?: LinkShape;
  /** The seed of the jitter's PRNG (default 1). */
  seed?: number;
}

/** A slice of bytes and when to write it. */
interface Slice {
  readonly bytes: Uint8Array;
  readonly at: number;
}

/**
 * One direction of a shaped link: bytes go in with {@linkcode push} and come
 * out, in order, through the `sink` given to the constructor, late and paced
 * as the shape says. One `push()` at a time: the next one only after the
 * last one settled.
 */
export class LinkShaper {
  readonly #sink: (bytes: Uint8Array) => Promise<void>;
  readonly #random: Random;
  #shape: LinkShape = {};
  readonly #queue: Slice[] = [];
  #head = 0;
  #queued = 0;
  #peak = 0;
  /** The time the last slice queued is due: no later slice is due earlier. */
  #lastAt = -Infinity;
  #tokens = 0;
  /** When the bucket held `#tokens` (never before the last slice's send time). */
  #stamp = -Infinity;
  #running: Promise<void> | undefined;
  #pushing = false;
  #closed = false;
  #error: unknown = undefined;
  /** Wakes a `push()` waiting for room, or a `drain()`. */
  readonly #waiters = new Set<() => void>();
  /** Ends the loop's sleep early (at `close()`). */
  #wakeLoop: (() => void) | undefined;

  /**
   * Creates a shaper.
   *
   * @param sink Writes bytes to the destination; its promise settles once
   * they are written (a rejection ends the shaper: {@linkcode push} and
   * {@linkcode drain} reject with it).
   * @param options The shape and the jitter's seed.
   * @throws {TypeError} When the shape is malformed ({@linkcode checkLinkShape}).
   * @throws {RangeError} When a field of the shape is out of range.
   */
  constructor(sink: (bytes: Uint8Array) => Promise<void>, options: LinkShaperOptions = {}) {
    if (typeof sink !== "function") throw new TypeError("sink must be a function");
    this.#sink = sink;
    this.#random = seededRandom(options.seed ?? 1);
    if (options.shape !== undefined) this.shape = options.shape;
  }

  /** The shape (a copy). Setting it applies to the bytes pushed from then on. */
  get shape(): LinkShape {
    return { ...this.#shape };
  }

  set shape(shape: LinkShape) {
    this.#shape = { ...checkLinkShape(shape) };
  }

  /** Whether the shape delays or paces bytes at all. */
  get shaped(): boolean {
    const { latencyMs = 0, jitterMs = 0, bitsPerSecond } = this.#shape;
    return latencyMs > 0 || jitterMs > 0 || bitsPerSecond !== undefined;
  }

  /** Bytes held now (pushed, not yet written). */
  get queued(): number {
    return this.#queued;
  }

  /** The most bytes held at once so far. */
  get peakQueued(): number {
    return this.#peak;
  }

  /**
   * Hands bytes over. An unshaped link with nothing queued writes them at
   * once; otherwise they are copied into the queue, due when the shape says.
   *
   * @param bytes The bytes (not kept: the caller may reuse the buffer).
   * @returns A promise that settles once the bytes are queued and the queue
   * holds at most `queueBytes` again (or they are written, on an unshaped
   * link; or the shaper is closed).
   * @throws {Error} When a `push()` is still pending, or the sink failed.
   */
  async push(bytes: Uint8Array): Promise<void> {
    if (this.#pushing) throw new Error("LinkShaper.push() called again before it settled");
    if (this.#error !== undefined) throw this.#error;
    if (this.#closed || bytes.byteLength === 0) return;
    this.#pushing = true;
    try {
      if (!this.shaped && this.#running === undefined) {
        await this.#sink(bytes);
        return;
      }
      this.#schedule(bytes.slice());
      this.#running ??= this.#run();
      const bound = this.#shape.queueBytes ?? DEFAULT_QUEUE_BYTES;
      while (this.#queued > bound && !this.#closed && this.#error === undefined) {
        await this.#wait();
      }
      if (this.#error !== undefined) throw this.#error;
    } finally {
      this.#pushing = false;
    }
  }

  /**
   * Waits until everything queued was written (or the shaper is closed).
   *
   * @throws {unknown} The sink's error, when it failed.
   */
  async drain(): Promise<void> {
    while (this.#running !== undefined && !this.#closed && this.#error === undefined) {
      await this.#wait();
    }
    if (this.#error !== undefined) throw this.#error;
  }

  /** Drops what is queued and stops; pending `push()` and `drain()` calls settle. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue.length = 0;
    this.#head = 0;
    this.#queued = 0;
    this.#wakeLoop?.();
    this.#wakeAll();
  }

  #wait(): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.add(resolve);
    return promise;
  }

  #wakeAll(): void {
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const wake of waiters) wake();
  }

  /** Cuts `bytes` into slices and gives each its due time. */
  #schedule(bytes: Uint8Array): void {
    const { latencyMs = 0, jitterMs = 0, bitsPerSecond } = this.#shape;
    const now = performance.now();
    const bytesPerMs = bitsPerSecond === undefined ? Infinity : bitsPerSecond / 8000;
    const burst = this.#shape.burstBytes ??
      Math.min(64 * 1024, Math.max(1500, Math.floor(bytesPerMs * 10)));
    for (let offset = 0; offset < bytes.byteLength;) {
      const n = bytesPerMs === Infinity
        ? bytes.byteLength
        : Math.min(burst, bytes.byteLength - offset);
      let sendAt = now;
      if (bytesPerMs !== Infinity) {
        // A token bucket of `burst` bytes filling at `bytesPerMs`, in virtual time.
        const t = Math.max(now, this.#stamp);
        const tokens = Math.min(burst, this.#tokens + (t - this.#stamp) * bytesPerMs);
        if (tokens >= n) {
          sendAt = t;
          this.#tokens = tokens - n;
        } else {
          sendAt = t + (n - tokens) / bytesPerMs;
          this.#tokens = 0;
        }
        this.#stamp = sendAt;
      }
      const delay = jitterMs > 0
        ? Math.max(0, latencyMs + (2 * this.#random() - 1) * jitterMs)
        : latencyMs;
      const at = Math.max(this.#lastAt, sendAt + delay);
      this.#lastAt = at;
      this.#queue.push({ bytes: bytes.subarray(offset, offset + n), at });
      this.#queued += n;
      offset += n;
    }
    this.#peak = Math.max(this.#peak, this.#queued);
  }

  /** Writes the queue's slices as they fall due, until the queue is empty. */
  async #run(): Promise<void> {
    try {
      while (!this.#closed && this.#head < this.#queue.length) {
        const slice = this.#queue[this.#head];
        const wait = slice.at - performance.now();
        if (wait > 0) {
          const { promise, resolve } = Promise.withResolvers<void>();
          this.#wakeLoop = resolve;
          const timer = setTimeout(resolve, wait);
          await promise;
          clearTimeout(timer);
          this.#wakeLoop = undefined;
          continue;
        }
        await this.#sink(slice.bytes);
        if (this.#closed) break;
        this.#head++;
        this.#queued -= slice.bytes.byteLength;
        if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
          this.#queue.splice(0, this.#head);
          this.#head = 0;
        }
        this.#wakeAll();
      }
    } catch (error) {
      this.#error = error;
      this.close();
    } finally {
      if (!this.#closed) {
        this.#queue.length = 0;
        this.#head = 0;
      }
      this.#running = undefined;
      this.#wakeAll();
    }
  }
}
