import assert from "node:assert/strict";
import { encode as msgpackEncode } from "@msgpack/msgpack";
import { decode, encode } from "../codec.ts";
import { ProtocolError } from "../errors.ts";
import { NdArray } from "../tensor.ts";

// ---------------------------------------------------------------------------
// Helpers

const gc = (globalThis as { gc?: () => void }).gc;

/** Resident memory in MB after a full collection (run with --v8-flags=--expose-gc). */
function rssMB(): number {
  gc?.();
  return Deno.memoryUsage().rss / 2 ** 20;
}

/** `count` nested one-element arrays around nil: `[[[...null...]]]`. */
function nested(count: number): Uint8Array {
  const bytes = new Uint8Array(count + 1).fill(0x91);
  bytes[count] = 0xc0;
  return bytes;
}

/** The value `nested(count)` encodes. */
function nestedValue(count: number): unknown {
  let value: unknown = null;
  for (let i = 0; i < count; i++) value = [value];
  return value;
}

/** Concatenates byte arrays and plain bytes. */
function bytesOf(...parts: (Uint8Array | number[])[]): Uint8Array {
  const arrays = parts.map((part) => part instanceof Uint8Array ? part : new Uint8Array(part));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.byteLength, 0));
  let offset = 0;
  for (const a of arrays) {
    out.set(a, offset);
    offset += a.byteLength;
  }
  return out;
}

/** A map32 of `n` entries `"k<i>": i & 0x7f`, as one buffer. */
function bigMap(n: number): Uint8Array {
  const out = new Uint8Array(5 + n * 10);
  out[0] = 0xdf;
  new DataView(out.buffer).setUint32(1, n);
  let p = 5;
  for (let i = 0; i < n; i++) {
    const key = `k${i}`;
    out[p++] = 0xa0 | key.length;
    for (let j = 0; j < key.length; j++) out[p++] = key.charCodeAt(j);
    out[p++] = i & 0x7f;
  }
  return out.subarray(0, p);
}

/** Asserts that `f` throws a ProtocolError with `clientId` whose message matches `pattern`. */
function assertProtocolError(f: () => unknown, pattern: RegExp, clientId?: number): void {
  assert.throws(f, (error) => {
    assert.ok(error instanceof ProtocolError, `not a ProtocolError: ${error}`);
    assert.equal(error.clientId, clientId);
    assert.match(error.message, /^Malformed MessagePack: /);
    assert.match(error.message, pattern);
    return true;
  });
}

/** A numpy map with string keys and the given shape, for 2 float32 elements. */
function numpyWithShape(shape: unknown): Uint8Array {
  const map = { nd: true, type: "<f4", kind: "", shape, data: new Uint8Array(8) };
  return msgpackEncode(map, { useBigInt64: true });
}

// ---------------------------------------------------------------------------
// Depth

Deno.test("decode() accepts nesting at exactly maxDepth and refuses one level more", () => {
  assert.deepStrictEqual(decode(nested(100)), nestedValue(100));
  assertProtocolError(() => decode(nested(101)), /nested deeper than "100" levels/);
  // Maps count like arrays: 100 nested {"a": ...} pass, 101 do not.
  const maps = (count: number) => bytesOf(...Array(count).fill([0x81, 0xa1, 0x61]), [0x01]);
  let map: unknown = 1;
  for (let i = 0; i < 100; i++) map = { a: map };
  assert.deepStrictEqual(decode(maps(100)), map);
  assertProtocolError(() => decode(maps(101)), /deeper than "100"/);
  // An empty container one level too deep is still too deep.
  assertProtocolError(() => decode(bytesOf(nested(100).subarray(0, 100), [0x90])), /deeper/);
  // Other limits, up to 1000 levels without exhausting the stack.
  assert.deepStrictEqual(decode(nested(1), { maxDepth: 1 }), [null]);
  assertProtocolError(() => decode(nested(2), { maxDepth: 1 }), /deeper than "1" levels/);
  assert.deepStrictEqual(decode(nested(1000), { maxDepth: 1000 }), nestedValue(1000));
  assertProtocolError(() => decode(nested(1001), { maxDepth: 1000 }), /deeper than "1000"/);
});

Deno.test("decode() decodes a typed array nested as deep as encode() allows", () => {
  let value: unknown = new Float32Array([1, 2]);
  for (let i = 0; i < 98; i++) value = [value];
  // 98 arrays, the numpy map and its shape: 100 levels.
  assert.deepStrictEqual(decode(encode(value)), value);
  assert.throws(() => encode([value]), TypeError);
});

Deno.test("decode() throws RangeError or TypeError for invalid limit options", () => {
  const bytes = encode([1]);
  for (const maxDepth of [0, 1001, 1.5, NaN, Infinity, -1]) {
    assert.throws(() => decode(bytes, { maxDepth }), RangeError, `maxDepth ${maxDepth}`);
  }
  for (const costPerByte of [-1, NaN]) {
    assert.throws(() => decode(bytes, { costPerByte }), RangeError, `costPerByte ${costPerByte}`);
  }
  assert.throws(() => decode(bytes, { costFloor: -1 }), RangeError);
  assert.throws(() => decode(bytes, { maxDepth: "10" as unknown as number }), TypeError);
  assert.throws(() => decode(bytes, { costFloor: 1n as unknown as number }), TypeError);
  assert.throws(() => decode([0x01] as unknown as Uint8Array), TypeError);
  assert.deepStrictEqual(decode(bytes, { costPerByte: Infinity, costFloor: 0, maxDepth: 1 }), [1]);
});

Deno.test("decode() rejects the 28.6 MB nesting bomb at once with bounded memory", () => {
  const bomb = nested(30_000_000);
  assert.ok(bomb.byteLength > 28.6 * 2 ** 20);
  const before = rssMB();
  const start = performance.now();
  assertProtocolError(() => decode(bomb, { clientId: 5 }), /nested deeper than "100"/, 5);
  const ms = performance.now() - start;
  const grown = rssMB() - before;
  assert.ok(ms < 100, `took ${ms.toFixed(0)} ms`);
  assert.ok(grown < 200, `RSS grew ${grown.toFixed(0)} MB`);
});

Deno.test("decode() refuses a 9.5 MB body of nesting within the depth limit by its cost", () => {
  // 100,000 blocks of 99 nested arrays: the most heap a byte can ask for, 64 bytes.
  const block = nested(99);
  const body = new Uint8Array(5 + 100_000 * block.byteLength);
  body[0] = 0xdd;
  new DataView(body.buffer).setUint32(1, 100_000);
  for (let i = 0; i < 100_000; i++) body.set(block, 5 + i * block.byteLength);
  const before = rssMB();
  assertProtocolError(() => decode(body, { clientId: 6 }), /costs more than the budget/, 6);
  const grown = rssMB() - before;
  // The budget, 2 units of about 8 bytes per body byte, is 160 MB of heap; the old
  // decoder peaked at 1.6 GB on the same size.
  assert.ok(grown < 400, `RSS grew ${grown.toFixed(0)} MB`);
});

// ---------------------------------------------------------------------------
// Lengths and cost, checked before allocating

Deno.test("decode() refuses the 1,000,000-key map of 8.9 MB before allocating it", () => {
  const body = bigMap(1_000_000);
  assert.ok(body.byteLength > 8.8e6 && body.byteLength < 9e6, `${body.byteLength} bytes`);
  const before = rssMB();
  const start = performance.now();
  assertProtocolError(() => decode(body, { clientId: 9 }), /costs more than the budget/, 9);
  const ms = performance.now() - start;
  assert.ok(ms < 50, `took ${ms.toFixed(0)} ms: the map was built before refusing it`);
  assert.ok(rssMB() - before < 50);
  // The same map of 10,000 keys decodes.
  const small = decode(bigMap(10_000)) as Record<string, number>;
  assert.equal(Object.keys(small).length, 10_000);
  assert.equal(small.k9999, 9999 & 0x7f);
});

Deno.test("decode() refuses container, string and binary headers longer than the body", () => {
  const cases: [number[], RegExp][] = [
    [[0xdd, 0x20, 0, 0, 0, 1, 2, 3], /array of "536870912" elements in "3" bytes/],
    [[0xdc, 0xff, 0xff], /array of "65535" elements in "0" bytes/],
    [[0x9f, 1, 2], /array of "15" elements in "2" bytes/],
    [[0xdf, 0, 0x0f, 0x42, 0x40, 0xa1, 0x61, 1], /map of "1000000" entries in "3" bytes/],
    [[0x82, 0xa1, 0x61, 1], /map of "2" entries in "3" bytes/],
    [[0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61], /truncated: "2147483647" bytes needed/],
    [[0xc6, 0xff, 0xff, 0xff, 0xff], /truncated: "4294967295" bytes needed/],
    [[0xc9, 0x20, 0, 0, 0, 0x05, 1], /truncated: "536870912" bytes needed/],
  ];
  for (const [bytes, pattern] of cases) {
    const start = performance.now();
    assertProtocolError(() => decode(new Uint8Array(bytes), { clientId: 1 }), pattern, 1);
    assert.ok(performance.now() - start < 20);
  }
});

Deno.test("decode() charges exactly: an array of n small integers costs 4 + n units", () => {
  const body = new Uint8Array([0x93, 1, 2, 3]); // 7 units in 4 bytes
  assert.deepStrictEqual(decode(body, { costFloor: 0, costPerByte: 7 / 4 }), [1, 2, 3]);
  assertProtocolError(() => decode(body, { costFloor: 0, costPerByte: 6.99 / 4 }), /budget/);
  assert.deepStrictEqual(decode(body, { costFloor: 7, costPerByte: 0 }), [1, 2, 3]);
  assertProtocolError(() => decode(body, { costFloor: 6, costPerByte: 0 }), /budget of "6"/);
});

Deno.test("decode() refuses bodies whose values would cost more memory than the budget", () => {
  const cases: [string, number[]][] = [
    ["empty maps", [0x80]],
    ["empty arrays", [0x90]],
    ["empty binaries", [0xc4, 0x00]],
    ["one-byte extensions", [0xd4, 0x01, 0x00]],
  ];
  for (const [name, item] of cases) {
    const count = 4_000_000;
    const body = new Uint8Array(5 + count * item.length);
    body[0] = 0xdd;
    new DataView(body.buffer).setUint32(1, count);
    for (let i = 0; i < count; i++) body.set(item, 5 + i * item.length);
    const before = rssMB();
    assertProtocolError(() => decode(body), /costs more than the budget/);
    // At most 2 units (≈ 16 bytes) per body byte, and 2²² units for any body.
    const bound = (16 * body.byteLength + 8 * 2 ** 22) / 2 ** 20;
    const grown = rssMB() - before;
    assert.ok(grown < 1.5 * bound + 50, `${name}: RSS grew ${grown.toFixed(0)} MB`);
  }
});

Deno.test("decode() charges records that repeat their keys once per key", () => {
  const records = Array.from({ length: 200_000 }, (_, i) => ({ id: i, ok: true }));
  assert.deepStrictEqual(decode(encode(records)), records);
  // The same count of maps, each with a key of its own, is refused.
  const unique = Array.from({ length: 200_000 }, (_, i) => ({ [`id${i}`]: true }));
  assertProtocolError(() => decode(encode(unique)), /costs more than the budget/);
  // Small messages are never refused for their cost.
  assert.deepStrictEqual(decode(encode(unique.slice(0, 20_000))), unique.slice(0, 20_000));
});

Deno.test("decode() refuses the examples of PROTOCOL.md §4.5 and accepts smaller ones", () => {
  const arrays = (n: number) =>
    bytesOf([0xdd, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);
  const emptyArrays = (n: number) => bytesOf(arrays(n), new Uint8Array(n).fill(0x90));
  assertProtocolError(() => decode(emptyArrays(1_000_000)), /budget/);
  assert.equal((decode(emptyArrays(500_000)) as unknown[]).length, 500_000);
  const maps = (n: number) => encode(Array.from({ length: n }, () => ({ a: 1 })));
  assertProtocolError(() => decode(maps(600_000)), /budget/);
  assert.equal((decode(maps(300_000)) as unknown[]).length, 300_000);
  const keys = (n: number) =>
    encode(Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, i])));
  assert.ok(keys(200_000).byteLength < 3e6);
  assertProtocolError(() => decode(keys(200_000)), /budget/);
  assert.equal(Object.keys(decode(keys(60_000)) as object).length, 60_000);
});

// ---------------------------------------------------------------------------
// Keys, numpy maps, strings

Deno.test("decode() refuses a __proto__ key as str or bin, and other non-key types", () => {
  const proto = [...new TextEncoder().encode("__proto__")];
  assertProtocolError(() => decode(bytesOf([0x81, 0xa9], proto, [0x80])), /key "__proto__"/);
  assertProtocolError(() => decode(bytesOf([0x81, 0xc4, 9], proto, [0x80])), /key "__proto__"/);
  assertProtocolError(() => decode(bytesOf([0x81, 0xd9, 9], proto, [0x80])), /key "__proto__"/);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  const keys: [number[], string][] = [
    [[0xc0], "nil"],
    [[0xc3], "bool"],
    [[0x90], "array"],
    [[0x80], "map"],
    [[0xd4, 1, 0], "ext"],
    [[0xd6, 0xff, 0, 0, 0, 0], "ext"],
  ];
  for (const [key, type] of keys) {
    assertProtocolError(() => decode(bytesOf([0x81], key, [1]), { clientId: 2 }), /map key/, 2);
    assertProtocolError(() => decode(bytesOf([0x81], key, [1])), new RegExp(`"${type}"`));
  }
  // Numbers are keys; a 64-bit integer beyond 2⁵³ becomes its decimal string.
  assert.deepStrictEqual(
    decode(bytesOf([0x82, 0x01, 0xa1, 0x61, 0xcb], encode(0.5).subarray(1), [2])),
    {
      1: "a",
      0.5: 2,
    },
  );
  const big = bytesOf([0x81, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
  assert.deepStrictEqual(decode(big), { "18446744073709551615": 1 });
});

Deno.test("decode() refuses a numpy shape entry that is not a non-negative integer", () => {
  assert.deepStrictEqual(decode(numpyWithShape([2])), new Float32Array(2));
  const matrix = decode(numpyWithShape([2, 1]));
  assert.ok(matrix instanceof NdArray);
  assert.deepStrictEqual(matrix.shape, [2, 1]);
  for (const shape of [["2", [1]], [true, 2], [2, null], [[2]], [-1, -2], [0.5, 4], [2n ** 60n]]) {
    assertProtocolError(
      () => decode(numpyWithShape(shape), { clientId: 4 }),
      /numpy array: shape entry/,
      4,
    );
  }
  // kind may only be absent or empty.
  const kinds = [5, null, "V", new Uint8Array([0x56])];
  for (const kind of kinds) {
    const body = msgpackEncode({
      nd: true,
      type: "<f4",
      kind,
      shape: [2],
      data: new Uint8Array(8),
    });
    assertProtocolError(() => decode(body), /unsupported numpy array/);
  }
});

Deno.test("decode() recognises a numpy map only by an nd boolean and data that is a bin", () => {
  // data that decodes to a Uint8Array from a nested numpy map is not a bin on the wire.
  const inner = new NdArray(new Uint8Array([1, 2]), [2]);
  const outer = decode(encode({ nd: true, data: inner })) as Record<string, unknown>;
  assert.deepStrictEqual(outer, { nd: true, data: new Uint8Array([1, 2]) });
  assert.deepStrictEqual(decode(encode({ nd: 1, data: new Uint8Array(4) })), {
    nd: 1,
    data: new Uint8Array(4),
  });
  // The last of repeated keys counts, as for any map.
  const body = bytesOf(
    [0x83, 0xa2, 0x6e, 0x64, 0xc3, 0xa4],
    [...new TextEncoder().encode("data")],
    [
      0xc4,
      0x00,
      0xa2,
      0x6e,
      0x64,
      0x01,
    ],
  );
  assert.deepStrictEqual(decode(body), { nd: 1, data: new Uint8Array(0) });
});

Deno.test("decode() replaces invalid UTF-8 with U+FFFD at every length, keeping the next value", () => {
  // A lone lead byte of a 3-byte sequence, in a 1-byte string, then the integer 5.
  assert.deepStrictEqual(decode(new Uint8Array([0x92, 0xa1, 0xe2, 0x05])), ["\ufffd", 5]);
  assert.deepStrictEqual(decode(new Uint8Array([0x92, 0xa2, 0x61, 0xff, 0x07])), ["a\ufffd", 7]);
  for (const length of [3, 8, 9, 31, 32, 33, 200, 201, 300, 70_000]) {
    const text = new Uint8Array(length).fill(0x61);
    text[length >> 1] = 0xc3; // a 2-byte lead without its continuation
    text[length - 1] = 0xe2; // a truncated 3-byte sequence at the end
    const header = length < 32 ? [0xa0 | length] : length < 256 ? [0xd9, length] : [
      0xdb,
      0,
      length >> 16,
      (length >> 8) & 0xff,
      length & 0xff,
    ];
    const [s, next] = decode(bytesOf([0x92], header, text, [0x2a])) as [string, number];
    const expected = "a".repeat(length >> 1) + "\ufffd" + "a".repeat(length - (length >> 1) - 2) +
      "\ufffd";
    assert.equal(s, expected, `${length} bytes`);
    assert.equal(next, 42);
  }
  // Keys follow the same rule, as str or bin; a leading BOM is kept.
  assert.deepStrictEqual(decode(new Uint8Array([0x82, 0xa1, 0xff, 1, 0xc4, 0x01, 0xfe, 2])), {
    "\ufffd": 2,
  });
  assert.equal(decode(encode("\ufeffa")), "\ufeffa");
  assert.equal(decode(encode("\ufeff" + "b".repeat(300))), "\ufeff" + "b".repeat(300));
});

Deno.test("decode() throws ProtocolError naming the client for every malformed body", () => {
  const bodies: number[][] = [
    [],
    [0xc1],
    [0x92, 0xc1, 0x01],
    [0x81, 0xc1, 0x01],
    [0x01, 0x02],
    [0x92, 0x01],
    [0xcb, 0x00],
    [0xcf, 0, 0, 0],
    [0xd6, 0xff, 0, 0],
    [0xd5, 0xff, 0, 0],
    [0xc7, 0x02, 0xff, 0, 0],
    [0x81, 0xc0, 0x01],
    [...nested(101)],
    [0xdd, 0xff, 0xff, 0xff, 0xff],
  ];
  bodies.push([...numpyWithShape([3])], [...numpyWithShape(["2", [1]])]);
  for (const body of bodies) {
    assertProtocolError(() => decode(new Uint8Array(body), { clientId: 42 }), /./, 42);
    assertProtocolError(() => decode(new Uint8Array(body)), /./, undefined);
  }
  // After any failure the decoder works as before.
  assert.deepStrictEqual(decode(encode({ round: 3, lr: 0.01 })), { round: 3, lr: 0.01 });
});

Deno.test("decode() refuses a body over the absolute costLimit from its array header, at once", () => {
  // 33.5 M nils: n + 4 units fit 2 units per byte, but not the 2^24 ceiling.
  const n = 32 * 1024 * 1024;
  const body = new Uint8Array(5 + n);
  body.set([0xdd, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
  body.fill(0xc0, 5);
  const started = performance.now();
  assert.throws(() => decode(body, { clientId: 4 }), (error: unknown) => {
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.clientId, 4);
    assert.match(error.message, /costs more than the budget of "16777216" units/);
    return true;
  });
  assert.ok(performance.now() - started < 1_000, "refused before anything is built");
  // The same body with the ceiling lifted is decoded (slowly): the limit is the only guard.
  const small = new Uint8Array([0x93, 0xc0, 0xc0, 0xc0]);
  assert.deepStrictEqual(decode(small, { costLimit: 8 }), [null, null, null]);
  assert.throws(() => decode(small, { costLimit: 6 }), ProtocolError);
});

Deno.test("decode() refuses a numpy type without an explicit byte order", () => {
  for (const type of ["=f4", "!f4", "f4"]) {
    const body = msgpackEncode({ nd: true, type, kind: "", shape: [1], data: new Uint8Array(4) });
    assert.throws(() => decode(body), ProtocolError, type);
  }
  const ok = msgpackEncode({
    nd: true,
    type: "<f4",
    kind: "",
    shape: [1],
    data: new Uint8Array(4),
  });
  assert.deepStrictEqual(decode(ok), new Float32Array(1));
});
