import assert from "node:assert/strict";
import { BufferPool, RECYCLE_HEADROOM_BYTES, RECYCLE_SLACK } from "./pool.ts";
import { NdArray } from "../tensor.ts";

const KiB = 1024;
/** The buffer size of a fresh large frame body: its length and the headroom. */
const withHeadroom = (length: number) =>
  length + Math.min(RECYCLE_HEADROOM_BYTES, Math.floor(length * RECYCLE_SLACK));

Deno.test("BufferPool.take() hands out a recycled buffer of the same size, once", () => {
  const pool = new BufferPool();
  const body = pool.take(256 * KiB);
  assert.deepStrictEqual([body.byteOffset, body.byteLength], [0, 256 * KiB]);
  assert.equal(body.buffer.byteLength, withHeadroom(256 * KiB));
  const value = { round: 1, weights: new Float32Array(body.buffer, 16, 1000), tag: "x" };
  assert.equal(pool.recycle(value), withHeadroom(256 * KiB));
  assert.equal(pool.recycle(value), 0, "a buffer is taken back once");
  assert.equal(pool.bytes, withHeadroom(256 * KiB));
  assert.equal(pool.take(128 * KiB).buffer === body.buffer, false, "another size: fresh memory");
  assert.equal(pool.take(256 * KiB).buffer, body.buffer);
  assert.equal(pool.bytes, 0);
  assert.notEqual(pool.take(256 * KiB).buffer, body.buffer, "it was handed out again");
});

Deno.test("BufferPool.take() fits a body up to the headroom larger, or RECYCLE_SLACK smaller, the best fit first", () => {
  const pool = new BufferPool();
  const [a, b] = [pool.take(256 * KiB + 40), pool.take(256 * KiB + 8)];
  pool.recycle([a, b]);
  const larger = pool.take(256 * KiB + 8 + RECYCLE_HEADROOM_BYTES);
  assert.equal(larger.buffer, b.buffer, "the smaller of the two that fit");
  assert.equal(larger.byteLength, 256 * KiB + 8 + RECYCLE_HEADROOM_BYTES);
  pool.recycle(larger);
  const smaller = pool.take(200 * KiB + 256 * KiB * RECYCLE_SLACK);
  assert.notEqual(smaller.buffer, a.buffer, "more than RECYCLE_SLACK smaller: fresh memory");
  assert.notEqual(smaller.buffer, b.buffer);
  const big = pool.take(withHeadroom(256 * KiB + 40) + 1);
  assert.ok(big.buffer !== a.buffer && big.buffer !== b.buffer, "a smaller buffer never fits");
  assert.equal(pool.take(256 * KiB + 8).buffer, b.buffer, "the length it had");
  assert.equal(pool.take(256 * KiB + 40).buffer, a.buffer);
});

Deno.test("BufferPool.takeExact() hands out only buffers of exactly its length", () => {
  const pool = new BufferPool();
  const array = pool.takeExact(256 * KiB);
  assert.equal(array.buffer.byteLength, 256 * KiB, "no headroom");
  pool.recycle(array);
  assert.notEqual(pool.takeExact(256 * KiB - 8).buffer, array.buffer);
  assert.equal(pool.takeExact(256 * KiB).buffer, array.buffer);
});

Deno.test("BufferPool.recycle() takes back only what it handed out, found anywhere in the value", () => {
  const pool = new BufferPool();
  const a = pool.takeExact(64 * KiB);
  const b = pool.take(100 * KiB);
  const small = pool.take(1024); // small bodies are not kept
  const foreign = new Float32Array(64 * KiB);
  const value = [
    { deep: [new NdArray(new Float32Array(a.buffer), [128, 128])] },
    b,
    small,
    foreign,
  ];
  assert.equal(pool.recycle(value), 64 * KiB + withHeadroom(100 * KiB));
  assert.equal(pool.recycle(new Map([[1, foreign]])), 0);
});

Deno.test("BufferPool keeps at most its limit, dropping the oldest", () => {
  const pool = new BufferPool(300 * KiB);
  const [a, b, c] = [0, 1, 2].map(() => pool.takeExact(128 * KiB));
  pool.recycle([a, b, c]);
  assert.equal(pool.bytes, 256 * KiB);
  assert.equal(pool.recycle(pool.take(400 * KiB)), 0, "larger than the limit: not kept");
  const again = [pool.takeExact(128 * KiB), pool.takeExact(128 * KiB)].map((x) => x.buffer);
  assert.ok(!again.includes(a.buffer as ArrayBuffer), "the oldest was dropped");
  assert.deepStrictEqual(new Set(again), new Set([b.buffer, c.buffer]));
});
