import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { PeerDisconnectedError } from "../errors.ts";
import type { ClientEvent, TransferEvent } from "../events.ts";
import { listen } from "../server.ts";
import { until } from "./test_util.ts";

const MiB = 1024 * 1024;

/** Checks that progress events climb and end exactly at the total. */
function assertClimbsTo(events: TransferEvent[], total: number, what: string): void {
  assert.ok(events.length > 1, `${what}: more than one event for a large message`);
  for (let i = 1; i < events.length; i++) {
    assert.ok(events[i].loaded >= events[i - 1].loaded, `${what}: loaded never goes back`);
    assert.equal(events[i].total, total, `${what}: the same total throughout`);
  }
  assert.equal(events.at(-1)!.loaded, total, `${what}: ends at the total`);
}

Deno.test("TransferEvent progress of a 64 MiB upload climbs to the exact total on both sides", async () => {
  await using server = listen({ clients: 1, heartbeatMs: 0 });
  await using client = await connect({ port: server.port, heartbeatMs: 0 });
  await server.ready();
  const sent: TransferEvent[] = [];
  const received: TransferEvent[] = [];
  client.addEventListener("progress", (e) => sent.push(e));
  server.addEventListener("progress", (e) => received.push(e));
  const weights = new Float32Array(16 * MiB); // 64 MiB
  await client.send(weights);
  const got = (await server.gather({ timeout: 30_000 })).get(0) as Float32Array;
  assert.equal(got.length, weights.length);
  const total = sent.at(-1)!.total;
  assert.ok(total > 64 * MiB && total < 64 * MiB + 100, "the body: the tensor and its map");
  assertClimbsTo(sent.filter((e) => e.direction === "send"), total, "client send");
  assertClimbsTo(received.filter((e) => e.direction === "receive"), total, "server receive");
  assert.ok(received.every((e) => e.clientId === 0));
});

Deno.test("TransferEvent progress of a 64 MiB broadcast climbs to the exact total on both sides", async () => {
  await using server = listen({ clients: 1, heartbeatMs: 0 });
  await using client = await connect({ port: server.port, heartbeatMs: 0 });
  await server.ready();
  const sent: TransferEvent[] = [];
  const received: TransferEvent[] = [];
  server.addEventListener("progress", (e) => sent.push(e));
  client.addEventListener("progress", (e) => received.push(e));
  await server.broadcast(new Uint8Array(64 * MiB));
  assert.equal(((await client.recv({ timeout: 30_000 })) as Uint8Array).byteLength, 64 * MiB);
  const total = 64 * MiB + 5; // bin32: c6 and a 4-byte length
  assertClimbsTo(sent, total, "server send");
  assertClimbsTo(received, total, "client receive");
});

Deno.test("Server.stats() finds a member by id after another left, and the byte totals only go up", async () => {
  await using server = listen({ clients: 1, open: true, resumeTimeout: 0, heartbeatMs: 0 });
  const a = await connect({ port: server.port, name: "a", heartbeatMs: 0 });
  await server.ready({ clients: 1 });
  await a.send("x".repeat(10_000));
  await server.gather({ timeout: 10_000 });
  const left = new Promise((resolve) => server.addEventListener("leave", resolve, { once: true }));
  await a.close();
  await left;
  const [sent, received] = [server.bytesSent, server.bytesReceived];
  assert.ok(received > 10_000, `${received} bytes received`);
  // b takes a's place: a is forgotten, b has id 1 and is the only entry.
  await using b = await connect({ port: server.port, name: "b", heartbeatMs: 0 });
  assert.equal(b.id, 1);
  await until(() => server.stats().length === 1, "a to be forgotten");
  assert.equal(server.stats(1).name, "b");
  assert.deepStrictEqual(server.stats().map((s) => s.id), [1]);
  assert.throws(() => server.stats(0), RangeError);
  assert.ok(server.bytesSent >= sent, `bytesSent went down: ${server.bytesSent} < ${sent}`);
  assert.ok(server.bytesReceived >= received, `bytesReceived went down: ${server.bytesReceived}`);
});

Deno.test("Server.stats() counts exactly the bytes and messages moved each way", async () => {
  await using server = listen({ clients: 2, heartbeatMs: 0 });
  await using a = await connect({ port: server.port, heartbeatMs: 0, name: "a" });
  await using b = await connect({ port: server.port, heartbeatMs: 0 });
  await server.ready();
  await server.broadcast({ round: 1, weights: new Float32Array(100_000) });
  for (const client of [a, b]) await client.recv({ timeout: 10_000 });
  await a.send("x".repeat(1000));
  await a.send(new Float32Array(50_000));
  await b.send(1);
  await server.gather({ timeout: 10_000 });
  await server.gather({ ids: [0], timeout: 10_000 });
  const stats = server.stats();
  assert.equal(stats.length, 2);
  for (const [i, client] of [a, b].entries()) {
    const s = stats[i];
    assert.equal(s.id, i);
    assert.equal(s.state, "connected");
    assert.match(s.address, /^127\.0\.0\.1:\d+$/);
    await until(
      () => server.stats(i).bytesReceived === client.bytesSent,
      `client ${i}: bytes up (${server.stats(i).bytesReceived} received, ${client.bytesSent} sent)`,
    );
    // Acknowledgements keep flowing a little after the messages: wait for the last.
    await until(
      () => server.stats(i).bytesSent === client.bytesReceived,
      `client ${i}: bytes down (${
        server.stats(i).bytesSent
      } sent, ${client.bytesReceived} received)`,
    );
    assert.equal(s.messagesSent, client.messagesReceived);
    assert.equal(s.messagesReceived, client.messagesSent);
    assert.ok(s.silentMs >= 0 && s.silentMs < 10_000);
    assert.equal(s.queued, 0);
  }
  assert.equal(stats[0].name, "a");
  assert.equal(stats[0].messagesReceived, 2);
  assert.equal(stats[1].name, undefined);
});

Deno.test("Server join and leave events name the client, and leave says why", async () => {
  const logged: string[] = [];
  await using server = listen({
    clients: 2,
    logger: { info: (message) => logged.push(message) },
  });
  const joins: ClientEvent[] = [];
  const left = Promise.withResolvers<ClientEvent>();
  server.addEventListener("join", (e) => joins.push(e));
  server.addEventListener("leave", (e) => left.resolve(e));
  await using first = await connect({ port: server.port, name: "first" });
  const second = await connect({ port: server.port });
  await server.ready();
  assert.deepStrictEqual(joins.map((e) => [e.clientId, e.name]), [[0, "first"], [1, undefined]]);
  assert.equal(joins[0].address?.transport, "tcp");
  await second.close();
  const leave = await left.promise;
  assert.equal(leave.clientId, 1);
  assert.ok(leave.error instanceof PeerDisconnectedError);
  assert.deepStrictEqual(server.connected, [0]);
  assert.equal(server.stats(1).state, "gone");
  assert.ok(logged.includes("Client joined") && logged.includes("Client left"));
  assert.equal(first.id, 0);
});

Deno.test("listen() over TLS serves a client that trusts its CA, and refuses one that does not", async () => {
  const dir = new URL("../testdata/tls/", import.meta.url);
  const cert = await Deno.readTextFile(new URL("server.pem", dir));
  const key = await Deno.readTextFile(new URL("server.key", dir));
  const ca = await Deno.readTextFile(new URL("ca.pem", dir));
  const otherCa = await Deno.readTextFile(new URL("other_ca.pem", dir));
  await using server = listen({ clients: 1, tls: { cert, key }, auth: { secret: "s".repeat(32) } });
  await assert.rejects(
    connect({ port: server.port, tls: { caCerts: [otherCa] }, secret: "s".repeat(32) }),
  );
  await assert.rejects(
    connect({ port: server.port, secret: "s".repeat(32) }),
    "no CA: system roots",
  );
  await using client = await connect({
    port: server.port,
    tls: { caCerts: [ca], hostname: "localhost" },
    secret: "s".repeat(32),
  });
  await server.ready();
  const weights = new Float32Array(1 << 20).map((_, i) => i);
  await server.broadcast({ weights });
  const { weights: got } = await client.recv({ timeout: 10_000 }) as { weights: Float32Array };
  assert.deepStrictEqual(got, weights);
  await client.send({ weights: got });
  const back = (await server.gather({ timeout: 10_000 })).get(0) as { weights: Float32Array };
  assert.deepStrictEqual(back.weights, weights);
  assert.equal(client.authenticated, true);
});
