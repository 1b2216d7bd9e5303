/**
 * Values to whole frames: the encoder's chunks with the 4-byte header in
 * front, checked against the frame limit; a value too large for one frame
 * becomes a long message (PROTOCOL.md §8.8), a header frame and part frames
 * in one list of chunks, so that the session numbers, retains and resends
 * it as the one message it is.
 *
 * @module
 */

import { checkFrameLength, encodeHead, HEADER_BYTES } from "../_wire/frame.ts";
import { CONTROL, LONG, LONG_PREFIX_BYTES, PART, replyTo } from "../_wire/control.ts";
import { encodeChunks, encodeSkeleton } from "./encode.ts";
import { EXTERNAL_MIN_BYTES, HugeBinaryError } from "./encoder.ts";
import { FrameTooLargeError, MessageTooLargeError } from "../errors.ts";
import type { EncodedChunks } from "../types.ts";

/**
 * A whole message to queue: its chunks, whether any lends the caller's
 * memory, and for a long message its size (header body plus references).
 */
export type EncodedFrame = Pick<EncodedChunks, "chunks" | "borrowed"> & {
  /** A long message's size: its header body plus its references (absent: one frame). */
  readonly longBytes?: number;
  /** A long message's body as one frame, had it been one (for a peer that takes no long ones). */
  readonly frameBytes?: number;
};

/** Chunks from the encoder's scratch at least this large are copied before queuing. */
const COPY_BYTES = 64 * 1024;
/** The most data a part carries (PROTOCOL.md §8.8). */
export const PART_MAX_BYTES: number = 64 * 1024 * 1024;

/** Limits and choices of a long message. */
export interface LongOptions {
  /** The largest long message the peer takes (0: none; the value must then fit a frame). */
  maxMessageBytes: number;
  /** The least size of a binary sent out of band (test vectors use small ones). */
  refMinBytes?: number;
  /** The most data per part (at most `maxFrameBytes − 8`). */
  partBytes?: number;
}

/**
 * Encodes a value as a whole frame, header included, ready for a write
 * queue; or, if it does not fit one frame and `long` allows, as a long message.
 *
 * @param value The value.
 * @param maxFrameBytes The largest body allowed.
 * @param transient Whether the last chunk may be the encoder's scratch memory
 * (small chunks only): for a caller that queues the frame before the next
 * encode, since the queue copies small chunks at once.
 * @param prefix Bytes between the header and the value (a reply's 8-byte
 * prefix, PROTOCOL.md §3.2), counted in the body.
 * @param long Whether, and how, a value too large for a frame becomes a long message.
 * @returns The frame's chunks, and whether any lends the caller's memory.
 * @throws {TypeError} If the value has no MessagePack form.
 * @throws {FrameTooLargeError} If the body exceeds `maxFrameBytes` (and no long message may be sent).
 * @throws {MessageTooLargeError} If a long message would exceed `long.maxMessageBytes`.
 */
export function encodeFrame(
  value: unknown,
  maxFrameBytes: number,
  transient = false,
  prefix?: Uint8Array,
  long?: LongOptions,
): EncodedFrame {
  const extra = prefix?.byteLength ?? 0;
  let encoded: EncodedChunks;
  try {
    encoded = encodeChunks(value, { reserve: HEADER_BYTES + extra, transient });
  } catch (error) {
    if (!(error instanceof HugeBinaryError) || !(long?.maxMessageBytes! > 0)) throw error;
    return encodeLong(
      value,
      maxFrameBytes,
      prefix === undefined ? 0 : replyTo(prefix),
      long!,
      2 ** 32,
    );
  }
  const body = encoded.byteLength + extra;
  if (body > maxFrameBytes && long?.maxMessageBytes! > 0) {
    return encodeLong(
      value,
      maxFrameBytes,
      prefix === undefined ? 0 : replyTo(prefix),
      long!,
      body,
    );
  }
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

/**
 * Encodes a value as a long message (PROTOCOL.md §8.8): the header frame
 * (`c1 07`, the request, the skeleton), then each reference's bytes in
 * parts (`c1 08`, six zeros, data), the data as views of the value's memory.
 *
 * @param value The value.
 * @param maxFrameBytes The largest frame body allowed.
 * @param request The message it answers (a reply), or 0.
 * @param long The peer's limit and the sender's choices.
 * @param frameBytes The value's body as one frame (at least 2³² when a binary is that large).
 * @returns The message's chunks, borrowed if it has references, and its size.
 * @throws {TypeError} If the value has no MessagePack form.
 * @throws {FrameTooLargeError} If the skeleton alone exceeds `maxFrameBytes`.
 * @throws {MessageTooLargeError} If the message exceeds `long.maxMessageBytes`.
 */
export function encodeLong(
  value: unknown,
  maxFrameBytes: number,
  request: number,
  long: LongOptions,
  frameBytes: number,
): EncodedFrame {
  const reserve = HEADER_BYTES + LONG_PREFIX_BYTES;
  const skeleton = encodeSkeleton(value, reserve, long.refMinBytes ?? EXTERNAL_MIN_BYTES);
  const body = skeleton.byteLength + LONG_PREFIX_BYTES;
  checkFrameLength(body, maxFrameBytes);
  let size = body;
  for (const ref of skeleton.refs) size += ref.byteLength;
  if (size > long.maxMessageBytes) throw new MessageTooLargeError(size, long.maxMessageBytes);
  const head = skeleton.chunks[0];
  encodeHead(head, body);
  head[HEADER_BYTES] = CONTROL;
  head[HEADER_BYTES + 1] = LONG;
  const view = new DataView(head.buffer, head.byteOffset + HEADER_BYTES + 2, 6);
  view.setUint16(0, Math.floor(request / 2 ** 32));
  view.setUint32(2, request >>> 0);
  const partBytes = Math.min(long.partBytes ?? PART_MAX_BYTES, maxFrameBytes - LONG_PREFIX_BYTES);
  if (skeleton.refs.length > 0 && partBytes < 1) {
    throw new FrameTooLargeError(reserve, maxFrameBytes);
  }
  const chunks = skeleton.chunks;
  for (const ref of skeleton.refs) {
    for (let off = 0; off < ref.byteLength; off += partBytes) {
      const data = ref.subarray(off, off + partBytes);
      const partHead = new Uint8Array(reserve);
      encodeHead(partHead, LONG_PREFIX_BYTES + data.byteLength);
      partHead[HEADER_BYTES] = CONTROL;
      partHead[HEADER_BYTES + 1] = PART;
      chunks.push(partHead, data);
    }
  }
  return { chunks, borrowed: skeleton.refs.length > 0, longBytes: size, frameBytes };
}
