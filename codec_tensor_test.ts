/**
 * The codec's typed arrays and tensors (msgpack-numpy maps, `NdArray`),
 * their alignment and views, and the chunks `encodeChunks()` borrows.
 *
 * @module
 */

import assert from "node:assert/strict";
import { concat, toHex } from "./tests/test_util.ts";
import { decode as msgpackDecode, encode as msgpackEncode, ExtData } from "@msgpack/msgpack";
import { decode, encode, encodeChunks } from "./codec.ts";
import { EXTERNAL_MIN_BYTES } from "./_codec/encoder.ts";
import { ProtocolError } from "./errors.ts";
import { NdArray, type TypedArray } from "./tensor.ts";

// ---------------------------------------------------------------------------
// Helpers

/** Copies `bytes` into a fresh buffer at `offset`, returning the view there. */
function placeAt(bytes: Uint8Array, offset: number): Uint8Array {
  const buffer = new Uint8Array(offset + bytes.byteLength);
  buffer.set(bytes, offset);
  return buffer.subarray(offset);
}

/** Decodes keeping numpy maps as maps: bin keys become strings. */
function decodeRaw(bytes: Uint8Array): Record<string, unknown> {
  return msgpackDecode(bytes, {
    mapKeyConverter: (key) =>
      key instanceof Uint8Array ? new TextDecoder().decode(key) : key as string,
  }) as Record<string, unknown>;
}

// ---------------------------------------------------------------------------
// Typed arrays and tensors

const typedSamples: [string, TypedArray][] = [
  ["Int8Array", new Int8Array([-128, -1, 0, 1, 127])],
  ["Int16Array", new Int16Array([-32768, -1, 0, 1, 32767])],
  ["Uint16Array", new Uint16Array([0, 1, 65535])],
  ["Int32Array", new Int32Array([-(2 ** 31), -1, 0, 2 ** 31 - 1])],
  ["Uint32Array", new Uint32Array([0, 1, 2 ** 32 - 1])],
  ["Float16Array", new Float16Array([0, -2, 1.5, 65504, -Infinity, NaN])],
  ["Float32Array", new Float32Array([0, -0.5, 3.25, 3.4e38, Infinity, NaN])],
  ["Float64Array", new Float64Array([0, Math.PI, -Number.MAX_VALUE, Number.MIN_VALUE, NaN])],
  ["BigInt64Array", new BigInt64Array([-(2n ** 63n), -1n, 0n, 2n ** 63n - 1n])],
  ["BigUint64Array", new BigUint64Array([0n, 1n, 2n ** 64n - 1n])],
];

Deno.test("decode() returns every typed array type with its type and values", () => {
  for (const [name, array] of typedSamples) {
    const decoded = decode(encode(array)) as TypedArray;
    assert.equal(decoded.constructor.name, name);
    assert.deepStrictEqual(decoded, array, name);
    const inside = decode(encode({ w: [array] })) as { w: TypedArray[] };
    assert.deepStrictEqual(inside.w[0], array, `${name} nested`);
    const empty = decode(encode(array.subarray(0, 0))) as TypedArray;
    assert.equal(empty.constructor.name, name);
    assert.equal(empty.length, 0);
  }
  // A typed array view into a larger buffer carries only its own elements.
  const view = new Float32Array([1, 2, 3, 4, 5]).subarray(1, 4);
  assert.deepStrictEqual(decode(encode(view)), new Float32Array([2, 3, 4]));
});

Deno.test("decode() returns Uint8Array and Uint8ClampedArray as Uint8Array binaries", () => {
  const bytes = new Uint8Array([0, 1, 255]);
  assert.deepStrictEqual(decode(encode(bytes)), bytes);
  assert.equal(toHex(encode(new Uint8ClampedArray([0, 1, 255]))), "c4-03-00-01-ff");
  assert.deepStrictEqual(decode(encode(new Uint8ClampedArray([0, 1, 255]))), bytes);
  assert.deepStrictEqual(decode(encode(bytes.buffer)), bytes);
});

Deno.test("encode() writes typed arrays as msgpack-numpy maps with bin keys", () => {
  const array = new Float32Array([1, 2, 3]);
  const raw = decodeRaw(encode(array));
  assert.deepStrictEqual(Object.keys(raw), ["nd", "type", "kind", "shape", "data"]);
  assert.equal(raw.nd, true);
  assert.equal(raw.type, "<f4");
  assert.deepStrictEqual(raw.kind, new Uint8Array(0));
  assert.deepStrictEqual(raw.shape, [3]);
  assert.deepStrictEqual(raw.data, new Uint8Array(array.buffer));
  const dtypes: Record<string, string> = {
    Int8Array: "|i1",
    Int16Array: "<i2",
    Uint16Array: "<u2",
    Int32Array: "<i4",
    Uint32Array: "<u4",
    Float16Array: "<f2",
    Float32Array: "<f4",
    Float64Array: "<f8",
    BigInt64Array: "<i8",
    BigUint64Array: "<u8",
  };
  for (const [name, sample] of typedSamples) {
    assert.equal(decodeRaw(encode(sample)).type, dtypes[name], name);
  }
  const nd = decodeRaw(encode(new NdArray(new Int16Array(6), [1, 2, 3])));
  assert.deepStrictEqual(nd.shape, [1, 2, 3]);
});

Deno.test("decode() returns an NdArray that keeps its shape", () => {
  const data = new Float32Array([1, 2, 3, 4, 5, 6]);
  const matrix = decode(encode(new NdArray(data, [2, 3])));
  assert.ok(matrix instanceof NdArray);
  assert.deepStrictEqual(matrix.shape, [2, 3]);
  assert.deepStrictEqual(matrix.data, data);
  const cube = decode(encode({ w: new NdArray(new BigInt64Array(24).fill(-7n), [2, 3, 4]) })) as {
    w: NdArray;
  };
  assert.ok(cube.w instanceof NdArray);
  assert.deepStrictEqual(cube.w.shape, [2, 3, 4]);
  assert.deepStrictEqual(cube.w.data, new BigInt64Array(24).fill(-7n));
  const scalar = decode(encode(new NdArray(new Float64Array([2.5]), [])));
  assert.ok(scalar instanceof NdArray);
  assert.deepStrictEqual(scalar.shape, []);
  assert.deepStrictEqual(scalar.data, new Float64Array([2.5]));
  const hollow = decode(encode(new NdArray(new Int32Array(0), [4, 0])));
  assert.ok(hollow instanceof NdArray);
  assert.deepStrictEqual(hollow.shape, [4, 0]);
  assert.equal(hollow.data.length, 0);
  // Rank one arrives as the plain typed array.
  assert.deepStrictEqual(decode(encode(new NdArray(data, [6]))), data);
});

Deno.test("NdArray() rejects a shape that does not fit the data", () => {
  assert.throws(() => new NdArray(new Float32Array(6), [4, 2]), TypeError);
  assert.throws(() => new NdArray(new Float32Array(6), [-2, -3]), TypeError);
  assert.throws(() => new NdArray(new Float32Array(6), [1.5, 4]), TypeError);
  assert.deepStrictEqual(new NdArray(new Float32Array(6), [3, 2]).shape, [3, 2]);
});

Deno.test("decode() returns aligned tensor data as a view into the input for every offset", () => {
  for (const [name, sample] of typedSamples) {
    for (let before = 0; before < 8; before++) {
      // A binary of `before` bytes shifts where the numpy map starts.
      const input = encode([new Uint8Array(before), { w: sample }]);
      const [, { w }] = decode(input) as [Uint8Array, { w: TypedArray }];
      assert.deepStrictEqual(w, sample, `${name} after ${before}`);
      assert.equal(w.buffer, input.buffer, `${name} after ${before} bytes is not a view`);
      assert.equal((w.byteOffset - input.byteOffset) % 8, 0, `${name} after ${before}`);
    }
  }
  // A large tensor (passed through as its own chunk) is aligned too.
  for (let before = 0; before < 8; before++) {
    const big = new Float64Array(20_000).map((_, i) => i / 3);
    const input = encode(["x".repeat(before), big]);
    const [, w] = decode(input) as [string, Float64Array];
    assert.equal(w.buffer, input.buffer);
    assert.equal(w.byteOffset % 8, 0);
    assert.deepStrictEqual(w, big);
  }
});

Deno.test("encodeChunks() aligns tensor data from the start of the value, after the reserve", () => {
  for (let reserve = 0; reserve < 8; reserve++) {
    for (let before = 0; before < 8; before++) {
      const { chunks, byteLength } = encodeChunks(["y".repeat(before), new Float64Array([1.5])], {
        reserve,
      });
      const all = concat(chunks);
      assert.equal(all.byteLength, reserve + byteLength);
      assert.deepStrictEqual(all.subarray(0, reserve), new Uint8Array(reserve));
      const body = all.slice(reserve);
      const [, w] = decode(body) as [string, Float64Array];
      assert.equal(w.buffer, body.buffer);
      assert.equal(w.byteOffset % 8, 0);
      assert.deepStrictEqual(w, new Float64Array([1.5]));
    }
  }
});

Deno.test("decode() views aligned data at an aligned input offset and copies at an unaligned one", () => {
  const value = { f64: new Float64Array([1, 2]), f32: new Float32Array([3, 4]) };
  const bytes = encode(value);
  const atEight = placeAt(bytes, 8);
  const aligned = decode(atEight) as typeof value;
  assert.equal(aligned.f64.buffer, atEight.buffer);
  assert.equal(aligned.f32.buffer, atEight.buffer);
  const atFour = placeAt(bytes, 4);
  const shifted = decode(atFour) as typeof value;
  assert.notEqual(shifted.f64.buffer, atFour.buffer, "a Float64Array at offset 4 must be a copy");
  assert.equal(shifted.f32.buffer, atFour.buffer, "a Float32Array at offset 4 is a view");
  assert.deepStrictEqual(shifted, value);
});

Deno.test("decode() copies unaligned numpy data from a hand-built map", () => {
  const floats = new Float32Array([1.5, -2.25, 1e10]);
  const data = new Uint8Array(floats.buffer);
  let copied = 0;
  let viewed = 0;
  for (let pad = 0; pad < 4; pad++) {
    // String keys, as Python's msgpack-numpy writes with use_bin_type; data last.
    const input = msgpackEncode([
      "p".repeat(pad),
      { nd: true, type: "<f4", kind: "", shape: [3], data },
    ]);
    const dataOffset = input.byteLength - data.byteLength;
    const [, decoded] = decode(input) as [string, Float32Array];
    assert.ok(decoded instanceof Float32Array);
    assert.deepStrictEqual(decoded, floats);
    if (dataOffset % 4 === 0) {
      assert.equal(decoded.buffer, input.buffer);
      viewed++;
    } else {
      assert.notEqual(decoded.buffer, input.buffer);
      copied++;
    }
  }
  assert.equal(copied, 3);
  assert.equal(viewed, 1);
});

Deno.test("decode() turns a numpy scalar map into a number or a bigint", () => {
  const scalar = (type: string, bytes: ArrayBuffer) =>
    decode(msgpackEncode({ nd: false, type, kind: "", data: new Uint8Array(bytes) }));
  assert.equal(scalar("<i8", new BigInt64Array([42n]).buffer), 42);
  assert.equal(scalar("<i8", new BigInt64Array([-7n]).buffer), -7);
  assert.equal(scalar("<i8", new BigInt64Array([2n ** 62n]).buffer), 2n ** 62n);
  assert.equal(scalar("<f4", new Float32Array([1.5]).buffer), 1.5);
  assert.equal(scalar("<f8", new Float64Array([-0.1]).buffer), -0.1);
  assert.equal(scalar("<u2", new Uint16Array([65535]).buffer), 65535);
  // Without `kind`, as some writers leave it out.
  assert.equal(
    decode(msgpackEncode({ nd: false, type: "<i8", data: new Uint8Array(8).fill(1, 0, 1) })),
    1,
  );
  assert.throws(() => scalar("<i8", new Int32Array([1]).buffer), ProtocolError);
});

Deno.test("encodeChunks() passes binaries of 64 KiB or more through as views", () => {
  const big = new Uint8Array(EXTERNAL_MIN_BYTES + 10).subarray(10);
  const { chunks, byteLength, borrowed } = encodeChunks({ big });
  assert.equal(borrowed, true);
  const view = chunks.find((chunk) => chunk.buffer === big.buffer);
  assert.ok(view, "the binary was copied");
  assert.equal(view.byteOffset, big.byteOffset);
  assert.equal(view.byteLength, big.byteLength);
  assert.equal(byteLength, chunks.reduce((n, c) => n + c.byteLength, 0));
  big[0] = 99; // the chunk shares the caller's memory
  assert.equal(view[0], 99);
  assert.deepStrictEqual(concat(chunks), msgpackEncode({ big }));

  const weights = new Float32Array(1 << 16).map((_, i) => i);
  const tensor = encodeChunks({ round: 1, weights }, { reserve: 4 });
  assert.equal(tensor.borrowed, true);
  assert.ok(tensor.chunks.some((c) => c.buffer === weights.buffer && c.byteLength === 1 << 18));
  const decoded = decode(concat(tensor.chunks).subarray(4)) as { weights: Float32Array };
  assert.deepStrictEqual(decoded.weights, weights);

  const extData = new Uint8Array(EXTERNAL_MIN_BYTES);
  const ext = new ExtData(3, extData);
  assert.ok(encodeChunks(ext).chunks.some((c) => c.buffer === extData.buffer));
});

Deno.test("encodeChunks() copies binaries under 64 KiB", () => {
  const small = new Uint8Array(EXTERNAL_MIN_BYTES - 1).fill(5);
  const { chunks, borrowed } = encodeChunks([small, new Float32Array(100)]);
  assert.equal(borrowed, false);
  assert.equal(chunks.length, 1);
  assert.notEqual(chunks[0].buffer, small.buffer);
  small[0] = 6;
  assert.equal(chunks[0][4], 5, "the chunk changed with the caller's memory");
});

Deno.test("encode() gives back a fresh, contiguous copy after borrowing", () => {
  const big = new Uint8Array(EXTERNAL_MIN_BYTES * 2).fill(1);
  const bytes = encode([big, "after"]);
  assert.notEqual(bytes.buffer, big.buffer);
  big.fill(2);
  const [decoded, after] = decode(bytes) as [Uint8Array, string];
  assert.ok(decoded.every((b) => b === 1));
  assert.equal(after, "after");
  // Encoding again reuses the encoder without touching earlier results.
  const first = encode({ a: 1 });
  encode({ b: 2 });
  assert.deepStrictEqual(decode(first), { a: 1 });
});
