/**
 * The socket driver of the frame codec: {@linkcode FrameReader}, re-exported
 * by `framing.ts`.
 *
 * @module
 */

import { type ByteWindow, FrameDecoder, HEADER_BYTES } from "../_wire/frame.ts";
import type { FrameOptions } from "../types.ts";

/** The read buffer starts this small (a server may hold thousands) and grows when filled. */
const SCRATCH_MIN_BYTES = 256;
const SCRATCH_BYTES = 64 * 1024;
/**
 * Reads that fill all they are offered (small frames streaming in) grow the
 * buffer up to this: Deno's cost for a read grows with the buffer it is given,
 * and larger buffers moved fewer messages per second (`--only=messages`:
 * 1 KiB 0.76-0.79 M/s, 4 KiB 0.82-0.86 M/s, 16 KiB 0.72-0.80 M/s, 64 KiB 0.41-0.45 M/s).
 */
const STREAM_READ_BYTES = 4 * 1024;
/** The most bytes asked of one socket read into a large body. */
const READ_SLICE_BYTES = 16 * 1024 * 1024;

/** A source with `read(p)` into a caller's buffer, as `Deno.Conn` has. */
export interface ByteReader {
  /** Reads into `p`; resolves with the count, or `null` at the end of the stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/**
 * Options for {@linkcode FrameReader}. The reader keeps the object: its hooks
 * are called as its methods, each time (so one object of a class with these
 * methods serves, and no closure is needed per connection).
 */
export interface FrameReaderOptions extends FrameOptions {
  /** Called with the number of bytes after every read from the source (for progress). */
  onBytes?: (bytes: number) => void;
  /**
   * For a body larger than the read buffer, called before each read into it
   * with the bytes already there, the body's size and whether this is the
   * body's first call: resolves with the offset up to which reading may go
   * (a memory budget, reserved before the body is allocated).
   */
  bodyAllowance?: (filled: number, total: number, start: boolean) => Promise<number>;
  /**
   * For a body larger than the read buffer, called with its size before it
   * is allocated: memory to read all but its first {@linkcode TARGET_PREFIX_BYTES}
   * bytes into (a long message's part, read straight into its array), or
   * `undefined` for a buffer of its own. The body is then returned as those
   * first bytes only. Used with a `read(p)` source only (a BYOB stream would
   * take the memory away).
   */
  bodyTarget?: (total: number) => Uint8Array | undefined;
  /** Makes the memory of a large body (default: fresh memory); e.g. a pool of recycled buffers. */
  allocate?: (length: number) => Uint8Array;
}

/** Bytes of a targeted body returned to the caller; the rest goes into the target. */
export const TARGET_PREFIX_BYTES = 8;

/**
 * The socket driver: reads frame bodies from a `Deno.Conn` (its `read`), or
 * from any readable byte stream such as `conn.readable` (with a BYOB reader
 * where it can). Frames up to 64 KiB are cut out of a read buffer (256 B,
 * grown to 4 KiB while reads fill it, and to fit a frame up to 64 KiB), many
 * per read; a larger frame is read
 * straight into a buffer of its announced length.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameReader } from "@fedcomm/fedcomm/framing";
 *
 * const reader = new FrameReader(ReadableStream.from([new Uint8Array([0, 0, 0, 1, 9])]));
 * assert.deepStrictEqual(await reader.read(), new Uint8Array([9]));
 * assert.equal(await reader.read(), null); // the stream ended between frames
 * ```
 */
export class FrameReader {
  readonly #decoder: FrameDecoder;
  readonly #w: ByteWindow = { buf: new Uint8Array(SCRATCH_MIN_BYTES), start: 0, end: 0 };
  #source: ByteReader | undefined;
  #byob: ReadableStreamBYOBReader | undefined;
  #default: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #leftover: Uint8Array | undefined;
  /** The hooks, called as methods of the options object. */
  readonly #hooks: FrameReaderOptions | undefined;
  /** Bytes the last read was offered, and whether it filled them (the source had more). */
  #offered = 0;
  #filled = false;
  /** The buffer the last read left its bytes in (a BYOB read moves them to a new one). */
  #moved: Uint8Array = this.#w.buf;

  /**
   * Prepares to read frames from `source`, locking it if it is a stream.
   *
   * @param source A `Deno.Conn` (or anything with `read(p)`) or a readable byte stream.
   * @param options The frame size limit, a progress callback, a hook before large bodies.
   * @throws {RangeError} If `maxFrameBytes` is invalid.
   */
  constructor(source: ReadableStream<Uint8Array> | ByteReader, options?: FrameReaderOptions) {
    this.#decoder = new FrameDecoder(options?.maxFrameBytes);
    this.#hooks = options;
    if (!(source instanceof ReadableStream)) {
      this.#source = source;
      return;
    }
    try {
      this.#byob = source.getReader({ mode: "byob" });
    } catch {
      this.#default = source.getReader();
    }
  }

  /** The largest body accepted; may be changed between reads (raised after a handshake). */
  get maxFrameBytes(): number {
    return this.#decoder.maxFrameBytes;
  }

  set maxFrameBytes(value: number) {
    this.#decoder.maxFrameBytes = value;
  }

  /** The client named in the frame errors of this reader. */
  set clientId(id: number | undefined) {
    this.#decoder.clientId = id;
  }

  /**
   * Reads the next frame body into memory of its own. A heartbeat is an empty body.
   *
   * @returns The body, or `null` when the source ended cleanly between frames.
   * @throws {FrameTooLargeError} When a header announces more than `maxFrameBytes`.
   * @throws {ProtocolError} When the source ends inside a frame.
   */
  async read(): Promise<Uint8Array | null> {
    const view = await this.readView();
    return view !== null && this.isBuffered(view) ? view.slice() : view;
  }

  /**
   * Whether `body` is a view into the read buffer (overwritten by later reads).
   *
   * @param body A body this reader returned.
   * @returns `true` for a view into the read buffer.
   */
  isBuffered(body: Uint8Array): boolean {
    return body.buffer === this.#w.buf.buffer;
  }

  /**
   * Returns the next frame body if it is already in the read buffer, without
   * waiting or allocating memory for it: a view valid only until the next
   * call of any read method.
   *
   * @returns The view, or `undefined` when more bytes must be read first.
   * @throws {FrameTooLargeError} When a header announces more than `maxFrameBytes`.
   */
  readBuffered(): Uint8Array | undefined {
    return this.#decoder.decode(this.#w);
  }

  /**
   * Reads the next frame body: a view into the read buffer for a small frame
   * (valid only until the next read) or a buffer of its own for a large one.
   * {@linkcode FrameReader.read} is the copying form.
   *
   * @returns The body, or `null` when the source ended cleanly between frames.
   * @throws {FrameTooLargeError} When a header announces more than `maxFrameBytes`.
   * @throws {ProtocolError} When the source ends inside a frame.
   */
  async readView(): Promise<Uint8Array | null> {
    const w = this.#w;
    while (true) {
      const body = this.#decoder.decode(w);
      if (body !== undefined) return body;
      const space = this.readSpace();
      if (space === undefined) return await this.#readLarge(this.#decoder.length);
      let n: number | null;
      if (this.#source !== undefined) {
        // The socket path inline: one async frame per read instead of two.
        n = await this.#source.read(space);
        if (n !== null) this.#hooks?.onBytes?.(n);
      } else {
        n = await this.#readInto(w.buf, w.end);
        w.buf = this.#moved;
      }
      if (!this.readDone(n)) return null;
    }
  }

  /**
   * The first half of a read for a driver that reads the socket itself (the
   * link's read loop, which so waits on no promise of this reader's): makes
   * room in the read buffer for the frame under way and returns the memory
   * the next `read(p)` of the source is to fill. Call it after
   * {@linkcode FrameReader.readBuffered} returned `undefined`, and hand the
   * count to {@linkcode FrameReader.readDone}.
   *
   * @returns The view to read into, or `undefined` when the frame under way
   * is larger than the read buffer: {@linkcode FrameReader.readView} then
   * reads it into memory of its own.
   */
  readSpace(): Uint8Array | undefined {
    const w = this.#w;
    const length = this.#decoder.length;
    if (HEADER_BYTES + length > SCRATCH_BYTES) return undefined;
    // Make room: move what is buffered to the front, and grow the buffer
    // when it is full, too small for the frame whose header is in it, or
    // when the last read filled all it was offered (the socket had more:
    // small frames streaming in, which a small buffer would take a few per read).
    const available = w.end - w.start;
    const need = length < 0 ? 0 : length;
    let size = w.buf.byteLength;
    if (this.#filled && size < STREAM_READ_BYTES) size *= 2;
    while (size < SCRATCH_BYTES && (available === size || need > size)) size *= 2;
    if (size !== w.buf.byteLength) {
      const grown = new Uint8Array(size);
      grown.set(w.buf.subarray(w.start, w.end));
      w.buf = grown;
      w.end = available;
      w.start = 0;
    } else if (w.start > 0) {
      w.buf.copyWithin(0, w.start, w.end);
      w.end = available;
      w.start = 0;
    }
    this.#offered = w.buf.byteLength - w.end;
    return w.buf.subarray(w.end);
  }

  /**
   * The second half: counts the bytes a read put into
   * {@linkcode FrameReader.readSpace}'s view.
   *
   * @param n What the read resolved with: the count, or `null` at the end of the source.
   * @returns `false` when the source ended cleanly between frames, else `true`.
   * @throws {ProtocolError} When the source ended inside a frame.
   */
  readDone(n: number | null): boolean {
    if (n === null) {
      this.#decoder.decodeEof(this.#w);
      return false;
    }
    this.#filled = n === this.#offered;
    this.#w.end += n;
    return true;
  }

  /** Reads a body larger than the largest read buffer straight into its own buffer. */
  async #readLarge(length: number): Promise<Uint8Array> {
    const target = this.#source === undefined ? undefined : this.#hooks?.bodyTarget?.(length);
    if (target !== undefined) return await this.#readTargeted(length, target);
    const w = this.#w;
    let filled = w.end - w.start;
    // The allowance (a memory budget) is granted before the body is allocated.
    const hooks = this.#hooks;
    let allowed = hooks?.bodyAllowance === undefined
      ? length
      : await hooks.bodyAllowance(filled, length, true);
    let body = hooks?.allocate?.(length) ?? new Uint8Array(length);
    body.set(w.buf.subarray(w.start, w.start + filled));
    w.start = w.end = 0;
    while (filled < length) {
      while (filled >= allowed) allowed = await hooks!.bodyAllowance!(filled, length, false);
      const n = await this.#readInto(body, filled, allowed);
      body = this.#moved as Uint8Array<ArrayBuffer>;
      if (n === null) this.#decoder.decodeEof({ buf: body, start: 0, end: filled });
      filled += n!;
    }
    this.#moved = w.buf; // hold no reference to a body once it is handed out
    return this.#decoder.decode({ buf: body, start: 0, end: length })!;
  }

  /**
   * Reads a large body's first bytes into a buffer of their own and the rest
   * straight into `target` (`length − 8` bytes); returns the first bytes.
   */
  async #readTargeted(length: number, target: Uint8Array): Promise<Uint8Array> {
    const w = this.#w;
    const head = new Uint8Array(TARGET_PREFIX_BYTES);
    let filled = Math.min(w.end - w.start, length);
    const inHead = Math.min(filled, TARGET_PREFIX_BYTES);
    head.set(w.buf.subarray(w.start, w.start + inHead));
    if (filled > inHead) target.set(w.buf.subarray(w.start + inHead, w.start + filled));
    w.start = w.end = 0;
    const hooks = this.#hooks;
    let allowed = hooks?.bodyAllowance === undefined
      ? length
      : await hooks.bodyAllowance(filled, length, true);
    while (filled < length) {
      while (filled >= allowed) allowed = await hooks!.bodyAllowance!(filled, length, false);
      const n = filled < TARGET_PREFIX_BYTES
        ? await this.#readInto(head, filled)
        : await this.#readInto(target, filled - TARGET_PREFIX_BYTES, allowed - TARGET_PREFIX_BYTES);
      if (n === null) this.#decoder.decodeEof({ buf: head, start: 0, end: filled });
      filled += n!;
    }
    this.#moved = w.buf;
    this.#decoder.bodyRead();
    return head;
  }

  /**
   * Reads into `target` from `offset`: the count, or `null` at the end of the
   * source. A BYOB read transfers the buffer: the caller continues with
   * `this.#moved`, the same memory under a new `Uint8Array`.
   */
  async #readInto(target: Uint8Array, offset: number, end?: number): Promise<number | null> {
    let n: number | null;
    if (this.#source !== undefined) {
      // In slices: Deno's cost for a read grows with the buffer it is given.
      const stop = Math.min(end ?? target.byteLength, offset + READ_SLICE_BYTES);
      n = await this.#source.read(target.subarray(offset, stop));
      this.#moved = target;
    } else if (this.#byob !== undefined) {
      const { byteOffset, byteLength } = target; // the read detaches target's buffer
      const { value, done } = await this.#byob.read(target.subarray(offset, end));
      this.#moved = value === undefined
        ? new Uint8Array(byteLength)
        : new Uint8Array(value.buffer, byteOffset, byteLength);
      n = done || value === undefined ? null : value.byteLength;
    } else {
      this.#moved = target;
      n = await this.#readDefault(target.subarray(0, end), offset);
    }
    if (n !== null) this.#hooks?.onBytes?.(n);
    return n;
  }

  /** Copies the next chunk of a default (non-byte) stream into `target`. */
  async #readDefault(target: Uint8Array, offset: number): Promise<number | null> {
    let chunk = this.#leftover;
    this.#leftover = undefined;
    while (chunk === undefined || chunk.byteLength === 0) {
      const { value, done } = await this.#default!.read();
      if (done) return null;
      chunk = value;
    }
    const n = Math.min(chunk.byteLength, target.byteLength - offset);
    target.set(chunk.subarray(0, n), offset);
    if (n < chunk.byteLength) this.#leftover = chunk.subarray(n);
    return n;
  }

  /**
   * Cancels the underlying stream and releases it (a no-op for a `read(p)` source).
   *
   * @returns A promise that settles when the stream is cancelled.
   */
  async cancel(): Promise<void> {
    try {
      await (this.#byob ?? this.#default)?.cancel();
    } catch {
      // The stream had already failed or closed: nothing left to cancel.
    }
  }
}
