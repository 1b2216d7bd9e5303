/**
 * The MessagePack reader behind `decode()` in `codec.ts`, bounded so that no
 * body a peer sends can exhaust memory or hold the event loop for long
 * (PROTOCOL.md §4.5): a recursive descent no deeper than `maxDepth`
 * containers, every length checked against the bytes left before anything is
 * allocated, and every value built charged against a budget of cost units
 * proportional to the body's length. numpy maps are recognised as they
 * complete, so there is no second pass over the result.
 *
 * @module
 */

import { ExtData } from "@msgpack/msgpack";
import { MessageTooLargeError, ProtocolError } from "../errors.ts";
import { fromNumpyMap, NdArray } from "../tensor.ts";
import { EXT_REFERENCE } from "./encoder.ts";
import type { DecodeOptions } from "../types.ts";
import {
  ARRAY_UNITS,
  BIGINT_UNITS,
  budgetOf,
  DATE_UNITS,
  DEFAULT_MAX_DEPTH,
  ENTRY_UNITS,
  EXT_UNITS,
  LARGE_ENTRY_UNITS,
  MAP_UNITS,
  maxDepthOf,
  NDARRAY_UNITS,
  NEW_KEY_UNITS,
  NUMBER_UNITS,
  SMALL_MAP,
  stringUnits,
  VIEW_UNITS,
} from "./decode_limits.ts";
import { hashBytes, keyType, lowerFirst, text } from "./decode_text.ts";

const KEY_CACHE_MAX_LENGTH = 32; // longer keys are not cached
const KEY_CACHE_SLOTS = 4096; // 2 ** (32 - 20): a hash's top 12 bits
const SEQUENCE_SLOTS = 65536; // 2 ** (32 - 16): a hash's top 16 bits

const EMPTY = new Uint8Array(0);
const EMPTY_VIEW = new DataView(EMPTY.buffer);
const TWO_32 = 2 ** 32;
// The key cache: each slot's key bytes, length (0: empty) and string.
const keyBytes = new Uint8Array(KEY_CACHE_SLOTS * KEY_CACHE_MAX_LENGTH);
const keyLengths = new Uint8Array(KEY_CACHE_SLOTS);
const keyStrings: string[] = new Array<string>(KEY_CACHE_SLOTS).fill("");
// Key sequences seen: hash of (keys before, key), and the decode that stored it.
const sequenceHashes = new Int32Array(SEQUENCE_SLOTS);
const sequenceUses = new Uint32Array(SEQUENCE_SLOTS);
let generation = 0;

/** One decode's state; reused, reentrant only through a fresh instance. */
class BoundedDecoder {
  #bytes: Uint8Array = EMPTY;
  #view: DataView = EMPTY_VIEW;
  #pos = 0;
  #end = 0;
  #maxDepth = DEFAULT_MAX_DEPTH;
  #cost = 0;
  #budget = 0;
  #clientId: number | undefined;
  /** The hash of the last key read. */
  #keyHash = 0;
  /** Key sequences this body used that a collision evicted from the table, if any. */
  #evicted: Set<number> | undefined;
  #busy = false;
  /** In a long message's skeleton: allocates the buffer a reference stands for. */
  #references: ((length: number) => Uint8Array) | undefined;
  /** The buffers references became in this decode. */
  #referenced: Set<ArrayBufferLike> | undefined;

  /**
   * Decodes a long message's skeleton (PROTOCOL.md §8.8): as `decode`, each
   * reference (ext 127 with 8 bytes) becoming the buffer `allocate` gives
   * for its length, to be filled by the parts that follow.
   */
  skeleton(
    bytes: Uint8Array,
    options: DecodeOptions | undefined,
    allocate: (length: number) => Uint8Array,
  ): unknown {
    if (this.#busy) return new BoundedDecoder().skeleton(bytes, options, allocate);
    this.#references = allocate;
    this.#referenced = new Set();
    try {
      return this.decode(bytes, options);
    } finally {
      this.#references = undefined;
      this.#referenced = undefined;
    }
  }

  /** Decodes the one value that fills `bytes` (see decodeBounded). */
  decode(bytes: Uint8Array, options: DecodeOptions | undefined): unknown {
    if (this.#busy) return new BoundedDecoder().decode(bytes, options);
    const maxDepth = maxDepthOf(options);
    const budget = budgetOf(options, bytes.byteLength);
    this.#busy = true;
    try {
      this.#bytes = bytes;
      this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      this.#pos = 0;
      this.#end = bytes.byteLength;
      this.#maxDepth = maxDepth;
      this.#cost = 0;
      this.#budget = budget;
      this.#clientId = options?.clientId;
      if (++generation > 0xffffffff) {
        generation = 1;
        sequenceUses.fill(0);
      }
      const value = this.#value(0);
      if (this.#pos !== this.#end) {
        throw this.#error(`"${this.#end - this.#pos}" extra bytes after the value`);
      }
      return value;
    } catch (error) {
      if (error instanceof ProtocolError || error instanceof MessageTooLargeError) throw error;
      // Nothing else is expected; it is still the peer's bytes that caused it.
      const detail = error instanceof Error ? error.message : String(error);
      throw this.#error(lowerFirst(detail), error);
    } finally {
      // Do not pin the body until the next decode.
      this.#bytes = EMPTY;
      this.#view = EMPTY_VIEW;
      this.#evicted = undefined;
      this.#busy = false;
    }
  }

  /** A ProtocolError about the body, naming the client. */
  #error(detail: string, cause?: unknown): ProtocolError {
    const options = { clientId: this.#clientId, cause };
    return new ProtocolError(`Malformed MessagePack: ${detail}`, options);
  }

  /** Adds `units` to the cost; throws once the budget is exceeded. */
  #charge(units: number): void {
    if ((this.#cost += units) > this.#budget) {
      throw this.#error(
        `decoding costs more than the budget of "${this.#budget}" units for "${this.#end}" bytes`,
      );
    }
  }

  /** Moves past a `size`-byte field and returns its offset. */
  #take(size: number): number {
    const pos = this.#pos;
    if (size > this.#end - pos) {
      throw this.#error(`truncated: "${size}" bytes needed at offset "${pos}"`);
    }
    this.#pos = pos + size;
    return pos;
  }

  /** A length field of 1, 2 or 4 bytes (`width` 0, 1 or 2). */
  #length(width: number): number {
    if (width === 0) return this.#bytes[this.#take(1)];
    return width === 1 ? this.#view.getUint16(this.#take(2)) : this.#view.getUint32(this.#take(4));
  }

  #value(depth: number): unknown {
    const pos = this.#take(1);
    const head = this.#bytes[pos];
    if (head < 0x80) return head;
    if (head >= 0xe0) return head - 0x100;
    if (head < 0x90) return this.#map(head & 0x0f, depth);
    if (head < 0xa0) return this.#array(head & 0x0f, depth);
    if (head < 0xc0) return this.#string(head & 0x1f);
    const view = this.#view;
    if (head === 0xc0) return null;
    if (head === 0xc2) return false;
    if (head === 0xc3) return true;
    if (head === 0xcb) {
      this.#charge(NUMBER_UNITS);
      return view.getFloat64(this.#take(8));
    }
    if (head === 0xcc) return this.#bytes[this.#take(1)];
    if (head === 0xcd) return view.getUint16(this.#take(2));
    if (head === 0xd0) return view.getInt8(this.#take(1));
    if (head === 0xd1) return view.getInt16(this.#take(2));
    if (head === 0xca || head === 0xce || head === 0xd2) {
      this.#charge(NUMBER_UNITS);
      const at = this.#take(4);
      return head === 0xca
        ? view.getFloat32(at)
        : head === 0xce
        ? view.getUint32(at)
        : view.getInt32(at);
    }
    if (head === 0xcf || head === 0xd3) return this.#int64(head === 0xd3);
    if (head >= 0xd9 && head <= 0xdb) return this.#string(this.#length(head - 0xd9));
    if (head >= 0xc4 && head <= 0xc6) return this.#binary(this.#length(head - 0xc4));
    if (head === 0xdc || head === 0xdd) return this.#array(this.#length(head - 0xdb), depth);
    if (head === 0xde || head === 0xdf) return this.#map(this.#length(head - 0xdd), depth);
    if (head >= 0xd4 && head <= 0xd8) return this.#ext(1 << (head - 0xd4));
    if (head >= 0xc7 && head <= 0xc9) return this.#ext(this.#length(head - 0xc7));
    throw this.#error(`invalid type byte "0xc1" at offset "${pos}"`);
  }

  /** An int 64 or uint 64: a number when it is a safe integer, else a bigint. */
  #int64(signed: boolean): number | bigint {
    const pos = this.#take(8);
    const view = this.#view;
    const high = signed ? view.getInt32(pos) : view.getUint32(pos);
    const low = view.getUint32(pos + 4);
    // Within ±2⁵³ the sum is exact; of those only -2⁵³ itself is not safe.
    if (high >= -0x200000 && high < 0x200000 && (high !== -0x200000 || low !== 0)) {
      this.#charge(NUMBER_UNITS);
      return high * TWO_32 + low;
    }
    this.#charge(BIGINT_UNITS);
    return signed ? view.getBigInt64(pos) : view.getBigUint64(pos);
  }

  #array(length: number, depth: number): unknown[] {
    if (depth >= this.#maxDepth) throw this.#error(`nested deeper than "${this.#maxDepth}" levels`);
    const left = this.#end - this.#pos;
    if (length > left) throw this.#error(`array of "${length}" elements in "${left}" bytes`);
    this.#charge(ARRAY_UNITS + length);
    const array = new Array(length);
    for (let i = 0; i < length; i++) array[i] = this.#value(depth + 1);
    return array;
  }

  #map(size: number, depth: number): unknown {
    if (depth >= this.#maxDepth) throw this.#error(`nested deeper than "${this.#maxDepth}" levels`);
    const left = this.#end - this.#pos;
    if (size > left / 2) throw this.#error(`map of "${size}" entries in "${left}" bytes`);
    const large = size - SMALL_MAP;
    this.#charge(MAP_UNITS + ENTRY_UNITS * size + (large > 0 ? LARGE_ENTRY_UNITS * large : 0));
    const map: Record<string, unknown> = {};
    let sequence = 0;
    let nd = false;
    let data = false;
    for (let i = 0; i < size; i++) {
      const key = this.#key();
      if (i < SMALL_MAP) {
        // The keys so far, as V8 sees them: a hidden class.
        sequence = Math.imul(sequence ^ this.#keyHash, 0x5bd1e995);
        sequence ^= sequence >>> 15;
        this.#sequence(sequence);
      }
      if (key === "nd") {
        const value = this.#value(depth + 1);
        nd = typeof value === "boolean";
        map[key] = value;
      } else if (key === "data") {
        // A numpy map's data is a bin on the wire, not a value that became a Uint8Array.
        const head = this.#bytes[this.#pos];
        data = head === 0xc4 || head === 0xc5 || head === 0xc6 || this.#isReference();
        map[key] = this.#value(depth + 1);
      } else {
        map[key] = this.#value(depth + 1);
      }
    }
    return nd && data ? this.#numpy(map) : map;
  }

  /** Charges a key sequence the first time the body uses it. */
  #sequence(hash: number): void {
    const slot = hash >>> 16;
    if (sequenceUses[slot] === generation) {
      if (sequenceHashes[slot] === hash) return;
      // A collision: keep the evicted sequence known to this body.
      (this.#evicted ??= new Set()).add(sequenceHashes[slot]);
    }
    if (this.#evicted === undefined || !this.#evicted.has(hash)) this.#charge(NEW_KEY_UNITS);
    sequenceHashes[slot] = hash;
    sequenceUses[slot] = generation;
  }

  /** A map key as a property name (PROTOCOL.md §4.2); sets #keyHash. */
  #key(): string | number {
    const pos = this.#take(1);
    const head = this.#bytes[pos];
    let key: string | number;
    if (head >= 0xa0 && head < 0xc0) key = this.#keyString(head & 0x1f);
    else if (head >= 0xd9 && head <= 0xdb) key = this.#keyString(this.#length(head - 0xd9));
    else if (head >= 0xc4 && head <= 0xc6) key = this.#keyString(this.#length(head - 0xc4));
    else if (head < 0x80 || head >= 0xe0 || (head >= 0xca && head <= 0xd3)) {
      this.#pos = pos;
      const number = this.#value(0) as number | bigint;
      this.#keyHash = ~hashBytes(this.#bytes, pos, this.#pos);
      return typeof number === "bigint" ? String(number) : number;
    } else if (head === 0xc1) throw this.#error(`invalid type byte "0xc1" at offset "${pos}"`);
    else throw this.#error(`map key of type "${keyType(head)}" at offset "${pos}"`);
    if (key === "__proto__") throw this.#error(`map key "__proto__" at offset "${pos}"`);
    return key;
  }

  /** A str or bin key as a string, through the key cache when short; sets #keyHash. */
  #keyString(length: number): string {
    const pos = this.#take(length);
    const bytes = this.#bytes;
    const hash = this.#keyHash = hashBytes(bytes, pos, pos + length);
    if (length > KEY_CACHE_MAX_LENGTH || length === 0) {
      this.#charge(stringUnits(length));
      return text(bytes, pos, length);
    }
    // The entry's units cover a short key's string.
    const slot = hash >>> 20;
    const base = slot * KEY_CACHE_MAX_LENGTH;
    if (keyLengths[slot] === length) {
      let i = 0;
      while (i < length && keyBytes[base + i] === bytes[pos + i]) i++;
      if (i === length) return keyStrings[slot];
    }
    const key = text(bytes, pos, length);
    keyBytes.set(bytes.subarray(pos, pos + length), base);
    keyLengths[slot] = length;
    keyStrings[slot] = key;
    return key;
  }

  #string(length: number): string {
    const pos = this.#take(length);
    this.#charge(stringUnits(length));
    return text(this.#bytes, pos, length);
  }

  #binary(length: number): Uint8Array {
    const pos = this.#take(length);
    this.#charge(VIEW_UNITS);
    return new Uint8Array(this.#bytes.buffer, this.#bytes.byteOffset + pos, length);
  }

  /** Whether a reference (`d7 7f`) starts at the current position of a skeleton. */
  #isReference(): boolean {
    const pos = this.#pos;
    return this.#references !== undefined && this.#bytes[pos] === 0xd7 &&
      this.#bytes[pos + 1] === EXT_REFERENCE;
  }

  /** An extension of `length` data bytes after its type byte: a Date for type −1. */
  #ext(length: number): Date | ExtData | Uint8Array {
    const type = this.#view.getInt8(this.#take(1));
    const pos = this.#take(length);
    if (type === EXT_REFERENCE && length === 8 && this.#references !== undefined) {
      const high = this.#view.getUint32(pos);
      const size = high * TWO_32 + this.#view.getUint32(pos + 4);
      if (size === 0 || !Number.isSafeInteger(size)) {
        throw this.#error(`reference of "${size}" bytes at offset "${pos - 2}"`);
      }
      this.#charge(VIEW_UNITS);
      const buffer = this.#references(size);
      this.#referenced!.add(buffer.buffer);
      return buffer;
    }
    if (type !== -1) {
      this.#charge(EXT_UNITS);
      return new ExtData(
        type,
        new Uint8Array(this.#bytes.buffer, this.#bytes.byteOffset + pos, length),
      );
    }
    // The timestamp extension, read as `@msgpack/msgpack` reads it.
    this.#charge(DATE_UNITS);
    const view = this.#view;
    let seconds: number;
    let nanoseconds = 0;
    if (length === 4) seconds = view.getUint32(pos);
    else if (length === 8) {
      const high = view.getUint32(pos);
      seconds = (high & 0x3) * TWO_32 + view.getUint32(pos + 4);
      nanoseconds = high >>> 2;
    } else if (length === 12) {
      nanoseconds = view.getUint32(pos);
      seconds = view.getInt32(pos + 4) * TWO_32 + view.getUint32(pos + 8);
    } else throw this.#error(`timestamp of "${length}" bytes, not 4, 8 or 12`);
    return new Date(seconds * 1e3 + nanoseconds / 1e6);
  }

  /** Turns a numpy map (PROTOCOL.md §5) into its typed array, NdArray or scalar. */
  #numpy(map: Record<string, unknown>): unknown {
    let value: ReturnType<typeof fromNumpyMap>;
    const data = map.data as Uint8Array;
    const referenced = this.#referenced?.has(data.buffer) ?? false;
    if (referenced && map.nd !== true) {
      // A scalar is read at once, before the parts fill its reference.
      throw this.#error(`a numpy scalar's data is a reference`);
    }
    try {
      value = fromNumpyMap(map);
    } catch (error) {
      if (!(error instanceof TypeError)) throw error;
      throw this.#error(lowerFirst(error.message), error);
    }
    if (typeof value === "object") {
      const array = value instanceof NdArray ? value.data : value;
      // Unaligned data was copied: that memory is charged too.
      const inPlace = array.buffer === this.#bytes.buffer || referenced;
      const copied = inPlace ? 0 : Math.ceil(array.byteLength / 8);
      this.#charge(VIEW_UNITS + copied + (array === value ? 0 : NDARRAY_UNITS));
    }
    return value;
  }
}

const sharedDecoder = new BoundedDecoder();

/**
 * Decodes a long message's skeleton (PROTOCOL.md §8.8) within the limits of
 * `options`: each reference becomes the buffer `allocate` returns for its
 * length (a numpy map's data: the memory of its array), filled later by the
 * message's parts.
 *
 * @param bytes The skeleton.
 * @param options The client id for errors, the depth limit and the cost budget.
 * @param allocate Makes the buffer of a reference; may throw (a size limit).
 * @returns The value, its references not yet filled.
 * @throws {ProtocolError} If the skeleton is malformed or exceeds a limit.
 * @throws {MessageTooLargeError} If `allocate` refuses a reference.
 */
export function decodeSkeleton(
  bytes: Uint8Array,
  options: DecodeOptions | undefined,
  allocate: (length: number) => Uint8Array,
): unknown {
  return sharedDecoder.skeleton(bytes, options, allocate);
}

/**
 * Decodes the one MessagePack value that fills `bytes`, within the limits of
 * `options` (see `decode()` in `codec.ts` and PROTOCOL.md §4.5).
 *
 * @param bytes The body.
 * @param options The client id for errors, the depth limit and the cost budget.
 * @returns The value.
 * @throws {TypeError} If `bytes` is not a Uint8Array or a limit is not a number.
 * @throws {RangeError} If a limit option is out of range.
 * @throws {ProtocolError} If the body is malformed or exceeds a limit.
 */
export function decodeBounded(bytes: Uint8Array, options?: DecodeOptions): unknown {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`Cannot decode: type "${typeof bytes}" is not a Uint8Array`);
  }
  return sharedDecoder.decode(bytes, options);
}
