/**
 * The encoding entry points of the library: one {@linkcode ChunkEncoder}
 * shared by every caller of the process (encoding is synchronous), behind
 * `encodeChunks()` and `encode()` in `codec.ts`, the frames of
 * `encode_frame.ts` and the handshake's messages.
 *
 * @module
 */

import { ChunkEncoder, type Skeleton } from "./encoder.ts";
import type { EncodeChunksOptions, EncodedChunks } from "../types.ts";

/** The encoder every caller of the process shares. */
const sharedEncoder = new ChunkEncoder();

/**
 * Encodes a value as MessagePack chunks (the implementation of `codec.ts`'s
 * `encodeChunks`).
 *
 * @param value The value.
 * @param options Room to reserve in the first chunk, and transient scratch memory.
 * @returns The chunks.
 */
export function encodeChunks(value: unknown, options?: EncodeChunksOptions): EncodedChunks {
  return sharedEncoder.encode(value, options);
}

/**
 * Encodes a value as a long message's skeleton (see {@linkcode ChunkEncoder.skeleton}).
 *
 * @param value The value.
 * @param reserve Zero bytes to leave in front.
 * @param refMinBytes The least size of a binary sent out of band.
 * @returns The skeleton and the binaries its references stand for.
 */
export function encodeSkeleton(value: unknown, reserve: number, refMinBytes?: number): Skeleton {
  return sharedEncoder.skeleton(value, reserve, refMinBytes);
}

/**
 * Encodes a value as one MessagePack byte array (the implementation of `codec.ts`'s `encode`).
 *
 * @param value The value.
 * @returns Its bytes.
 */
export function encodeValue(value: unknown): Uint8Array {
  return joinChunks(sharedEncoder.encode(value).chunks);
}

/**
 * Chunks as one byte array (the one chunk itself if there is one).
 *
 * @param chunks The chunks.
 * @returns Their bytes, in order.
 */
export function joinChunks(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(chunks.reduce((n, chunk) => n + chunk.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
