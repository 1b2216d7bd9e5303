/**
 * Memory for large received bodies that the application gave back
 * (`server.recycle(value)`, `client.recycle(value)`): the next body of the
 * same size is read into it instead of fresh memory, so that a round loop
 * that folds its uploads and recycles them allocates nothing per round (and
 * the kernel zeroes no fresh pages). Only memory this pool handed out is
 * taken back, each buffer once, and the pool keeps at most
 * {@linkcode RECYCLE_MAX_BYTES}.
 *
 * @module
 */

/** The most bytes a pool keeps for reuse; older buffers are dropped first. */
export const RECYCLE_MAX_BYTES: number = 1024 ** 3;

/** Large bodies only: smaller ones come from the read buffer or the slabs. */
const MIN_BYTES = 64 * 1024;

/**
 * The pool that handed a buffer out, as a property of the buffer: a
 * `WeakSet` of the buffers would do, but V8 then frees them only in a full
 * collection (`deno task bench --only=memory` held one more 64 MiB upload).
 */
const OWNER = Symbol("fedcomm.pool");
type Owned = ArrayBuffer & { [OWNER]?: BufferPool };

/** See the module doc. */
export class BufferPool {
  /** Buffers given back, by size, oldest first; and their total. */
  readonly #free = new Map<number, ArrayBuffer[]>();
  #order: ArrayBuffer[] = [];
  #bytes = 0;
  readonly #limit: number;

  /**
   * @param limit The most bytes kept for reuse.
   */
  constructor(limit: number = RECYCLE_MAX_BYTES) {
    this.#limit = limit;
  }

  /** Bytes kept for reuse now. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Memory for a body of `length` bytes: a buffer given back of that size, or fresh memory.
   *
   * @param length The size.
   * @returns A `Uint8Array` of exactly `length` bytes over a buffer of its own.
   */
  take(length: number): Uint8Array {
    const free = this.#free.get(length);
    let buffer = free?.pop();
    if (buffer !== undefined) {
      if (free!.length === 0) this.#free.delete(length);
      this.#order.splice(this.#order.indexOf(buffer), 1);
      this.#bytes -= length;
    } else {
      buffer = new ArrayBuffer(length);
    }
    if (length >= MIN_BYTES) (buffer as Owned)[OWNER] = this;
    return new Uint8Array(buffer);
  }

  /**
   * Takes back the large buffers under a received value (its typed arrays,
   * `Uint8Array`s and `NdArray`s, nested in arrays and objects): those this
   * pool handed out; anything else is left alone.
   *
   * @param value A value received from this pool's sessions.
   * @returns The bytes taken back.
   */
  recycle(value: unknown): number {
    let taken = 0;
    const seen = new Set<unknown>();
    const walk = (v: unknown, depth: number): void => {
      if (typeof v !== "object" || v === null || depth > 200 || seen.has(v)) return;
      seen.add(v);
      if (ArrayBuffer.isView(v)) {
        taken += this.#give(v.buffer);
      } else if (Array.isArray(v)) {
        for (const item of v) walk(item, depth + 1);
      } else if (!(v instanceof Date)) {
        for (const item of Object.values(v)) walk(item, depth + 1);
      }
    };
    walk(value, 0);
    return taken;
  }

  /** Keeps one buffer for reuse, if this pool handed it out and it is not kept already. */
  #give(buffer: ArrayBufferLike): number {
    if (!(buffer instanceof ArrayBuffer) || (buffer as Owned)[OWNER] !== this) return 0;
    (buffer as Owned)[OWNER] = undefined;
    const length = buffer.byteLength;
    if (length > this.#limit) return 0;
    while (this.#bytes + length > this.#limit) this.#drop();
    const free = this.#free.get(length);
    if (free === undefined) this.#free.set(length, [buffer]);
    else free.push(buffer);
    this.#order.push(buffer);
    this.#bytes += length;
    return length;
  }

  /** Lets the oldest kept buffer go. */
  #drop(): void {
    const oldest = this.#order.shift()!;
    const free = this.#free.get(oldest.byteLength)!;
    free.splice(free.indexOf(oldest), 1);
    if (free.length === 0) this.#free.delete(oldest.byteLength);
    this.#bytes -= oldest.byteLength;
  }
}
