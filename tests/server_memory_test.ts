/**
 * The server and large messages: 64 MiB each way, `close()` with full
 * inboxes, and no reference kept to an upload once it was handed over (with
 * `--v8-flags=--expose-gc`, as `deno task test` runs). Over real sockets on
 * 127.0.0.1.
 *
 * @module
 */

import assert from "node:assert/strict";
import type { Client } from "../client.ts";
import type { Server } from "../server.ts";
import { cluster, until } from "./test_util.ts";

Deno.test("broadcast() and gather() carry a 64 MiB Float32Array both ways", async () => {
  await using c = await cluster(1);
  const n = 16 * 1024 * 1024; // 64 MiB
  const weights = new Float32Array(n);
  for (let i = 0; i < n; i++) weights[i] = (i % 1000) * 0.5 - 7;
  const echo = (async () => {
    const { weights: got } = await c.clients[0].recv() as { weights: Float32Array };
    assert.ok(got instanceof Float32Array);
    await c.clients[0].send({ weights: got.map((w) => w + 1) });
  })();
  await c.server.broadcast({ weights });
  await echo;
  const { weights: back } = (await c.server.gather()).get(0) as { weights: Float32Array };
  assert.ok(back instanceof Float32Array);
  assert.equal(back.length, n);
  for (let k = 0; k < 500; k++) {
    // Spread deterministically over the whole array, ends included.
    const i = k === 499 ? n - 1 : (k * 2_654_435_761) % n;
    assert.equal(back[i], (i % 1000) * 0.5 - 7 + 1, `element ${i}`);
  }
});

Deno.test("close() returns while a client's unread upload fills the inbox", async () => {
  await using c = await cluster(1);
  // 64 MiB fills the server's inbox for this client; nobody gathers it.
  await c.clients[0].send(new Uint8Array(64 * 1024 * 1024));
  await c.clients[0].flush();
  await until(() => c.server.bytesReceived >= 64 * 1024 * 1024, "the upload to arrive");
  await c.server.close();
});

Deno.test("close() returns on a client whose unread broadcast fills its inbox", async () => {
  await using c = await cluster(1);
  await c.server.broadcast(new Uint8Array(64 * 1024 * 1024));
  await until(() => c.clients[0].bytesReceived >= 64 * 1024 * 1024, "the broadcast to arrive");
  await c.clients[0].close();
});

const gc = (globalThis as { gc?: () => void }).gc;

/** Gathers one large upload per client and returns weak references to their buffers. */
async function gatherLarge(server: Server, clients: Client[]): Promise<WeakRef<ArrayBufferLike>[]> {
  await Promise.all(clients.map((client) => client.send(new Float32Array(1 << 20))));
  const answers = await server.gather();
  return [...answers.values()].map((value) => new WeakRef((value as Float32Array).buffer));
}

Deno.test({
  name: "gather() leaves no reference to a large upload once it returned it",
  ignore: gc === undefined, // needs --v8-flags=--expose-gc, as `deno task test` passes
  async fn() {
    await using c = await cluster(2);
    const refs = [
      ...await gatherLarge(c.server, c.clients),
      ...await gatherLarge(c.server, c.clients),
    ];
    await new Promise((resolve) => setTimeout(resolve, 0));
    gc!();
    assert.equal(refs.filter((ref) => ref.deref() !== undefined).length, 0);
  },
});

Deno.test({
  name: "uploads() leaves no reference to an upload in its connection once the loop moved on",
  ignore: gc === undefined, // needs --v8-flags=--expose-gc, as `deno task test` passes
  async fn() {
    // Each connection's reading must not pin its last body until its next
    // frame: 16 idle clients would otherwise hold 16 models (issue 14).
    await using c = await cluster(4);
    await Promise.all(c.clients.map((client) => client.send(new Float32Array(4 << 20))));
    // In a function of its own: the test's registers would keep the last value.
    const refs = await (async () => {
      const refs: WeakRef<ArrayBufferLike>[] = [];
      for await (const { value } of c.server.uploads({ timeout: 20_000 })) {
        refs.push(new WeakRef((value as Float32Array).buffer));
      }
      return refs;
    })();
    assert.equal(refs.length, 4);
    await new Promise((resolve) => setTimeout(resolve, 0));
    gc!();
    assert.equal(refs.filter((ref) => ref.deref() !== undefined).length, 0, "uploads still alive");
  },
});
