// End-to-end tests of quorum gathers and late replies over real sockets
// (design v3: `client.reply()`, `listen({ open })`, the `late` event).

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { TimeoutError } from "../errors.ts";
import { listen, type Server } from "../server.ts";
import { cluster, until } from "./test_util.ts";
import type { Upload } from "../types.ts";

// ---------------------------------------------------------------------------
// Helpers

/** What a `late` event carries. */
interface LateFields {
  clientId: number;
  replyTo: number;
  latest: number;
  value: unknown;
}

/** The server's `late` events, as they come. */
function lateEvents(server: Server): LateFields[] {
  const late: LateFields[] = [];
  server.addEventListener("late", (event: Event) => {
    const { clientId, replyTo, latest, value } = event as unknown as LateFields;
    late.push({ clientId, replyTo, latest, value });
  });
  return late;
}

// ---------------------------------------------------------------------------
// Late replies

Deno.test("Server.gatherSettled() drops a late reply, dispatches it as a late event and takes the answer to the latest message", async () => {
  await using c = await cluster(1);
  const [client] = c.clients;
  const late = lateEvents(c.server);
  await c.server.broadcast("round 1");
  assert.equal(await client.recv({ timeout: 10_000 }), "round 1");
  await c.server.broadcast("round 2"); // before the client answers round 1
  await client.reply("answer to 1");
  const gathering = c.server.gatherSettled({ timeout: 10_000 });
  assert.equal(await client.recv({ timeout: 10_000 }), "round 2");
  await client.reply("answer to 2");
  const result = await gathering;
  assert.deepStrictEqual(result.received, new Map([[0, "answer to 2"]]));
  assert.equal(result.failed.size, 0);
  assert.deepStrictEqual(result.late, new Map([[0, 1]]));
  assert.equal(result.quorum, true);
  assert.deepStrictEqual(late, [{ clientId: 0, replyTo: 1, latest: 2, value: "answer to 1" }]);
  assert.equal(c.server.stats(0).lateReplies, 1);
});

Deno.test("Server drops and counts a late reply when it arrives, with no call receiving", async () => {
  await using c = await cluster(1);
  const [client] = c.clients;
  const late = lateEvents(c.server);
  await c.server.broadcast("round 1");
  await c.server.broadcast("round 2");
  assert.equal(await client.recv({ timeout: 10_000 }), "round 1");
  await client.reply("answer to 1");
  await until(() => late.length === 1, "the late event");
  assert.deepStrictEqual(late, [{ clientId: 0, replyTo: 1, latest: 2, value: "answer to 1" }]);
  const stats = c.server.stats(0);
  assert.equal(stats.lateReplies, 1);
  assert.equal(stats.queued, 0, "a late reply is not queued");
  assert.equal(stats.messagesReceived, 1, "but it was received (and acknowledged)");
  // The round's gather sees it as late for its round, and takes the real answer.
  assert.equal(await client.recv({ timeout: 10_000 }), "round 2");
  await client.reply("answer to 2");
  const result = await c.server.gatherSettled({ timeout: 10_000 });
  assert.deepStrictEqual(result.received, new Map([[0, "answer to 2"]]));
  assert.deepStrictEqual(result.late, new Map([[0, 1]]));
});

Deno.test("Server.gatherSettled() never takes a straggler's round-1 reply for its round-2 answer", async () => {
  await using c = await cluster(2);
  const [fast, slow] = c.clients;
  await c.server.broadcast({ round: 1 });
  for (const client of [fast, slow]) await client.recv({ timeout: 10_000 });
  await fast.reply({ round: 1, from: 0 });
  const first = await c.server.gatherSettled({ timeout: 300 });
  assert.deepStrictEqual(first.received, new Map([[0, { round: 1, from: 0 }]]));
  assert.ok(first.failed.get(1) instanceof TimeoutError);
  await slow.reply({ round: 1, from: 1 }); // after the deadline of round 1
  await c.server.broadcast({ round: 2 });
  for (const client of [fast, slow]) {
    const { round } = await client.recv({ timeout: 10_000 }) as { round: number };
    await client.reply({ round, from: client.id });
  }
  const second = await c.server.gatherSettled({ timeout: 10_000 });
  assert.deepStrictEqual(
    second.received,
    new Map([[0, { round: 2, from: 0 }], [1, { round: 2, from: 1 }]]),
  );
  assert.deepStrictEqual(second.late, new Map([[1, 1]]));
  // Nothing is left over for round 3 either.
  await c.server.broadcast({ round: 3 });
  const third = await c.server.gatherSettled({ timeout: 200 });
  assert.equal(third.received.size, 0);
});

Deno.test("Server.gather() takes an unsolicited message as an answer after several broadcasts", async () => {
  await using c = await cluster(1);
  const [client] = c.clients;
  for (let round = 1; round <= 3; round++) await c.server.broadcast(round);
  await client.send("unsolicited");
  assert.deepStrictEqual(await c.server.gather({ timeout: 10_000 }), new Map([[0, "unsolicited"]]));
});

// ---------------------------------------------------------------------------
// Quorum

Deno.test("Server.gatherSettled() with a quorum of 3 of 5 takes a 4th answer within the grace, not a 5th after it", async () => {
  await using c = await cluster(5);
  await c.server.broadcast("train");
  for (const client of c.clients) await client.recv({ timeout: 10_000 });
  const delays = [0, 0, 0, 200, 1_500]; // ms after the round starts
  const t0 = performance.now();
  const answering = c.clients.map(async (client, i) => {
    await new Promise((resolve) => setTimeout(resolve, delays[i]));
    await client.reply(`update ${i}`);
  });
  const result = await c.server.gatherSettled({ min: 3, grace: 700, timeout: 10_000 });
  const took = performance.now() - t0;
  assert.deepStrictEqual([...result.received.keys()], [0, 1, 2, 3]);
  assert.equal(result.quorum, true);
  assert.deepStrictEqual([...result.failed.keys()], [4]);
  assert.match(result.failed.get(4)!.message, /did not answer within the grace of 700 ms/);
  assert.ok(took >= 600, `the grace was waited out: returned after ${took.toFixed(0)} ms`);
  await Promise.all(answering);
  // The straggler's reply to this round is late for the next one.
  await c.server.broadcast("train again");
  for (const client of c.clients) {
    await client.recv({ timeout: 10_000 });
    await client.reply(`again ${client.id}`);
  }
  const next = await c.server.gatherSettled({ timeout: 10_000 });
  assert.equal(next.received.get(4), "again 4");
  assert.deepStrictEqual(next.late, new Map([[4, 1]]));
});

Deno.test("Server.gatherSettled() with min returns the quorum and fails the silent client after the grace", async () => {
  await using c = await cluster(3);
  await c.server.broadcast("train");
  for (const client of c.clients.slice(0, 2)) {
    await client.recv({ timeout: 10_000 });
    await client.reply(`update ${client.id}`);
  }
  const { received, failed, quorum } = await c.server.gatherSettled({
    min: 2,
    grace: 100,
    timeout: 10_000,
  });
  assert.deepStrictEqual(received, new Map([[0, "update 0"], [1, "update 1"]]));
  assert.equal(quorum, true);
  const error = failed.get(2);
  assert.ok(error instanceof TimeoutError);
  assert.equal(error.clientId, 2);
  assert.match(
    error.message,
    /^GatherSettled: client "2" did not answer within the grace of 100 ms/,
  );
});

Deno.test("Server.gather() with min returns once the quorum answered, despite a client that left", async () => {
  await using c = await cluster(3);
  await c.server.broadcast("train");
  await c.clients[1].close();
  for (const i of [0, 2]) {
    await c.clients[i].recv({ timeout: 10_000 });
    await c.clients[i].reply(`update ${i}`);
  }
  const received = await c.server.gather({ min: 2, timeout: 10_000 });
  assert.deepStrictEqual(received, new Map([[0, "update 0"], [2, "update 2"]]));
});

Deno.test("Server.uploads() with min skips a client that left and ends after the quorum", async () => {
  await using c = await cluster(3);
  await c.clients[2].close();
  for (const client of c.clients.slice(0, 2)) {
    await client.send(`${client.id}a`);
    await client.send(`${client.id}b`);
  }
  const seen: Upload[] = [];
  for await (const upload of c.server.uploads({ count: 2, min: 2, timeout: 10_000 })) {
    seen.push(upload);
  }
  assert.deepStrictEqual(
    seen.map(({ id, value }) => [id, value]).sort(),
    [[0, "0a"], [0, "0b"], [1, "1a"], [1, "1b"]],
  );
});

Deno.test("Server.gatherSettled() on an open server asks the clients connected at the call", async () => {
  await using server = listen({ clients: 4, open: true });
  const clients = [await connect({ port: server.port }), await connect({ port: server.port })];
  try {
    await server.broadcast("train");
    for (const client of clients) {
      await client.recv({ timeout: 10_000 });
      await client.reply(client.id);
    }
    const { received, failed, quorum } = await server.gatherSettled({
      min: 1,
      grace: 5_000,
      timeout: 10_000,
    });
    assert.deepStrictEqual(received, new Map([[0, 0], [1, 1]]));
    assert.equal(failed.size, 0);
    assert.equal(quorum, true);
  } finally {
    await Promise.all(clients.map((c) => c.close()));
  }
});
