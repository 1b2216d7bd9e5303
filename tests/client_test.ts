import assert from "node:assert/strict";
import { FaultProxy } from "../bench/_fault_proxy.ts";
import { connect } from "../client.ts";
import { encode } from "../codec.ts";
import {
  FrameTooLargeError,
  PeerDisconnectedError,
  ProtocolError,
  SendTimeoutError,
  TimeoutError,
} from "../errors.ts";
import { FrameReader } from "../framing.ts";
import { listen } from "../server.ts";
import { rejectionOf, until } from "./test_util.ts";

/** A port on which nothing listens (it was free a moment ago). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

/** One value in a frame. */
/** A handshake message's frame: a control frame `c1 03` + the map (PROTOCOL.md §3.2). */
function handshakeFrame(value: unknown): Uint8Array {
  return withLength(new Uint8Array([0xc1, 0x03, ...encode(value)]));
}

function withLength(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.byteLength);
  new DataView(out.buffer).setUint32(0, body.byteLength);
  out.set(body, 4);
  return out;
}

Deno.test("connect() learns the client's id and the number of clients", async () => {
  await using server = listen({ clients: 2 });
  await using first = await connect({ port: server.port });
  await using second = await connect({ port: server.port, hostname: "127.0.0.1" });
  assert.equal(first.id, 0);
  assert.equal(second.id, 1);
  assert.equal(first.clients, 2);
  assert.equal(second.clients, 2);
  assert.ok(first.bytesSent > 0 && first.bytesReceived > 0, "the handshake was counted");
});

Deno.test("connect() to a port with nothing listening rejects", async () => {
  await assert.rejects(connect({ port: freePort() }), Deno.errors.ConnectionRefused);
});

Deno.test("connect() with waitForServer joins a server that starts later", async () => {
  const port = freePort();
  const connecting = connect({ port, waitForServer: true, timeout: 10_000 });
  await new Promise((resolve) => setTimeout(resolve, 250)); // refused a few times meanwhile
  await using server = listen({ port, clients: 1 });
  await using client = await connecting;
  await server.ready();
  assert.equal(client.id, 0);
});

Deno.test("connect() with waitForServer rejects with TimeoutError when no server comes", async () => {
  await assert.rejects(
    connect({ port: freePort(), waitForServer: true, timeout: 300 }),
    TimeoutError,
  );
});

Deno.test("connect() rejects with TimeoutError when the server never answers", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  await assert.rejects(connect({ port: listener.addr.port, timeout: 50 }), TimeoutError);
  const conn = await accepted;
  // The client closed its side: the silent server reads its hello, then the end.
  const reader = new FrameReader(conn.readable);
  assert.ok((await reader.read())!.byteLength > 0);
  assert.equal(await reader.read(), null);
  try {
    conn.close();
  } catch {
    // Closed already when its readable ended.
  }
});

Deno.test("connect() rejects with the abort reason when its signal aborts", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const controller = new AbortController();
  const connecting = connect({ port: listener.addr.port, signal: controller.signal });
  const conn = await accepted;
  controller.abort(new Error("Gave up"));
  await assert.rejects(connecting, /Gave up/);
  try {
    conn.close();
  } catch {
    // Already closed.
  }
});

Deno.test("connect() rejects with ProtocolError for an invalid welcome", async () => {
  const answers = [
    { fedcomm: 3, type: "welcome", id: 0, clients: 2 }, // no maxFrameBytes
    { fedcomm: 1, type: "welcome", id: 0, clients: 1, maxFrameBytes: 1024 }, // version
    { fedcomm: 3, type: "challenge" }, // not asked for (this client has no secret)
    [1, 2, 3], // not a map
    { fedcomm: 3, type: "reject", reason: "full", message: "Server full" },
  ];
  for (const answer of answers) {
    using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const serving = (async () => {
      const conn = await listener.accept();
      const reader = new FrameReader(conn.readable);
      await reader.read(); // the hello
      const writer = conn.writable.getWriter();
      await writer.write(handshakeFrame(answer));
      assert.equal(await reader.read(), null, "the client closes after a bad answer");
      try {
        conn.close();
      } catch {
        // Closed already when its readable ended.
      }
    })();
    await assert.rejects(
      connect({ port: listener.addr.port }),
      ProtocolError,
      JSON.stringify(answer),
    );
    await serving;
  }
});

Deno.test("connect() accepts a welcome with unknown keys", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    const conn = await listener.accept();
    const reader = new FrameReader(conn.readable);
    await reader.read();
    const welcome = { fedcomm: 3, type: "welcome", id: 1, clients: 3, maxFrameBytes: 99, x: [] };
    await conn.writable.getWriter().write(handshakeFrame(welcome));
    assert.deepStrictEqual(await reader.read(), new Uint8Array([0xc1, 0x06]), "close");
    assert.equal(await reader.read(), null);
    try {
      conn.close();
    } catch {
      // Closed already when its readable ended.
    }
  })();
  const client = await connect({ port: listener.addr.port });
  assert.equal(client.id, 1);
  assert.equal(client.clients, 3);
  await client.close();
  await serving;
});

Deno.test("connect() accepts a large first message right behind the welcome", async () => {
  await using server = listen({ clients: 1 });
  // The server does not wait for connect() to return: it broadcasts as soon
  // as it is ready, so the broadcast can arrive in the same read as the welcome.
  const connecting = connect({ port: server.port });
  await server.ready();
  const weights = new Float32Array(1 << 18).map((_, i) => i);
  await server.broadcast({ weights });
  await using client = await connecting;
  assert.deepStrictEqual(await client.recv(), { weights });
});

Deno.test("recv() rejects with TimeoutError when nothing arrives in time", async () => {
  await using server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  await assert.rejects(client.recv({ timeout: 20 }), (error) => {
    assert.ok(error instanceof TimeoutError);
    assert.deepStrictEqual(error.clientIds, [0]);
    return true;
  });
  // Nothing was lost: the next message is received.
  await server.broadcast("hello");
  assert.equal(await client.recv({ timeout: 10_000 }), "hello");
  await assert.rejects(client.recv({ timeout: -5 }), RangeError);
});

Deno.test("recv() rejects with the abort reason when its signal aborts", async () => {
  await using server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  const controller = new AbortController();
  const receiving = client.recv({ signal: controller.signal });
  controller.abort(new Error("Not needed"));
  await assert.rejects(receiving, /Not needed/);
});

Deno.test("recv() rejects with Deno.errors.Busy while another recv() waits", async () => {
  await using server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  const first = client.recv();
  await assert.rejects(client.recv(), Deno.errors.Busy);
  await server.broadcast("for the first");
  assert.equal(await first, "for the first");
});

Deno.test("recv() returns queued messages, then rejects with PeerDisconnectedError", async () => {
  const server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  await server.broadcast(1);
  await server.broadcast({ two: 2 });
  await server.close();
  assert.equal(await client.recv(), 1);
  assert.deepStrictEqual(await client.recv(), { two: 2 });
  await assert.rejects(client.recv(), PeerDisconnectedError);
  await assert.rejects(client.recv(), PeerDisconnectedError);
});

Deno.test("Client iteration ends when the server closes", async () => {
  const server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  for (let round = 0; round < 3; round++) await server.broadcast({ round });
  const closing = server.close();
  const received: unknown[] = [];
  for await (const message of client) received.push(message);
  assert.deepStrictEqual(received, [{ round: 0 }, { round: 1 }, { round: 2 }]);
  await closing;
  // Iterating again ends at once.
  assert.deepStrictEqual(await Array.fromAsync(client), []);
});

Deno.test("Client iteration yields messages as they come", async () => {
  await using server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  const iterator = client[Symbol.asyncIterator]();
  for (const value of ["a", new Float64Array([1, 2]), { b: null }]) {
    const next = iterator.next();
    await server.broadcast(value);
    assert.deepStrictEqual(await next, { done: false, value });
  }
});

Deno.test("send() after the server closed eventually rejects with PeerDisconnectedError", async () => {
  const server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  await server.close();
  let error: unknown;
  for (let i = 0; i < 200 && error === undefined; i++) {
    try {
      await client.send({ i, pad: new Uint8Array(1024) });
      await client.flush();
      await new Promise((resolve) => setTimeout(resolve, 5));
    } catch (e) {
      error = e;
    }
  }
  assert.ok(error instanceof PeerDisconnectedError, `got ${error}`);
  await assert.rejects(client.send("again"), PeerDisconnectedError);
});

Deno.test("send() after close() rejects with PeerDisconnectedError", async () => {
  await using server = listen({ clients: 1 });
  const client = await connect({ port: server.port });
  await client.close();
  await assert.rejects(client.send(1), PeerDisconnectedError);
  await assert.rejects(client.recv(), PeerDisconnectedError);
  await client.close(); // idempotent
});

Deno.test("send() rejects a value that cannot be encoded, and the client stays usable", async () => {
  await using server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  await assert.rejects(client.send({ f: () => 1 }), TypeError);
  await assert.rejects(client.send(2n ** 64n), RangeError);
  await client.send("fine");
  assert.equal((await server.gather()).get(0), "fine");
});

Deno.test("send() rejects a value over the server's frame limit before writing it", async () => {
  await using server = listen({ clients: 1, maxFrameBytes: 1024 });
  await using client = await connect({ port: server.port });
  await server.ready();
  await assert.rejects(client.send(new Uint8Array(2000)), RangeError);
  await client.send(new Uint8Array(1000));
  assert.equal(((await server.gather()).get(0) as Uint8Array).byteLength, 1000);
});

Deno.test("send() rejects a value over the client's own frame limit", async () => {
  await using server = listen({ clients: 1 });
  // 200 bytes: the welcome (about 110) must fit, as the limit applies before it too.
  await using client = await connect({ port: server.port, maxFrameBytes: 200 });
  await server.ready();
  await assert.rejects(client.send("x".repeat(300)), RangeError);
  await client.send("x".repeat(50));
  assert.equal((await server.gather()).get(0), "x".repeat(50));
});

Deno.test("send() and recv() keep order in both directions", async () => {
  await using server = listen({ clients: 1 });
  await using client = await connect({ port: server.port });
  await server.ready();
  const n = 500;
  const sends = [];
  for (let i = 0; i < n; i++) sends.push(client.send(i));
  await Promise.all(sends);
  const got = await Array.fromAsync(server.uploads({ count: n }), (u) => u.value);
  assert.deepStrictEqual(got, Array.from({ length: n }, (_, i) => i));
  for (let i = 0; i < n; i++) await server.broadcast(-1 - i);
  for (let i = 0; i < n; i++) assert.equal(await client.recv(), -1 - i);
});

Deno.test("connect() applies its maxFrameBytes before the welcome when it is below 64 KiB", async () => {
  await using server = listen({ clients: 1 });
  // The welcome is over 64 bytes: a client that accepts no more must refuse it.
  const error = await rejectionOf(
    connect({ port: server.port, maxFrameBytes: 64, timeout: 10_000 }),
  );
  assert.ok(error instanceof FrameTooLargeError, String(error));
  assert.equal(error.limit, 64);
});

Deno.test("listen() applies its maxFrameBytes to the hello when it is below 64 KiB", async () => {
  await using server = listen({ clients: 1, maxFrameBytes: 256 });
  const refused: string[] = [];
  server.addEventListener("refuse", (event) => refused.push(event.message));
  await assert.rejects(
    connect({
      port: server.port,
      props: Object.fromEntries([1, 2, 3, 4].map((i) => [`pad${i}`, "x".repeat(250)])),
      timeout: 10_000,
    }),
    PeerDisconnectedError,
  );
  await until(() => refused.length === 1, "the refuse event");
  assert.match(refused[0], /Frame too large: \d+ bytes exceeds maxFrameBytes 256/);
  await using client = await connect({ port: server.port, timeout: 10_000 });
  assert.equal(client.id, 0);
});

Deno.test("send() that times out says whether the value was queued: SendTimeoutError.queued", async () => {
  await using server = listen({ clients: 1 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 21 });
  await using client = await connect({ port: proxy.port });
  await server.ready();
  // No acknowledgement reaches the client for 3 s: a 64 MiB tensor (kept
  // until acknowledged) fills its retention.
  const stalled = proxy.stall({ ms: 3_000, direction: "down", connection: 0 });
  const queued = await rejectionOf(client.send(new Float32Array(16 << 20), { timeout: 300 }));
  assert.ok(queued instanceof SendTimeoutError, String(queued));
  assert.equal(queued.queued, true);
  assert.match(
    queued.message,
    /^Send timed out after 300 ms: .*: queued, not acknowledged yet: it will be delivered, do not send it again$/,
  );
  const notQueued = await rejectionOf(client.send("next", { timeout: 200 }));
  assert.ok(notQueued instanceof SendTimeoutError, String(notQueued));
  assert.equal(notQueued.queued, false);
  assert.match(notQueued.message, /: not queued: nothing was sent, send it again$/);
  await stalled;
  // The queued one arrives once; the other never did, and can be sent again.
  await client.send("next again", { timeout: 20_000 });
  const got = await Array.fromAsync(server.uploads({ count: 2, timeout: 20_000 }), (u) => u.value);
  assert.equal((got[0] as Float32Array).length, 16 << 20);
  assert.equal(got[1], "next again");
});
