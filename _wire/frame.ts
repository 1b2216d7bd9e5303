/**
 * The frame codec: a 4-byte big-endian unsigned length, then that many body
 * bytes. No I/O here; the drivers (`FrameDecoderStream`/`FrameEncoderStream`
 * in `framing.ts`, the socket reader in `_link/frame_reader.ts`, the write
 * path in `_codec/encode_frame.ts` and `_link/write_queue.ts`) feed it bytes.
 *
 * Modelled on tokio-util's `LengthDelimitedCodec`: the decoder has two
 * states, waiting for a header and waiting for N body bytes. The header is
 * parsed in {@linkcode FrameDecoder.decodeHead} only and every length is
 * checked against a limit in {@linkcode checkFrameLength} only.
 *
 * @module
 */

import { FrameTooLargeError, TruncatedFrameError } from "../errors.ts";
import { DEFAULT_MAX_FRAME_BYTES, DEFAULT_MAX_MESSAGE_BYTES } from "../types.ts";

/** Bytes of the length prefix. */
export const HEADER_BYTES = 4;
/** The largest body the 4-byte length can announce. */
export const MAX_FRAME_BYTES_LIMIT: number = 2 ** 32 - 1;

/**
 * Validates a `maxFrameBytes` option.
 *
 * @param max The option's value; `undefined` means the default.
 * @returns The limit in bytes.
 * @throws {RangeError} If it is not an integer from 0 to 2³²−1.
 */
export function checkMaxFrameBytes(max: number | undefined): number {
  max ??= DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isInteger(max) || max < 0 || max > MAX_FRAME_BYTES_LIMIT) {
    throw new RangeError(
      `Invalid maxFrameBytes: "${max}" is not an integer from 0 to ${MAX_FRAME_BYTES_LIMIT}`,
    );
  }
  return max;
}

/**
 * Validates a `maxMessageBytes` option (PROTOCOL.md §8.8).
 *
 * @param max The option's value; `undefined` means the default.
 * @returns The limit in bytes (0: no long messages).
 * @throws {RangeError} If it is not an integer from 0 to 2⁵³−1.
 */
export function checkMaxMessageBytes(max: number | undefined): number {
  max ??= DEFAULT_MAX_MESSAGE_BYTES;
  if (!Number.isSafeInteger(max) || max < 0) {
    throw new RangeError(
      `Invalid maxMessageBytes: "${max}" is not an integer from 0 to ${Number.MAX_SAFE_INTEGER}`,
    );
  }
  return max;
}

/**
 * The one frame-length check, for frames received and sent.
 *
 * @param length The body length announced or to be written.
 * @param max The limit.
 * @param clientId The client concerned, where known.
 * @throws {FrameTooLargeError} If `length` exceeds `max`.
 */
export function checkFrameLength(length: number, max: number, clientId?: number): void {
  if (length > max) throw new FrameTooLargeError(length, max, { clientId });
}

/**
 * Writes the 4-byte big-endian length of a frame body at the start of `target`.
 *
 * @param target Where to write, at offset 0.
 * @param length The body length.
 */
export function encodeHead(target: Uint8Array, length: number): void {
  target[0] = length >>> 24;
  target[1] = (length >>> 16) & 0xff;
  target[2] = (length >>> 8) & 0xff;
  target[3] = length & 0xff;
}

/**
 * Received bytes not yet decoded: `buf[start, end)`. A driver owns it and
 * fills it; the decoder advances `start` past what it decoded.
 */
export interface ByteWindow {
  /** The buffer. */
  buf: Uint8Array;
  /** The first byte not yet decoded. */
  start: number;
  /** One past the last byte received. */
  end: number;
}

const HEAD = -1;

/** Decodes frames from a {@linkcode ByteWindow}; see the module doc. */
export class FrameDecoder {
  /** `HEAD` while waiting for a header, else the announced body length. */
  #state = HEAD;
  #max: number;
  /** The client the bytes come from, named in errors. */
  clientId: number | undefined;

  /**
   * Creates a decoder.
   *
   * @param maxFrameBytes The largest body accepted (validated).
   */
  constructor(maxFrameBytes?: number) {
    this.#max = checkMaxFrameBytes(maxFrameBytes);
  }

  /** The largest body accepted; may change between frames (raised after a handshake). */
  get maxFrameBytes(): number {
    return this.#max;
  }

  set maxFrameBytes(value: number) {
    this.#max = checkMaxFrameBytes(value);
  }

  /** The body length of the frame whose header was decoded, or -1 while waiting for a header. */
  get length(): number {
    return this.#state;
  }

  /**
   * Consumes a header if 4 bytes are there and moves to the body state.
   *
   * @param w The received bytes.
   * @returns The announced body length, or -1 if fewer than 4 bytes are there.
   * @throws {FrameTooLargeError} If the length exceeds the limit (before any body byte is read).
   */
  decodeHead(w: ByteWindow): number {
    if (this.#state !== HEAD) return this.#state;
    const s = w.start;
    if (w.end - s < HEADER_BYTES) return HEAD;
    const b = w.buf;
    const length = ((b[s] << 24) | (b[s + 1] << 16) | (b[s + 2] << 8) | b[s + 3]) >>> 0;
    checkFrameLength(length, this.#max, this.clientId);
    w.start = s + HEADER_BYTES;
    this.#state = length;
    return length;
  }

  /**
   * Decodes the next frame: its body as a view of `w.buf`, or `undefined`
   * when more bytes are needed (then {@linkcode FrameDecoder.length} says how
   * many body bytes the current frame has, if its header is in).
   *
   * @param w The received bytes; `start` moves past the frame.
   * @returns The body (empty for a heartbeat), or `undefined`.
   * @throws {FrameTooLargeError} If a header announces more than the limit.
   */
  decode(w: ByteWindow): Uint8Array | undefined {
    const n = this.#state === HEAD ? this.decodeHead(w) : this.#state;
    if (n === HEAD || w.end - w.start < n) return undefined;
    const start = w.start;
    w.start = start + n;
    this.#state = HEAD;
    return w.buf.subarray(start, start + n);
  }

  /**
   * The driver read the current frame's body itself, elsewhere (into a
   * buffer its caller gave): the decoder waits for the next header.
   */
  bodyRead(): void {
    this.#state = HEAD;
  }

  /**
   * Checks that a stream ended between frames.
   *
   * @param w The bytes left undecoded at the end of the stream.
   * @throws {TruncatedFrameError} If the stream ended inside a header or a body.
   */
  decodeEof(w: ByteWindow): void {
    const left = w.end - w.start;
    if (this.#state !== HEAD) {
      throw new TruncatedFrameError(this.#state, left, { clientId: this.clientId });
    }
    if (left > 0) {
      throw new TruncatedFrameError(HEADER_BYTES, left, {
        clientId: this.clientId,
        inHeader: true,
      });
    }
  }
}
