import assert from "node:assert/strict";
import { concat } from "./tests/test_util.ts";
import { decode as msgpackDecode, encode as msgpackEncode, ExtData } from "@msgpack/msgpack";
import suite from "msgpack-test-suite/dist/msgpack-test-suite.json" with { type: "json" };
import { decode, encode, encodeChunks } from "./codec.ts";
import { EXTERNAL_MIN_BYTES, MAX_DEPTH } from "./_codec/encoder.ts";
import { ProtocolError } from "./errors.ts";
import { NdArray, type TypedArray } from "./tensor.ts";

// ---------------------------------------------------------------------------
// Helpers

/** Bytes from the test suite's "c4-02-00-ff" notation. */
function hex(text: string): Uint8Array {
  if (text === "") return new Uint8Array(0);
  return new Uint8Array(text.split("-").map((byte) => parseInt(byte, 16)));
}

/** The "c4-02-00-ff" notation of some bytes, for readable failures. */
function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("-");
}

/** `@msgpack/msgpack`'s encoding of a value (bigints need its `useBigInt64`). */
function reference(value: unknown): Uint8Array {
  return typeof value === "bigint"
    ? msgpackEncode(value, { useBigInt64: true })
    : msgpackEncode(value);
}

/** Asserts that our encoding of `value` is byte for byte `@msgpack/msgpack`'s. */
function assertSameAsReference(value: unknown, label: string): void {
  assert.equal(toHex(encode(value)), toHex(reference(value)), label);
}

/** A string whose UTF-8 form is exactly `bytes` long, made of `char` and ASCII filler. */
function utf8String(bytes: number, char: string): string {
  const width = new TextEncoder().encode(char).byteLength;
  const s = char.repeat(Math.floor(bytes / width)) + "x".repeat(bytes % width);
  assert.equal(new TextEncoder().encode(s).byteLength, bytes);
  return s;
}

/** A plain object with `n` keys. */
function objectOf(n: number): Record<string, number> {
  const object: Record<string, number> = {};
  for (let i = 0; i < n; i++) object[`k${i}`] = i;
  return object;
}

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
// msgpack-test-suite

interface SuiteEntry {
  nil?: null;
  bool?: boolean;
  binary?: string;
  number?: number;
  bignum?: string;
  string?: string;
  array?: unknown[];
  map?: Record<string, unknown>;
  timestamp?: [number, number];
  ext?: [number, string];
  msgpack: string[];
}

const entries: [string, SuiteEntry][] = Object.entries(
  suite as unknown as Record<string, SuiteEntry[]>,
)
  .flatMap(([file, list]) => list.map((entry): [string, SuiteEntry] => [file, entry]));

/** The JavaScript value an entry stands for, as our decoder should return it. */
function valueOf(entry: SuiteEntry): unknown {
  if ("nil" in entry) return null;
  if ("bool" in entry) return entry.bool;
  if ("binary" in entry) return hex(entry.binary!);
  if ("bignum" in entry) {
    const big = BigInt(entry.bignum!);
    // 64-bit integers arrive as numbers where safe, as bigints beyond.
    return big >= Number.MIN_SAFE_INTEGER && big <= Number.MAX_SAFE_INTEGER ? Number(big) : big;
  }
  if ("number" in entry) return entry.number;
  if ("string" in entry) return entry.string;
  if ("array" in entry) return entry.array;
  if ("map" in entry) return entry.map;
  if ("timestamp" in entry) {
    const [sec, nsec] = entry.timestamp!;
    return new Date(sec * 1000 + nsec / 1e6);
  }
  if ("ext" in entry) return new ExtData(entry.ext![0], hex(entry.ext![1]));
  throw new Error(`Unknown test suite entry: ${JSON.stringify(entry)}`);
}

Deno.test("decode() decodes every encoding of every msgpack-test-suite entry", () => {
  let checked = 0;
  for (const [file, entry] of entries) {
    const expected = valueOf(entry);
    for (const encoding of entry.msgpack) {
      const label = `${file} ${JSON.stringify(entry).slice(0, 80)} from ${encoding}`;
      const decoded = decode(hex(encoding));
      if (entry.timestamp !== undefined) {
        // A Date holds milliseconds: it must be within 1 ms of the exact instant.
        assert.ok(decoded instanceof Date, label);
        const [sec, nsec] = entry.timestamp;
        const exactNs = BigInt(sec) * 1_000_000_000n + BigInt(nsec);
        const gotNs = BigInt(decoded.getTime()) * 1_000_000n;
        const diff = gotNs > exactNs ? gotNs - exactNs : exactNs - gotNs;
        assert.ok(diff < 1_000_000n, `${label}: ${decoded.toISOString()}`);
        if (nsec % 1_000_000 === 0) {
          assert.equal(decoded.getTime(), sec * 1000 + nsec / 1e6, label);
        }
      } else if (entry.ext !== undefined) {
        assert.ok(decoded instanceof ExtData, label);
        assert.equal(decoded.type, entry.ext[0], label);
        assert.deepEqual(decoded.data, hex(entry.ext[1]), label);
      } else {
        assert.deepStrictEqual(decoded, expected, label);
      }
      checked++;
    }
  }
  const total = entries.reduce((n, [, entry]) => n + entry.msgpack.length, 0);
  assert.equal(checked, total);
  assert.ok(entries.length > 80 && total > 200, `${entries.length} entries, ${total} encodings`);
});

Deno.test("encode() writes the canonical encoding of the suite where @msgpack/msgpack does", () => {
  let checked = 0;
  for (const [file, entry] of entries) {
    const value = valueOf(entry);
    const canonical = entry.msgpack[0];
    if (toHex(reference(value)) !== canonical) continue;
    assert.equal(toHex(encode(value)), canonical, `${file} ${JSON.stringify(entry).slice(0, 80)}`);
    checked++;
  }
  // Only a few entries are skipped: float32 canonicals, nanosecond timestamps,
  // and int64 canonicals of non-negative bigints.
  assert.ok(checked >= 70 && checked < entries.length, `${checked} of ${entries.length} checked`);
});

Deno.test("encode() is byte-identical to @msgpack/msgpack for every suite value", () => {
  for (const [file, entry] of entries) {
    assertSameAsReference(valueOf(entry), `${file} ${JSON.stringify(entry).slice(0, 80)}`);
  }
});

// ---------------------------------------------------------------------------
// Byte identity with @msgpack/msgpack for ordinary values

Deno.test("encode() is byte-identical to @msgpack/msgpack for integers at every boundary", () => {
  const boundaries = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xffff,
    0x10000,
    2 ** 31 - 1,
    2 ** 31,
    2 ** 32 - 1,
    2 ** 32,
    2 ** 32 + 1,
    2 ** 48,
    Number.MAX_SAFE_INTEGER,
  ];
  const values = boundaries.flatMap((n) => [n, -n, n - 1, -n + 1]);
  values.push(-0x20, -0x21, -0x80, -0x81, -0x8000, -0x8001, -(2 ** 31), -(2 ** 31) - 1);
  values.push(Number.MIN_SAFE_INTEGER, 2 ** 53, -(2 ** 53), 2 ** 64, -(2 ** 63), 1e300);
  for (const n of values) assertSameAsReference(n, `integer ${n}`);
  // Spot checks of the forms themselves.
  assert.equal(toHex(encode(-33)), "d0-df");
  assert.equal(toHex(encode(2 ** 32)), "cf-00-00-00-01-00-00-00-00");
  assert.equal(toHex(encode(-(2 ** 31) - 1)), "d3-ff-ff-ff-ff-7f-ff-ff-ff");
});

Deno.test("encode() is byte-identical to @msgpack/msgpack for floats, -0, NaN and infinities", () => {
  const values = [
    -0,
    0.5,
    -0.5,
    1.5,
    Math.PI,
    -Math.E,
    NaN,
    Infinity,
    -Infinity,
    Number.MIN_VALUE,
    Number.MAX_VALUE,
    Number.EPSILON,
    0.1 + 0.2,
  ];
  for (const n of values) assertSameAsReference(n, `float ${n}`);
  assert.equal(toHex(encode(-0)), "00");
  assert.equal(toHex(encode(0.5)), "cb-3f-e0-00-00-00-00-00-00");
  assert.ok(Number.isNaN(decode(encode(NaN))));
  assert.equal(decode(encode(-Infinity)), -Infinity);
});

Deno.test("encode() is byte-identical to @msgpack/msgpack for strings of every header width", () => {
  const lengths = [0, 1, 31, 32, 33, 255, 256, 65535, 65536, 100_000];
  // ASCII, 2-, 3- and 4-byte characters: the header is chosen from the UTF-8 length.
  for (const char of ["a", "é", "€", "🍺"]) {
    for (const bytes of lengths) {
      const s = utf8String(bytes, char);
      assertSameAsReference(s, `${bytes} UTF-8 bytes of "${char}"`);
      assert.equal(decode(encode(s)), s);
    }
  }
  assert.equal(toHex(encode(utf8String(31, "a")).subarray(0, 1)), "bf");
  assert.equal(toHex(encode(utf8String(32, "€")).subarray(0, 2)), "d9-20");
  assert.equal(toHex(encode(utf8String(65535, "a")).subarray(0, 3)), "da-ff-ff");
  assert.equal(toHex(encode(utf8String(65536, "🍺")).subarray(0, 5)), "db-00-01-00-00");
  assertSameAsReference("mixed: ascii, é, €, 🍺, 漢字", "mixed string");
});

Deno.test("encode() is byte-identical to @msgpack/msgpack for arrays and maps of every header width", () => {
  for (const n of [0, 1, 15, 16, 65535, 65536]) {
    const array = Array.from({ length: n }, (_, i) => i % 200);
    assertSameAsReference(array, `array of ${n}`);
    assert.deepStrictEqual(decode(encode(array)), array);
    const object = objectOf(n);
    assertSameAsReference(object, `map of ${n}`);
    assert.deepStrictEqual(decode(encode(object)), object);
  }
  const nested = {
    a: [1, [2, [3, [4, {}]]], { b: null, c: [true, false] }],
    s: "text",
    empty: [],
    deep: { x: { y: { z: [objectOf(16), Array.from({ length: 16 }, (_, i) => -i)] } } },
    undef: undefined,
  };
  assertSameAsReference(nested, "nested");
  assertSameAsReference([objectOf(15), [objectOf(16)], new Array(65536).fill("x")], "mixed sizes");
});

Deno.test("encode() is byte-identical to @msgpack/msgpack for binaries, Dates, null and undefined", () => {
  for (const n of [0, 1, 255, 256, 65535, 65536, 70_000]) {
    const bytes = new Uint8Array(n).map((_, i) => (i * 7) & 0xff);
    assertSameAsReference(bytes, `binary of ${n}`);
    // A view into the middle of a larger buffer encodes only its own bytes.
    const view = new Uint8Array(n + 10).subarray(5, 5 + n);
    view.set(bytes);
    assertSameAsReference(view, `binary view of ${n}`);
    assertSameAsReference(new DataView(bytes.buffer), `DataView of ${n}`);
  }
  const dates = [
    new Date(0),
    new Date(1),
    new Date(1514862245000),
    new Date(1514862245678),
    new Date(-1),
    new Date(-62167219200000),
    new Date(253402300799999),
    new Date(2 ** 32 * 1000),
    new Date(2 ** 34 * 1000),
  ];
  for (const date of dates) {
    assertSameAsReference(date, `Date ${date.toISOString()}`);
    const decoded = decode(encode(date));
    assert.ok(decoded instanceof Date);
    assert.equal(decoded.getTime(), date.getTime());
  }
  for (const value of [null, undefined, true, false, { a: undefined, b: null }, [undefined]]) {
    assertSameAsReference(value, String(value));
  }
  assert.equal(decode(encode(undefined)), null);
  for (const size of [0, 1, 2, 3, 4, 8, 16, 17, 255, 256, 65536]) {
    const ext = new ExtData(size % 100, new Uint8Array(size).fill(size & 0xff));
    assertSameAsReference(ext, `ExtData of ${size}`);
    const decoded = decode(encode(ext));
    assert.ok(decoded instanceof ExtData);
    assert.equal(decoded.type, size % 100);
    assert.deepEqual(decoded.data, ext.data);
  }
  assert.equal(toHex(encode(new ExtData(-5, new Uint8Array([1])))), "d4-fb-01");
});

Deno.test("encode() writes 64-bit bigints and decode() returns numbers where safe", () => {
  const bigints = [0n, 1n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n, -1n, -(2n ** 63n)];
  for (const big of bigints) {
    assertSameAsReference(big, `bigint ${big}`);
    const decoded = decode(encode(big));
    if (big >= Number.MIN_SAFE_INTEGER && big <= Number.MAX_SAFE_INTEGER) {
      assert.equal(decoded, Number(big));
    } else {
      assert.equal(decoded, big);
    }
  }
  assert.equal((decode(encode({ n: 2n ** 60n })) as { n: bigint }).n, 2n ** 60n);
});

Deno.test("encode() writes a Map's entries with any key type", () => {
  const map = new Map<unknown, unknown>([["a", 1], [2, "two"]]);
  assert.equal(toHex(encode(map)), "82-a1-61-01-02-a3-74-77-6f");
  assert.deepStrictEqual(decode(encode(map)), { a: 1, 2: "two" });
});

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

// ---------------------------------------------------------------------------
// Bad input

Deno.test("encode() throws TypeError for functions, symbols, cycles and invalid dates", () => {
  assert.throws(() => encode(() => 1), TypeError);
  assert.throws(() => encode({ f() {} }), TypeError);
  assert.throws(() => encode(Symbol("s")), TypeError);
  assert.throws(() => encode([1, Symbol.iterator]), TypeError);
  const cycle: Record<string, unknown> = { a: 1 };
  cycle.self = cycle;
  assert.throws(() => encode(cycle), TypeError);
  const loop: unknown[] = [];
  loop.push([loop]);
  assert.throws(() => encode(loop), TypeError);
  assert.throws(() => encode(new Date(NaN)), TypeError);
  // Deep but finite nesting up to the limit is fine.
  let deep: unknown = 0;
  for (let i = 0; i < MAX_DEPTH; i++) deep = [deep];
  assert.equal(encode(deep).byteLength, MAX_DEPTH + 1);
  assert.throws(() => encode([deep]), TypeError);
  // The shared encoder still works after a failure.
  assert.deepStrictEqual(decode(encode({ ok: true })), { ok: true });
});

Deno.test("encode() throws RangeError for a bigint beyond 64 bits", () => {
  assert.throws(() => encode(2n ** 64n), RangeError);
  assert.throws(() => encode(-(2n ** 63n) - 1n), RangeError);
  assert.throws(() => encode({ big: [10n ** 30n] }), RangeError);
  assert.equal(encode(2n ** 64n - 1n).byteLength, 9);
});

Deno.test("decode() throws ProtocolError for malformed, extra and truncated bytes", () => {
  const bad = [
    [], // nothing
    [0xc1], // never used
    [0x01, 0x02], // extra bytes
    [0x92, 0x01], // array of 2 with 1
    [0xc4, 0x05, 0x01], // bin of 5 with 1
    [0xa3, 0x61], // str of 3 with 1
    [0xcb, 0x00, 0x00], // truncated float64
    [0x81, 0xa1, 0x61], // map without value
    [0xd6, 0xff, 0x00], // truncated timestamp
    [0xd5, 0xff, 0x00, 0x00], // timestamp of 2 bytes
  ];
  for (const bytes of bad) {
    assert.throws(() => decode(new Uint8Array(bytes)), ProtocolError, toHex(new Uint8Array(bytes)));
  }
  const truncated = encode({ weights: new Float32Array(10) });
  assert.throws(() => decode(truncated.subarray(0, truncated.byteLength - 1)), ProtocolError);
  assert.throws(() => decode(concat([truncated, new Uint8Array([0])])), ProtocolError);
  assert.throws(
    () => decode(new Uint8Array([0xc1]), { clientId: 3 }),
    (error) =>
      error instanceof ProtocolError && error.clientId === 3 && /^Malformed/.test(error.message),
  );
});

Deno.test("decode() throws ProtocolError for a numpy map it cannot read", () => {
  const numpy = (fields: Record<string, unknown>) =>
    msgpackEncode({
      nd: true,
      type: "<f4",
      kind: "",
      shape: [2],
      data: new Uint8Array(8),
      ...fields,
    });
  assert.deepStrictEqual(decode(numpy({})), new Float32Array(2));
  const unreadable = [
    { type: "<c8" }, // complex
    { type: "|O" }, // object
    { type: "<U4" }, // unicode
    { type: ">f4" }, // big-endian
    { type: 5 }, // not a string
    { kind: "V" }, // structured
    { data: new Uint8Array(7) }, // not a multiple of 4
    { data: "text" }, // not binary... so not a numpy map: see below
    { shape: 2 }, // not an array
  ];
  for (const fields of unreadable) {
    if (typeof fields.data === "string") {
      // Without binary data the map is not a numpy map and stays a map.
      assert.deepStrictEqual((decode(numpy(fields)) as { data: string }).data, "text");
      continue;
    }
    assert.throws(() => decode(numpy(fields)), ProtocolError, JSON.stringify(fields));
  }
  assert.throws(() => decode(numpy({ shape: [3, 3] })), ProtocolError);
});
