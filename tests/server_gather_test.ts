/**
 * `broadcast()`, `send()`, `gather()` and `gatherSettled()` over real
 * sockets on 127.0.0.1.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { PeerDisconnectedError, TimeoutError } from "../errors.ts";
import { listen } from "../server.ts";
import { cluster, sendAndLand, until } from "./test_util.ts";

// ---------------------------------------------------------------------------
// Broadcast, scatter, gather

Deno.test("broadcast() sends the same value to every client", async () => {
  await using c = await cluster(3);
  const value = { round: 1, weights: new Float32Array([0.5, 1.5]), tag: "r1" };
  await c.server.broadcast(value);
  for (const client of c.clients) assert.deepStrictEqual(await client.recv(), value);
});

Deno.test("broadcast() with ids sends to those clients only", async () => {
  await using c = await cluster(3);
  await c.server.broadcast("only 0 and 2", { ids: [2, 0] });
  await c.server.broadcast("everyone");
  assert.equal(await c.clients[0].recv(), "only 0 and 2");
  assert.equal(await c.clients[1].recv(), "everyone");
  assert.equal(await c.clients[2].recv(), "only 0 and 2");
  assert.equal(await c.clients[2].recv(), "everyone");
});

Deno.test("broadcast() rejects naming a client that left, and still reaches the others", async () => {
  await using c = await cluster(3);
  await c.clients[1].close();
  await until(() => !c.server.connected.includes(1), "the server to see client 1 leave");
  await assert.rejects(
    c.server.broadcast({ round: 2 }),
    (error: unknown) => error instanceof PeerDisconnectedError && error.clientId === 1,
  );
  assert.deepStrictEqual(await c.clients[0].recv(), { round: 2 });
  assert.deepStrictEqual(await c.clients[2].recv(), { round: 2 });
});

Deno.test("send() scatters a Map of values by id", async () => {
  await using c = await cluster(3);
  await c.server.send(new Map<number, unknown>([[0, { lr: 0.1 }], [2, new Int32Array([7, 8])]]));
  await c.server.broadcast("next");
  assert.deepStrictEqual(await c.clients[0].recv(), { lr: 0.1 });
  assert.equal(await c.clients[1].recv(), "next", "client 1 got a value meant for others");
  assert.deepStrictEqual(await c.clients[2].recv(), new Int32Array([7, 8]));
  assert.equal(await c.clients[0].recv(), "next");
  assert.equal(await c.clients[2].recv(), "next");
});

Deno.test("send() scatters an object of values by id", async () => {
  await using c = await cluster(3);
  await c.server.send({ 1: "one", 2: { two: [2] } });
  await c.server.broadcast("next");
  assert.equal(await c.clients[0].recv(), "next");
  assert.equal(await c.clients[1].recv(), "one");
  assert.deepStrictEqual(await c.clients[2].recv(), { two: [2] });
});

Deno.test("send() sends nothing when one value cannot be encoded", async () => {
  await using c = await cluster(2);
  await assert.rejects(c.server.send({ 0: "fine", 1: () => "no" }), TypeError);
  await assert.rejects(
    c.server.send(new Map<number, unknown>([[0, "x"], [1, 2n ** 70n]])),
    RangeError,
  );
  await c.server.broadcast("after");
  assert.equal(await c.clients[0].recv(), "after");
  assert.equal(await c.clients[1].recv(), "after");
});

Deno.test("gather() receives one message from every client", async () => {
  await using c = await cluster(3);
  for (const client of [...c.clients].reverse()) await client.send({ update: client.id * 10 });
  const uploads = await c.server.gather();
  assert.ok(uploads instanceof Map);
  assert.deepStrictEqual([...uploads], [[0, { update: 0 }], [1, { update: 10 }], [2, {
    update: 20,
  }]]);
});

Deno.test("gather() receives from a subset, in the order of the ids", async () => {
  await using c = await cluster(3);
  for (const client of c.clients) await client.send(`from ${client.id}`);
  const subset = await c.server.gather({ ids: [2, 0] });
  assert.deepStrictEqual([...subset.keys()], [2, 0]);
  assert.equal(subset.get(0), "from 0");
  assert.equal(subset.get(2), "from 2");
  // Client 1's message is still queued.
  assert.deepStrictEqual([...await c.server.gather({ ids: [1] })], [[1, "from 1"]]);
  assert.deepStrictEqual([...await c.server.gather({ ids: [] })], []);
});

Deno.test("gather() waits for messages that have not arrived yet", async () => {
  await using c = await cluster(2);
  const gathering = c.server.gather();
  await c.clients[1].send("late 1");
  await c.clients[0].send("late 0");
  assert.deepStrictEqual([...await gathering], [[0, "late 0"], [1, "late 1"]]);
});

Deno.test("gather() returns early messages queued per client, in order", async () => {
  await using c = await cluster(2);
  for (const text of ["a", "b", "c"]) await c.clients[0].send(text);
  await c.clients[1].send(1);
  await c.clients[0].flush();
  const got: unknown[] = [];
  for (let i = 0; i < 3; i++) got.push((await c.server.gather({ ids: [0] })).get(0));
  assert.deepStrictEqual(got, ["a", "b", "c"]);
  assert.equal((await c.server.gather({ ids: [1] })).get(1), 1);
});

Deno.test("gather() keeps many queued messages in order", async () => {
  await using c = await cluster(2);
  const n = 2000;
  const sends = [];
  for (let i = 0; i < n; i++) sends.push(c.clients[i % 2].send({ i }));
  await Promise.all(sends);
  await Promise.all(c.clients.map((client) => client.flush()));
  for (let round = 0; round < n / 2; round++) {
    const uploads = await c.server.gather();
    assert.deepStrictEqual(uploads.get(0), { i: 2 * round });
    assert.deepStrictEqual(uploads.get(1), { i: 2 * round + 1 });
  }
});

Deno.test("gather() rejects with PeerDisconnectedError naming a client that leaves", async () => {
  await using c = await cluster(3);
  await c.clients[0].send("zero");
  const gathering = c.server.gather();
  await c.clients[2].send("two");
  await c.clients[1].close();
  await assert.rejects(gathering, (error) => {
    assert.ok(error instanceof PeerDisconnectedError);
    assert.equal(error.clientId, 1);
    assert.match(error.message, /1/);
    return true;
  });
  assert.deepStrictEqual(c.server.connected, [0, 2]);
  // The survivors' messages were not taken by the failed gather.
  assert.deepStrictEqual([...await c.server.gather({ ids: [0, 2] })], [[0, "zero"], [2, "two"]]);
  await assert.rejects(c.server.gather(), PeerDisconnectedError);
  await c.clients[2].send("again");
  assert.equal((await c.server.gather({ ids: [2] })).get(2), "again");
});

Deno.test("gather() returns what a client sent before it left", async () => {
  await using c = await cluster(2);
  await c.clients[1].send("last words");
  await c.clients[1].close();
  await c.clients[0].send("zero");
  assert.deepStrictEqual([...await c.server.gather()], [[0, "zero"], [1, "last words"]]);
  await assert.rejects(c.server.gather({ ids: [1] }), (error) => {
    assert.ok(error instanceof PeerDisconnectedError);
    assert.equal(error.clientId, 1);
    return true;
  });
});

Deno.test("gather() rejects with TimeoutError listing the missing ids and loses nothing", async () => {
  await using c = await cluster(3);
  await sendAndLand(c.server, c.clients[1], "one");
  await assert.rejects(c.server.gather({ timeout: 30 }), (error) => {
    assert.ok(error instanceof TimeoutError);
    assert.deepStrictEqual([...error.clientIds].sort(), [0, 2]);
    assert.match(error.message, /Gather timed out/);
    return true;
  });
  await c.clients[0].send("zero");
  await c.clients[2].send("two");
  assert.deepStrictEqual([...await c.server.gather()], [[0, "zero"], [1, "one"], [2, "two"]]);
});

Deno.test("gather() rejects with the abort reason when its signal aborts", async () => {
  await using c = await cluster(2);
  await sendAndLand(c.server, c.clients[0], "kept");
  const controller = new AbortController();
  const gathering = c.server.gather({ signal: controller.signal });
  controller.abort(new DOMException("Round cancelled", "AbortError"));
  await assert.rejects(gathering, (error) => {
    assert.ok(error instanceof DOMException);
    assert.equal(error.message, "Round cancelled");
    return true;
  });
  // An already aborted signal rejects at once.
  await assert.rejects(c.server.gather({ signal: AbortSignal.abort() }));
  // The clients were released and nothing was lost.
  await c.clients[1].send("one");
  assert.deepStrictEqual([...await c.server.gather()], [[0, "kept"], [1, "one"]]);
});

Deno.test("gather() rejects invalid ids", async () => {
  await using c = await cluster(3);
  await assert.rejects(c.server.gather({ ids: [-1] }), RangeError);
  await assert.rejects(c.server.gather({ ids: [3] }), RangeError);
  await assert.rejects(c.server.gather({ ids: [1.5] }), TypeError);
  await assert.rejects(c.server.gather({ ids: [0, 1, 0] }), TypeError);
  await assert.rejects(c.server.gather({ ids: ["0" as unknown as number] }), TypeError);
  await assert.rejects(c.server.gather({ ids: 5 as unknown as number[] }), TypeError);
  await assert.rejects(c.server.send({ 3: "x" }), RangeError);
  await assert.rejects(c.server.send({ "-1": "x" }), TypeError);
  await assert.rejects(c.server.send(new Map([[0, "a"], [0.5, "b"]])), TypeError);
  await assert.rejects(c.server.broadcast("x", { ids: [0, 0] }), TypeError);
  await assert.rejects(c.server.broadcast("x", { ids: [7] }), RangeError);
  await assert.rejects(c.server.uploads({ ids: [-1] }).next(), RangeError);
  await assert.rejects(c.server.gather({ timeout: -1 }), RangeError);
  // Nothing was locked or sent by the failed calls.
  await c.server.broadcast("ok");
  for (const client of c.clients) {
    assert.equal(await client.recv(), "ok");
    await client.send(client.id);
  }
  assert.deepStrictEqual([...await c.server.gather()], [[0, 0], [1, 1], [2, 2]]);
});

Deno.test("gather() before every client joined throws", async () => {
  await using server = listen({ clients: 2 });
  await using _client = await connect({ port: server.port });
  await assert.rejects(server.gather(), /not ready/);
  await assert.rejects(server.broadcast(1), /not ready/);
});

Deno.test("gather() refuses a concurrent gather over the same client", async () => {
  await using c = await cluster(3);
  const first = c.server.gather({ ids: [0, 1] });
  const busy = (error: unknown) =>
    error instanceof Deno.errors.Busy && /already being received from/.test(error.message);
  await assert.rejects(c.server.gather({ ids: [1, 2] }), busy);
  await assert.rejects(c.server.uploads({ ids: [0] }).next(), busy);
  // A gather over other clients runs alongside.
  const second = c.server.gather({ ids: [2] });
  for (const client of c.clients) await client.send(client.id);
  assert.deepStrictEqual([...await first], [[0, 0], [1, 1]]);
  assert.deepStrictEqual([...await second], [[2, 2]]);
  // Released: the same clients can be gathered from again.
  for (const client of c.clients) await client.send(-client.id);
  assert.deepStrictEqual([...await c.server.gather({ ids: [1, 2] })], [[1, -1], [2, -2]]);
});

// ---------------------------------------------------------------------------
// gatherSettled()

Deno.test("gatherSettled() returns every answer when all clients answer", async () => {
  await using c = await cluster(3);
  await Promise.all(c.clients.map((client) => client.send({ from: client.id })));
  const { received, failed } = await c.server.gatherSettled({ timeout: 10_000 });
  assert.deepStrictEqual([...received], [[0, { from: 0 }], [1, { from: 1 }], [2, { from: 2 }]]);
  assert.equal(failed.size, 0);
});

Deno.test("gatherSettled() lists a client that left and returns the others' answers", async () => {
  await using c = await cluster(3);
  await c.clients[1].close();
  await c.clients[0].send("zero");
  await c.clients[2].send("two");
  const { received, failed } = await c.server.gatherSettled({ timeout: 10_000 });
  assert.deepStrictEqual([...received], [[0, "zero"], [2, "two"]]);
  assert.deepStrictEqual([...failed.keys()], [1]);
  assert.ok(failed.get(1) instanceof PeerDisconnectedError);
  assert.equal(failed.get(1)!.message, 'Client "1" closed the session');
});

Deno.test("gatherSettled() lists silent clients with TimeoutError and loses nothing", async () => {
  await using c = await cluster(3);
  await sendAndLand(c.server, c.clients[0], "early");
  const { received, failed } = await c.server.gatherSettled({ ids: [0, 1, 2], timeout: 30 });
  assert.deepStrictEqual([...received], [[0, "early"]]);
  assert.deepStrictEqual([...failed.keys()], [1, 2]);
  for (const error of failed.values()) {
    assert.ok(error instanceof TimeoutError);
    assert.deepStrictEqual(error.clientIds, [1, 2]);
  }
  // The stragglers' late answers wait for the next round.
  await c.clients[1].send("late");
  assert.deepStrictEqual([...await c.server.gather({ ids: [1] })], [[1, "late"]]);
});

Deno.test("gatherSettled() rejects with the abort reason and puts back what it took", async () => {
  await using c = await cluster(2);
  await sendAndLand(c.server, c.clients[0], "kept");
  const controller = new AbortController();
  const settling = c.server.gatherSettled({ signal: controller.signal });
  controller.abort(new Error("Round cancelled"));
  await assert.rejects(settling, /Round cancelled/);
  await c.clients[1].send("one");
  assert.deepStrictEqual([...await c.server.gather()], [[0, "kept"], [1, "one"]]);
});

Deno.test("gatherSettled() and uploads() report bad calls as rejections, the count before the cohort", async () => {
  await using server = listen({ clients: 2 });
  // Not ready: a rejected promise, not an exception thrown by the call.
  const settled = server.gatherSettled();
  assert.ok(settled instanceof Promise);
  await assert.rejects(settled, { name: "FedcommError", message: /Server not ready/ });
  // A bad count is told first, before the cohort that has not joined.
  await assert.rejects(server.uploads({ count: 0 }).next(), {
    name: "RangeError",
    message: 'Invalid count: "0" is not a positive integer or Infinity',
  });
});
