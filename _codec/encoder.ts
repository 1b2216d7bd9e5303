/**
 * The chunked MessagePack writer (its entry points: `encode.ts`): standard
 * MessagePack, byte for byte what `@msgpack/msgpack` writes for ordinary
 * values, typed arrays in the msgpack-numpy convention with 8-byte aligned
 * data, large binaries passed through as views; and a long message's
 * skeleton, its large binaries as references (PROTOCOL.md §8.8).
 *
 * @module
 */

import { encodeTimestampExtension, EXT_TIMESTAMP, ExtData } from "@msgpack/msgpack";
import { dtypeOf, NdArray, type TypedArray } from "../tensor.ts";
import type { EncodeChunksOptions, EncodedChunks } from "../types.ts";

/** Binaries of at least this many bytes are passed through as chunks, not copied. */
export const EXTERNAL_MIN_BYTES: number = 64 * 1024;
/**
 * How deep values may nest before encoding refuses them (a cycle would
 * recurse forever). It matches the decoder's default `maxDepth`, counting a
 * typed array's `shape` as one level below its map, so whatever encodes
 * decodes with the default limits.
 */
export const MAX_DEPTH: number = 100;
/** numpy data is aligned to this many bytes from the start of the encoded value. */
const TENSOR_ALIGN = 8;
const SCRATCH_BYTES = 64 * 1024;
const TWO_32 = 2 ** 32;

/** The extension type of an out-of-band reference in a long message's skeleton (PROTOCOL.md §8.8). */
export const EXT_REFERENCE = 127;

/** A binary of 4 GiB or more in a plain encode: a long message can hold it (`encode_frame.ts`). */
export class HugeBinaryError extends RangeError {}

/** A long message's skeleton: the value with references, and the binaries they stand for. */
export interface Skeleton {
  /** The skeleton's chunks, the first starting with the reserved bytes. */
  readonly chunks: Uint8Array[];
  /** Bytes of the skeleton, without the reserved bytes. */
  readonly byteLength: number;
  /** The binaries sent out of band, in the order of their references. */
  readonly refs: Uint8Array[];
}

const textEncoder = new TextEncoder();
const NUMPY_KEYS = ["nd", "type", "kind", "shape", "data"].map((k) => textEncoder.encode(k));
const DTYPE_BYTES: Record<string, Uint8Array> = {};

/** The chunked MessagePack writer behind `encodeChunks()`; one per caller, reused. */
export class ChunkEncoder {
  #buf = new Uint8Array(SCRATCH_BYTES);
  #view = new DataView(this.#buf.buffer);
  #pos = 0;
  /** Bytes already handed out in earlier chunks, minus the reserve: body offset = #emitted + #pos. */
  #emitted = 0;
  #chunks: Uint8Array[] = [];
  #borrowed = false;
  #busy = false;
  /** In a skeleton: the binaries sent out of band so far, and the least size sent so. */
  #refs: Uint8Array[] | undefined;
  #refMinBytes = EXTERNAL_MIN_BYTES;

  /**
   * Encodes `value` as a long message's skeleton (PROTOCOL.md §8.8): each
   * binary of at least `refMinBytes` becomes a reference.
   *
   * @param value The value.
   * @param reserve Zero bytes to leave in front (frame header and prefix).
   * @param refMinBytes The least size of a binary sent out of band (at least 1).
   * @returns The skeleton and its references.
   */
  skeleton(value: unknown, reserve: number, refMinBytes = EXTERNAL_MIN_BYTES): Skeleton {
    if (this.#busy) return new ChunkEncoder().skeleton(value, reserve, refMinBytes);
    const refs: Uint8Array[] = [];
    this.#refs = refs;
    this.#refMinBytes = Math.max(1, refMinBytes);
    try {
      const { chunks, byteLength } = this.encode(value, { reserve });
      return { chunks, byteLength, refs };
    } finally {
      this.#refs = undefined;
    }
  }

  /**
   * Encodes `value`. See `encodeChunks()` in `codec.ts`.
   *
   * @param value The value to encode.
   * @param options Where to reserve room for a header.
   * @returns The chunks.
   */
  encode(value: unknown, options?: EncodeChunksOptions): EncodedChunks {
    if (this.#busy) return new ChunkEncoder().encode(value, options);
    const reserve = options?.reserve ?? 0;
    this.#busy = true;
    try {
      this.#chunks = [];
      this.#borrowed = false;
      this.#pos = 0;
      this.#emitted = -reserve;
      this.#ensure(reserve);
      this.#buf.fill(0, 0, reserve);
      this.#pos = reserve;
      this.#value(value, 0);
      const transient = options?.transient === true && this.#pos > 0;
      if (transient) {
        this.#chunks.push(this.#buf.subarray(0, this.#pos));
        this.#emitted += this.#pos;
        this.#pos = 0;
      } else {
        this.#cut();
      }
      return {
        chunks: this.#chunks,
        byteLength: this.#emitted,
        borrowed: this.#borrowed,
        transient,
      };
    } finally {
      this.#busy = false;
      this.#chunks = [];
      if (this.#buf.byteLength > 16 * SCRATCH_BYTES) this.#grow(SCRATCH_BYTES, true);
    }
  }

  #cut(): void {
    if (this.#pos === 0) return;
    this.#chunks.push(this.#buf.slice(0, this.#pos));
    this.#emitted += this.#pos;
    this.#pos = 0;
  }

  #grow(size: number, shrink = false): void {
    const buf = new Uint8Array(size);
    if (!shrink) buf.set(this.#buf.subarray(0, this.#pos));
    this.#buf = buf;
    this.#view = new DataView(buf.buffer);
  }

  #ensure(extra: number): void {
    const need = this.#pos + extra;
    if (need > this.#buf.byteLength) this.#grow(Math.max(need, this.#buf.byteLength * 2));
  }

  #u8(b: number): void {
    this.#ensure(1);
    this.#buf[this.#pos++] = b;
  }

  #u8u8(b: number, v: number): void {
    this.#ensure(2);
    this.#buf[this.#pos++] = b;
    this.#buf[this.#pos++] = v;
  }

  #u8u16(b: number, v: number): void {
    this.#ensure(3);
    this.#buf[this.#pos] = b;
    this.#view.setUint16(this.#pos + 1, v);
    this.#pos += 3;
  }

  #u8u32(b: number, v: number): void {
    this.#ensure(5);
    this.#buf[this.#pos] = b;
    this.#view.setUint32(this.#pos + 1, v);
    this.#pos += 5;
  }

  #value(v: unknown, depth: number): void {
    switch (typeof v) {
      case "number":
        return this.#number(v);
      case "string":
        return this.#string(v);
      case "boolean":
        return this.#u8(v ? 0xc3 : 0xc2);
      case "undefined":
        return this.#u8(0xc0);
      case "bigint":
        return this.#bigint(v);
      case "object":
        if (v === null) return this.#u8(0xc0);
        if (depth >= MAX_DEPTH) {
          throw new TypeError(
            `Cannot encode value: nested deeper than ${MAX_DEPTH} levels (a cycle?)`,
          );
        }
        return this.#object(v, depth + 1);
      default:
        throw new TypeError(`Cannot encode value: type "${typeof v}" has no MessagePack form`);
    }
  }

  #object(v: object, depth: number): void {
    if (Array.isArray(v)) {
      this.#header(v.length, 0x90, 16, 0xdc, 0xdd);
      for (const item of v) this.#value(item, depth);
    } else if (ArrayBuffer.isView(v)) {
      const dtype = dtypeOf(v);
      if (dtype === undefined || v instanceof Uint8Array || v instanceof Uint8ClampedArray) {
        this.#binary(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
      } else {
        this.#numpy(v as TypedArray, dtype, [(v as TypedArray).length], depth);
      }
    } else if (v instanceof ArrayBuffer) {
      this.#binary(new Uint8Array(v));
    } else if (v instanceof NdArray) {
      const dtype = dtypeOf(v.data);
      if (dtype === undefined) {
        throw new TypeError("Cannot encode NdArray: data is not a typed array");
      }
      this.#numpy(v.data, dtype, v.shape, depth);
    } else if (v instanceof Date) {
      // encodeTimestampExtension writes an invalid date as 1970: refuse it here.
      const data = Number.isNaN(v.getTime()) ? null : encodeTimestampExtension(v);
      if (data === null) throw new TypeError("Cannot encode Date: not a valid date");
      this.#ext(EXT_TIMESTAMP, data);
    } else if (v instanceof ExtData) {
      if (!(v.data instanceof Uint8Array)) {
        throw new TypeError("Cannot encode ExtData: data must be a Uint8Array");
      }
      if (this.#refs !== undefined && v.type === EXT_REFERENCE && v.data.byteLength === 8) {
        throw new TypeError(
          `Cannot encode ExtData: type "${EXT_REFERENCE}" with 8 bytes is a reference in a long message`,
        );
      }
      this.#ext(v.type, v.data);
    } else if (v instanceof Map) {
      this.#header(v.size, 0x80, 16, 0xde, 0xdf);
      for (const [key, item] of v) {
        this.#value(key, depth);
        this.#value(item, depth);
      }
    } else {
      const record = v as Record<string, unknown>;
      const keys = Object.keys(record);
      this.#header(keys.length, 0x80, 16, 0xde, 0xdf);
      for (const key of keys) {
        this.#string(key);
        this.#value(record[key], depth);
      }
    }
  }

  /** Writes an array or map header: fix form below `fixLimit`, else 16- or 32-bit. */
  #header(n: number, fix: number, fixLimit: number, h16: number, h32: number): void {
    if (n < fixLimit) this.#u8(fix + n);
    else if (n < 0x10000) this.#u8u16(h16, n);
    else this.#u8u32(h32, n);
  }

  #number(v: number): void {
    if (!Number.isSafeInteger(v)) {
      this.#ensure(9);
      this.#buf[this.#pos] = 0xcb;
      this.#view.setFloat64(this.#pos + 1, v);
      this.#pos += 9;
    } else if (v >= 0) {
      if (v < 0x80) this.#u8(v);
      else if (v < 0x100) this.#u8u8(0xcc, v);
      else if (v < 0x10000) this.#u8u16(0xcd, v);
      else if (v < TWO_32) this.#u8u32(0xce, v);
      else {
        this.#ensure(9);
        this.#buf[this.#pos] = 0xcf;
        this.#view.setUint32(this.#pos + 1, Math.floor(v / TWO_32));
        this.#view.setUint32(this.#pos + 5, v >>> 0);
        this.#pos += 9;
      }
    } else if (v >= -0x20) this.#u8(0xe0 | (v + 0x20));
    else if (v >= -0x80) this.#u8u8(0xd0, v & 0xff);
    else if (v >= -0x8000) this.#u8u16(0xd1, v & 0xffff);
    else if (v >= -0x80000000) this.#u8u32(0xd2, v >>> 0);
    else this.#int64(0xd3, BigInt(v));
  }

  #bigint(v: bigint): void {
    if (v >= 0n) {
      if (v >= 1n << 64n) throw new RangeError(`Cannot encode bigint: "${v}" exceeds 64 bits`);
      this.#int64(0xcf, v);
    } else {
      if (v < -(1n << 63n)) throw new RangeError(`Cannot encode bigint: "${v}" exceeds 64 bits`);
      this.#int64(0xd3, v);
    }
  }

  #int64(head: number, v: bigint): void {
    this.#ensure(9);
    this.#buf[this.#pos] = head;
    if (head === 0xcf) this.#view.setBigUint64(this.#pos + 1, v);
    else this.#view.setBigInt64(this.#pos + 1, v);
    this.#pos += 9;
  }

  #string(s: string): void {
    const length = s.length;
    if (length < 32) {
      // Short strings (map keys, tags) are mostly ASCII: a direct loop beats
      // encodeInto's call overhead several times over.
      this.#ensure(1 + length * 3);
      const buf = this.#buf;
      const start = this.#pos;
      let p = start + 1;
      for (let i = 0; i < length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) return this.#longString(s);
        buf[p++] = c;
      }
      buf[start] = 0xa0 | length;
      this.#pos = p;
      return;
    }
    this.#longString(s);
  }

  #longString(s: string): void {
    // Reserve the widest header the UTF-8 length could need, encode, then
    // move the bytes back if the real header is shorter.
    const max = s.length * 3;
    const reserved = max < 32 ? 1 : max < 0x100 ? 2 : max < 0x10000 ? 3 : 5;
    this.#ensure(reserved + max);
    const start = this.#pos;
    const { written } = textEncoder.encodeInto(s, this.#buf.subarray(start + reserved));
    const header = written < 32 ? 1 : written < 0x100 ? 2 : written < 0x10000 ? 3 : 5;
    if (header !== reserved) {
      this.#buf.copyWithin(start + header, start + reserved, start + reserved + written);
    }
    if (header === 1) this.#buf[start] = 0xa0 | written;
    else if (header === 2) {
      this.#buf[start] = 0xd9;
      this.#buf[start + 1] = written;
    } else if (header === 3) {
      this.#buf[start] = 0xda;
      this.#view.setUint16(start + 1, written);
    } else {
      this.#buf[start] = 0xdb;
      this.#view.setUint32(start + 1, written);
    }
    this.#pos = start + header + written;
  }

  #binary(bytes: Uint8Array): void {
    const n = bytes.byteLength;
    if (this.#refs !== undefined && n >= this.#refMinBytes) return this.#reference(bytes);
    if (n < 0x100) this.#u8u8(0xc4, n);
    else if (n < 0x10000) this.#u8u16(0xc5, n);
    else if (n < TWO_32) this.#u8u32(0xc6, n);
    else {throw new HugeBinaryError(
        `Cannot encode binary: ${n} bytes exceeds the 4 GiB MessagePack limit`,
      );}
    this.#bytes(bytes);
  }

  /** A reference to a binary sent out of band: `d7 7f` and its length as a u64. */
  #reference(bytes: Uint8Array): void {
    this.#ensure(10);
    this.#buf[this.#pos] = 0xd7;
    this.#buf[this.#pos + 1] = EXT_REFERENCE;
    this.#view.setUint32(this.#pos + 2, Math.floor(bytes.byteLength / TWO_32));
    this.#view.setUint32(this.#pos + 6, bytes.byteLength >>> 0);
    this.#pos += 10;
    this.#refs!.push(bytes);
    this.#borrowed = true;
  }

  /** Appends raw bytes: copied when small, passed through as a chunk when large. */
  #bytes(bytes: Uint8Array): void {
    if (bytes.byteLength >= EXTERNAL_MIN_BYTES) {
      this.#cut();
      this.#chunks.push(bytes);
      this.#emitted += bytes.byteLength;
      this.#borrowed = true;
    } else {
      this.#ensure(bytes.byteLength);
      this.#buf.set(bytes, this.#pos);
      this.#pos += bytes.byteLength;
    }
  }

  #ext(type: number, data: Uint8Array): void {
    const n = data.byteLength;
    const fixed = [1, 2, 4, 8, 16].indexOf(n);
    if (fixed >= 0) this.#u8(0xd4 + fixed);
    else if (n < 0x100) this.#u8u8(0xc7, n);
    else if (n < 0x10000) this.#u8u16(0xc8, n);
    else this.#u8u32(0xc9, n);
    this.#u8(type & 0xff);
    this.#bytes(data);
  }

  /** Writes a key of the numpy map as bin, 16-bit length when `wide` (one byte of padding). */
  #numpyKey(index: number, wide: boolean): void {
    const key = NUMPY_KEYS[index];
    if (wide) this.#u8u16(0xc5, key.length);
    else this.#u8u8(0xc4, key.length);
    this.#bytes(key);
  }

  /**
   * Writes `{nd, type, kind, shape, data}` as msgpack-numpy does (keys as
   * bin), choosing header widths so that the data starts 8-byte aligned.
   */
  #numpy(data: TypedArray, dtype: string, shape: readonly number[], depth: number): void {
    if (depth >= MAX_DEPTH) {
      throw new TypeError(
        `Cannot encode value: nested deeper than ${MAX_DEPTH} levels (a typed array's shape is a level)`,
      );
    }
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    // Out of band (a long message's reference), the data has no alignment to keep.
    const reference = this.#refs !== undefined && bytes.byteLength >= this.#refMinBytes;
    if (!reference && data.byteLength >= TWO_32) {
      throw new HugeBinaryError(
        `Cannot encode array: ${data.byteLength} bytes exceeds the 4 GiB MessagePack limit`,
      );
    }
    let shapeBytes = shape.length < 16 ? 1 : shape.length < 0x10000 ? 3 : 5;
    for (const d of shape) shapeBytes += intBytes(d);
    // Minimal layout: map(1) nd(4+1) type(6+1+len) kind(6+2) shape(7+shape) data(6) bin32 header(5)
    const minimal = 1 + 5 + 7 + dtype.length + 8 + 7 + shapeBytes + 6 + 5;
    const pad = reference
      ? 0
      : (TENSOR_ALIGN - (this.#emitted + this.#pos + minimal) % TENSOR_ALIGN) % TENSOR_ALIGN;
    const wideType = pad >= 4;
    const widen = pad % 4; // keys nd, type, kind written with a 16-bit length, one byte each
    this.#u8(0x85);
    this.#numpyKey(0, widen >= 1);
    this.#u8(0xc3);
    this.#numpyKey(1, widen >= 2);
    if (wideType) this.#u8u32(0xdb, dtype.length);
    else this.#u8(0xa0 | dtype.length);
    this.#bytes(DTYPE_BYTES[dtype] ??= textEncoder.encode(dtype));
    this.#numpyKey(2, widen >= 3);
    this.#u8u8(0xc4, 0);
    this.#numpyKey(3, false);
    this.#header(shape.length, 0x90, 16, 0xdc, 0xdd);
    for (const d of shape) this.#number(d);
    this.#numpyKey(4, false);
    if (reference) return this.#reference(bytes);
    this.#u8u32(0xc6, data.byteLength);
    this.#bytes(bytes);
  }
}

/** The bytes `#number` writes for a non-negative safe integer (a dimension). */
function intBytes(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < TWO_32 ? 5 : 9;
}
