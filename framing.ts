/**
 * Length-delimited frames as web streams: a 4-byte big-endian unsigned
 * length, then that many body bytes. A zero-length frame is a heartbeat and
 * carries no value. Nothing here uses `Deno.*`: the streams run in any
 * runtime with web streams.
 *
 * {@linkcode FrameEncoderStream} and {@linkcode FrameDecoderStream} cut and
 * join frames on any byte stream, {@linkcode MessagePackEncoderStream} and
 * {@linkcode MessagePackDecoderStream} turn values into bodies and back, so
 * `conn.readable.pipeThrough(new FrameDecoderStream()).pipeThrough(new
 * MessagePackDecoderStream())` is an async iterable of a peer's values.
 * {@linkcode FrameReader} is the socket driver: it reads each large body
 * straight into one buffer of the announced length (from `conn.read` or a
 * BYOB reader), so model-sized frames are never copied. All of them are
 * thin drivers over one frame codec with explicit states and no I/O
 * (`FrameDecoder`, `_wire/frame.ts`).
 *
 * This module is the door to the wire layer, and the library uses what it
 * exports: every connection reads with this {@linkcode FrameReader} over
 * `conn.read` (`_link/link.ts`) and writes with `conn.write`, but not
 * through the stream pipeline, because the pipeline measured far slower (`bench/streams.ts`, the
 * `streams` column of `deno task bench`): its round took 1.5× the direct
 * driver's at N=4 × 1 KiB, 2.1× at 1 MiB, 2.9× at 100 MiB and 3.4× at
 * N=1000 × 1 KiB (the README's Performance table, 2 cores, Deno 2.9.6),
 * where it had to come within 10% to replace it. The streams cannot avoid copies:
 * `pipeThrough` reads the socket with a default reader (a fresh 64 KiB
 * chunk per read) and {@linkcode FrameDecoderStream} copies every body out
 * of those chunks, where the direct driver reads a large body straight into
 * its final buffer; {@linkcode MessagePackEncoderStream} emits one
 * contiguous body, copying the whole model, where the direct driver writes
 * tensors from the caller's memory; and four chained streams add promise
 * and queue hops per small message (14× more time in GC at N=1000). The
 * streams remain for framing any byte stream: tests, examples, adapters.
 *
 * @example A value through the four streams
 * ```ts
 * import assert from "node:assert/strict";
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
 * assert.deepStrictEqual(await Array.fromAsync(values), [{ round: 1 }, new Float32Array([1, 2])]);
 * ```
 *
 * @module
 */

import { decode, encode } from "./codec.ts";
import {
  type ByteWindow,
  checkFrameLength,
  checkMaxFrameBytes,
  encodeHead,
  FrameDecoder,
  HEADER_BYTES,
} from "./_wire/frame.ts";

import type { FrameOptions } from "./types.ts";

export { MAX_FRAME_BYTES_LIMIT } from "./_wire/frame.ts";
export { type ByteReader, FrameReader, type FrameReaderOptions } from "./_link/frame_reader.ts";
export { DEFAULT_MAX_FRAME_BYTES, type FrameOptions } from "./types.ts";

/** Frames up to this size are copied into one chunk with their header. */
const COALESCE_BYTES = 64 * 1024;

/**
 * Frames bodies: each body in becomes its 4-byte length and the body out.
 * Small frames come out as one chunk; a large body is passed through
 * uncopied after a separate header chunk.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameEncoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const out = ReadableStream.from([new Uint8Array([7, 8])]).pipeThrough(new FrameEncoderStream());
 * assert.deepStrictEqual(await Array.fromAsync(out), [new Uint8Array([0, 0, 0, 2, 7, 8])]);
 * ```
 */
export class FrameEncoderStream extends TransformStream<Uint8Array, Uint8Array> {
  /**
   * Creates the stream.
   *
   * @param options The largest body allowed; a larger one errors the stream
   * with a `FrameTooLargeError` (a `RangeError`).
   * @throws {RangeError} If `maxFrameBytes` is invalid.
   */
  constructor(options?: FrameOptions) {
    const max = checkMaxFrameBytes(options?.maxFrameBytes);
    super({
      transform(body, controller) {
        checkFrameLength(body.byteLength, max);
        if (body.byteLength <= COALESCE_BYTES) {
          const frame = new Uint8Array(HEADER_BYTES + body.byteLength);
          encodeHead(frame, body.byteLength);
          frame.set(body, HEADER_BYTES);
          controller.enqueue(frame);
        } else {
          const header = new Uint8Array(HEADER_BYTES);
          encodeHead(header, body.byteLength);
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
 * A body split across chunks is assembled in one buffer of its announced
 * length (never regrown).
 *
 * Errors the stream with a `FrameTooLargeError` (a `RangeError`) when a
 * header announces more than `maxFrameBytes` (before buffering any of that
 * body), and with a `TruncatedFrameError` (a `ProtocolError`) when the input ends inside a frame.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FrameDecoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const chunks = [new Uint8Array([0, 0]), new Uint8Array([0, 1, 42, 0, 0, 0, 0])];
 * const bodies = ReadableStream.from(chunks).pipeThrough(new FrameDecoderStream());
 * assert.deepStrictEqual(await Array.fromAsync(bodies), [new Uint8Array([42]), new Uint8Array(0)]);
 * ```
 */
export class FrameDecoderStream extends TransformStream<Uint8Array, Uint8Array> {
  /**
   * Creates the stream.
   *
   * @param options The largest body accepted.
   * @throws {RangeError} If `maxFrameBytes` is invalid.
   */
  constructor(options?: FrameOptions) {
    const decoder = new FrameDecoder(options?.maxFrameBytes);
    // Up to 3 bytes of a header cut off at the end of a chunk.
    const carry: ByteWindow = { buf: new Uint8Array(HEADER_BYTES), start: 0, end: 0 };
    // A body that spans chunks, filled up to `filled`.
    let body: Uint8Array | undefined;
    let filled = 0;
    super({
      transform(chunk, controller) {
        let p = 0;
        if (body !== undefined) {
          const take = Math.min(body.byteLength - filled, chunk.byteLength);
          body.set(chunk.subarray(0, take), filled);
          filled += take;
          p = take;
          if (filled < body.byteLength) return;
          controller.enqueue(decoder.decode({ buf: body, start: 0, end: filled })!);
          body = undefined;
        } else if (carry.end > 0) {
          const take = Math.min(HEADER_BYTES - carry.end, chunk.byteLength);
          carry.buf.set(chunk.subarray(0, take), carry.end);
          carry.end += take;
          p = take;
          if (decoder.decodeHead(carry) < 0) return;
          carry.start = carry.end = 0;
        }
        const w: ByteWindow = { buf: chunk, start: p, end: chunk.byteLength };
        for (let out = decoder.decode(w); out !== undefined; out = decoder.decode(w)) {
          controller.enqueue(out.slice());
        }
        const rest = chunk.subarray(w.start);
        if (decoder.length >= 0) {
          body = new Uint8Array(decoder.length);
          body.set(rest);
          filled = rest.byteLength;
        } else {
          carry.buf.set(rest);
          carry.end = rest.byteLength;
        }
      },
      flush() {
        decoder.decodeEof(body === undefined ? carry : { buf: body, start: 0, end: filled });
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
 * import assert from "node:assert/strict";
 * import { MessagePackEncoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const out = ReadableStream.from([{ a: 1 }]).pipeThrough(new MessagePackEncoderStream());
 * assert.deepStrictEqual(await Array.fromAsync(out), [new Uint8Array([0x81, 0xa1, 0x61, 1])]);
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
 * (heartbeats). A malformed body errors the stream with a `ProtocolError`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { MessagePackDecoderStream } from "@fedcomm/fedcomm/framing";
 *
 * const bodies = [new Uint8Array([0x81, 0xa1, 0x61, 1]), new Uint8Array(0)];
 * const out = ReadableStream.from(bodies).pipeThrough(new MessagePackDecoderStream());
 * assert.deepStrictEqual(await Array.fromAsync(out), [{ a: 1 }]);
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
