/**
 * Typed arrays on the wire: the msgpack-numpy convention.
 *
 * A typed array other than `Uint8Array` travels as a MessagePack map
 * `{nd: true, type: "<f4", kind: "", shape: [n], data: <bin>}`, the format
 * Python's `msgpack_numpy` reads and writes, so a Deno server and a numpy
 * client exchange tensors without either side knowing about the other. A
 * one-dimensional array arrives as the same typed array; an array of any
 * other rank arrives as an {@linkcode NdArray} that keeps its shape.
 *
 * @module
 */

/** Every typed array type fedcomm can carry. */
export type TypedArray =
  | Int8Array
  | Uint8Array
  | Uint8ClampedArray
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float16Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

interface TypedArrayConstructor {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): TypedArray;
  new (length: number): TypedArray;
  readonly BYTES_PER_ELEMENT: number;
  readonly name: string;
}

const utf8 = new TextDecoder();

/** numpy dtype string (little-endian) for each constructor name. */
const DTYPE_BY_NAME: Record<string, string> = {
  Int8Array: "|i1",
  Uint8Array: "|u1",
  Uint8ClampedArray: "|u1",
  Int16Array: "<i2",
  Uint16Array: "<u2",
  Int32Array: "<i4",
  Uint32Array: "<u4",
  BigInt64Array: "<i8",
  BigUint64Array: "<u8",
  Float16Array: "<f2",
  Float32Array: "<f4",
  Float64Array: "<f8",
};

/** Constructor for each numpy kind+size ("f4"), byte order stripped. */
const CONSTRUCTOR_BY_CODE: Record<string, TypedArrayConstructor> = {
  i1: Int8Array,
  u1: Uint8Array,
  b1: Uint8Array,
  i2: Int16Array,
  u2: Uint16Array,
  i4: Int32Array,
  u4: Uint32Array,
  i8: BigInt64Array,
  u8: BigUint64Array,
  f2: Float16Array,
  f4: Float32Array,
  f8: Float64Array,
};

/**
 * A typed array with a shape: how a numpy array of rank other than one
 * arrives, and how to send one. `data` holds the elements in C order.
 *
 * @example Sending a 2×3 weight matrix
 * ```ts
 * import assert from "node:assert/strict";
 * import { NdArray } from "@fedcomm/fedcomm";
 *
 * const w = new NdArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
 * assert.deepStrictEqual(w.shape, [2, 3]);
 * assert.equal(w.data.length, 6);
 * assert.throws(() => new NdArray(new Float32Array(5), [2, 3]), TypeError);
 * ```
 */
export class NdArray<T extends TypedArray = TypedArray> {
  /** The elements, in C (row-major) order. */
  readonly data: T;
  /** The size of each dimension; their product is `data.length`. */
  readonly shape: readonly number[];

  /**
   * Wraps `data` with a shape. The data is not copied.
   *
   * @param data The elements in C order.
   * @param shape The dimensions; their product must equal `data.length`.
   * @throws {TypeError} If a dimension is not a non-negative integer or the
   * product of the shape is not `data.length`.
   */
  constructor(data: T, shape: readonly number[]) {
    let count = 1;
    for (const d of shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new TypeError(`Invalid shape: dimension "${d}" is not a non-negative integer`);
      }
      count *= d;
    }
    if (count !== data.length) {
      throw new TypeError(
        `Invalid shape: [${shape.join(", ")}] holds ${count} elements, data has ${data.length}`,
      );
    }
    this.data = data;
    this.shape = Object.freeze([...shape]);
  }
}

/**
 * Returns the numpy dtype string of a typed array (`"<f4"` for a
 * `Float32Array`), or `undefined` for something that is not one.
 *
 * @param value Any value.
 * @returns The dtype string, or `undefined`.
 */
export function dtypeOf(value: unknown): string | undefined {
  if (!ArrayBuffer.isView(value) || value instanceof DataView) return undefined;
  return DTYPE_BY_NAME[value.constructor.name];
}

/**
 * Turns a decoded msgpack-numpy map back into a typed array (rank one) or an
 * {@linkcode NdArray}, and a numpy scalar map (`nd: false`) into a number (or
 * a `bigint` beyond 2⁵³). An array is a view into `data` where its alignment
 * allows, otherwise a copy.
 *
 * @param map A decoded map with `nd` and `data`.
 * @returns The typed array, NdArray or scalar.
 * @throws {TypeError} If the map is not a valid numpy array description: an
 * unknown or big-endian dtype, a `kind` other than absent or empty, a `shape`
 * that is not an array of non-negative integer numbers (nothing is coerced),
 * or data that does not fit the dtype and shape.
 */
export function fromNumpyMap(
  map: Record<string, unknown>,
): TypedArray | NdArray | number | bigint {
  const { nd, type, shape, data, kind } = map;
  const { dtype, ctor } = checkDtype(type, kind);
  if (!(data instanceof Uint8Array)) {
    throw new TypeError(`Invalid numpy array: "data" is not binary`);
  }
  const size = ctor.BYTES_PER_ELEMENT;
  if (nd === false) {
    // A numpy scalar (np.float32(1.5)): {nd: false, type, data}.
    if (data.byteLength !== size) {
      throw new TypeError(`Invalid numpy scalar: ${data.byteLength} data bytes for "${dtype}"`);
    }
    const element = new ctor(data.slice().buffer, 0, 1)[0];
    return typeof element === "bigint" && element >= Number.MIN_SAFE_INTEGER &&
        element <= Number.MAX_SAFE_INTEGER
      ? Number(element)
      : element;
  }
  checkShape(shape);
  if (data.byteLength % size !== 0) {
    throw new TypeError(
      `Invalid numpy array: ${data.byteLength} data bytes is not a multiple of ${size} for "${dtype}"`,
    );
  }
  const length = data.byteLength / size;
  let array: TypedArray;
  if (data.byteOffset % size !== 0) {
    array = new ctor(length);
    new Uint8Array(array.buffer).set(data);
  } else {
    array = new ctor(data.buffer, data.byteOffset, length);
  }
  if (shape.length === 1 && shape[0] === length) return array;
  return new NdArray(array, shape);
}

type ArrayConstructor = (typeof CONSTRUCTOR_BY_CODE)[string];

/** A map's dtype (`type`, with `kind`): its string and its typed array constructor. */
function checkDtype(type: unknown, kind: unknown): { dtype: string; ctor: ArrayConstructor } {
  const dtype = type instanceof Uint8Array ? utf8.decode(type) : type;
  if (typeof dtype !== "string") {
    throw new TypeError(`Invalid numpy array: "type" is not a dtype string`);
  }
  if (kind !== undefined && kind !== "" && !(kind instanceof Uint8Array && kind.length === 0)) {
    // Only a plain dtype (kind absent or empty) is part of the protocol (§5.2).
    throw new TypeError(`Unsupported numpy array: structured or object dtype "${dtype}"`);
  }
  const order = dtype[0];
  const ctor = CONSTRUCTOR_BY_CODE[dtype.slice(1)];
  if (ctor === undefined) throw new TypeError(`Unsupported numpy dtype: "${dtype}"`);
  if (order === ">" && ctor.BYTES_PER_ELEMENT > 1) {
    throw new TypeError(`Unsupported numpy dtype: "${dtype}" is big-endian`);
  }
  if (order !== "<" && order !== "|" && order !== ">") {
    // "=" (native) or "!" (network): writers must say little-endian explicitly (§5.2).
    throw new TypeError(`Unsupported numpy dtype: "${dtype}" has no explicit byte order`);
  }
  return { dtype, ctor };
}

/** A map's `shape`: an array of non-negative integer numbers, nothing coerced. */
function checkShape(shape: unknown): asserts shape is number[] {
  if (!Array.isArray(shape)) throw new TypeError(`Invalid numpy array: "shape" is not an array`);
  for (const d of shape) {
    // No coercion: "2", true and [1] are not dimensions.
    if (typeof d !== "number") {
      throw new TypeError(`Invalid numpy array: shape entry of type "${typeof d}" is not a number`);
    }
    if (!Number.isSafeInteger(d) || d < 0) {
      throw new TypeError(`Invalid numpy array: shape entry "${d}" is not a non-negative integer`);
    }
  }
}
