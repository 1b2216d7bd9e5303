import assert from "node:assert/strict";
import { ExtData } from "@msgpack/msgpack";
import { decode, encode } from "../codec.ts";
import { ProtocolError } from "../errors.ts";
import { NdArray } from "../tensor.ts";
import type { DecodeOptions } from "../types.ts";

// A bounded, deterministic fuzz test of decode(): random bytes and mutations
// of valid encodings must decode or throw ProtocolError, quickly, in bounded
// memory. FEDCOMM_FUZZ_SECONDS sets its duration (default 8).

const SECONDS = Number(Deno.env.get("FEDCOMM_FUZZ_SECONDS") ?? 8);
if (!(SECONDS > 0)) {
  throw new RangeError(`Invalid FEDCOMM_FUZZ_SECONDS: "${SECONDS}" is not a positive number`);
}
const SEED = 0x5eed_f00d;
/** The longest a single decode may take. */
const MAX_CALL_MS = 1000;
/** How far RSS may grow over the whole run. */
const MAX_RSS_GROWTH_MB = 600;

/** mulberry32: a small, fast, seeded PRNG. */
function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const random = prng(SEED);
const int = (n: number): number => Math.floor(random() * n);
const pick = <T>(items: readonly T[]): T => items[int(items.length)];

/** Realistic messages: control maps, tensors, nested records, strings, binaries. */
function corpus(): Uint8Array[] {
  const text = ["", "a", "round", "clé", "漢字🍺", "x".repeat(40), "é".repeat(150)];
  const messages: unknown[] = [
    { round: 3, lr: 0.01 },
    { type: "hello", version: 1, clientId: 7, token: new Uint8Array([1, 2, 3]) },
    { round: 12, weights: new Float32Array(64).map((_, i) => Math.sin(i)), loss: 0.42 },
    { w: new NdArray(new Float64Array(6).fill(1.5), [2, 3]), b: new Int32Array([1, -2, 3]) },
    { big: new BigInt64Array([1n, -(2n ** 62n)]), u: new BigUint64Array([2n ** 64n - 1n]) },
    [new Uint8Array(300).fill(7), new Int8Array(5), new Uint16Array(3), new Float16Array(2)],
    {
      meta: { client: "client-7", samples: 1280, tags: ["train", "eval"], ok: true, n: null },
      hist: Array.from({ length: 20 }, (_, i) => ({ step: i, loss: 1 / (i + 1) })),
    },
    { when: new Date(1_700_000_000_123), ext: new ExtData(5, new Uint8Array([9, 9])) },
    new Map<unknown, unknown>([[1, "one"], [-5, [2 ** 40, -(2 ** 33), 2n ** 63n]], [0.5, {}]]),
    text,
    Object.fromEntries(text.map((t, i) => [t, i])),
    { nested: [[[[[{ deep: [1, [2, [3, [4]]]] }]]]]] },
  ];
  // numpy maps the way Python writes them: str keys, any order.
  const numpy = (fields: Record<string, unknown>) =>
    encodeRaw({ nd: true, type: "<f4", kind: "", shape: [2], data: new Uint8Array(8), ...fields });
  const out = messages.map((m) => encode(m));
  out.push(numpy({}), numpy({ shape: [1, 2] }), numpy({ nd: false, data: new Uint8Array(4) }));
  return out;
}

/** Encodes a map with str keys (not as typed arrays), for hand-made numpy maps. */
function encodeRaw(map: Record<string, unknown>): Uint8Array {
  return encode(new Map(Object.entries(map)));
}

/** Offsets of bytes that start a header with a length or count field. */
function headerOffsets(bytes: Uint8Array): number[] {
  const offsets: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if ((b >= 0x80 && b <= 0xbf) || (b >= 0xc4 && b <= 0xc9) || (b >= 0xd9 && b <= 0xdf)) {
      offsets.push(i);
    }
  }
  return offsets;
}

/** Sets the length field after a header byte (or the fix-form count) to something large. */
function inflate(bytes: Uint8Array, at: number): void {
  const b = bytes[at];
  const huge = pick([0xff, 0x7f, 0x10, int(256)]);
  if (b < 0xc0) bytes[at] = (b & 0xf0) | (b < 0xa0 ? 0x0f : 0x1f); // largest fix count
  else {
    const width = [0xc4, 0xc7, 0xd9].includes(b)
      ? 1
      : [0xc5, 0xc8, 0xda, 0xdc, 0xde].includes(b)
      ? 2
      : 4;
    for (let i = 1; i <= width && at + i < bytes.length; i++) {
      bytes[at + i] = i === 1 ? huge : pick([0xff, 0x00, int(256)]);
    }
  }
}

const INTERESTING = [
  0x00,
  0x7f,
  0x80,
  0x8f,
  0x90,
  0x9f,
  0xa0,
  0xbf,
  0xc0,
  0xc1,
  0xc3,
  0xc4,
  0xc6,
  0xc9,
  0xcb,
  0xcf,
  0xd3,
  0xd6,
  0xd8,
  0xdb,
  0xdd,
  0xdf,
  0xe0,
  0xff,
];

/** A mutated copy of one of `seeds` (one to four mutations), or random bytes. */
function mutate(seeds: Uint8Array[]): Uint8Array {
  if (random() < 0.08) {
    return Uint8Array.from(
      { length: int(80) },
      () => random() < 0.3 ? pick(INTERESTING) : int(256),
    );
  }
  let bytes = pick(seeds).slice();
  const rounds = 1 + int(4);
  for (let r = 0; r < rounds && bytes.length > 0; r++) {
    const at = int(bytes.length);
    switch (int(7)) {
      case 0: // bit flips
        for (let i = 0; i < 1 + int(4); i++) bytes[int(bytes.length)] ^= 1 << int(8);
        break;
      case 1: // an interesting byte
        bytes[at] = pick(INTERESTING);
        break;
      case 2: // truncation
        bytes = bytes.subarray(0, at);
        break;
      case 3: { // length-field inflation
        const headers = headerOffsets(bytes);
        if (headers.length > 0) inflate(bytes, pick(headers));
        break;
      }
      case 4: { // splice in part of another seed
        const other = pick(seeds);
        const from = int(other.length);
        const piece = other.subarray(from, from + 1 + int(64));
        const out = new Uint8Array(bytes.length + piece.length);
        out.set(bytes.subarray(0, at));
        out.set(piece, at);
        out.set(bytes.subarray(at), at + piece.length);
        bytes = out;
        break;
      }
      case 5: { // delete a region
        const end = Math.min(bytes.length, at + 1 + int(16));
        const out = new Uint8Array(bytes.length - (end - at));
        out.set(bytes.subarray(0, at));
        out.set(bytes.subarray(end), at);
        bytes = out;
        break;
      }
      default: { // duplicate a region (repeated keys, extra bytes)
        const piece = bytes.slice(at, at + 1 + int(32));
        const out = new Uint8Array(bytes.length + piece.length);
        out.set(bytes);
        out.set(piece, bytes.length);
        bytes = out;
      }
    }
  }
  return bytes;
}

/** Options for one call: mostly the defaults, sometimes tight limits. */
function options(): DecodeOptions {
  const roll = random();
  if (roll < 0.7) return { clientId: 11 };
  if (roll < 0.85) return { clientId: 11, maxDepth: 1 + int(8) };
  return { clientId: 11, costFloor: int(200), costPerByte: random() * 4 };
}

Deno.test("decode() of fuzzed bytes returns a value or throws ProtocolError, quickly", () => {
  const seeds = corpus();
  for (const seed of seeds) decode(seed); // every seed is valid
  (globalThis as { gc?: () => void }).gc?.();
  const rssStart = Deno.memoryUsage().rss;
  const deadline = performance.now() + SECONDS * 1000;
  let calls = 0;
  let decoded = 0;
  let slowest = 0;
  while (performance.now() < deadline) {
    for (let batch = 0; batch < 200; batch++) {
      const input = mutate(seeds);
      const opts = options();
      const start = performance.now();
      try {
        decode(input, opts);
        decoded++;
      } catch (error) {
        if (!(error instanceof ProtocolError)) {
          throw new Error(`decode() threw ${error} for [${input.join(", ")}]`, { cause: error });
        }
        assert.equal(error.clientId, 11);
        assert.match(error.message, /^Malformed MessagePack: /);
        // Wrapped errors may only come from numpy map checks, never from the decoder itself.
        if (error.cause !== undefined) {
          assert.ok(
            error.cause instanceof TypeError && /numpy|shape/i.test(error.message),
            `unexpected cause ${error.cause} for [${input.join(", ")}]`,
          );
        }
      }
      const ms = performance.now() - start;
      slowest = Math.max(slowest, ms);
      assert.ok(ms < MAX_CALL_MS, `${ms.toFixed(0)} ms for [${input.join(", ")}]`);
      calls++;
    }
    const grown = (Deno.memoryUsage().rss - rssStart) / 2 ** 20;
    assert.ok(grown < MAX_RSS_GROWTH_MB, `RSS grew ${grown.toFixed(0)} MB after ${calls} calls`);
  }
  assert.ok(calls > 0 && decoded > 0 && decoded < calls, `${decoded} of ${calls} decoded`);
});
