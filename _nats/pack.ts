/**
 * Tensors as one byte stream of any length, for the object store: a model, a
 * partial sum, a roster. No MessagePack value holds the tensors (MessagePack
 * binaries stop at 4 GiB), so a model of any size goes through:
 *
 * ```text
 * "FCP1" | u32 LE header length | header (MessagePack) | tensor bytes, in header order
 * header = { meta: {...}, tensors: [[name, "float32" | "float64", shape], ...] }
 * ```
 *
 * Tensor bytes are little-endian (the platform's order on every machine Deno
 * runs on). {@linkcode packParts} returns views of the caller's arrays (no
 * copy); {@linkcode Unpacker} reads chunks straight into one array per tensor,
 * allocated once the header says its size and only within `maxBytes`.
 *
 * @module
 */

import { decode, encode } from "../codec.ts";
import { NdArray } from "../tensor.ts";
import { type Tensor, tensorData, tensorShape, type Weights } from "../_fl/weights.ts";

const MAGIC = [0x46, 0x43, 0x50, 0x31]; // "FCP1"
const PREFIX_BYTES = 8;
/** The largest header accepted (names, shapes, metadata): 64 MiB. */
export const MAX_HEADER_BYTES = 64 * 1024 * 1024;
/** Views of at most this many bytes each, so that no chunk of the stream is huge. */
const SLICE_BYTES = 16 * 1024 * 1024;

/** Metadata carried in a pack's header: small MessagePack values. */
export type Meta = Record<string, unknown>;

/** What a pack holds. */
export interface Packed {
  /** The header's metadata. */
  readonly meta: Meta;
  /** The tensors, in order: rank 1 as typed arrays, any other rank as `NdArray`s. */
  readonly tensors: Weights;
}

/** A pack as the parts to write: views of the caller's memory after the header. */
export interface PackParts {
  /** The prefix and header, then each tensor's bytes in slices of at most 16 MiB. */
  readonly parts: Uint8Array[];
  /** Their total length. */
  readonly size: number;
}

const DTYPES = { float32: Float32Array, float64: Float64Array } as const;
type DtypeName = keyof typeof DTYPES;

function dtypeName(data: Float32Array | Float64Array): DtypeName {
  return data instanceof Float64Array ? "float64" : "float32";
}

/**
 * Lays out `meta` and `tensors` as a pack, without copying the tensors.
 *
 * @param meta Small metadata (MessagePack values).
 * @param tensors The tensors (float32 or float64).
 * @returns The parts and their length.
 * @throws {TypeError} If a tensor is not a float tensor or `meta` has no MessagePack form.
 * @throws {RangeError} If the header is over 64 MiB.
 */
export function packParts(meta: Meta, tensors: Weights = {}): PackParts {
  const table: [string, DtypeName, number[]][] = [];
  const views: Uint8Array[] = [];
  for (const [name, tensor] of Object.entries(tensors)) {
    const data = tensorData(tensor);
    if (!(data instanceof Float32Array || data instanceof Float64Array)) {
      throw new TypeError(`Pack has an invalid tensor: "${name}" is not a float tensor`);
    }
    table.push([name, dtypeName(data), [...tensorShape(tensor)]]);
    for (let at = 0; at < data.byteLength; at += SLICE_BYTES) {
      const length = Math.min(SLICE_BYTES, data.byteLength - at);
      views.push(new Uint8Array(data.buffer, data.byteOffset + at, length));
    }
  }
  const header = encode({ meta, tensors: table });
  if (header.byteLength > MAX_HEADER_BYTES) {
    throw new RangeError(
      `Pack header is too large: "${header.byteLength}" bytes, at most ${MAX_HEADER_BYTES}`,
    );
  }
  const prefix = new Uint8Array(PREFIX_BYTES + header.byteLength);
  prefix.set(MAGIC);
  new DataView(prefix.buffer).setUint32(4, header.byteLength, true);
  prefix.set(header, PREFIX_BYTES);
  const size = views.reduce((n, v) => n + v.byteLength, prefix.byteLength);
  return { parts: [prefix, ...views], size };
}

/** One tensor being filled: its array's bytes, and how many are in. */
interface Slot {
  readonly name: string;
  readonly tensor: Tensor;
  readonly bytes: Uint8Array;
}

/** A pack that is not what it says: truncated, too long, or a malformed header. */
export class PackError extends TypeError {
  /**
   * @param message What is wrong.
   */
  constructor(message: string) {
    super(message);
    this.name = "PackError";
  }
}

/**
 * Reads a pack from its chunks, in order, straight into one array per tensor.
 *
 * @example
 * ```ts ignore
 * const unpacker = new Unpacker(1 << 30);
 * for await (const chunk of stream) unpacker.push(chunk);
 * const { meta, tensors } = unpacker.finish();
 * ```
 */
export class Unpacker {
  readonly #maxBytes: number;
  #prefix = new Uint8Array(PREFIX_BYTES);
  #header: Uint8Array | undefined;
  #filled = 0; // bytes of the current part (prefix, header or slot) filled
  #slots: Slot[] | undefined;
  #slot = 0;
  #meta: Meta = {};

  /**
   * @param maxBytes The most tensor bytes the header may announce.
   */
  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  /**
   * Takes the next chunk of the pack.
   *
   * @param chunk Bytes; copied where they belong, not kept.
   * @throws {PackError} If the pack is malformed or longer than its header says.
   * @throws {RangeError} If the header announces more than `maxBytes` of tensors.
   */
  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.byteLength) {
      const target = this.#target();
      if (target === undefined) {
        throw new PackError("Pack is longer than its header says: bytes after the last tensor");
      }
      const n = Math.min(target.byteLength - this.#filled, chunk.byteLength - at);
      target.set(chunk.subarray(at, at + n), this.#filled);
      this.#filled += n;
      at += n;
      if (this.#filled === target.byteLength) this.#advance();
    }
  }

  /** Where the next bytes go, or `undefined` once every tensor is full. */
  #target(): Uint8Array | undefined {
    if (this.#slots === undefined) return this.#header ?? this.#prefix;
    return this.#slots[this.#slot]?.bytes;
  }

  /** The current part is full: read it, and move on. */
  #advance(): void {
    this.#filled = 0;
    if (this.#header === undefined) {
      const magic = MAGIC.every((b, i) => this.#prefix[i] === b);
      if (!magic) throw new PackError("Pack has the wrong magic: not a fedcomm pack");
      const length = new DataView(this.#prefix.buffer).getUint32(4, true);
      if (length > MAX_HEADER_BYTES) {
        throw new PackError(`Pack header is too large: "${length}" bytes`);
      }
      if (length === 0) throw new PackError("Pack header is empty");
      this.#header = new Uint8Array(length);
      return;
    }
    if (this.#slots === undefined) {
      this.#slots = this.#readHeader(this.#header);
    } else this.#slot++;
    while (this.#slots[this.#slot]?.bytes.byteLength === 0) this.#slot++;
  }

  #readHeader(bytes: Uint8Array): Slot[] {
    const header = decode(bytes) as { meta?: unknown; tensors?: unknown } | null;
    if (typeof header !== "object" || header === null || !Array.isArray(header.tensors)) {
      throw new PackError("Pack header is malformed: no tensor table");
    }
    if (typeof header.meta !== "object" || header.meta === null) {
      throw new PackError("Pack header is malformed: no metadata map");
    }
    this.#meta = header.meta as Meta;
    const entries = header.tensors.map(checkEntry);
    const total = entries.reduce(
      (n, [, dtype, , count]) => n + count * DTYPES[dtype].BYTES_PER_ELEMENT,
      0,
    );
    if (total > this.#maxBytes) {
      throw new RangeError(
        `Pack is too large: its tensors are "${total}" bytes, at most ${this.#maxBytes}`,
      );
    }
    return entries.map(([name, dtype, shape, count]) => {
      const data = new DTYPES[dtype](count);
      const tensor = shape.length === 1 ? data : new NdArray(data, shape);
      return { name, tensor, bytes: new Uint8Array(data.buffer) };
    });
  }

  /**
   * The pack, once every byte is in.
   *
   * @returns The metadata and the tensors.
   * @throws {PackError} If the pack ended early.
   */
  finish(): Packed {
    if (this.#slots === undefined || this.#target() !== undefined) {
      throw new PackError("Pack is truncated: it ended before its last tensor");
    }
    const tensors: Weights = {};
    for (const { name, tensor } of this.#slots) tensors[name] = tensor;
    return { meta: this.#meta, tensors };
  }
}

/** Checks one tensor table entry: `[name, dtype, shape]`, and adds its element count. */
function checkEntry(entry: unknown, index: number): [string, DtypeName, number[], number] {
  const [name, dtype, shape] = Array.isArray(entry) ? entry : [];
  if (typeof name !== "string" || !(dtype === "float32" || dtype === "float64")) {
    throw new PackError(`Pack header is malformed: tensor ${index} has no name or dtype`);
  }
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
    throw new PackError(`Pack header is malformed: "${name}" has an invalid shape`);
  }
  const count = shape.reduce((n: number, d: number) => n * d, 1);
  if (!Number.isSafeInteger(count)) {
    throw new PackError(`Pack header is malformed: "${name}" has too many elements`);
  }
  return [name, dtype, shape, count];
}
