/**
 * The protocol vector scenarios with the library as the server (`listen()`)
 * and the peer as its clients: each returns the frames the library wrote, by
 * case name. Not published.
 *
 * @module
 */

import assert from "node:assert/strict";
import { listen, type Server } from "../mod.ts";
import { until } from "./test_util.ts";
import {
  assertValue,
  AUTH_TOKEN,
  frameOf,
  fromHex,
  jsonOf,
  OTHER_TOKEN,
  RESUME_TOKEN,
  SITE_A,
  TOKEN,
  valueOf,
} from "./protocol_vectors.ts";
import {
  type Captured,
  HOST,
  Raw,
  soon,
  withRandom,
  type Writes,
} from "./protocol_vectors_peer.ts";

/** The session of the former hex example, the library as the server: `listen({clients: 2})`. */
export async function serverSession(): Promise<Captured> {
  const out: Captured = {};
  const server = listen({ clients: 2, hostname: HOST, port: 0, heartbeatMs: 0 });
  const leaves: number[] = [];
  server.addEventListener("leave", (e) => leaves.push(e.clientId));
  const raws: Raw[] = [];
  try {
    const [a, b] = await fillServer(server, raws, out);
    await serverRounds(server, a, b, leaves, out);
    return out;
  } finally {
    for (const raw of raws) raw.close();
    await server.close();
  }
}

/** Clients 0 and 1 join the server of two (`welcome`); a third one is refused (`reject-full`). */
async function fillServer(server: Server, raws: Raw[], out: Captured): Promise<[Raw, Raw]> {
  const [a, b] = await withRandom([TOKEN, OTHER_TOKEN], async (): Promise<[Raw, Raw]> => {
    const a = await Raw.connect(server.port);
    raws.push(a);
    await a.send("hello");
    out.welcome = await a.frame();
    const b = await Raw.connect(server.port);
    raws.push(b);
    await b.send("hello");
    await b.frame(); // its welcome: id 1
    return [a, b];
  });
  assert.deepStrictEqual(server.stats().map((s) => [s.id, s.name, s.props]), [
    [0, undefined, {}],
    [1, undefined, {}],
  ]);

  // A third client: the server is full.
  const c = await Raw.connect(server.port);
  raws.push(c);
  await c.send("hello");
  out["reject-full"] = await c.frame();
  await c.eof();
  return [a, b];
}

/** The two rounds of the session of clients `a` (0) and `b` (1), a ping, and the closes. */
async function serverRounds(
  server: Server,
  a: Raw,
  b: Raw,
  leaves: readonly number[],
  out: Captured,
): Promise<void> {
  // The broadcast; client 0 acks it and replies; the server acks the reply.
  await server.broadcast(valueOf("broadcast-tensor"));
  out["broadcast-tensor"] = await a.frame();
  assert.deepStrictEqual(await b.frame(), out["broadcast-tensor"]);
  await b.send("ack-1");
  await a.send("ack-1", "reply-tensor");
  const answers = await soon(server.gather({ ids: [0] }), "the reply");
  assertValue(answers.get(0), jsonOf("reply-tensor"));
  out["ack-1"] = await a.frame();
  await until(
    () => server.stats(0).unacknowledged === 0 && server.stats(1).unacknowledged === 0,
    "the server to read the acks",
  );

  // Client 0 pings.
  await a.send("ping");
  out.pong = await a.frame();

  // The second broadcast; client 0's reply "done" to message 1 is late, and acknowledged.
  await server.broadcast(valueOf("broadcast-round-2"));
  out["broadcast-round-2"] = await a.frame();
  assert.deepStrictEqual(await b.frame(), out["broadcast-round-2"]);
  // A ping while the server owes an ack: the ack goes first, then the pong (§8.3).
  await a.send("ack-2", "reply-done", "ping");
  await b.send("ack-2");
  out["ack-2"] = await a.frame();
  assert.deepStrictEqual(await a.frame(), out.pong, "the pong, after the ack");
  await until(() => server.stats(0).lateReplies === 1, "the late reply");

  // Client 0 closes its session; the server closes client 1's.
  await a.send("close");
  await until(() => leaves.includes(0), "client 0's leave event");
  assert.equal(server.stats(0).state, "gone");
  await a.eof();
  await until(() => server.stats(1).unacknowledged === 0, "client 1's acks");
  const closing = server.close();
  out.close = await b.frame();
  await b.eof();
  await closing;
}

/** The rejects of version 1 and version 2 hellos. */
async function versionRejects(): Promise<Captured> {
  const out: Captured = {};
  const server = listen({ clients: 1, hostname: HOST, port: 0 });
  const refused: string[] = [];
  server.addEventListener("refuse", (e) => refused.push(e.reason));
  try {
    for (
      const [hello, reject] of [
        ["hello-v1", "reject-version-plain"],
        ["hello-v2", "reject-version-v2"],
      ]
    ) {
      const raw = await Raw.connect(server.port);
      try {
        await raw.send(hello);
        out[reject] = await raw.frame();
        await raw.eof();
      } finally {
        raw.close();
      }
    }
    assert.deepStrictEqual(refused, ["version", "version"]);
    return out;
  } finally {
    await server.close();
  }
}

/** The welcome of a server without resume: `grace` 0, no token. */
async function noResume(): Promise<Captured> {
  const server = listen({ clients: 1, hostname: HOST, port: 0, resumeTimeout: 0 });
  const raw = await Raw.connect(server.port);
  try {
    await raw.send("hello");
    return { "welcome-no-resume": await raw.frame() };
  } finally {
    raw.close();
    await server.close();
  }
}

/** A client that takes long messages gets the server's limit in its welcome. */
async function serverLong(): Promise<Captured> {
  const server = listen({ clients: 2, hostname: HOST, port: 0 });
  const raw = await Raw.connect(server.port);
  try {
    return await withRandom([TOKEN], async () => {
      await raw.send("hello-long");
      return { "welcome-long": await raw.frame() };
    });
  } finally {
    raw.close();
    await server.close();
  }
}

/** The server's side of the authenticated handshake (the `site-a` proof). */
async function serverAuth(): Promise<Captured> {
  const out: Captured = {};
  const server = listen({ clients: 1, hostname: HOST, port: 0, auth: { secret: SITE_A.secret } });
  const raw = await Raw.connect(server.port);
  try {
    await withRandom([fromHex(SITE_A.serverNonce), AUTH_TOKEN], async () => {
      await raw.send("hello-auth");
      out.challenge = await raw.frame();
      await raw.send("auth");
      out["welcome-auth"] = await raw.frame();
    });
    const stats = server.stats(0);
    assert.deepStrictEqual([stats.name, stats.authenticated], ["site-a", true]);
    return out;
  } finally {
    raw.close();
    await server.close();
  }
}

/** The library as the server, resumed: a client cut after its reply comes back. */
async function serverResume(): Promise<Captured> {
  const server = listen({ clients: 1, hostname: HOST, port: 0, heartbeatMs: 0 });
  const resumed: number[] = [];
  server.addEventListener("resume", (e) => resumed.push(e.clientId));
  const raws: Raw[] = [];
  try {
    const first = await Raw.connect(server.port);
    raws.push(first);
    await withRandom([RESUME_TOKEN], async () => {
      await first.send("hello");
      await first.frame(); // the welcome, with the token
    });
    await server.broadcast({ round: 1 });
    await first.frame();
    await first.send("ack-1", "reply-done");
    assert.deepStrictEqual(await first.frame(), frameOf("ack-1"));
    assertValue((await soon(server.gather(), "the reply")).get(0), jsonOf("reply-done"));
    first.close(); // the drop
    await until(() => server.stats(0).state === "resuming", "the drop");
    const again = await Raw.connect(server.port);
    raws.push(again);
    await again.send("hello-resume");
    const welcomed = await again.frame();
    assert.deepStrictEqual(resumed, [0]);
    await server.broadcast(valueOf("broadcast-round-2"));
    assert.deepStrictEqual(await again.frame(), frameOf("broadcast-round-2"));
    await again.send("ack-2", "close");
    await again.eof();
    return { "welcome-resumed": welcomed };
  } finally {
    for (const raw of raws) raw.close();
    await server.close();
  }
}

/** Which cases each server scenario writes. */
export const SERVER_WRITES: Writes = [
  [["welcome", "reject-full", "broadcast-tensor", "broadcast-round-2"], serverSession],
  [["reject-version-plain", "reject-version-v2"], versionRejects],
  [["welcome-no-resume"], noResume],
  [["challenge", "welcome-auth"], serverAuth],
  [["welcome-resumed"], serverResume],
  [["welcome-long"], serverLong],
];
