/**
 * `uploads()`: the server's messages in order of arrival, over real sockets
 * on 127.0.0.1.
 *
 * @module
 */

import assert from "node:assert/strict";
import { PeerDisconnectedError, TimeoutError } from "../errors.ts";
import { cluster, sendAndLand } from "./test_util.ts";
import type { Upload } from "../types.ts";

Deno.test("uploads() yields in order of arrival", async () => {
  await using c = await cluster(3);
  await sendAndLand(c.server, c.clients[2], "two");
  await sendAndLand(c.server, c.clients[0], "zero");
  await sendAndLand(c.server, c.clients[1], "one");
  const got: Upload[] = await Array.fromAsync(c.server.uploads());
  assert.deepStrictEqual(got, [
    { id: 2, value: "two" },
    { id: 0, value: "zero" },
    { id: 1, value: "one" },
  ]);
});

Deno.test("uploads() yields messages as they arrive", async () => {
  await using c = await cluster(2);
  const iterator = c.server.uploads({ count: 2 });
  const order: [number, number][] = [[1, 0], [0, 0], [0, 1], [1, 1]];
  for (const [id, n] of order) {
    const next = iterator.next();
    await c.clients[id].send(n);
    assert.deepStrictEqual(await next, { done: false, value: { id, value: n } });
  }
  assert.deepStrictEqual(await iterator.next(), { done: true, value: undefined });
});

Deno.test("uploads() takes count messages from each listed client", async () => {
  await using c = await cluster(3);
  for (let round = 0; round < 3; round++) {
    for (const client of c.clients) await client.send({ id: client.id, round });
  }
  const got = await Array.fromAsync(c.server.uploads({ ids: [0, 2], count: 2 }));
  assert.equal(got.length, 4);
  for (const id of [0, 2]) {
    const mine = got.filter((u) => u.id === id).map((u) => (u.value as { round: number }).round);
    assert.deepStrictEqual(mine, [0, 1]);
  }
  // What was not taken is still there, in order.
  assert.deepStrictEqual([...await c.server.gather()], [
    [0, { id: 0, round: 2 }],
    [1, { id: 1, round: 0 }],
    [2, { id: 2, round: 2 }],
  ]);
  await assert.rejects(c.server.uploads({ count: 0 }).next(), RangeError);
  await assert.rejects(c.server.uploads({ count: 1.5 }).next(), RangeError);
});

Deno.test("uploads() with count Infinity streams until the clients close", async () => {
  await using c = await cluster(2);
  const streaming = Array.fromAsync(c.server.uploads({ count: Infinity }));
  for (let i = 0; i < 5; i++) await c.clients[0].send(i);
  await c.clients[1].send("only");
  await c.clients[1].close();
  for (let i = 5; i < 10; i++) await c.clients[0].send(i);
  await c.clients[0].close();
  const got = await streaming;
  assert.deepStrictEqual(got.filter((u) => u.id === 0).map((u) => u.value), [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
  ]);
  assert.deepStrictEqual(got.filter((u) => u.id === 1).map((u) => u.value), ["only"]);
});

Deno.test("uploads() rejects with PeerDisconnectedError when a client leaves owing", async () => {
  await using c = await cluster(2);
  const iterator = c.server.uploads();
  await c.clients[0].send("zero");
  assert.deepStrictEqual(await iterator.next(), { done: false, value: { id: 0, value: "zero" } });
  await c.clients[1].close();
  await assert.rejects(iterator.next(), (error) => {
    assert.ok(error instanceof PeerDisconnectedError);
    assert.equal(error.clientId, 1);
    return true;
  });
});

Deno.test("uploads() rejects with TimeoutError listing the clients still owing", async () => {
  await using c = await cluster(3);
  await sendAndLand(c.server, c.clients[1], "one");
  const got: Upload[] = [];
  await assert.rejects(
    (async () => {
      for await (const upload of c.server.uploads({ timeout: 30 })) got.push(upload);
    })(),
    (error) => {
      assert.ok(error instanceof TimeoutError);
      assert.deepStrictEqual([...error.clientIds].sort(), [0, 2]);
      return true;
    },
  );
  assert.deepStrictEqual(got, [{ id: 1, value: "one" }]);
});

Deno.test("uploads() releases its clients when the loop breaks early", async () => {
  await using c = await cluster(2);
  await c.clients[0].send("a");
  for await (const upload of c.server.uploads()) {
    assert.deepStrictEqual(upload, { id: 0, value: "a" });
    break;
  }
  await c.clients[1].send("b");
  await c.clients[0].send("c");
  assert.deepStrictEqual([...await c.server.gather()], [[0, "c"], [1, "b"]]);
});
