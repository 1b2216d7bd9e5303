/**
 * Length-delimited frames: a 4-byte big-endian unsigned length, then that
 * many body bytes. A zero-length frame is a heartbeat and carries no value.
 *
 * The web-standard `TransformStream`s here work on any byte stream:
 * {@linkcode FrameEncoderStream} and {@linkcode FrameDecoderStream} cut and
 * join frames, {@linkcode MessagePackEncoderStream} and
 * {@linkcode MessagePackDecoderStream} turn values into bodies and back.
 * {@linkcode FrameReader} is the same decoder for a socket's readable byte
 * stream: it reads each large body straight into one buffer of the announced
 * length with a BYOB reader, so model-sized frames are never copied.
 *
 * @example A value through the four streams
 * ```ts
 * import {
 *   FrameDecoderStream,
 *   FrameEncoderStream,
 *   MessagePackDecoderStream,
 *   MessagePackEncoderStream,
 * } from "@fedcomm/fedcomm/framing";
 *
 * const values = ReadableStream.from([{ round: 1 }, new Float32Array([1, 2])])
 *   .pipeThrough(new MessagePackEncoderStream())
 *   .pipeThrough(new FrameEncoderStream())
 *   .pipeThrough(new FrameDecoderStream())
 *   .pipeThrough(new MessagePackDecoderStream());
 * console.log(await Array.fromAsync(values)); // [ { round: 1 }, Float32Array(2) [ 1, 2 ] ]
 * ```
 *
 * @module
 */

import { decode, encode } from "./codec.ts";
import { ProtocolError } from "./errors.ts";

/** Bytes of the length prefix. */
export const HEADER_BYTES = 4;
/** The default largest frame body accepted: 512 MiB. */
export const DEFAULT_MAX_FRAME_BYTES: number = 512 * 1024 * 1024;
/** The largest body the 4-byte length can announce. */
export const MAX_FRAME_BYTES_LIMIT: number = 2 ** 32 - 1;
/** Frames up to this size are copied into one chunk with their header. */
const COALESCE_BYTES = 64 * 1024;
/** The read buffer starts this small (a server may hold thousands) and grows when filled. */
const SCRATCH_MIN_BYTES = 4 * 1024;
const SCRATCH_BYTES = 64 * 1024;

/** Options shared by the frame streams and the reader. */
export interface FrameOptions {
  /**
   * The largest frame body accepted, in bytes (default 512 MiB, at most
   * 2³²−1). A longer announced length fails at once, before any of its body
   * is buffered.
   */
  maxFrameBytes?: number;
}

/**
 * Validates and returns `maxFrameBytes`.
 *
 * @param options The options to read.
 * @returns The limit in bytes.
 * @throws {RangeError} If it is not an integer from 0 to 2³²−1.
 */
export function maxFrameBytesOf(options?: FrameOptions): number {
  const max = options?.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isInteger(max) || max < 0 || max > MAX_FRAME_BYTES_LIMIT) {
    throw new RangeError(
      `Invalid maxFrameBytes: "${max}" is not an integer from 0 to ${MAX_FRAME_BYTES_LIMIT}`,
    );
  }
  return max;
}

/** The error for an announced or given length over the limit. */
function frameTooLarge(length: number, max: number): RangeError {
  return new RangeError(`Frame too large: ${length} bytes exceeds maxFrameBytes ${max}`);
}

/** The error for a stream that ended inside a frame. */
function truncated(expected: number, received: number, what = "bytes"): ProtocolError {
  return new ProtocolError(`Truncated frame: expected ${expected} ${what}, received ${received}`);
}

/**
 * Writes the 4-byte big-endian length of a frame body.
 *
 * @param target Where to write, at offset 0.
 * @param length The body length.
 */
export function writeFrameHeader(target: Uint8Array, length: number): void {
  target[0] = length >>> 24;
  target[1] = (length >>> 16) & 0xff;
  target[2] = (length >>> 8) & 0xff;
  target[3] = length & 0xff;
}

/**
 * Frames bodies: each body in becomes its 4-byte length and the body out.
 * Small frames come out as one chunk; a large body is passed through
 * uncopied after a separate header chunk.
 *
 * @example
 * ```ts
 * import { FrameEncoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const out = ReadableStream.from([new Uint8Array([7, 8])]).pipeThrough(new FrameEncoderStream());
 * console.log(await Array.fromAsync(out)); // [ Uint8Array(6) [ 0, 0, 0, 2, 7, 8 ] ]
 * ```
 */
export class FrameEncoderStream extends TransformStream<Uint8Array, Uint8Array> {
  /**
   * Creates the stream.
   *
   * @param options The largest body allowed; a larger one errors the stream with a `RangeError`.
   */
  constructor(options?: FrameOptions) {
    const max = maxFrameBytesOf(options);
    super({
      transform(body, controller) {
        if (body.byteLength > max) throw frameTooLarge(body.byteLength, max);
        if (body.byteLength <= COALESCE_BYTES) {
          const frame = new Uint8Array(HEADER_BYTES + body.byteLength);
          writeFrameHeader(frame, body.byteLength);
          frame.set(body, HEADER_BYTES);
          controller.enqueue(frame);
        } else {
          const header = new Uint8Array(HEADER_BYTES);
          writeFrameHeader(header, body.byteLength);
          controller.enqueue(header);
          controller.enqueue(body);
        }
      },
    });
  }
}

/**
 * Joins byte chunks into frame bodies, whatever the split: a frame across
 * many chunks, many frames in one chunk, a header cut in two. Each body out
 * is a fresh, exactly sized `Uint8Array`; heartbeats come out as empty ones.
 *
 * Errors the stream with a `RangeError` when a header announces more than
 * `maxFrameBytes` (before buffering any of that body), and with a
 * {@linkcode ProtocolError} when the input ends inside a frame.
 *
 * @example
 * ```ts
 * import { FrameDecoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const chunks = [new Uint8Array([0, 0]), new Uint8Array([0, 1, 42, 0, 0, 0, 0])];
 * const bodies = ReadableStream.from(chunks).pipeThrough(new FrameDecoderStream());
 * console.log(await Array.fromAsync(bodies)); // [ Uint8Array(1) [ 42 ], Uint8Array(0) [] ]
 * ```
 */
export class FrameDecoderStream extends TransformStream<Uint8Array, Uint8Array> {
  /**
   * Creates the stream.
   *
   * @param options The largest body accepted.
   */
  constructor(options?: FrameOptions) {
    const max = maxFrameBytesOf(options);
    const header = new Uint8Array(HEADER_BYTES);
    const headerView = new DataView(header.buffer);
    let headerFill = 0;
    let body: Uint8Array | null = null;
    let bodyFill = 0;
    super({
      transform(chunk, controller) {
        let p = 0;
        while (p < chunk.byteLength) {
          if (body === null) {
            if (headerFill === 0 && chunk.byteLength - p >= HEADER_BYTES) {
              // Fast path: a whole header, and often a whole frame, in this chunk.
              const length = new DataView(chunk.buffer, chunk.byteOffset + p).getUint32(0);
              if (length > max) throw frameTooLarge(length, max);
              p += HEADER_BYTES;
              if (chunk.byteLength - p >= length) {
                controller.enqueue(chunk.slice(p, p + length));
                p += length;
                continue;
              }
              body = new Uint8Array(length);
              bodyFill = 0;
            } else {
              const take = Math.min(HEADER_BYTES - headerFill, chunk.byteLength - p);
              header.set(chunk.subarray(p, p + take), headerFill);
              headerFill += take;
              p += take;
              if (headerFill < HEADER_BYTES) break;
              headerFill = 0;
              const length = headerView.getUint32(0);
              if (length > max) throw frameTooLarge(length, max);
              body = new Uint8Array(length);
              bodyFill = 0;
            }
          }
          const take = Math.min(body.byteLength - bodyFill, chunk.byteLength - p);
          body.set(chunk.subarray(p, p + take), bodyFill);
          bodyFill += take;
          p += take;
          if (bodyFill === body.byteLength) {
            controller.enqueue(body);
            body = null;
          }
        }
      },
      flush() {
        if (body !== null) throw truncated(body.byteLength, bodyFill);
        if (headerFill > 0) throw truncated(HEADER_BYTES, headerFill, "header bytes");
      },
    });
  }
}

/**
 * Encodes each value as one MessagePack body (see `codec.ts` for the
 * supported types; typed arrays use the msgpack-numpy convention).
 *
 * @example
 * ```ts
 * import { MessagePackEncoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const out = ReadableStream.from([{ a: 1 }]).pipeThrough(new MessagePackEncoderStream());
 * console.log(await Array.fromAsync(out)); // [ Uint8Array(4) [ 129, 161, 97, 1 ] ]
 * ```
 */
export class MessagePackEncoderStream extends TransformStream<unknown, Uint8Array> {
  /** Creates the stream. A value with no MessagePack form errors it with a `TypeError`. */
  constructor() {
    super({
      transform(value, controller) {
        controller.enqueue(encode(value));
      },
    });
  }
}

/**
 * Decodes each body as exactly one MessagePack value, skipping empty bodies
 * (heartbeats). A malformed body errors the stream with a {@linkcode ProtocolError}.
 *
 * @example
 * ```ts
 * import { MessagePackDecoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const bodies = [new Uint8Array([129, 161, 97, 1]), new Uint8Array(0)];
 * const out = ReadableStream.from(bodies).pipeThrough(new MessagePackDecoderStream());
 * console.log(await Array.fromAsync(out)); // [ { a: 1 } ]
 * ```
 */
export class MessagePackDecoderStream extends TransformStream<Uint8Array, unknown> {
  /** Creates the stream. */
  constructor() {
    super({
      transform(body, controller) {
        if (body.byteLength > 0) controller.enqueue(decode(body));
      },
    });
  }
}

/** A source with `read(p)` into a caller's buffer, as `Deno.Conn` has. */
export interface ByteReader {
  /** Reads into `p`; resolves with the count, or `null` at the end of the stream. */
  read(p: Uint8Array): Promise<number | null>;
}

/** Options for {@linkcode FrameReader}. */
export interface FrameReaderOptions extends FrameOptions {
  /** Called with the number of bytes after every read from the stream (for progress). */
  onBytes?: (bytes: number) => void;
  /**
   * Called before a body larger than the read buffer is allocated, with its
   * length; reading waits for the promise it may return (a memory budget).
   */
  reserve?: (bytes: number) => Promise<void> | undefined;
}

/**
 * Reads frame bodies from a readable byte stream, such as a `Deno.Conn`'s
 * `readable`. Frames up to 64 KiB are cut out of a read buffer (4 KiB, grown
 * to 64 KiB under load); a large
 * frame is read straight into a buffer of its announced length, with a BYOB
 * reader where the stream is a byte stream.
 *
 * @example
 * ```ts
 * import { FrameReader } from "@fedcomm/fedcomm/framing";
 *
 * const reader = new FrameReader(ReadableStream.from([new Uint8Array([0, 0, 0, 1, 9])]));
 * console.log(await reader.read()); // Uint8Array(1) [ 9 ]
 * console.log(await reader.read()); // null (the stream ended between frames)
 * ```
 */
export class FrameReader {
  #source: ByteReader | undefined;
  #byob: ReadableStreamBYOBReader | undefined;
  #default: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #leftover: Uint8Array | undefined;
  #max: number;
  #onBytes: ((bytes: number) => void) | undefined;
  #reserve: FrameReaderOptions["reserve"];
  #buf: Uint8Array = new Uint8Array(SCRATCH_MIN_BYTES);
  /** The buffer the last read left its bytes in (a BYOB read moves them to a new one). */
  #moved: Uint8Array = this.#buf;
  #start = 0;
  #end = 0;

  /**
   * Locks `readable` and prepares to read frames from it.
   *
   * @param readable The byte stream.
   * @param options The frame size limit and a progress callback.
   */
  constructor(readable: ReadableStream<Uint8Array> | ByteReader, options?: FrameReaderOptions) {
    this.#max = maxFrameBytesOf(options);
    this.#onBytes = options?.onBytes;
    this.#reserve = options?.reserve;
    if (!(readable instanceof ReadableStream)) {
      this.#source = readable;
      return;
    }
    try {
      this.#byob = readable.getReader({ mode: "byob" });
    } catch {
      this.#default = readable.getReader();
    }
  }

  /** The largest body accepted; may be changed between reads (raised after a handshake). */
  get maxFrameBytes(): number {
    return this.#max;
  }

  /** Sets the largest body accepted for the frames read from now on. */
  set maxFrameBytes(value: number) {
    this.#max = maxFrameBytesOf({ maxFrameBytes: value });
  }

  /**
   * Reads the next frame body. A heartbeat is an empty body.
   *
   * @returns The body, or `null` when the stream ended cleanly between frames.
   * @throws {RangeError} When a header announces more than `maxFrameBytes`.
   * @throws {ProtocolError} When the stream ends inside a frame.
   */
  async read(): Promise<Uint8Array | null> {
    const view = await this.readView();
    return view !== null && this.isBuffered(view) ? view.slice() : view;
  }

  /**
   * Whether `body` is a view into the read buffer (so it is overwritten by
   * later reads), as {@linkcode FrameReader.readView} returns for small frames.
   *
   * @param body A body this reader returned.
   * @returns `true` for a view into the read buffer.
   */
  isBuffered(body: Uint8Array): boolean {
    return body.buffer === this.#buf.buffer;
  }

  /**
   * Returns the next frame body if it is already in the read buffer, without
   * waiting or allocating: a view valid only until the next call of any read
   * method. A heartbeat is an empty view.
   *
   * @returns The view, or `undefined` when more bytes must be read first.
   * @throws {RangeError} When a header announces more than `maxFrameBytes`.
   */
  readBuffered(): Uint8Array | undefined {
    const available = this.#end - this.#start;
    if (available < HEADER_BYTES) return undefined;
    const b = this.#buf;
    const s = this.#start;
    const length = ((b[s] << 24) | (b[s + 1] << 16) | (b[s + 2] << 8) | b[s + 3]) >>> 0;
    if (length > this.#max) throw frameTooLarge(length, this.#max);
    if (available - HEADER_BYTES < length) return undefined;
    this.#start = s + HEADER_BYTES + length;
    return b.subarray(s + HEADER_BYTES, this.#start);
  }

  /**
   * Reads the next frame body, as a view into the read buffer for a small
   * frame (valid only until the next read) or as its own buffer for a large
   * one. {@linkcode FrameReader.read} is the copying form.
   *
   * @returns The body, or `null` when the stream ended cleanly between frames.
   * @throws {RangeError} When a header announces more than `maxFrameBytes`.
   * @throws {ProtocolError} When the stream ends inside a frame.
   */
  async readView(): Promise<Uint8Array | null> {
    while (true) {
      const buffered = this.readBuffered();
      if (buffered !== undefined) return buffered;
      const available = this.#end - this.#start;
      const expected = available >= HEADER_BYTES
        ? new DataView(this.#buf.buffer, this.#start).getUint32(0)
        : undefined;
      if (expected !== undefined && HEADER_BYTES + expected > SCRATCH_BYTES) {
        return await this.#readLarge(expected);
      }
      // Make room: move what is buffered to the front, and grow the buffer
      // when it is full or too small for the frame whose header is in it.
      const need = expected === undefined ? 0 : HEADER_BYTES + expected;
      let size = this.#buf.byteLength;
      while (size < SCRATCH_BYTES && (available === size || need > size)) size *= 2;
      if (size !== this.#buf.byteLength) {
        const grown = new Uint8Array(size);
        grown.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = grown;
        this.#end = available;
        this.#start = 0;
      } else if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      let n: number | null;
      if (this.#source !== undefined) {
        // The socket path inline: one async frame per read instead of two.
        n = await this.#source.read(this.#buf.subarray(this.#end));
        if (n !== null) this.#onBytes?.(n);
      } else {
        n = await this.#readDirect(this.#buf, this.#end);
        this.#buf = this.#moved;
      }
      if (n === null) {
        if (available === 0) return null;
        if (expected === undefined) throw truncated(HEADER_BYTES, available, "header bytes");
        throw truncated(expected, available - HEADER_BYTES);
      }
      this.#end += n;
    }
  }

  /** Reads a body larger than the largest read buffer straight into its own buffer. */
  async #readLarge(length: number): Promise<Uint8Array> {
    const reserved = this.#reserve?.(length);
    if (reserved !== undefined) await reserved;
    let body: Uint8Array = new Uint8Array(length);
    const buffered = this.#buf.subarray(this.#start + HEADER_BYTES, this.#end);
    body.set(buffered);
    let filled = buffered.byteLength;
    this.#start = this.#end = 0;
    while (filled < length) {
      const n = await this.#readDirect(body, filled);
      body = this.#moved;
      if (n === null) throw truncated(length, filled);
      filled += n;
    }
    this.#moved = this.#buf; // hold no reference to a body once it is handed out
    return body;
  }

  /**
   * Reads into `target` from `offset`; `n` is the count, or `null` at the end
   * of the stream. A BYOB read transfers the buffer, so the caller continues
   * with the returned `target`.
   */
  /**
   * Reads into `target` from `offset`: the count, or `null` at the end of the
   * stream. A BYOB read transfers the buffer: the caller continues with
   * `this.#moved`, the same memory under a new `Uint8Array`.
   */
  async #readDirect(target: Uint8Array, offset: number): Promise<number | null> {
    let n: number | null;
    if (this.#source !== undefined) {
      // The socket path, kept free of extra objects: Deno.Conn.read().
      n = await this.#source.read(target.subarray(offset));
      this.#moved = target;
    } else if (this.#byob !== undefined) {
      const { value, done } = await this.#byob.read(target.subarray(offset));
      this.#moved = value === undefined
        ? new Uint8Array(target.byteLength)
        : new Uint8Array(value.buffer);
      n = done || value === undefined ? null : value.byteLength;
    } else {
      this.#moved = target;
      n = await this.#readDefault(target, offset);
    }
    if (n !== null) this.#onBytes?.(n);
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
   * Cancels the underlying stream and releases it.
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
