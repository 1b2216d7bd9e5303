/**
 * `server.recycle()` and `client.recycle()` over real sockets: memory given
 * back is what the next body of the same size is read into.
 *
 * @module
 */

import assert from "node:assert/strict";
import { cluster } from "./test_util.ts";

const MiB = 1024 * 1024;

Deno.test("Server.recycle() makes the next upload of the same size land in the same memory", async () => {
  await using c = await cluster(2);
  const seen: ArrayBufferLike[] = [];
  for (let round = 0; round < 3; round++) {
    for (const client of c.clients) await client.send(new Float32Array(MiB / 4).fill(round));
    for await (const { value } of c.server.uploads({ timeout: 10_000 })) {
      const weights = value as Float32Array;
      assert.equal(weights[MiB / 4 - 1], round, "the data of this round, not an earlier one");
      seen.push(weights.buffer);
      assert.ok(c.server.recycle(value) > MiB);
    }
  }
  assert.equal(new Set(seen).size, 2, "two buffers served every round");
});

Deno.test("Server.recycle() makes an upload a few bytes smaller land in the same memory", async () => {
  await using c = await cluster(1);
  const buffers: ArrayBufferLike[] = [];
  const sizes: number[] = [];
  // Metrics that are floats (9 bytes each), then integers (1 byte): the later bodies are smaller.
  for (const [loss, accuracy] of [[0.25, 0.5], [0, 1], [1, 0]]) {
    await c.clients[0].send({ metrics: { loss, accuracy }, weights: new Float32Array(MiB / 4) });
    const value = (await c.server.gather({ timeout: 10_000 })).get(0);
    const { metrics, weights } = value as { metrics: object; weights: Float32Array };
    assert.deepStrictEqual(metrics, { loss, accuracy });
    buffers.push(weights.buffer);
    sizes.push(weights.byteOffset + weights.byteLength);
    assert.ok(c.server.recycle(value) > MiB);
  }
  assert.ok(sizes[1] < sizes[0], `the bodies differ: ${sizes}`);
  assert.equal(new Set(buffers).size, 1, "one buffer served all three");
});

Deno.test("Server.recycle() reuses a long message's arrays too", async () => {
  await using c = await cluster(1, { maxFrameBytes: MiB });
  const buffers: ArrayBufferLike[] = [];
  for (let round = 1; round <= 2; round++) {
    await c.clients[0].send({ round, update: new Float32Array(MiB).fill(round) }); // 4 MiB
    const value = (await c.server.gather({ timeout: 10_000 })).get(0);
    const { update } = value as { update: Float32Array };
    assert.deepStrictEqual([update[0], update[MiB - 1]], [round, round]);
    buffers.push(update.buffer);
    assert.equal(c.server.recycle(value), 4 * MiB);
  }
  assert.equal(buffers[0], buffers[1]);
});

Deno.test("Client.recycle() leaves values it did not receive alone", async () => {
  await using c = await cluster(1);
  assert.equal(c.clients[0].recycle(new Float32Array(MiB)), 0);
  assert.equal(c.clients[0].recycle({ a: [1, "x", null] }), 0);
});
