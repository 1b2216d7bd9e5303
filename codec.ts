/**
 * MessagePack values ↔ bytes, built for tensors.
 *
 * Encoding writes standard MessagePack, byte for byte what
 * `@msgpack/msgpack` writes for the same ordinary value, with two
 * additions: typed arrays travel in the msgpack-numpy convention (see
 * `tensor.ts`), and large binaries are never copied. {@linkcode encodeChunks}
 * returns the value as a list of chunks in which every binary of 64 KiB or
 * more is a view of the caller's memory, so a 500 MB model is written to the
 * socket straight from its `Float32Array`. The tensor bytes of a numpy map are
 * placed 8-byte aligned from the start of the value, so the receiver can view
 * them in place.
 *
 * Decoding ({@linkcode decode}) is bounded, because its input comes from a
 * peer: nesting is limited, every length is checked against the bytes left
 * before anything is allocated, and the work a body may cause is proportional
 * to its length (PROTOCOL.md §4.5). Binaries stay views into the received
 * body, numpy maps become typed arrays (views where aligned), and 64-bit
 * integers arrive as `number` where they are safe, `bigint` beyond.
 *
 * @module
 */

import { decodeBounded } from "./_codec/decoder.ts";
import { encodeChunks as encodeChunksOf, encodeValue } from "./_codec/encode.ts";
import type { DecodeOptions, EncodeChunksOptions, EncodedChunks } from "./types.ts";

export type { DecodeOptions, EncodeChunksOptions, EncodedChunks } from "./types.ts";

/**
 * Encodes a value as MessagePack chunks without copying large binaries.
 *
 * Supported: `null`/`undefined` (nil), booleans, numbers (integers in the
 * smallest integer form, others as float64), `bigint` (64-bit), strings,
 * `Uint8Array`/`ArrayBuffer`/`DataView` (bin), other typed arrays and
 * `NdArray`s (msgpack-numpy maps), arrays, `Map`s and plain objects (maps),
 * `Date` (timestamp extension) and `ExtData`. Values may nest 100 levels deep
 * (a typed array's map and its shape count as two).
 *
 * @param value The value to encode.
 * @param options Room to reserve in the first chunk.
 * @returns The chunks, their byte length, and whether any borrows the caller's memory.
 * @throws {TypeError} For a value with no MessagePack form (a function, a symbol, a cycle).
 * @throws {RangeError} For a binary over 4 GiB or a bigint over 64 bits.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodeChunks } from "@fedcomm/fedcomm/codec";
 *
 * const weights = new Float32Array(1 << 20); // 4 MiB
 * const { chunks, byteLength, borrowed } = encodeChunks({ round: 1, weights }, { reserve: 4 });
 * assert.equal(chunks.length, 2); // the reserve and the encoded headers, then the tensor data
 * assert.equal(byteLength, chunks[0].byteLength - 4 + weights.byteLength); // the reserve is not counted
 * assert.equal(borrowed, true);
 * assert.equal(chunks[1].buffer, weights.buffer); // not copied
 * ```
 */
export function encodeChunks(value: unknown, options?: EncodeChunksOptions): EncodedChunks {
  return encodeChunksOf(value, options);
}

/**
 * Encodes a value as one contiguous MessagePack byte array.
 *
 * @param value The value to encode (see {@linkcode encodeChunks} for the types).
 * @returns The encoded bytes.
 * @throws {TypeError} For a value with no MessagePack form.
 * @throws {RangeError} For a binary over 4 GiB or a bigint over 64 bits.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { encode } from "@fedcomm/fedcomm/codec";
 *
 * assert.deepStrictEqual(encode({ a: 1 }), new Uint8Array([0x81, 0xa1, 0x61, 0x01]));
 * ```
 */
export function encode(value: unknown): Uint8Array {
  return encodeValue(value);
}

/**
 * Decodes one MessagePack value that fills `bytes` exactly. Binaries and
 * aligned tensors in the result are views into `bytes`: do not reuse it.
 * Strings are UTF-8, each invalid sequence becoming U+FFFD.
 *
 * The bytes come from a peer, so decoding is bounded (PROTOCOL.md §4.5):
 *
 * - arrays and maps nest at most `maxDepth` levels;
 * - every length is checked against the bytes left before anything is
 *   allocated (an array of n elements needs n bytes, a map of n entries 2n);
 * - every value built is charged in cost units, each about 8 bytes of memory
 *   and 10 to 60 ns of work, and the total may not exceed
 *   `min(costLimit, max(costFloor, costPerByte × bytes.byteLength))`. Containers are charged
 *   from their header, before they are allocated: an array 4 + 1 per
 *   element, a map 8 + 2 per entry, + 48 per entry beyond its 16th (a hash
 *   table in V8). Each of a map's first 16 keys costs 64 more the first time
 *   the body adds it after the same keys before it (V8 builds a hidden
 *   class): records that repeat their keys pay it once. Then a string of n
 *   ≥ 2 bytes costs 2 + n/4 (a map key of up to 32 bytes nothing more), a
 *   float or a 32/64-bit integer 2, a bigint 3, a binary or a tensor 13, an
 *   `NdArray` 8 more, a tensor copied for alignment 1 per 8 bytes, a `Date`
 *   12, other extensions 17; small integers, nil and booleans nothing.
 *
 * With the defaults a body of N bytes makes the decoder allocate at most
 * about 20 N bytes of heap (24 N of resident memory measured in the worst
 * case), or 32 MiB for a small body, and never more than about 128 MiB (the
 * `costLimit`); tensors, numbers, strings and records stay far below the
 * bound.
 *
 * @param bytes The encoded value.
 * @param options The client id to name in an error, and the limits.
 * @returns The decoded value.
 * @throws {ProtocolError} If the bytes are not exactly one valid MessagePack
 * value, hold an invalid numpy map or a forbidden map key, or exceed a limit.
 * @throws {TypeError} If `bytes` is not a `Uint8Array` or a limit is not a number.
 * @throws {RangeError} If `maxDepth` is not an integer from 1 to 1000 or a cost
 * option is negative.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { decode, encode } from "@fedcomm/fedcomm/codec";
 *
 * const value = decode(encode({ w: new Float32Array([0.5, 1.5]) }));
 * assert.deepStrictEqual(value, { w: new Float32Array([0.5, 1.5]) });
 *
 * // 101 nested one-element arrays: one level more than the default limit.
 * const deep = new Uint8Array(102).fill(0x91);
 * deep[101] = 0xc0;
 * assert.throws(() => decode(deep, { clientId: 7 }), {
 *   name: "ProtocolError",
 *   clientId: 7,
 *   message: 'Malformed MessagePack: nested deeper than "100" levels',
 * });
 * let nested: unknown = null;
 * for (let i = 0; i < 101; i++) nested = [nested];
 * assert.deepStrictEqual(decode(deep, { maxDepth: 101 }), nested);
 * ```
 */
export function decode(bytes: Uint8Array, options?: DecodeOptions): unknown {
  return decodeBounded(bytes, options);
}
