import assert from "node:assert/strict";
import { BufferPool } from "./pool.ts";
import { NdArray } from "../tensor.ts";

const KiB = 1024;

Deno.test("BufferPool.take() hands out a recycled buffer of the same size, once", () => {
  const pool = new BufferPool();
  const body = pool.take(256 * KiB);
  const value = { round: 1, weights: new Float32Array(body.buffer, 16, 1000), tag: "x" };
  assert.equal(pool.recycle(value), 256 * KiB);
  assert.equal(pool.recycle(value), 0, "a buffer is taken back once");
  assert.equal(pool.bytes, 256 * KiB);
  assert.equal(pool.take(128 * KiB).buffer === body.buffer, false, "another size: fresh memory");
  assert.equal(pool.take(256 * KiB).buffer, body.buffer);
  assert.equal(pool.bytes, 0);
  assert.notEqual(pool.take(256 * KiB).buffer, body.buffer, "it was handed out again");
});

Deno.test("BufferPool.recycle() takes back only what it handed out, found anywhere in the value", () => {
  const pool = new BufferPool();
  const a = pool.take(64 * KiB);
  const b = pool.take(100 * KiB);
  const small = pool.take(1024); // small bodies are not kept
  const foreign = new Float32Array(64 * KiB);
  const value = [
    { deep: [new NdArray(new Float32Array(a.buffer), [128, 128])] },
    b,
    small,
    foreign,
  ];
  assert.equal(pool.recycle(value), 164 * KiB);
  assert.equal(pool.recycle(new Map([[1, foreign]])), 0);
});

Deno.test("BufferPool keeps at most its limit, dropping the oldest", () => {
  const pool = new BufferPool(300 * KiB);
  const [a, b, c] = [pool.take(128 * KiB), pool.take(128 * KiB), pool.take(128 * KiB)];
  pool.recycle([a, b, c]);
  assert.equal(pool.bytes, 256 * KiB);
  assert.equal(pool.recycle(pool.take(400 * KiB)), 0, "larger than the limit: not kept");
  const again = [pool.take(128 * KiB), pool.take(128 * KiB)].map((x) => x.buffer);
  assert.ok(!again.includes(a.buffer as ArrayBuffer), "the oldest was dropped");
  assert.deepStrictEqual(new Set(again), new Set([b.buffer, c.buffer]));
});
