import assert from "node:assert/strict";
import { checkLinkShape, checkLinkShapes, LinkShaper } from "./_link_shape.ts";

/** A sink that records each write and when it happened. */
function recorder(): {
  writes: { bytes: Uint8Array; at: number }[];
  sink: (bytes: Uint8Array) => Promise<void>;
  joined(): Uint8Array;
} {
  const writes: { bytes: Uint8Array; at: number }[] = [];
  return {
    writes,
    sink: (bytes) => {
      writes.push({ bytes: bytes.slice(), at: performance.now() });
      return Promise.resolve();
    },
    joined() {
      const all = new Uint8Array(writes.reduce((n, w) => n + w.bytes.byteLength, 0));
      let offset = 0;
      for (const { bytes } of writes) {
        all.set(bytes, offset);
        offset += bytes.byteLength;
      }
      return all;
    },
  };
}

const pattern = (length: number, seed = 0) =>
  new Uint8Array(length).map((_, i) => (i * 31 + seed) & 0xff);

Deno.test("checkLinkShape() rejects malformed shapes with TypeError and out-of-range ones with RangeError", () => {
  assert.deepEqual(checkLinkShape({}), {});
  const ok = { latencyMs: 0, jitterMs: 1.5, bitsPerSecond: 8, burstBytes: 1, queueBytes: 1 };
  assert.equal(checkLinkShape(ok), ok);
  for (const bad of [null, 5, "x", [], { latency: 5 }, { latencyMs: "5" }, { bitsPerSecond: 1n }]) {
    assert.throws(() => checkLinkShape(bad), TypeError, JSON.stringify(String(bad)));
  }
  for (
    const bad of [
      { latencyMs: -1 },
      { latencyMs: Infinity },
      { jitterMs: NaN },
      { jitterMs: -0.5 },
      { bitsPerSecond: 0 },
      { bitsPerSecond: 7 },
      { bitsPerSecond: Infinity },
      { burstBytes: 0 },
      { burstBytes: 1.5 },
      { queueBytes: -4 },
      { queueBytes: 2 ** 60 },
    ]
  ) {
    assert.throws(() => checkLinkShape(bad), RangeError, JSON.stringify(bad));
  }
  assert.throws(() => checkLinkShapes({ left: {} }), TypeError);
  assert.throws(() => checkLinkShapes({ up: { latencyMs: -1 } }), /shapes\.up\.latencyMs/);
  assert.throws(
    () => new LinkShaper(() => Promise.resolve(), { shape: { jitterMs: -1 } }),
    RangeError,
  );
  assert.throws(() => new LinkShaper(undefined as never), TypeError);
});

Deno.test("LinkShaper.push() writes at once on an unshaped link", async () => {
  const r = recorder();
  const shaper = new LinkShaper(r.sink);
  assert.equal(shaper.shaped, false);
  await shaper.push(pattern(100));
  assert.equal(r.writes.length, 1);
  assert.deepEqual(r.joined(), pattern(100));
  assert.equal(shaper.queued, 0);
});

Deno.test("LinkShaper.push() delays bytes by latencyMs and copies them", async () => {
  const r = recorder();
  const shaper = new LinkShaper(r.sink, { shape: { latencyMs: 150 } });
  const bytes = pattern(1000);
  const started = performance.now();
  await shaper.push(bytes);
  assert.equal(r.writes.length, 0, "nothing written before the latency");
  bytes.fill(0); // the caller reuses its buffer
  await shaper.drain();
  assert.ok(r.writes[0].at - started >= 149, `after ${(r.writes[0].at - started).toFixed(1)} ms`);
  assert.deepEqual(r.joined(), pattern(1000));
});

Deno.test("LinkShaper.push() never reorders bytes under jitter", async () => {
  const r = recorder();
  const shaper = new LinkShaper(r.sink, { shape: { latencyMs: 15, jitterMs: 10 }, seed: 3 });
  const chunks = Array.from({ length: 300 }, (_, i) => pattern(1 + (i % 17), i));
  const pushed: number[] = [];
  for (const [i, chunk] of chunks.entries()) {
    pushed.push(performance.now());
    await shaper.push(chunk);
    if (i % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 3));
  }
  await shaper.drain();
  // One slice per chunk (no bandwidth limit), none earlier than latencyMs − jitterMs.
  assert.equal(r.writes.length, chunks.length);
  for (const [i, write] of r.writes.entries()) assert.ok(write.at >= pushed[i] + 5, `chunk ${i}`);
  const sent = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    sent.set(chunk, offset);
    offset += chunk.byteLength;
  }
  assert.deepEqual(r.joined(), sent);
  for (let i = 1; i < r.writes.length; i++) assert.ok(r.writes[i].at >= r.writes[i - 1].at);
});

Deno.test("LinkShaper.push() paces bytes to bitsPerSecond in slices of at most burstBytes", async () => {
  const r = recorder();
  // 1 Mbit/s = 125 kB/s: 100 kB take 0.8 s, minus the first full bucket of 2 kB (16 ms).
  const shaper = new LinkShaper(r.sink, { shape: { bitsPerSecond: 1e6, burstBytes: 2000 } });
  const started = performance.now();
  await shaper.push(pattern(100_000));
  await shaper.drain();
  const took = r.writes.at(-1)!.at - started;
  assert.ok(took >= 780, `100 kB at 1 Mbit/s in ${took.toFixed(0)} ms`);
  assert.ok(r.writes.every((w) => w.bytes.byteLength <= 2000));
  assert.equal(r.writes.length, 50);
  assert.deepEqual(r.joined(), pattern(100_000));
});

Deno.test("LinkShaper.push() waits while more than queueBytes are held", async () => {
  const r = recorder();
  const shaper = new LinkShaper(r.sink, { shape: { latencyMs: 200, queueBytes: 1000 } });
  const started = performance.now();
  await shaper.push(pattern(600));
  assert.ok(performance.now() - started < 150, "under the bound: at once");
  await shaper.push(pattern(600)); // 1200 > 1000: until the first 600 are written
  const waited = performance.now() - started;
  assert.ok(waited >= 195, `push() waited ${waited.toFixed(0)} ms`);
  assert.ok(r.writes.length >= 1);
  assert.equal(shaper.peakQueued, 1200);
  await shaper.drain();
  assert.equal(shaper.queued, 0);
});

Deno.test("LinkShaper.close() drops what is queued and settles push() and drain()", async () => {
  const r = recorder();
  const shaper = new LinkShaper(r.sink, { shape: { latencyMs: 60_000, queueBytes: 10 } });
  const pushing = shaper.push(pattern(100));
  const draining = shaper.drain();
  assert.equal(shaper.queued, 100);
  shaper.close();
  await pushing;
  await draining;
  assert.equal(shaper.queued, 0);
  assert.equal(r.writes.length, 0);
  await shaper.push(pattern(5)); // after the close: dropped
  assert.equal(r.writes.length, 0);
});

Deno.test("LinkShaper.push() and drain() reject with the sink's error", async () => {
  const shaper = new LinkShaper(() => Promise.reject(new Error("socket gone")), {
    shape: { latencyMs: 1 },
  });
  await shaper.push(pattern(10));
  await assert.rejects(shaper.drain(), /socket gone/);
  await assert.rejects(shaper.push(pattern(10)), /socket gone/);
});

Deno.test("LinkShaper.push() throws when called again before it settled", async () => {
  const shaper = new LinkShaper(() => new Promise((resolve) => setTimeout(resolve, 20)));
  const first = shaper.push(pattern(10));
  await assert.rejects(shaper.push(pattern(10)), /before it settled/);
  await first;
});
