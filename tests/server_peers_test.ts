/**
 * The server and its peers' frames: malformed or oversized ones, values over
 * `maxFrameBytes`, and heartbeats (pings, pongs, liveness while it does not
 * read). Over real sockets on 127.0.0.1.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { ProtocolError } from "../errors.ts";
import { listen } from "../server.ts";
import { cluster, RawPeer, until } from "./test_util.ts";

// ---------------------------------------------------------------------------
// Misbehaving peers

Deno.test("gather() rejects with ProtocolError naming a client that sends malformed MessagePack", async () => {
  await using server = listen({ clients: 2 });
  await using client = await connect({ port: server.port });
  await using peer = await RawPeer.connect(server.port);
  const welcome = await peer.handshake();
  assert.equal(welcome.id, 1);
  await server.ready();
  await client.send("fine");
  await peer.writeFrame(new Uint8Array([0x92, 0x01])); // an array of 2 holding only 1 value
  await assert.rejects(server.gather(), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.clientId, 1);
    assert.match(error.message, /Malformed MessagePack/);
    assert.match(error.message, /client "1"/);
    return true;
  });
  assert.equal(await peer.recv(), null, "the server closes a failed connection");
  assert.equal((await server.gather({ ids: [0] })).get(0), "fine");
});

Deno.test("gather() rejects with ProtocolError for a frame with extra bytes after the value", async () => {
  await using server = listen({ clients: 1 });
  await using peer = await RawPeer.connect(server.port);
  await peer.handshake();
  await server.ready();
  await peer.writeFrame(new Uint8Array([0x01, 0x02]));
  await assert.rejects(server.gather(), (error) => {
    assert.ok(error instanceof ProtocolError);
    assert.equal(error.clientId, 0);
    return true;
  });
});

Deno.test("gather() fails naming a client that announces a frame over maxFrameBytes", async () => {
  await using server = listen({ clients: 2, maxFrameBytes: 1024 });
  await using client = await connect({ port: server.port });
  await using peer = await RawPeer.connect(server.port);
  assert.equal((await peer.handshake()).id, 1);
  await server.ready();
  await peer.send("under the limit");
  await peer.write([0, 0, 4, 1]); // 1025 bytes announced; no body follows
  assert.equal((await server.gather({ ids: [1] })).get(1), "under the limit");
  await assert.rejects(server.gather({ ids: [1] }), (error) => {
    assert.ok(error instanceof RangeError);
    assert.match(error.message, /Frame too large: 1025 bytes exceeds maxFrameBytes 1024/);
    assert.match(error.message, /client "1"/);
    return true;
  });
  assert.equal(await peer.recv(), null, "the server closes a failed connection");
  await client.send("zero");
  assert.equal((await server.gather({ ids: [0] })).get(0), "zero");
});

Deno.test("broadcast() and send() reject a value over maxFrameBytes before writing", async () => {
  await using c = await cluster(2, { maxFrameBytes: 1024 });
  await assert.rejects(c.server.broadcast(new Uint8Array(2000)), RangeError);
  await assert.rejects(c.server.send({ 0: "small", 1: new Uint8Array(2000) }), RangeError);
  await c.server.broadcast(new Uint8Array(1000));
  for (const client of c.clients) {
    assert.equal(((await client.recv()) as Uint8Array).byteLength, 1000);
  }
});

// ---------------------------------------------------------------------------
// Heartbeats

Deno.test("listen() pings an idle connection, times the pong, and ignores the peer's heartbeats", async () => {
  await using server = listen({ clients: 1, heartbeatMs: 20 });
  await using peer = await RawPeer.connect(server.port);
  assert.equal((await peer.handshake()).type, "welcome");
  await server.ready();
  // Idle: the next frame from the server is a ping, `c1 01` and 8 bytes.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const body = await Promise.race([
    peer.reader.read(),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("No ping within 10 s")), 10_000);
    }),
  ]).finally(() => clearTimeout(timer));
  assert.ok(body !== null);
  assert.equal(body.byteLength, 10);
  assert.deepStrictEqual([...body.subarray(0, 2)], [0xc1, 0x01]);
  assert.equal(server.stats(0).rttMs, undefined, "no round trip before the pong");
  await peer.writeFrame(new Uint8Array([0xc1, 0x02, ...body.subarray(2)]));
  await until(() => server.stats(0).rttMs !== undefined, "the pong to be timed");
  assert.ok(server.stats(0).rttMs! >= 0);
  // The peer's heartbeats are not messages: the gather gets the value after them.
  await peer.write([0, 0, 0, 0, 0, 0, 0, 0]);
  await peer.send("after two heartbeats");
  assert.deepStrictEqual([...await server.gather({ timeout: 10_000 })], [
    [0, "after two heartbeats"],
  ]);
});

Deno.test("listen() does not declare dead a client it stopped reading (a full inbox)", async () => {
  await using server = listen({ clients: 1, idleTimeout: 300, heartbeatMs: 100 });
  await using client = await connect({ port: server.port, heartbeatMs: 100, idleTimeout: 300 });
  await server.ready();
  // 70 MiB of uploads nobody takes: the server's inbox fills and it stops
  // reading (the sends past 64 MiB wait for acknowledgements meanwhile).
  const sends = Array.from({ length: 70 }, () => client.send(new Uint8Array(1024 * 1024)));
  await new Promise((resolve) => setTimeout(resolve, 1_500)); // 5 idle timeouts
  assert.equal(server.stats(0).state, "connected");
  assert.ok(server.stats(0).queued >= 64, `${server.stats(0).queued} queued`);
  const got = await Array.fromAsync(server.uploads({ count: 70, timeout: 20_000 }));
  assert.equal(got.length, 70);
  await Promise.all(sends);
});
