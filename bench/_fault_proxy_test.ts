import assert from "node:assert/strict";
import { encode } from "../codec.ts";
import { type Fault, FaultProxy, type FaultProxyOptions, type LinkShapes } from "./_fault_proxy.ts";

/** A whole frame: 4-byte big-endian length, then the body. */
function frame(body: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(4 + body.byteLength);
  new DataView(bytes.buffer).setUint32(0, body.byteLength);
  bytes.set(body, 4);
  return bytes;
}

/** A handshake frame (`c1 03` + a MessagePack map). */
function handshake(message: Record<string, unknown>): Uint8Array {
  const map = encode(message);
  const body = new Uint8Array(2 + map.byteLength);
  body.set([0xc1, 0x03]);
  body.set(map, 2);
  return frame(body);
}

/** A frame whose body is `length` bytes of a counting pattern. */
function payload(length: number): Uint8Array {
  return frame(new Uint8Array(length).map((_, i) => (i * 7 + 1) & 0xff));
}

const HELLO = handshake({ fedcomm: 3, type: "hello", name: "site-0" });
const WELCOME = handshake({ fedcomm: 3, type: "welcome", id: 0, clients: 1, resumed: false });

function concat(parts: Uint8Array[]): Uint8Array {
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.byteLength;
  }
  return bytes;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) written += await conn.write(bytes.subarray(written));
}

/** Reads until EOF (or a reset), or `limit` bytes. */
async function readAll(conn: Deno.Conn, limit = Infinity): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const buffer = new Uint8Array(64 * 1024);
  try {
    while (total < limit) {
      const n = await conn.read(buffer);
      if (n === null) break;
      parts.push(buffer.slice(0, n));
      total += n;
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
  }
  return concat(parts);
}

/** Reads exactly `n` bytes. */
async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await conn.read(bytes.subarray(got));
    if (r === null) throw new Error(`EOF after ${got} of ${n} bytes`);
    got += r;
  }
  return bytes;
}

/** Where a byte stream of frames ends: between frames, inside a header or inside a body. */
function endPosition(bytes: Uint8Array): { position: string; frames: number } {
  let offset = 0;
  let frames = 0;
  while (true) {
    if (offset === bytes.byteLength) return { position: "boundary", frames };
    if (bytes.byteLength - offset < 4) return { position: "header", frames };
    const length = new DataView(bytes.buffer, bytes.byteOffset + offset).getUint32(0);
    if (bytes.byteLength - offset - 4 < length) return { position: "body", frames };
    offset += 4 + length;
    frames++;
  }
}

/**
 * A fake fedcomm server on loopback behind a proxy: it reads the hello,
 * answers a welcome, and hands its side of the
 * connection to the test; the client side is connected through the proxy.
 */
async function setup(seed: number, options: Partial<FaultProxyOptions> = {}): Promise<
  {
    proxy: FaultProxy;
    client: Deno.TcpConn;
    server: Deno.TcpConn;
    [Symbol.asyncDispose](): Promise<void>;
  }
> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const proxy = new FaultProxy({
    targetPort: listener.addr.port,
    seed,
    randomWindow: 4096,
    ...options,
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  const server = await listener.accept();
  listener.close();
  await writeAll(client, HELLO);
  assert.deepEqual(await readExactly(server, HELLO.byteLength), HELLO);
  await writeAll(server, WELCOME);
  assert.deepEqual(await readExactly(client, WELCOME.byteLength), WELCOME);
  return {
    proxy,
    client,
    server,
    async [Symbol.asyncDispose]() {
      for (const conn of [client, server]) {
        try {
          conn.close();
        } catch {
          // Already closed.
        }
      }
      await proxy.stop();
    },
  };
}

Deno.test("FaultProxy.cut() truncates a frame mid-body and counts a cut-body", async () => {
  await using s = await setup(3);
  const cut = s.proxy.cut({ kind: "body", direction: "up" });
  const sent = payload(100_000);
  const writing = writeAll(s.client, sent).catch(() => {});
  const got = await readAll(s.server);
  const fault = await cut as Fault;
  await writing;
  assert.equal(fault.kind, "cut-body");
  assert.equal(fault.name, "site-0");
  assert.equal(fault.direction, "up");
  assert.equal(fault.offset, HELLO.byteLength + got.byteLength);
  assert.ok(got.byteLength > 4 && got.byteLength < sent.byteLength, `got ${got.byteLength}`);
  assert.deepEqual(got, sent.subarray(0, got.byteLength));
  assert.equal(s.proxy.counts["cut-body"], 1);
  assert.equal(Object.values(s.proxy.counts).reduce((a, b) => a + b), 1);
});

Deno.test("FaultProxy.cut() truncates a frame mid-header and counts a cut-header", async () => {
  await using s = await setup(5);
  const cut = s.proxy.cut({ kind: "header", direction: "down" });
  const sent = concat([payload(10), payload(20)]);
  await writeAll(s.server, sent).catch(() => {});
  const got = await readAll(s.client);
  const fault = await cut as Fault;
  assert.equal(fault.kind, "cut-header");
  assert.equal(fault.direction, "down");
  assert.ok(got.byteLength >= 1 && got.byteLength <= 3, `got ${got.byteLength}`);
  assert.deepEqual(got, sent.subarray(0, got.byteLength));
  assert.equal(fault.offset, WELCOME.byteLength + got.byteLength);
  assert.equal(s.proxy.counts["cut-header"], 1);
});

Deno.test("FaultProxy.cut() cuts between two frames and counts a cut-boundary", async () => {
  await using s = await setup(7);
  const cut = s.proxy.cut({ kind: "boundary", direction: "up" });
  const sent = concat([payload(10), payload(20), payload(30)]);
  await writeAll(s.client, sent).catch(() => {});
  const got = await readAll(s.server);
  const fault = await cut as Fault;
  assert.equal(fault.kind, "cut-boundary");
  assert.deepEqual(got, payload(10), "exactly the first whole frame");
  assert.equal(fault.frame, 2, "after the hello and one frame");
  assert.equal(s.proxy.counts["cut-boundary"], 1);
});

Deno.test("FaultProxy.cut() cuts the next connection's handshake and counts a cut-handshake", async () => {
  for (const [direction, seed] of [["up", 1], ["down", 2], ["up", 11], ["down", 12]] as const) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    await using proxy = new FaultProxy({ targetPort: listener.addr.port, seed });
    const cut = proxy.cut({ kind: "handshake", direction });
    using client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    using server = await listener.accept();
    listener.close();
    await writeAll(client, HELLO).catch(() => {});
    let got: Uint8Array;
    if (direction === "up") {
      got = await readAll(server);
      assert.ok(got.byteLength < HELLO.byteLength, `got ${got.byteLength}`);
      assert.deepEqual(got, HELLO.subarray(0, got.byteLength));
    } else {
      assert.deepEqual(await readExactly(server, HELLO.byteLength), HELLO);
      await writeAll(server, WELCOME).catch(() => {});
      got = await readAll(client);
      assert.ok(got.byteLength < WELCOME.byteLength, `got ${got.byteLength}`);
      assert.deepEqual(got, WELCOME.subarray(0, got.byteLength));
    }
    const fault = await cut as Fault;
    assert.equal(fault.kind, "cut-handshake");
    assert.equal(fault.direction, direction);
    assert.equal(fault.offset, got.byteLength);
    assert.equal(proxy.counts["cut-handshake"], 1);
  }
});

Deno.test("FaultProxy.cut() at a random offset reports where it landed, as the receiver sees it", async () => {
  const positions = new Set<string>();
  for (let seed = 1; seed <= 24; seed++) {
    await using s = await setup(seed);
    const cut = s.proxy.cut({ kind: "random", direction: "up" });
    // Longer than the window (4096 bytes), headers about half of the bytes.
    const sent = concat(Array.from({ length: 1000 }, (_, i) => payload((i * 3) % 7)));
    const writing = writeAll(s.client, sent).catch(() => {});
    const got = await readAll(s.server);
    await writing;
    const fault = await cut as Fault;
    const { position, frames } = endPosition(got);
    positions.add(position);
    assert.equal(fault.kind, `cut-${position}`, `seed ${seed}`);
    assert.equal(fault.offset, HELLO.byteLength + got.byteLength);
    assert.equal(fault.frame, 1 + frames);
    assert.deepEqual(got, sent.subarray(0, got.byteLength));
  }
  assert.deepEqual([...positions].sort(), ["body", "boundary", "header"]);
});

Deno.test("FaultProxy.cut() resolves undefined when there is no connection to cut", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using proxy = new FaultProxy({ targetPort: listener.addr.port });
  listener.close();
  assert.equal(await proxy.cut({ kind: "body" }), undefined);
  assert.equal(await proxy.stall({ ms: 10 }), undefined);
  assert.equal(proxy.faults.length, 0);
});

Deno.test("FaultProxy.stall() stops the bytes of one direction, then forwards them", async () => {
  await using s = await setup(9);
  const stall = s.proxy.stall({ ms: 400, direction: "up" });
  assert.equal(s.proxy.counts["stall-up"], 1);
  const started = performance.now();
  const sent = payload(1000);
  await writeAll(s.client, sent);
  // The other direction still flows during the stall.
  const down = payload(50);
  await writeAll(s.server, down);
  assert.deepEqual(await readExactly(s.client, down.byteLength), down);
  assert.ok(performance.now() - started < 300, "down was not held");
  const got = await readExactly(s.server, sent.byteLength);
  const waited = performance.now() - started;
  assert.deepEqual(got, sent);
  assert.ok(waited >= 350, `up bytes arrived after ${waited.toFixed(0)} ms`);
  const fault = await stall as Fault;
  assert.equal(fault.kind, "stall-up");
  assert.equal(fault.offset, 400);
});

Deno.test("FaultProxy.stall() of both directions holds both", async () => {
  await using s = await setup(10);
  const stall = s.proxy.stall({ ms: 300 });
  const started = performance.now();
  await writeAll(s.client, payload(10));
  await writeAll(s.server, payload(20));
  await readExactly(s.server, 14);
  await readExactly(s.client, 24);
  assert.ok(performance.now() - started >= 250);
  assert.equal((await stall)?.kind, "stall-both");
  assert.equal(s.proxy.counts["stall-both"], 1);
});

Deno.test("FaultProxy.stop() closes every socket and ends stalls and pending cuts", async () => {
  const s = await setup(4);
  const stall = s.proxy.stall({ ms: 60_000, direction: "down" });
  const cut = s.proxy.cut({ kind: "handshake" });
  assert.equal(s.proxy.connections, 1);
  const started = performance.now();
  await s.proxy.stop();
  assert.ok(performance.now() - started < 1000);
  assert.equal(s.proxy.connections, 0);
  assert.equal(await cut, undefined);
  assert.equal((await stall)?.kind, "stall-down");
  assert.deepEqual(await readAll(s.client), new Uint8Array(0), "the client sees EOF");
  assert.deepEqual(await readAll(s.server), new Uint8Array(0), "the server sees EOF");
  await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: s.proxy.port }));
  await s[Symbol.asyncDispose]();
});

/** Round trips of a 1-byte ping from the client and a 1-byte pong from the server, in ms. */
async function pingPong(client: Deno.Conn, server: Deno.Conn, times: number): Promise<number[]> {
  const rtts: number[] = [];
  for (let i = 0; i < times; i++) {
    const started = performance.now();
    await writeAll(client, new Uint8Array([i]));
    assert.deepEqual(await readExactly(server, 1), new Uint8Array([i]));
    await writeAll(server, new Uint8Array([i + 100]));
    assert.deepEqual(await readExactly(client, 1), new Uint8Array([i + 100]));
    rtts.push(performance.now() - started);
  }
  return rtts;
}

Deno.test("FaultProxy() with a 100 ms one-way latency makes a round trip take at least 200 ms", async () => {
  const link = { latencyMs: 100 };
  await using s = await setup(20, { shape: { up: link, down: link } });
  const rtts = await pingPong(s.client, s.server, 3);
  for (const rtt of rtts) assert.ok(rtt >= 200, `round trip of ${rtt.toFixed(1)} ms`);
  // Only one direction delayed: half of it.
  assert.ok(s.proxy.setShape(0, { up: link }));
  for (const rtt of await pingPong(s.client, s.server, 2)) assert.ok(rtt >= 100);
});

Deno.test("FaultProxy() with a 20 Mbit/s limit takes at least 0.9 s for 2.5 MB", async () => {
  const link = { bitsPerSecond: 20e6 };
  await using s = await setup(21, { shape: { up: link, down: link } });
  for (const direction of ["up", "down"] as const) {
    const [from, to] = direction === "up" ? [s.client, s.server] : [s.server, s.client];
    const sent = payload(2_500_000);
    const started = performance.now();
    const writing = writeAll(from, sent);
    const got = await readExactly(to, sent.byteLength);
    const seconds = (performance.now() - started) / 1000;
    await writing;
    // 2.5 MB × 8 / 20 Mbit/s = 1.0 s, less the first full bucket (25 kB, 10 ms).
    assert.ok(seconds >= 0.9, `${direction}: 2.5 MB in ${seconds.toFixed(3)} s`);
    assert.deepEqual(got, sent);
  }
});

Deno.test("FaultProxy() with jitter keeps every byte in order, both ways at once", async () => {
  const link = { latencyMs: 20, jitterMs: 20 };
  await using s = await setup(22, { shape: { up: link, down: link } });
  const chunks = (seed: number) =>
    Array.from({ length: 400 }, (_, i) => payload(1 + ((i * seed) % 300)));
  const up = chunks(7);
  const down = chunks(11);
  const send = async (conn: Deno.Conn, parts: Uint8Array[]) => {
    for (const [i, part] of parts.entries()) {
      await writeAll(conn, part);
      if (i % 40 === 0) await new Promise((resolve) => setTimeout(resolve, 2));
    }
  };
  const [, , gotUp, gotDown] = await Promise.all([
    send(s.client, up),
    send(s.server, down),
    readExactly(s.server, concat(up).byteLength),
    readExactly(s.client, concat(down).byteLength),
  ]);
  assert.deepEqual(gotUp, concat(up));
  assert.deepEqual(gotDown, concat(down));
});

Deno.test("FaultProxy() holds at most queueBytes (plus one read) per direction and pushes back", async () => {
  const queueBytes = 128 * 1024;
  // 8 Mbit/s = 1 MB/s: the proxy reads far faster than it may write.
  await using s = await setup(23, {
    shape: { up: { latencyMs: 50, bitsPerSecond: 8e6, queueBytes } },
  });
  const sent = payload(1_000_000);
  const writing = writeAll(s.client, sent);
  const got = await readExactly(s.server, sent.byteLength);
  await writing;
  assert.deepEqual(got, sent);
  const [live] = s.proxy.live();
  assert.ok(live.peakQueuedUp > queueBytes, `peak ${live.peakQueuedUp}: the bound was reached`);
  assert.ok(live.peakQueuedUp <= queueBytes + 64 * 1024, `peak ${live.peakQueuedUp}`);
  assert.equal(live.queuedUp, 0);
  assert.equal(live.peakQueuedDown, 0, "the down link is not shaped");
});

Deno.test("FaultProxy() shapes a client by the name in its hello", async () => {
  const asked: { connection: number; name: string | undefined }[] = [];
  const shape = (client: { connection: number; name: string | undefined }) => {
    asked.push({ ...client });
    return client.name === "site-0" ? { down: { latencyMs: 150 } } : undefined;
  };
  await using s = await setup(24, { shape });
  assert.deepEqual(asked, [{ connection: 0, name: undefined }, { connection: 0, name: "site-0" }]);
  for (const rtt of await pingPong(s.client, s.server, 2)) assert.ok(rtt >= 150, `${rtt} ms`);
});

Deno.test("FaultProxy.cut() on a shaped link delivers the bytes before the cut, late", async () => {
  await using s = await setup(25, { shape: { down: { latencyMs: 100 } } });
  const cut = s.proxy.cut({ kind: "body", direction: "down" });
  const sent = payload(50_000);
  const started = performance.now();
  await writeAll(s.server, sent).catch(() => {});
  const got = await readAll(s.client);
  assert.ok(performance.now() - started >= 100);
  const fault = await cut as Fault;
  assert.equal(fault.kind, "cut-body");
  assert.equal(fault.offset, WELCOME.byteLength + got.byteLength);
  assert.ok(got.byteLength > 4 && got.byteLength < sent.byteLength, `got ${got.byteLength}`);
  assert.deepEqual(got, sent.subarray(0, got.byteLength));
});

Deno.test("FaultProxy() rejects malformed shapes with TypeError and RangeError", async () => {
  const bad: [unknown, ErrorConstructor][] = [
    [{ up: { latencyMs: -5 } }, RangeError],
    [{ down: { bitsPerSecond: 0 } }, RangeError],
    [{ up: { delay: 5 } }, TypeError],
    [{ sideways: {} }, TypeError],
    [42, TypeError],
  ];
  for (const [shape, type] of bad) {
    assert.throws(() => new FaultProxy({ targetPort: 1, shape: shape as LinkShapes }), type);
  }
  await using s = await setup(26);
  assert.throws(() => s.proxy.setShape(0, { up: { jitterMs: -1 } }), RangeError);
  assert.equal(s.proxy.setShape(99, {}), false);
});

Deno.test("FaultProxy.stop() rejects with the error of a shape function that threw", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const proxy = new FaultProxy({
    targetPort: listener.addr.port,
    shape: () => ({ up: { latencyMs: -1 } }),
  });
  using client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
  assert.deepEqual(await readAll(client), new Uint8Array(0), "the connection is closed");
  listener.close();
  await assert.rejects(proxy.stop(), RangeError);
});
