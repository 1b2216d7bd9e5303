/**
 * The codec's MessagePack: the msgpack-test-suite, byte identity with
 * `@msgpack/msgpack` for ordinary values, and bad input. Typed arrays and
 * tensors are in `codec_tensor_test.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { concat, toHex } from "./tests/test_util.ts";
import { encode as msgpackEncode, ExtData } from "@msgpack/msgpack";
import suite from "msgpack-test-suite/dist/msgpack-test-suite.json" with { type: "json" };
import { decode, encode } from "./codec.ts";
import { MAX_DEPTH } from "./_codec/encoder.ts";
import { ProtocolError } from "./errors.ts";

// ---------------------------------------------------------------------------
// Helpers

/** Bytes from the test suite's "c4-02-00-ff" notation. */
function hex(text: string): Uint8Array {
  if (text === "") return new Uint8Array(0);
  return new Uint8Array(text.split("-").map((byte) => parseInt(byte, 16)));
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
