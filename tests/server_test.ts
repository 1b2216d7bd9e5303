/**
 * The server's life: clients joining (ids, `ready()`, the handshake and its
 * rejects), a session failing on bytes that came with its hello, and
 * `close()`. Over real sockets on 127.0.0.1.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { decode } from "../codec.ts";
import { PeerDisconnectedError, ProtocolError, TimeoutError } from "../errors.ts";
import type { ClientEvent } from "../events.ts";
import { listen } from "../server.ts";
import { frame, handshakeControlFrame } from "./fake_conn.ts";
import { cluster, concat, RawPeer } from "./test_util.ts";

// ---------------------------------------------------------------------------
// Joining

Deno.test("listen() gives ids 0..N-1 in order of arrival", async () => {
  await using server = listen({ clients: 3 });
  assert.equal(server.clients, 3);
  assert.equal(server.hostname, "127.0.0.1");
  assert.ok(server.port > 0);
  const clients: Client[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const client = await connect({ port: server.port });
      clients.push(client);
      assert.equal(client.id, i);
      assert.equal(client.clients, 3);
      assert.equal(server.joined, i + 1);
    }
    await server.ready();
    assert.deepStrictEqual(server.connected, [0, 1, 2]);
    // The server's id i is the client that was told i.
    for (const client of clients) await client.send({ from: client.id });
    const uploads = await server.gather();
    for (const [id, value] of uploads) assert.deepStrictEqual(value, { from: id });
  } finally {
    for (const client of clients) await client.close();
  }
});

Deno.test("ready() resolves once every client has joined", async () => {
  await using server = listen({ clients: 2 });
  const ready = server.ready();
  await using first = await connect({ port: server.port });
  await using second = await connect({ port: server.port });
  await ready;
  assert.equal(server.joined, 2);
  assert.deepStrictEqual([first.id, second.id], [0, 1]);
  await server.ready(); // already ready
});

Deno.test("ready() rejects with TimeoutError listing the ids not yet taken", async () => {
  await using server = listen({ clients: 3 });
  await using _client = await connect({ port: server.port });
  await assert.rejects(server.ready({ timeout: 50 }), (error) => {
    assert.ok(error instanceof TimeoutError);
    assert.deepStrictEqual(error.clientIds, [1, 2]);
    assert.equal(error.clientId, 1);
    assert.match(error.message, /1 of 3 joined/);
    return true;
  });
});

Deno.test("ready() rejects with the abort reason when its signal aborts", async () => {
  await using server = listen({ clients: 1 });
  const controller = new AbortController();
  const ready = server.ready({ signal: controller.signal });
  controller.abort(new Error("stop waiting"));
  await assert.rejects(ready, /stop waiting/);
});

Deno.test("listen() rejects an invalid client count", () => {
  for (const clients of [0, -1, 1.5, NaN]) {
    assert.throws(() => listen({ clients }), RangeError, String(clients));
  }
  assert.throws(() => listen({ clients: 1, maxFrameBytes: -1 }), RangeError);
});

Deno.test("connect() to a full server rejects with ProtocolError mentioning full", async () => {
  await using server = listen({ clients: 1 });
  await using _client = await connect({ port: server.port });
  await assert.rejects(connect({ port: server.port }), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.match(error.message, /full/);
    return true;
  });
  assert.equal(server.joined, 1);
});

Deno.test("listen() rejects a hello with the wrong protocol version", async () => {
  await using server = listen({ clients: 1 });
  {
    await using peer = await RawPeer.connect(server.port);
    await peer.sendHandshake({ fedcomm: 99, type: "hello" });
    const answer = await peer.recv() as Record<string, unknown>;
    assert.equal(answer.type, "reject");
    assert.equal(answer.fedcomm, 3);
    assert.equal(answer.reason, "version");
    assert.match(answer.message as string, /99/);
    assert.equal(await peer.recv(), null, "the server closes the connection after a reject");
  }
  {
    // A version 1 client's hello (a plain MessagePack frame) gets a plain reject it can read.
    await using peer = await RawPeer.connect(server.port);
    await peer.send({ fedcomm: 1, type: "hello" });
    const body = await peer.reader.read();
    assert.ok(body !== null && body[0] !== 0xc1, "not a control frame");
    const answer = decode(body) as Record<string, unknown>;
    assert.equal(answer.type, "reject");
    assert.equal(answer.reason, "version");
    assert.match(answer.message as string, /client speaks "1"/);
  }
  {
    // A version 3 hello in version 1 framing is a version mismatch too (§6.7).
    await using peer = await RawPeer.connect(server.port);
    await peer.send({ fedcomm: 3, type: "hello" });
    const body = await peer.reader.read();
    assert.ok(body !== null && body[0] !== 0xc1, "not a control frame");
    const answer = decode(body) as Record<string, unknown>;
    assert.deepStrictEqual([answer.type, answer.reason], ["reject", "version"]);
    assert.match(answer.message as string, /client speaks "3" in a plain frame/);
  }
  {
    await using peer = await RawPeer.connect(server.port);
    await peer.send(["not", "a", "hello"]);
    const answer = await peer.recv() as Record<string, unknown>;
    assert.equal(answer.type, "reject");
    assert.equal(answer.reason, "malformed");
  }
  // Neither took a slot.
  assert.equal(server.joined, 0);
  await using client = await connect({ port: server.port });
  assert.equal(client.id, 0);
});

Deno.test("listen() welcomes a hand-made hello with the id, client count and frame limit", async () => {
  await using server = listen({ clients: 2, maxFrameBytes: 4096 });
  await using peer = await RawPeer.connect(server.port);
  const welcome = await peer.handshake() as Record<string, unknown>;
  const token = welcome.token as Uint8Array;
  assert.ok(token instanceof Uint8Array && token.byteLength === 16, "a 16-byte resume token");
  assert.deepStrictEqual(welcome, {
    fedcomm: 3,
    type: "welcome",
    id: 0,
    clients: 2,
    maxFrameBytes: 4096,
    token,
    grace: 300_000,
    received: 0,
    resumed: false,
  });
  assert.equal(server.joined, 1);
});

Deno.test("listen() drops a peer whose first frame exceeds the handshake limit", async () => {
  await using server = listen({ clients: 1 });
  {
    await using peer = await RawPeer.connect(server.port);
    await peer.write([0, 0x10, 0, 0]); // announces 1 MiB before any hello
    assert.equal(await peer.recv(), null);
  }
  assert.equal(server.joined, 0);
  await using client = await connect({ port: server.port });
  assert.equal(client.id, 0);
});

Deno.test("listen() dispatches leave for a session that fails on bytes sent in the same write as its hello", async () => {
  const hello = handshakeControlFrame({ fedcomm: 3, type: "hello" });
  const cases: [string, Uint8Array, RegExp][] = [
    ["a second hello", hello, /Unexpected handshake message: the handshake is over/],
    [
      "an ack of nothing sent",
      frame([0xc1, 0x04, 0, 0, 0, 0, 0, 0, 0, 9]),
      /Invalid acknowledgement/,
    ],
    ["an unknown control frame", frame([0xc1, 0x09]), /Invalid control frame/],
  ];
  for (const [what, extra, message] of cases) {
    await using server = listen({ clients: 1 });
    const left = new Promise<ClientEvent>((resolve) =>
      server.addEventListener("leave", resolve, { once: true })
    );
    await using peer = await RawPeer.connect(server.port);
    await peer.write(concat([hello, extra])); // one write: the server reads them together
    let timer: ReturnType<typeof setTimeout> | undefined;
    const event = await Promise.race([
      left,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`No leave event for ${what}`)), 5_000);
      }),
    ]).finally(() => clearTimeout(timer));
    assert.equal(event.clientId, 0, what);
    assert.ok(event.error instanceof ProtocolError, `${what}: ${event.error}`);
    assert.match(event.error.message, message, what);
  }
});

// ---------------------------------------------------------------------------
// Closing

Deno.test("close() releases the port", async () => {
  const server = listen({ clients: 1 });
  const port = server.port;
  const client = await connect({ port });
  await server.ready();
  await server.close();
  await client.close();
  await server.close(); // idempotent
  await using again = listen({ clients: 1, port });
  assert.equal(again.port, port);
  await using other = await connect({ port });
  assert.equal(other.id, 0);
});

Deno.test("close() rejects a pending gather with PeerDisconnectedError", async () => {
  const c = await cluster(2);
  const gathering = c.server.gather();
  await c.server.close();
  await assert.rejects(gathering, PeerDisconnectedError);
  await assert.rejects(c.server.gather(), PeerDisconnectedError);
  await c[Symbol.asyncDispose]();
});
