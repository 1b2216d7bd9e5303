/**
 * Values to whole frames: the encoder's chunks with the 4-byte header in
 * front, checked against the frame limit.
 *
 * @module
 */

import { checkFrameLength, encodeHead, HEADER_BYTES } from "../_wire/frame.ts";
import { encodeChunks } from "./encoder.ts";
import type { EncodedChunks } from "../types.ts";

/** A whole frame to queue: its chunks, and whether any lends the caller's memory. */
export type EncodedFrame = Pick<EncodedChunks, "chunks" | "borrowed">;

/** Chunks from the encoder's scratch at least this large are copied before queuing. */
const COPY_BYTES = 64 * 1024;

/**
 * Encodes a value as a whole frame, header included, ready for a write queue.
 *
 * @param value The value.
 * @param maxFrameBytes The largest body allowed.
 * @param transient Whether the last chunk may be the encoder's scratch memory
 * (small chunks only): for a caller that queues the frame before the next
 * encode, since the queue copies small chunks at once.
 * @param prefix Bytes between the header and the value (a reply's 8-byte
 * prefix, PROTOCOL.md §3.2), counted in the body.
 * @returns The frame's chunks, and whether any lends the caller's memory.
 * @throws {TypeError} If the value has no MessagePack form.
 * @throws {FrameTooLargeError} If the body exceeds `maxFrameBytes`.
 */
export function encodeFrame(
  value: unknown,
  maxFrameBytes: number,
  transient = false,
  prefix?: Uint8Array,
): EncodedChunks {
  const extra = prefix?.byteLength ?? 0;
  const encoded = encodeChunks(value, { reserve: HEADER_BYTES + extra, transient });
  checkFrameLength(encoded.byteLength + extra, maxFrameBytes);
  encodeHead(encoded.chunks[0], encoded.byteLength + extra);
  if (prefix !== undefined) encoded.chunks[0].set(prefix, HEADER_BYTES);
  // The encoder's scratch is reused by the next encode: small chunks are
  // copied by the queue at once, larger ones must be copied here.
  const { chunks } = encoded;
  const last = chunks.length - 1;
  if (encoded.transient && chunks[last].byteLength >= COPY_BYTES) {
    chunks[last] = chunks[last].slice();
  }
  return encoded;
}
