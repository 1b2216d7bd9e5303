/**
 * Decode microbenchmark: the previous decoder (`@msgpack/msgpack`'s
 * `Decoder` plus a second pass that revives numpy maps and 64-bit integers)
 * against `codec.ts`'s bounded decoder, on four messages.
 *
 *     deno run -A bench/decode.ts [seconds per measurement, default 1]
 *
 * Prints a Markdown table: per message, the best ops/s of each decoder over
 * interleaved batches of about 20 ms, and the ratio.
 *
 * @module
 */

import { Decoder, ExtData } from "@msgpack/msgpack";
import { decode, encode } from "../codec.ts";
import { fromNumpyMap } from "../tensor.ts";

// ---------------------------------------------------------------------------
// The previous decode(), as codec.ts had it before the bounded decoder.

const textDecoder = new TextDecoder();

function asciiKey(bytes: Uint8Array): string | undefined {
  const n = bytes.byteLength;
  if (n === 2 && bytes[0] === 0x6e && bytes[1] === 0x64) return "nd";
  if (n === 4) {
    const word = (bytes[0] << 24 | bytes[1] << 16 | bytes[2] << 8 | bytes[3]) >>> 0;
    if (word === 0x74797065) return "type";
    if (word === 0x6b696e64) return "kind";
    if (word === 0x64617461) return "data";
  }
  if (
    n === 5 && bytes[0] === 0x73 && bytes[1] === 0x68 && bytes[2] === 0x61 && bytes[3] === 0x70 &&
    bytes[4] === 0x65
  ) return "shape";
  if (n > 16) return undefined;
  let key = "";
  for (let i = 0; i < bytes.byteLength; i++) {
    if (bytes[i] >= 0x80) return undefined;
    key += String.fromCharCode(bytes[i]);
  }
  return key;
}

function mapKey(key: unknown): string | number {
  if (typeof key === "string" || typeof key === "number") return key;
  if (key instanceof Uint8Array) return asciiKey(key) ?? textDecoder.decode(key);
  if (typeof key === "bigint") return String(key);
  throw new TypeError(`Invalid map key: type "${typeof key}" cannot be an object key`);
}

function revive(v: unknown): unknown {
  if (typeof v === "bigint") {
    return v >= Number.MIN_SAFE_INTEGER && v <= Number.MAX_SAFE_INTEGER ? Number(v) : v;
  }
  if (typeof v !== "object" || v === null) return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const item = v[i];
      if (typeof item === "object" || typeof item === "bigint") v[i] = revive(item);
    }
    return v;
  }
  if (v instanceof Uint8Array || v instanceof ExtData || v instanceof Date) return v;
  const record = v as Record<string, unknown>;
  if (typeof record.nd === "boolean" && record.data instanceof Uint8Array) {
    const shape = record.shape;
    if (Array.isArray(shape)) revive(shape);
    return fromNumpyMap(record);
  }
  for (const key of Object.keys(record)) {
    const item = record[key];
    if (typeof item === "object" || typeof item === "bigint") record[key] = revive(item);
  }
  return record;
}

const newDecoder = () => new Decoder({ useBigInt64: true, mapKeyConverter: mapKey });
const sharedDecoder = newDecoder();

function oldDecode(bytes: Uint8Array): unknown {
  const decoder = bytes.byteLength > 64 * 1024 ? newDecoder() : sharedDecoder;
  return revive(decoder.decode(bytes));
}

// ---------------------------------------------------------------------------
// Messages

const messages: [string, Uint8Array][] = [
  [
    "1 KiB update",
    encode({
      round: 12,
      weights: new Float32Array(200).map((_, i) => Math.sin(i)),
      meta: { client: "client-7", samples: 1280, loss: 0.4213, lr: 0.01, epoch: 3, ok: true },
    }),
  ],
  ["control {round, lr}", encode({ round: 3, lr: 0.01 })],
  ["100 MiB Float32Array", encode({ round: 1, weights: new Float32Array(25 * 2 ** 20) })],
  [
    "10k-element mix",
    encode(Array.from({ length: 1000 }, (_, i) => ({
      id: i,
      name: `client-${i}`,
      loss: 1 / (i + 1),
      tags: ["train", "eval"],
      counts: [i, i * 2, i * 3],
      ok: i % 2 === 0,
    }))),
  ],
];

/** Calls `f` `calls` times and returns calls per second. */
function bestOpsPerSecond(f: () => unknown, calls: number): number {
  const start = performance.now();
  for (let i = 0; i < calls; i++) f();
  return calls / ((performance.now() - start) / 1000);
}

const seconds = Number(Deno.args[0] ?? 1);
const format = (n: number) => n >= 100 ? Math.round(n).toLocaleString("en") : n.toFixed(1);
console.log("| message | bytes | old ops/s | new ops/s | new/old |");
console.log("| --- | ---: | ---: | ---: | ---: |");
for (const [name, bytes] of messages) {
  // Size a batch to about 20 ms, then alternate old and new batches for `seconds`
  // each and keep each one's best: the machine's noise hits both alike.
  let calls = 1;
  for (let ms = 0; ms < 20; calls *= 2) {
    const start = performance.now();
    for (let i = 0; i < calls; i++) oldDecode(bytes);
    ms = performance.now() - start;
  }
  let old = 0;
  let now = 0;
  for (let round = 0; round < Math.max(3, (seconds * 1000) / 20); round++) {
    old = Math.max(old, bestOpsPerSecond(() => oldDecode(bytes), calls));
    now = Math.max(now, bestOpsPerSecond(() => decode(bytes), calls));
  }
  console.log(
    `| ${name} | ${bytes.byteLength.toLocaleString("en")} | ${format(old)} | ${format(now)} | ` +
      `${(now / old).toFixed(2)}× |`,
  );
}
