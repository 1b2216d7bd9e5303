/**
 * Resume over real sockets: connections cut by a fault-injecting proxy in
 * the middle of large messages, stalled connections, tokens replayed.
 */

import assert from "node:assert/strict";
import { FaultProxy } from "../bench/_fault_proxy.ts";
import { connect } from "../client.ts";
import { PeerDisconnectedError } from "../errors.ts";
import type { ClientEvent, TransferEvent } from "../events.ts";
import { listen } from "../server.ts";
import { RawPeer, until } from "./test_util.ts";

const MiB = 1024 * 1024;

/** 64 MiB whose every 4-byte word is its own index plus `salt`: a lost or repeated chunk shows. */
function pattern(salt: number): Uint32Array {
  const words = new Uint32Array(16 * MiB);
  for (let i = 0; i < words.length; i++) words[i] = i + salt;
  return words;
}

function assertPattern(value: unknown, salt: number): void {
  assert.ok(
    value instanceof Uint32Array,
    `a Uint32Array, not ${Object.prototype.toString.call(value)}`,
  );
  assert.equal(value.length, 16 * MiB);
  for (let i = 0; i < value.length; i += 4099) assert.equal(value[i], i + salt, `word ${i}`);
  assert.equal(value[value.length - 1], value.length - 1 + salt);
}

Deno.test("connect() resumes a session cut mid-way through a 64 MiB upload: it arrives once, intact", async () => {
  await using server = listen({ clients: 1 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 7 });
  await using client = await connect({ port: proxy.port });
  await server.ready();
  const events: string[] = [];
  for (const type of ["disconnect", "resume", "leave"] as const) {
    server.addEventListener(type, () => events.push(`server ${type}`));
  }
  client.addEventListener("disconnect", () => events.push("client disconnect"));
  client.addEventListener("resume", () => events.push("client resume"));
  let cut: Promise<unknown> | undefined;
  server.addEventListener("progress", (e: TransferEvent) => {
    if (e.direction === "receive" && e.loaded > 8 * MiB && cut === undefined) {
      cut = proxy.cut({ kind: "body", direction: "up", connection: 0 });
    }
  });
  const sending = client.send(pattern(1)).then(() => client.send("after"));
  const first = await server.gather({ timeout: 60_000 });
  assertPattern(first.get(0), 1);
  assert.equal((await server.gather({ timeout: 10_000 })).get(0), "after");
  await sending;
  const fault = await cut;
  assert.equal((fault as { kind: string }).kind, "cut-body");
  assert.equal(server.stats(0).resumes, 1);
  assert.equal(client.resumes, 1);
  assert.equal(server.stats(0).messagesReceived, 2, "nothing received twice");
  assert.deepStrictEqual(
    events.toSorted(),
    ["client disconnect", "client resume", "server disconnect", "server resume"],
  );
  // Nothing more comes: the resent message was not delivered twice.
  await assert.rejects(server.gather({ timeout: 200 }), { name: "TimeoutError" });
});

Deno.test("listen() resumes a session cut mid-way through a 64 MiB broadcast: it arrives once, intact", async () => {
  await using server = listen({ clients: 1 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 8 });
  await using client = await connect({ port: proxy.port });
  await server.ready();
  let cut: Promise<unknown> | undefined;
  client.addEventListener("progress", (e: TransferEvent) => {
    if (e.direction === "receive" && e.loaded > 8 * MiB && cut === undefined) {
      cut = proxy.cut({ kind: "body", direction: "down", connection: 0 });
    }
  });
  const model = pattern(2);
  const broadcasting = server.broadcast(model, { timeout: 60_000 });
  await server.broadcast("after");
  assertPattern(await client.recv({ timeout: 60_000 }), 2);
  assert.equal(await client.recv({ timeout: 10_000 }), "after");
  await broadcasting; // resolves once the client acknowledged it
  assert.equal(((await cut) as { kind: string }).kind, "cut-body");
  assert.equal(client.resumes, 1);
  assert.equal(client.messagesReceived, 2, "nothing received twice");
  await assert.rejects(client.recv({ timeout: 200 }), { name: "TimeoutError" });
});

Deno.test("gather() waits for a client that is resuming and gets its reply", async () => {
  await using server = listen({ clients: 2 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 9 });
  await using a = await connect({ port: proxy.port });
  await using b = await connect({ port: server.port });
  await server.ready();
  await server.broadcast({ round: 1 });
  for (const client of [a, b]) await client.recv();
  await proxy.cut({ kind: "boundary", direction: "up", connection: 0 });
  const gathering = server.gather({ timeout: 20_000 });
  await a.reply({ id: a.id });
  await b.reply({ id: b.id });
  const answers = await gathering;
  assert.deepStrictEqual([...answers], [[0, { id: 0 }], [1, { id: 1 }]]);
});

Deno.test("listen() declares a client behind a stalled proxy dead, and the client resumes after", async () => {
  await using server = listen({ clients: 1, idleTimeout: 400, heartbeatMs: 100 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 10 });
  await using client = await connect({ port: proxy.port, idleTimeout: 400, heartbeatMs: 100 });
  await server.ready();
  const drops: ClientEvent[] = [];
  server.addEventListener("disconnect", (e) => drops.push(e));
  const resumed = new Promise<void>((resolve) =>
    server.addEventListener("resume", () => resolve())
  );
  const t0 = performance.now();
  const stalling = proxy.stall({ ms: 1_500, direction: "both", connection: 0 });
  await until(() => drops.length > 0, "the server to declare the client dead");
  const after = performance.now() - t0;
  assert.ok(after >= 400 && after < 1_400, `declared dead after ${after.toFixed(0)} ms`);
  assert.equal(drops[0].clientId, 0);
  assert.match(drops[0].error!.message, /Client "0" silent for 400 ms: declared dead/);
  await resumed;
  await stalling;
  await server.broadcast("still here");
  assert.equal(await client.recv({ timeout: 5_000 }), "still here");
  assert.equal(server.stats(0).state, "connected");
});

Deno.test("listen() refuses a resume with a wrong token or for a live client, and accepts the real one", async () => {
  await using server = listen({ clients: 2 });
  const peer = await RawPeer.connect(server.port);
  const welcome = await peer.handshake({ name: "site-a" });
  const token = welcome.token as Uint8Array;
  assert.equal(welcome.id, 0);
  await using other = await connect({ port: server.port });
  await server.ready();
  const refuse = async (resume: Record<string, unknown>) => {
    await using thief = await RawPeer.connect(server.port);
    return await thief.handshake({ resume });
  };
  // Replayed while the client is connected: refused, and the client is untouched.
  const live = await refuse({ id: 0, token, received: 0 });
  assert.deepStrictEqual([live.type, live.reason], ["reject", "live"]);
  assert.match(live.message as string, /client "0" is still connected/);
  const wrong = await refuse({ id: 0, token: new Uint8Array(16), received: 0 });
  assert.deepStrictEqual([wrong.type, wrong.reason], ["reject", "resume"]);
  assert.match(wrong.message as string, /wrong token for client "0"/);
  const unknown = await refuse({ id: 7, token, received: 0 });
  assert.deepStrictEqual([unknown.reason, unknown.message], [
    "resume",
    'Resume refused: no session "7"',
  ]);
  // Another client's id with this token: a wrong token (nothing said of its liveness).
  const swapped = await refuse({ id: other.id, token, received: 0 });
  assert.deepStrictEqual(
    [swapped.reason, swapped.message],
    ["resume", 'Resume refused: wrong token for client "1"'],
  );
  // The connection drops without a close: the real token resumes, with the same id.
  await peer[Symbol.asyncDispose]();
  await until(() => server.stats(0).state === "resuming", "the server to see the drop");
  await using back = await RawPeer.connect(server.port);
  const resumed = await back.handshake({ resume: { id: 0, token, received: 0 } });
  assert.deepStrictEqual(
    [resumed.type, resumed.id, resumed.resumed, resumed.received],
    ["welcome", 0, true, 0],
  );
  assert.equal(server.stats(0).state, "connected");
  // And now that token is live again: a replay is refused.
  assert.equal((await refuse({ id: 0, token, received: 0 })).reason, "live");
  await server.broadcast("to both");
  assert.equal(await back.recv(), "to both");
});

Deno.test("listen() ends a session whose proven resume it refuses, as it tells the client (§6.3)", async () => {
  await using server = listen({ clients: 1, resumeTimeout: 60_000 });
  const left: ClientEvent[] = [];
  server.addEventListener("leave", (event) => left.push(event));
  const peer = await RawPeer.connect(server.port);
  const token = (await peer.handshake({ name: "site-a" })).token as Uint8Array;
  await server.ready();
  await peer[Symbol.asyncDispose]();
  await until(() => server.stats(0).state === "resuming", "the server to see the drop");
  // The right token, but it claims messages the server never sent: refused for good.
  await using back = await RawPeer.connect(server.port);
  const refused = await back.handshake({ resume: { id: 0, token, received: 5 } });
  assert.deepStrictEqual([refused.type, refused.reason], ["reject", "resume"]);
  assert.match(refused.message as string, /it says it received "5" messages, but 0 were sent/);
  // The server does not wait 60 s for a resume that cannot come: the session is over now.
  await until(() => left.length === 1, "the leave event");
  assert.equal(server.stats(0).state, "gone");
  assert.match(String(left[0].error), /Resume refused: client "0": .*: its session is over/);
  await assert.rejects(server.gather({ timeout: 5_000 }), PeerDisconnectedError);
});

Deno.test("listen() ends a session not resumed within resumeTimeout: gather names the client", async () => {
  await using server = listen({ clients: 1, resumeTimeout: 300 });
  const peer = await RawPeer.connect(server.port);
  await peer.handshake();
  await server.ready();
  const left = new Promise<ClientEvent>((resolve) =>
    server.addEventListener("leave", (e) => resolve(e))
  );
  const gathering = server.gather({ timeout: 10_000 });
  await peer[Symbol.asyncDispose](); // no close frame: a drop
  const error = await gathering.then(() => undefined, (e) => e);
  assert.ok(error instanceof PeerDisconnectedError, String(error));
  assert.equal(error.clientId, 0);
  assert.equal(error.message, 'Client "0" did not resume within 300 ms');
  assert.equal((await left).clientId, 0);
  assert.equal(server.stats(0).state, "gone");
});

Deno.test("close() ends the session at once: the server does not wait for a resume", async () => {
  await using server = listen({ clients: 2 });
  const a = await connect({ port: server.port });
  await using b = await connect({ port: server.port });
  await server.ready();
  const t0 = performance.now();
  const gathering = server.gatherSettled({ timeout: 10_000 });
  await b.send("b");
  await a.close();
  const { received, failed } = await gathering;
  assert.ok(performance.now() - t0 < 5_000);
  assert.deepStrictEqual([...received], [[1, "b"]]);
  assert.equal(failed.get(0)?.message, 'Client "0" closed the session');
  assert.equal(server.stats(0).state, "gone");
});

Deno.test("connect() with resume: false ends the session at a drop", async () => {
  await using server = listen({ clients: 1 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 11 });
  await using client = await connect({ port: proxy.port, resume: false });
  await server.ready();
  const cut = proxy.cut({ kind: "boundary", direction: "down", connection: 0 });
  await server.broadcast("x");
  assert.ok(await cut);
  await until(() => client.state === "gone", "the client to give up its session");
  assert.equal(client.resumes, 0);
  const error = await Array.fromAsync(client).then(() => undefined, (e) => e);
  assert.ok(error instanceof PeerDisconnectedError, "a lost session is an error, not an end");
  assert.equal(error.message, "Server disconnected");
});

Deno.test("listen() with per-client secrets gives a name its id again; with one shared secret it does not", async () => {
  const secrets = { "site-a": "a".repeat(32), "site-b": "b".repeat(32) };
  {
    await using server = listen({ clients: 2, open: true, auth: { clients: secrets } });
    const first = await connect({ port: server.port, name: "site-a", secret: secrets["site-a"] });
    await using b = await connect({ port: server.port, name: "site-b", secret: secrets["site-b"] });
    assert.deepStrictEqual([first.id, b.id], [0, 1]);
    await first.close();
    await using again = await connect({
      port: server.port,
      name: "site-a",
      secret: secrets["site-a"],
    });
    assert.equal(again.id, 0, "site-a keeps its id");
    const duplicate = await connect({
      port: server.port,
      name: "site-a",
      secret: secrets["site-a"],
    })
      .then(() => undefined, (e) => e);
    assert.equal(duplicate?.reason, "duplicate");
  }
  {
    const secret = "s".repeat(32);
    await using server = listen({ clients: 2, open: true, auth: { secret } });
    const first = await connect({ port: server.port, name: "site-a", secret });
    await first.close();
    await using again = await connect({ port: server.port, name: "site-a", secret });
    assert.equal(again.id, 1, "a name is no identity under a shared secret: a new id");
  }
});

Deno.test("broadcast() goes out at once to the clients that acknowledge, and waits only for a full one", async () => {
  await using server = listen({ clients: 2, retainBytes: 1024 * 1024 });
  const mute = await RawPeer.connect(server.port); // reads nothing, acknowledges nothing
  await mute.handshake();
  await using client = await connect({ port: server.port });
  await server.ready();
  // Small values are copied and queued without waiting, until a client's
  // unacknowledged bytes reach retainBytes (17 frames of 61,449 bytes fit in 1 MiB).
  const chunk = new Uint8Array(60 * 1024);
  for (let i = 0; i < 17; i++) await server.broadcast(chunk);
  // The 18th fills the mute peer's outbox: it is queued for both, then waits for an ack.
  await assert.rejects(server.broadcast(chunk, { timeout: 300 }), { name: "TimeoutError" });
  assert.equal(server.stats(0).unacknowledged, 18);
  for (let i = 0; i < 18; i++) await client.recv({ timeout: 5_000 });
  // The next one waits for room for the mute peer only: the live client has it at once.
  const next = server.broadcast("next", { timeout: 300 });
  assert.equal(await client.recv({ timeout: 5_000 }), "next", "the live client is not held back");
  await assert.rejects(next, { name: "TimeoutError" });
  assert.equal(server.stats(0).unacknowledged, 18, "nothing queued past the bound");
  await mute[Symbol.asyncDispose]();
});

Deno.test("connect() tries again when the connection of a resume is cut inside its welcome", async () => {
  await using server = listen({ clients: 1 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 12 });
  await using client = await connect({ port: proxy.port });
  await server.ready();
  const cutWelcome = proxy.cut({ kind: "handshake", direction: "down" }); // the next connection
  const cut = proxy.cut({ kind: "boundary", direction: "up", connection: 0 });
  await client.send("ping"); // the cut follows it: the first resume is cut in its welcome
  assert.ok(await cut);
  assert.equal(((await cutWelcome) as { kind: string }).kind, "cut-handshake");
  await until(() => client.state !== "resuming", "the client to resume or give up");
  assert.equal(client.state, "connected", "a cut welcome is a drop: the client tried again");
  assert.equal(client.resumes, 1);
  assert.equal((await server.gather({ timeout: 10_000 })).get(0), "ping");
});

Deno.test("Server.broadcast() finishes for the live clients while a dropped client is away, and the away one gets the model as it was when it resumes", async () => {
  // The default resumeTimeout (300 s): the dropped client stays a member all along.
  await using server = listen({ clients: 3 });
  const peer = await RawPeer.connect(server.port);
  const { id, token } = await peer.handshake({ name: "killed-site" }) as {
    id: number;
    token: Uint8Array;
  };
  await using a = await connect({ port: server.port });
  await using b = await connect({ port: server.port });
  await server.ready();
  await peer[Symbol.asyncDispose](); // no close frame: what a kill -9 leaves
  await until(() => server.stats(id).state === "resuming", "the server to see the drop");
  const model = new Float32Array(256 * 1024).fill(0.5); // 1 MiB: it lends its memory
  // Before the fix this waited for the away client's ack: TimeoutError after 20 s.
  await server.broadcast({ round: 1, model }, { timeout: 20_000 });
  model.fill(-1); // the caller reuses its memory as soon as the broadcast resolved
  for (const client of [a, b]) {
    const got = await client.recv({ timeout: 10_000 }) as { model: Float32Array };
    assert.equal(got.model[0], 0.5);
    await client.reply({ id: client.id });
  }
  // The round closes on the quorum of the live clients, and says why the other is missing.
  const { received, failed } = await server.gatherSettled({ min: 2, timeout: 20_000 });
  assert.deepStrictEqual([...received.keys()], [a.id, b.id]);
  const missing = failed.get(id);
  assert.ok(missing instanceof PeerDisconnectedError, String(missing));
  assert.match(missing.message, /^GatherSettled: client "0" is away: its connection dropped/);
  await using back = await RawPeer.connect(server.port);
  const welcome = await back.handshake({ name: "killed-site", resume: { id, token, received: 0 } });
  assert.deepStrictEqual([welcome.type, welcome.resumed], ["welcome", true]);
  const resent = await back.recv() as { round: number; model: Float32Array };
  assert.equal(resent.round, 1);
  assert.equal(resent.model.length, model.length);
  assert.ok(
    resent.model.every((x) => x === 0.5),
    "the copy made at the drop, not the reused memory",
  );
});

Deno.test("Server.broadcast() ends the session of an away client whose unacknowledged messages reached twice retainBytes, and goes on", async () => {
  await using server = listen({ clients: 2, retainBytes: MiB });
  const peer = await RawPeer.connect(server.port);
  const { id } = await peer.handshake({ name: "killed-site" }) as { id: number };
  await using live = await connect({ port: server.port });
  await server.ready();
  const left = new Promise<ClientEvent>((resolve) =>
    server.addEventListener("leave", (e) => resolve(e), { once: true })
  );
  await peer[Symbol.asyncDispose]();
  await until(() => server.stats(id).state === "resuming", "the server to see the drop");
  const model = new Float32Array(384 * 1024); // 1.5 MiB: one fills the away client's outbox
  for (const held of [1, 2]) { // the second is held too: 3 MiB, past twice retainBytes
    await server.broadcast({ model }, { timeout: 20_000 });
    await live.recv({ timeout: 10_000 });
    assert.equal(server.stats(id).state, "resuming");
    assert.equal(server.stats(id).unacknowledged, held);
  }
  await server.broadcast({ model }, { timeout: 20_000 });
  await live.recv({ timeout: 10_000 });
  const event = await left;
  assert.equal(event.clientId, id);
  assert.ok(event.error instanceof PeerDisconnectedError, String(event.error));
  assert.match(
    event.error.message,
    /^Client "0" fell behind while away: \d+ bytes of unacknowledged messages reached twice retainBytes \(1048576\)/,
  );
  assert.equal(server.stats(id).state, "gone");
});

Deno.test("Server.broadcast() holds a message that waited for room behind a large one when the connection drops, and the client resumes with both", async () => {
  await using server = listen({ clients: 1, retainBytes: MiB });
  const peer = await RawPeer.connect(server.port);
  const { id, token } = await peer.handshake({ name: "flaky-site" }) as {
    id: number;
    token: Uint8Array;
  };
  await server.ready();
  const model = new Float32Array(384 * 1024).fill(0.25); // 1.5 MiB: it fills the outbox
  const first = server.broadcast({ model }, { timeout: 20_000 }); // the peer never acknowledges
  let waited = true;
  const second = server.broadcast("after", { timeout: 20_000 }).finally(() => waited = false);
  await until(() => server.stats(id).unacknowledged === 1, "the model to be sent");
  assert.ok(waited, "the second message waits for room while the client is connected");
  await peer[Symbol.asyncDispose](); // the connection drops in the middle of the model
  await Promise.all([first, second]); // neither waits for the away client
  assert.equal(server.stats(id).state, "resuming", "the session is kept");
  assert.equal(server.stats(id).unacknowledged, 2);
  await using back = await RawPeer.connect(server.port);
  const welcome = await back.handshake({ name: "flaky-site", resume: { id, token, received: 0 } });
  assert.deepStrictEqual([welcome.type, welcome.resumed], ["welcome", true]);
  const resent = await back.recv() as { model: Float32Array };
  assert.ok(resent.model.length === model.length && resent.model.every((x) => x === 0.25));
  assert.equal(await back.recv(), "after");
});
