/**
 * Long messages (PROTOCOL.md §8.8) over real sockets on 127.0.0.1: values
 * larger than a frame, in a header and parts, received into place.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "../client.ts";
import { ExtData } from "@msgpack/msgpack";
import { FaultProxy } from "../bench/_fault_proxy.ts";
import { encode } from "../codec.ts";
import { FrameTooLargeError, MessageTooLargeError, ProtocolError } from "../errors.ts";
import type { ClientEvent } from "../events.ts";
import { listen, type Server } from "../server.ts";
import { cluster, pythonReady, RawPeer, spawnPython } from "./test_util.ts";

const MiB = 1024 * 1024;

/** A Float32Array of `n` elements whose values tell their place. */
function ramp(n: number, seed = 0): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (i % 1000) + seed;
  return a;
}

Deno.test("broadcast() sends a value larger than maxFrameBytes as a long message", async () => {
  await using c = await cluster(2, { maxFrameBytes: MiB });
  const weights = ramp(3 * MiB / 4 + 5); // 3 MiB and 20 bytes: four parts
  const value = { round: 1, weights, bias: new Uint8Array(100 * 1024).fill(7), tag: "r1" };
  await c.server.broadcast(value);
  for (const client of c.clients) {
    const got = await client.recv() as typeof value;
    assert.deepStrictEqual(got, value);
    assert.equal(got.weights.byteOffset, 0, "the array is its own buffer, received in place");
    assert.equal(got.weights.buffer.byteLength, weights.byteLength);
  }
});

Deno.test("Client.reply() sends a long message that gather() takes as the answer", async () => {
  await using c = await cluster(2, { maxFrameBytes: MiB });
  await c.server.broadcast({ round: 1 });
  for (const [i, client] of c.clients.entries()) {
    await client.recv();
    await client.reply({ round: 1, update: ramp(MiB / 2, i) }); // 2 MiB
  }
  const answers = await c.server.gather();
  for (const [i] of c.clients.entries()) {
    assert.deepStrictEqual(answers.get(i), { round: 1, update: ramp(MiB / 2, i) });
  }
  assert.equal(c.server.stats(0).lateReplies, 0);
});

Deno.test("Client.send() refuses a long message over the server's maxMessageBytes", async () => {
  await using c = await cluster(1, { maxFrameBytes: MiB, maxMessageBytes: 2 * MiB });
  await assert.rejects(
    c.clients[0].send(ramp(MiB)), // 4 MiB
    (e: unknown) => e instanceof MessageTooLargeError && e.limit === 2 * MiB,
  );
  await c.clients[0].send("still connected");
  assert.equal((await c.server.gather()).get(0), "still connected");
});

Deno.test("broadcast() gives FrameTooLargeError for a client that takes no long messages only", async () => {
  await using server = listen({ clients: 2, maxFrameBytes: MiB });
  await using plain = await connect({ port: server.port, maxMessageBytes: 0 });
  await using long = await connect({ port: server.port });
  await server.ready();
  const value = ramp(MiB / 2 + 1);
  await assert.rejects(
    server.broadcast(value),
    (e: unknown) => e instanceof FrameTooLargeError && e.clientId === 0,
  );
  assert.deepStrictEqual(await long.recv(), value);
  await server.broadcast("small");
  assert.equal(await plain.recv(), "small");
});

Deno.test("connect() fails a server's long message over its own maxMessageBytes", async () => {
  await using server = listen({ clients: 1, maxFrameBytes: MiB });
  await using client = await connect({ port: server.port, maxMessageBytes: 2 * MiB });
  await server.ready();
  // The server sends within the smaller limit (the client's, from its hello).
  await assert.rejects(server.broadcast(ramp(MiB)), MessageTooLargeError);
  await server.broadcast(ramp(MiB / 4 + 100));
  assert.equal((await client.recv() as Float32Array).length, MiB / 4 + 100);
});

Deno.test("connect() rejects an invalid maxMessageBytes", async () => {
  await assert.rejects(
    connect({ port: 1, maxMessageBytes: -1 }),
    (e: unknown) => e instanceof RangeError && /Invalid maxMessageBytes: "-1"/.test(e.message),
  );
  assert.throws(() => listen({ clients: 1, maxMessageBytes: 1.5 }), RangeError);
});

// ---------------------------------------------------------------------------
// A peer that writes long messages by hand

/** A reference (`d7 7f` + u64) to `length` bytes. */
function ref(length: number): ExtData {
  const data = new Uint8Array(8);
  new DataView(data.buffer).setBigUint64(0, BigInt(length));
  return new ExtData(127, data);
}

/** The body of a long message's header: `c1 07`, the request, the skeleton. */
function header(skeleton: unknown, request = 0): Uint8Array {
  const value = encode(skeleton);
  const body = new Uint8Array(8 + value.byteLength);
  body.set([0xc1, 0x07, 0, 0, 0, 0, 0, request]);
  body.set(value, 8);
  return body;
}

/** The body of a part: `c1 08`, six zeros, the data. */
function part(data: Uint8Array): Uint8Array {
  const body = new Uint8Array(8 + data.byteLength);
  body.set([0xc1, 0x08]);
  body.set(data, 8);
  return body;
}

/** A server with client 0 a raw peer that asked for long messages; resolves its leave event. */
async function rawMember(
  maxMessageBytes = 16 * MiB,
): Promise<{ server: Server; raw: RawPeer; left: Promise<ClientEvent> } & AsyncDisposable> {
  const server = listen({ clients: 1, maxFrameBytes: MiB, maxMessageBytes });
  const left = new Promise<ClientEvent>((resolve) =>
    server.addEventListener("leave", resolve, { once: true })
  );
  const raw = await RawPeer.connect(server.port);
  const welcome = await raw.handshake({ maxMessageBytes: 16 * MiB });
  assert.equal(welcome.type, "welcome");
  assert.equal(
    welcome.maxMessageBytes,
    maxMessageBytes,
    "the welcome answers with the server's limit",
  );
  await server.ready();
  return {
    server,
    raw,
    left,
    async [Symbol.asyncDispose]() {
      await raw[Symbol.asyncDispose]();
      await server.close();
    },
  };
}

Deno.test("Server takes a hand-made long message with pings between its parts", async () => {
  await using m = await rawMember();
  const data = new Uint8Array(300 * 1024).map((_, i) => i % 251);
  await m.raw.writeFrame(header({ round: 1, blob: ref(data.byteLength), n: 5 }));
  await m.raw.writeFrame(part(data.subarray(0, 200 * 1024)));
  await m.raw.writeFrame(new Uint8Array([0xc1, 0x01, 0, 0, 0, 0, 0, 0, 0, 9])); // a ping
  await m.raw.writeFrame(new Uint8Array(0)); // a heartbeat
  await m.raw.writeFrame(part(data.subarray(200 * 1024, 250 * 1024))); // small: copied
  await m.raw.writeFrame(part(data.subarray(250 * 1024)));
  const got = await m.server.gather({ timeout: 10_000 });
  assert.deepStrictEqual(got.get(0), { round: 1, blob: data, n: 5 });
});

Deno.test("Server fails a long message over maxMessageBytes before allocating it", async () => {
  await using m = await rawMember(4 * MiB);
  await m.raw.writeFrame(header({ a: ref(3 * MiB), b: ref(2 * MiB) }));
  const leave = await m.left;
  assert.ok(leave.error instanceof MessageTooLargeError, String(leave.error));
  assert.equal(leave.error.clientId, 0);
  assert.match(
    leave.error.message,
    /^Message too large: \d+ bytes exceeds maxMessageBytes 4194304: from client "0"$/,
  );
});

for (
  const [what, frames, message] of [
    ["a part with no header", [part(new Uint8Array(10))], "a part with no header"],
    [
      "a plain frame inside a long message",
      [header({ a: ref(100) }), encode("between")],
      "a plain frame before reference 1 of 1 arrived",
    ],
    [
      "a part longer than its reference",
      [header({ a: ref(100) }), part(new Uint8Array(101))],
      "a part of 101 bytes, but reference 1 of 1 has 100 left",
    ],
    [
      "a large part longer than its reference",
      [header({ a: ref(100 * 1024) }), part(new Uint8Array(200 * 1024))],
      "a part of 204800 bytes, but reference 1 of 1 has 102400 left",
    ],
    [
      "a part whose prefix is not zero",
      [header({ a: ref(100) }), part(new Uint8Array(100)).fill(1, 7, 8)],
      "a part whose prefix is not zero",
    ],
  ] as const
) {
  Deno.test(`Server fails the connection of a peer that sends ${what}`, async () => {
    await using m = await rawMember();
    for (const body of frames) await m.raw.writeFrame(body);
    const leave = await m.left;
    assert.ok(leave.error instanceof ProtocolError, String(leave.error));
    assert.equal(leave.error.message, `Invalid long message: ${message}: from client "0"`);
  });
}

// ---------------------------------------------------------------------------
// Resume

Deno.test("broadcast() of a long message cut in a part arrives once after the resume", async () => {
  await using server = listen({ clients: 1, maxFrameBytes: MiB });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 5 });
  await using client = await connect({ port: proxy.port });
  await server.ready();
  const cut = proxy.cut({
    kind: "body",
    direction: "down",
    connection: 0,
    minBodyBytes: 512 * 1024,
  });
  const big = ramp(MiB, 3); // 4 MiB: the cut lands in its first part
  const sent = server.broadcast({ round: 1, big });
  assert.equal((await cut)?.kind, "cut-body");
  await sent;
  await server.broadcast("after");
  assert.deepStrictEqual(await client.recv({ timeout: 20_000 }), { round: 1, big });
  assert.equal(await client.recv({ timeout: 20_000 }), "after");
  assert.equal(client.resumes, 1);
});

Deno.test("Client.reply() of a long message cut in a part is gathered once after the resume", async () => {
  await using server = listen({ clients: 1, maxFrameBytes: MiB });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 6 });
  await using client = await connect({ port: proxy.port });
  await server.ready();
  await server.broadcast({ round: 1 });
  await client.recv();
  const cut = proxy.cut({ kind: "body", direction: "up", connection: 0, minBodyBytes: 512 * 1024 });
  const update = ramp(MiB, 9);
  const sent = client.reply({ round: 1, update });
  assert.equal((await cut)?.kind, "cut-body");
  await sent;
  await client.send("after");
  const got = await Array.fromAsync(server.uploads({ count: 2, timeout: 20_000 }), (u) => u.value);
  assert.deepStrictEqual(got, [{ round: 1, update }, "after"]);
});

// ---------------------------------------------------------------------------
// A mixed cohort

const PYTHON_LONG_CLIENT = `
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import fedcomm

with fedcomm.connect("127.0.0.1", int(sys.argv[2]), timeout=10) as client:
    assert client.server_max_message_bytes > 0
    message = client.recv(timeout=30)
    weights = message["weights"]
    assert weights.dtype == np.float32 and weights.shape == (${MiB},), weights.shape
    assert float(weights[-1]) == ${(MiB - 1) % 1000}.0
    client.reply({"round": message["round"], "update": weights * 2}, timeout=30)
    assert client.recv(timeout=30) == "done"
    print("python ok")
`;

Deno.test({
  name: "broadcast() of a long message reaches Deno and Python clients; both replies gather",
  ignore: !pythonReady("msgpack", "numpy"),
  async fn() {
    await using server = listen({ clients: 2, maxFrameBytes: MiB });
    await using deno = await connect({ port: server.port });
    await server.ready({ clients: 1 });
    const child = spawnPython(PYTHON_LONG_CLIENT, [String(server.port)]);
    const output = child.output();
    try {
      await server.ready({ timeout: 15_000 });
      const weights = ramp(MiB); // 4 MiB: a long message at a 1 MiB frame limit
      await server.broadcast({ round: 7, weights });
      const got = await deno.recv() as { round: number; weights: Float32Array };
      await deno.reply({ round: 7, update: got.weights.map((w) => w * 2) });
      const answers = await server.gather({ timeout: 30_000 });
      for (const id of [0, 1]) {
        const { round, update } = answers.get(id) as { round: number; update: Float32Array };
        assert.equal(round, 7);
        assert.deepStrictEqual(update, weights.map((w) => w * 2), `client ${id}'s update`);
      }
      await server.broadcast("done");
    } finally {
      const { code, stdout, stderr } = await output;
      assert.equal(code, 0, `python exited with ${code}:\n${new TextDecoder().decode(stderr)}`);
      assert.equal(new TextDecoder().decode(stdout).trim(), "python ok");
    }
  },
});
