/**
 * Memory for large received bodies that the application gave back
 * (`server.recycle(value)`, `client.recycle(value)`): the next body of the
 * same size, or one somewhat smaller or larger, is read into it instead of
 * fresh memory, so that a round loop that folds its uploads and recycles
 * them allocates nothing per round (and the kernel zeroes no fresh pages),
 * also when the uploads' sizes differ by a few bytes (a metric that is an
 * integer in one round and a float in the next). A kept buffer serves a
 * body up to {@linkcode RECYCLE_SLACK} smaller, and a frame body's fresh
 * memory has headroom for a body up to {@linkcode RECYCLE_HEADROOM_BYTES}
 * larger (at most `RECYCLE_SLACK` of it: memory the receive budget does not
 * count). The arrays of a long message ({@linkcode BufferPool.takeExact})
 * are only ever their own size: their lengths do not vary with the
 * metrics, and each one's `buffer` is exactly its data. Only memory this pool handed out is
 * taken back, each buffer once, and the pool keeps at most
 * {@linkcode RECYCLE_MAX_BYTES}.
 *
 * @module
 */

/** The most bytes a pool keeps for reuse; older buffers are dropped first. */
export const RECYCLE_MAX_BYTES: number = 1024 ** 3;

/**
 * How much larger than a body a kept buffer may be and still be handed out
 * for it, as a fraction of the body (1/64: a 100 MiB body may get a buffer
 * of up to 101.6 MiB); a body then uses the buffer's first bytes.
 */
export const RECYCLE_SLACK = 1 / 64;

/** The most bytes of headroom fresh memory for a large body has. */
export const RECYCLE_HEADROOM_BYTES = 4096;

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
   * Memory for a body of `length` bytes: a buffer given back of that size
   * (or else the smallest at most {@linkcode RECYCLE_SLACK} larger), or
   * fresh memory (a large body's with headroom, see the module doc).
   *
   * @param length The size.
   * @returns A `Uint8Array` of exactly `length` bytes at the start of a buffer of its own.
   */
  take(length: number): Uint8Array {
    return this.#take(length, this.#fit(length), true);
  }

  /**
   * Memory for an array of `length` bytes: a buffer given back of that size, or fresh memory.
   *
   * @param length The size.
   * @returns A `Uint8Array` over a whole buffer of `length` bytes.
   */
  takeExact(length: number): Uint8Array {
    return this.#take(length, this.#free.has(length) ? length : undefined, false);
  }

  /** A kept buffer of `size` bytes, if any, or fresh memory (with headroom if asked). */
  #take(length: number, size: number | undefined, headroom: boolean): Uint8Array {
    const free = size === undefined ? undefined : this.#free.get(size)!;
    let buffer = free?.pop();
    if (buffer !== undefined) {
      if (free!.length === 0) this.#free.delete(size!);
      this.#order.splice(this.#order.indexOf(buffer), 1);
      this.#bytes -= size!;
    } else if (length < MIN_BYTES) {
      return new Uint8Array(length);
    } else {
      const more = headroom
        ? Math.min(RECYCLE_HEADROOM_BYTES, Math.floor(length * RECYCLE_SLACK))
        : 0;
      buffer = new ArrayBuffer(length + more);
    }
    (buffer as Owned)[OWNER] = this;
    return new Uint8Array(buffer, 0, length);
  }

  /** The size of the kept buffers that suit a body of `length` bytes best, if any. */
  #fit(length: number): number | undefined {
    if (this.#free.has(length)) return length;
    const most = length + Math.floor(length * RECYCLE_SLACK);
    let best: number | undefined;
    for (const size of this.#free.keys()) {
      if (size > length && size <= most && (best === undefined || size < best)) best = size;
    }
    return best;
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
