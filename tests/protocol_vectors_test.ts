/**
 * The protocol test vectors of `testdata/vectors/protocol_v3.json` (format:
 * `testdata/vectors/README.md`) against the Deno library.
 *
 * For every case, two tests:
 *
 * - "encodes to the vector bytes": what the library really writes on the
 *   wire is exactly the vector's frame. A real server (`listen()`) and a real
 *   client (`connect()`) talk over TCP on localhost to a peer played by this
 *   test, which sends vectors and records every byte the library writes: the
 *   hello, the welcome, the rejects, the challenge and the auth, the
 *   broadcasts and replies, the acks a session sends within 10 ms, the pong
 *   of a ping, the ping of an idle client, the close frames, and the hello and
 *   welcome of a resume after a cut connection. The random bytes of the wire
 *   (nonces, tokens) are the vector's fixed bytes, by a stub of
 *   `crypto.getRandomValues` while the handshake runs. The frames the library
 *   never sends (a version 1 or 2 hello, a heartbeat) come from the public
 *   framing streams and the control-frame builder.
 * - "decodes to the vector value": the frame cut by the public
 *   `FrameDecoderStream`, its body read by `codec.ts`'s `decode` and the
 *   control-frame readers of `_wire/control.ts`, is the vector's value. (The
 *   scenarios also check what the library made of the vectors they sent it:
 *   the welcome a client got, the values received, the replies gathered, the
 *   acks taken, the pongs timed, the hellos and close frames the server saw.)
 *
 * And for every proof of the file, the HMAC-SHA256 of PROTOCOL.md §7.1,
 * computed by the library as a server and as a client.
 *
 * @module
 */

import assert from "node:assert/strict";
import { decode, encode } from "../codec.ts";
import { FrameDecoderStream, FrameEncoderStream, MessagePackEncoderStream } from "../framing.ts";
import {
  connect,
  DEFAULT_MAX_FRAME_BYTES,
  listen,
  NdArray,
  PROTOCOL_VERSION,
  type TypedArray,
} from "../mod.ts";
import {
  ACK,
  ACK_BODY_BYTES,
  ackCount,
  CLOSE,
  CONTROL,
  controlFrame,
  HANDSHAKE,
  PING,
  PING_BODY_BYTES,
  PONG,
  REPLY,
  REPLY_PREFIX_BYTES,
  replyTo,
} from "../_wire/control.ts";

// ---------------------------------------------------------------------------
// The vectors and their value form (testdata/vectors/README.md)

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

interface Decoded {
  kind: "heartbeat" | "plain" | "ping" | "pong" | "handshake" | "ack" | "reply" | "close";
  value?: Json;
  payload?: string;
  count?: number;
  request?: number;
}

interface Case {
  name: string;
  description: string;
  direction: "client-to-server" | "server-to-client" | "both";
  hex: string;
  decoded: Decoded;
}

interface Proof {
  name: string;
  description: string;
  secret: string;
  clientNonce: string;
  serverNonce: string;
  clientName: string;
  serverProof: string;
  clientProof: string;
}

const FILE = new URL("../testdata/vectors/protocol_v3.json", import.meta.url);
const vectors: { protocol: number; proofs: Proof[]; cases: Case[] } = JSON.parse(
  Deno.readTextFileSync(FILE),
);
const cases = new Map(vectors.cases.map((c) => [c.name, c]));

function fromHex(hex: string): Uint8Array {
  assert.match(hex, /^(?:[0-9a-f]{2})*$/, `not lowercase hex: "${hex}"`);
  return Uint8Array.from(hex.match(/../g) ?? [], (byte) => parseInt(byte, 16));
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function caseOf(name: string): Case {
  const c = cases.get(name);
  assert.ok(c !== undefined, `no vector "${name}"`);
  return c;
}

/** The bytes of a case's frame, header included. */
function frameOf(name: string): Uint8Array {
  return fromHex(caseOf(name).hex);
}

/** The JSON form of the value of a case (a handshake, plain or reply frame). */
function jsonOf(name: string): Json {
  const value = caseOf(name).decoded.value;
  assert.ok(value !== undefined, `"${name}" has no value`);
  return value;
}

/** The value of a case, as the library takes it to send. */
function valueOf(name: string): unknown {
  return fromJson(jsonOf(name));
}

/** The typed arrays of the `$ndarray` form, by numpy dtype string. */
const ARRAYS: Record<string, { new (buffer: ArrayBuffer): TypedArray }> = {
  "|i1": Int8Array,
  "<i2": Int16Array,
  "<u2": Uint16Array,
  "<i4": Int32Array,
  "<u4": Uint32Array,
  "<f4": Float32Array,
  "<f8": Float64Array,
};

function isTagged(v: { [key: string]: Json }, tag: string): boolean {
  const keys = Object.keys(v);
  return keys.length === 1 && keys[0] === tag;
}

/** The JSON form of a vector value → the value the library encodes and decodes. */
function fromJson(v: Json): unknown {
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    assert.ok(Number.isSafeInteger(v), `a plain JSON number is an integer: ${v}`);
    return v;
  }
  if (Array.isArray(v)) return v.map(fromJson);
  if (isTagged(v, "$bin")) return fromHex(v.$bin as string);
  if (isTagged(v, "$ndarray")) {
    const { type, shape, data, values } = v.$ndarray as {
      type: string;
      shape: number[];
      data: string;
      values: number[];
    };
    const Typed = ARRAYS[type];
    assert.ok(Typed !== undefined, `unsupported $ndarray type "${type}"`);
    const array = new Typed(fromHex(data).slice().buffer as ArrayBuffer);
    assert.deepStrictEqual([...array as Iterable<number>], values, "values are the data's");
    return shape.length === 1 && shape[0] === array.length ? array : new NdArray(array, shape);
  }
  return Object.fromEntries(Object.entries(v).map(([key, item]) => [key, fromJson(item)]));
}

/** A value from the library → the JSON form (keys in their order), for comparison. */
function toJson(value: unknown): Json {
  if (value === null || typeof value === "boolean" || typeof value === "string") return value;
  if (typeof value === "number") {
    assert.ok(Number.isSafeInteger(value), `not an integer: ${value}`);
    return value;
  }
  if (Array.isArray(value)) return value.map(toJson);
  if (value instanceof Uint8Array) return { $bin: toHex(value) };
  const array = value instanceof NdArray ? value.data : value;
  if (ArrayBuffer.isView(array) && !(array instanceof DataView)) {
    const entry = Object.entries(ARRAYS).find(([, Typed]) => array.constructor === Typed);
    assert.ok(entry !== undefined, `unsupported typed array ${array.constructor.name}`);
    const typed = array as TypedArray;
    return {
      $ndarray: {
        type: entry[0],
        shape: value instanceof NdArray ? [...value.shape] : [typed.length],
        data: toHex(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength)),
        values: [...typed as Iterable<number>],
      },
    };
  }
  assert.equal(typeof value, "object", `no JSON form for ${String(value)}`);
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([key, item]) => [key, toJson(item)]),
  );
}

/** Asserts that a value from the library is the vector value, key order included. */
function assertValue(actual: unknown, expected: Json): void {
  const json = toJson(actual);
  assert.deepStrictEqual(json, expected);
  assert.equal(JSON.stringify(json), JSON.stringify(expected), "keys in the same order");
}

// ---------------------------------------------------------------------------
// The peer this test plays, over TCP

const HOST = "127.0.0.1";
const WAIT_MS = 5_000;

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

/** `promise`, or an error after 5 s (the caller's `finally` then closes the socket). */
async function soon<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Still waiting for ${what}`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Waits, 2 ms at a time, until `condition` holds. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < WAIT_MS / 2; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  throw new Error(`Still waiting for ${what}`);
}

/** One TCP connection of the peer: writes vectors, reads the library's frames byte for byte. */
class Raw {
  readonly #conn: Deno.Conn;
  #pending: Uint8Array = new Uint8Array(0);
  #closed = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  static async connect(port: number): Promise<Raw> {
    return new Raw(await Deno.connect({ hostname: HOST, port }));
  }

  /** Writes frames: case names (their vector bytes) or whole frames. */
  async send(...frames: (string | Uint8Array)[]): Promise<void> {
    const bytes = concat(frames.map((f) => typeof f === "string" ? frameOf(f) : f));
    for (let at = 0; at < bytes.byteLength;) at += await this.#conn.write(bytes.subarray(at));
  }

  /** Reads more bytes; `false` at the end of the stream. */
  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await soon(this.#conn.read(chunk), "bytes from the library");
    if (n === null) return false;
    this.#pending = concat([this.#pending, chunk.subarray(0, n)]);
    return true;
  }

  /** The next whole frame the library wrote, header included. */
  async frame(): Promise<Uint8Array> {
    while (true) {
      const pending = this.#pending;
      if (pending.byteLength >= 4) {
        const end = 4 + new DataView(pending.buffer, pending.byteOffset).getUint32(0);
        if (pending.byteLength >= end) {
          this.#pending = pending.slice(end);
          return pending.slice(0, end);
        }
      }
      if (!await this.#fill()) {
        throw new Error(`The library closed the connection (${pending.byteLength} bytes left)`);
      }
    }
  }

  /** Asserts that the library closed the connection with nothing more written. */
  async eof(): Promise<void> {
    while (await this.#fill()) {
      // Reads until the end.
    }
    assert.equal(this.#pending.byteLength, 0, "nothing after the last frame");
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }
}

/** A listening socket for the server side of the peer, which `connect()` dials. */
class RawServer {
  readonly #listener = Deno.listen({ hostname: HOST, port: 0 });
  readonly #accepted: Raw[] = [];

  get port(): number {
    return this.#listener.addr.port;
  }

  async accept(): Promise<Raw> {
    const raw = new Raw(await soon(this.#listener.accept(), "a connection"));
    this.#accepted.push(raw);
    return raw;
  }

  close(): void {
    for (const raw of this.#accepted) raw.close();
    this.#listener.close();
  }
}

/** Runs `run` with `crypto.getRandomValues` giving these bytes, in order. */
async function withRandom<T>(fills: Uint8Array[], run: () => Promise<T>): Promise<T> {
  const queue = [...fills];
  Object.defineProperty(crypto, "getRandomValues", {
    configurable: true,
    writable: true,
    value: <V extends ArrayBufferView | null>(array: V): V => {
      const next = queue.shift();
      assert.ok(next !== undefined && array !== null, "an unexpected call for random bytes");
      assert.equal(array.byteLength, next.byteLength, "random bytes of the vector's size");
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(next);
      return array;
    },
  });
  try {
    const result = await run();
    assert.equal(queue.length, 0, "every fixed random value was used");
    return result;
  } finally {
    Reflect.deleteProperty(crypto, "getRandomValues");
  }
}

/** A handshake message frame (`c1 03` + the map), for inputs that are not vectors. */
function handshakeMessage(message: Record<string, unknown>): Uint8Array {
  return controlFrame(HANDSHAKE, encode(message));
}

// The fixed random bytes of the vectors (testdata/vectors/README.md).
const TOKEN = fromHex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
const RESUME_TOKEN = fromHex("b0b1b2b3b4b5b6b7b8b9babbbcbdbebf");
const AUTH_TOKEN = fromHex("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf");
/** The token of a second client, which no vector shows. */
const OTHER_TOKEN = fromHex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf");
const SITE_A = vectors.proofs.find((p) => p.name === "site-a")!;

// ---------------------------------------------------------------------------
// Scenarios: each runs the library against the peer and returns the frames
// the library wrote, by case name

type Captured = Record<string, Uint8Array>;

/** The session of the former hex example, the library as the server: `listen({clients: 2})`. */
async function serverSession(): Promise<Captured> {
  const out: Captured = {};
  const server = listen({ clients: 2, hostname: HOST, port: 0, heartbeatMs: 0 });
  const leaves: number[] = [];
  server.addEventListener("leave", (e) => leaves.push(e.clientId));
  const raws: Raw[] = [];
  try {
    const [a, b] = await withRandom([TOKEN, OTHER_TOKEN], async () => {
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
    await a.send("ack-2", "reply-done");
    await b.send("ack-2");
    out["ack-2"] = await a.frame();
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
    return out;
  } finally {
    for (const raw of raws) raw.close();
    await server.close();
  }
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

/** The session of the former hex example, the library as the client. */
async function clientSession(): Promise<Captured> {
  const out: Captured = {};
  const peer = new RawServer();
  try {
    const connecting = connect({ hostname: HOST, port: peer.port, heartbeatMs: 0 });
    const s = await peer.accept();
    out.hello = await s.frame();
    await s.send("welcome");
    const client = await connecting;
    assert.deepStrictEqual([client.id, client.clients, client.authenticated], [0, 2, false]);
    try {
      // A heartbeat is skipped; the broadcast is message 1, acknowledged within 10 ms.
      await s.send("heartbeat", "broadcast-tensor");
      assertValue(await soon(client.recv(), "the broadcast"), jsonOf("broadcast-tensor"));
      out["ack-1"] = await s.frame();
      await client.reply(valueOf("reply-tensor"), { to: caseOf("reply-tensor").decoded.request });
      out["reply-tensor"] = await s.frame();
      await s.send("ack-1");
      await s.send("ping");
      out.pong = await s.frame();
      await s.send("broadcast-round-2");
      assertValue(await soon(client.recv(), "message 2"), jsonOf("broadcast-round-2"));
      out["ack-2"] = await s.frame();
      await client.reply(valueOf("reply-done"), { to: caseOf("reply-done").decoded.request });
      out["reply-done"] = await s.frame();
      await s.send("ack-2");
      await soon(client.flush(), "the client to read the ack");
      const closing = client.close();
      out.close = await s.frame();
      await s.eof();
      await closing;
    } finally {
      await client.close();
    }
    return out;
  } finally {
    peer.close();
  }
}

/** The hello with a name and props. */
async function clientNameProps(): Promise<Captured> {
  const peer = new RawServer();
  try {
    const props = { gpus: 2, region: "eu" };
    const connecting = connect({ hostname: HOST, port: peer.port, name: "site-a", props });
    const s = await peer.accept();
    const hello = await s.frame();
    await s.send("welcome");
    const client = await connecting;
    await client.close();
    assert.deepStrictEqual(await s.frame(), frameOf("close"));
    return { "hello-name-props": hello };
  } finally {
    peer.close();
  }
}

/** An idle client pings (its first ping: its count 1), and times the pong. */
async function clientPing(): Promise<Captured> {
  const peer = new RawServer();
  try {
    const connecting = connect({ hostname: HOST, port: peer.port, heartbeatMs: 20 });
    const s = await peer.accept();
    await s.frame();
    await s.send("welcome");
    const client = await connecting;
    try {
      const ping = await s.frame();
      await s.send("pong");
      await until(() => client.rttMs !== undefined, "the pong");
      return { ping };
    } finally {
      await client.close();
    }
  } finally {
    peer.close();
  }
}

/** The client's side of the authenticated handshake (the `site-a` proof). */
async function clientAuth(): Promise<Captured> {
  const out: Captured = {};
  const peer = new RawServer();
  try {
    const client = await withRandom([fromHex(SITE_A.clientNonce)], async () => {
      const connecting = connect({
        hostname: HOST,
        port: peer.port,
        name: SITE_A.clientName,
        secret: SITE_A.secret,
      });
      const s = await peer.accept();
      out["hello-auth"] = await s.frame();
      await s.send("challenge");
      out.auth = await s.frame();
      await s.send("welcome-auth");
      return await connecting;
    });
    assert.equal(client.authenticated, true);
    await client.close();
    return out;
  } finally {
    peer.close();
  }
}

/** The client cut after its reply resumes (the resume of the former hex example). */
async function clientResume(): Promise<Captured> {
  const peer = new RawServer();
  try {
    const connecting = connect({ hostname: HOST, port: peer.port, heartbeatMs: 0 });
    const first = await peer.accept();
    await first.frame();
    await first.send(handshakeMessage({
      fedcomm: 3,
      type: "welcome",
      id: 0,
      clients: 1,
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
      token: RESUME_TOKEN,
      grace: 300_000,
      received: 0,
      resumed: false,
    }));
    const client = await connecting;
    const events: string[] = [];
    client.addEventListener("disconnect", () => events.push("disconnect"));
    client.addEventListener("resume", () => events.push("resume"));
    try {
      await first.send("broadcast-round-2");
      await soon(client.recv(), "message 1");
      await client.reply(valueOf("reply-done"), { to: 1 });
      // The pending ack, in front of the reply or alone before it.
      assert.deepStrictEqual(
        [await first.frame(), await first.frame()],
        [frameOf("ack-1"), frameOf("reply-done")],
      );
      first.close(); // the drop
      const again = await peer.accept();
      const hello = await again.frame();
      await again.send("welcome-resumed", "broadcast-round-2");
      assertValue(await soon(client.recv(), "message 2"), jsonOf("broadcast-round-2"));
      assert.deepStrictEqual(await again.frame(), frameOf("ack-2"));
      assert.deepStrictEqual(events, ["disconnect", "resume"]);
      const closing = client.close();
      assert.deepStrictEqual(await again.frame(), frameOf("close"));
      await closing;
      return { "hello-resume": hello };
    } finally {
      await client.close();
    }
  } finally {
    peer.close();
  }
}

/** The frames the library never sends. */
async function neverSent(): Promise<Captured> {
  const collect = async (stream: ReadableStream<Uint8Array>) =>
    concat(await Array.fromAsync(stream));
  return {
    // A version 1 hello: a plain frame, through the public framing streams.
    "hello-v1": await collect(
      ReadableStream.from([valueOf("hello-v1")])
        .pipeThrough(new MessagePackEncoderStream())
        .pipeThrough(new FrameEncoderStream()),
    ),
    // A version 2 hello: a handshake control frame with `fedcomm` 2.
    "hello-v2": controlFrame(HANDSHAKE, encode(valueOf("hello-v2"))),
    // The library pings instead of sending heartbeats: an empty body, framed.
    heartbeat: await collect(
      ReadableStream.from([new Uint8Array(0)]).pipeThrough(new FrameEncoderStream()),
    ),
  };
}

const SCENARIOS: (() => Promise<Captured>)[] = [
  serverSession,
  versionRejects,
  noResume,
  serverAuth,
  serverResume,
  clientSession,
  clientNameProps,
  clientPing,
  clientAuth,
  clientResume,
  neverSent,
];

/** Which scenario writes each case. */
const SCENARIO_OF: Record<string, () => Promise<Captured>> = {};
for (
  const [names, scenario] of [
    [["welcome", "reject-full", "broadcast-tensor", "broadcast-round-2"], serverSession],
    [["reject-version-plain", "reject-version-v2"], versionRejects],
    [["welcome-no-resume"], noResume],
    [["challenge", "welcome-auth"], serverAuth],
    [["welcome-resumed"], serverResume],
    [["hello", "ack-1", "ack-2", "reply-tensor", "reply-done", "pong", "close"], clientSession],
    [["hello-name-props"], clientNameProps],
    [["ping"], clientPing],
    [["hello-auth", "auth"], clientAuth],
    [["hello-resume"], clientResume],
    [["hello-v1", "hello-v2", "heartbeat"], neverSent],
  ] as const
) {
  for (const name of names) SCENARIO_OF[name] = scenario;
}

/** Runs a scenario once; the tests of its cases share the run. */
const runs = new Map<() => Promise<Captured>, Promise<Captured>>();
function run(scenario: () => Promise<Captured>): Promise<Captured> {
  if (!runs.has(scenario)) runs.set(scenario, scenario());
  return runs.get(scenario)!;
}

/** The frames a scenario wrote for a case that also another scenario writes. */
const ALSO_WRITTEN_BY: Record<string, () => Promise<Captured>> = {
  "ack-1": serverSession, // the server's ack of a reply (the client's is in clientSession)
  "ack-2": serverSession,
  pong: serverSession,
  close: serverSession, // the server's close() (the client's is in clientSession)
};

// ---------------------------------------------------------------------------
// Decoding

/** Cuts the frame with the public frame decoder and reads its body. */
async function decodeFrame(frame: Uint8Array): Promise<Decoded> {
  const bodies = await Array.fromAsync(
    ReadableStream.from([frame]).pipeThrough(new FrameDecoderStream()),
  );
  assert.equal(bodies.length, 1, "one frame");
  const body = bodies[0];
  if (body.byteLength === 0) return { kind: "heartbeat" };
  if (body[0] !== CONTROL) return { kind: "plain", value: toJson(decode(body)) };
  const kind = body[1];
  switch (kind) {
    case PING:
    case PONG:
      assert.equal(body.byteLength, PING_BODY_BYTES);
      return { kind: kind === PING ? "ping" : "pong", payload: toHex(body.subarray(2)) };
    case HANDSHAKE:
      return { kind: "handshake", value: toJson(decode(body.subarray(2))) };
    case ACK:
      assert.equal(body.byteLength, ACK_BODY_BYTES);
      return { kind: "ack", count: ackCount(body) };
    case REPLY:
      assert.ok(body.byteLength > REPLY_PREFIX_BYTES);
      return {
        kind: "reply",
        request: replyTo(body),
        value: toJson(decode(body.subarray(REPLY_PREFIX_BYTES))),
      };
    case CLOSE:
      assert.equal(body.byteLength, 2);
      return { kind: "close" };
  }
  throw new Error(`unknown control frame kind ${kind}`);
}

// ---------------------------------------------------------------------------
// The tests

Deno.test("protocol vectors: the file is protocol version 3, with unique case names", () => {
  assert.equal(vectors.protocol, PROTOCOL_VERSION);
  assert.equal(cases.size, vectors.cases.length);
  for (const c of vectors.cases) {
    assert.ok(["client-to-server", "server-to-client", "both"].includes(c.direction), c.name);
    assert.ok(c.description.length > 0, c.name);
    const frame = fromHex(c.hex);
    assert.equal(new DataView(frame.buffer).getUint32(0), frame.byteLength - 4, c.name);
  }
});

Deno.test("protocol vectors: every case has an encoder", () => {
  assert.deepStrictEqual(Object.keys(SCENARIO_OF).sort(), [...cases.keys()].sort());
  assert.deepStrictEqual(new Set(Object.values(SCENARIO_OF)), new Set(SCENARIOS));
});

for (const c of vectors.cases) {
  Deno.test(`protocol vectors: ${c.name} encodes to the vector bytes`, async () => {
    for (const scenario of [SCENARIO_OF[c.name], ALSO_WRITTEN_BY[c.name]]) {
      if (scenario === undefined) continue;
      const captured = await run(scenario);
      assert.ok(c.name in captured, `${scenario.name} did not write "${c.name}"`);
      assert.equal(toHex(captured[c.name]), c.hex, `written by ${scenario.name}`);
    }
  });

  Deno.test(`protocol vectors: ${c.name} decodes to the vector value`, async () => {
    const decoded = await decodeFrame(fromHex(c.hex));
    assert.deepStrictEqual(decoded, c.decoded);
    assert.equal(JSON.stringify(decoded), JSON.stringify(c.decoded), "keys in the same order");
  });
}

for (const p of vectors.proofs) {
  Deno.test(`protocol vectors: proof ${p.name} is what the server and the client compute`, async () => {
    const nc = fromHex(p.clientNonce);
    const ns = fromHex(p.serverNonce);
    const name = p.clientName === "" ? {} : { name: p.clientName };
    // The server's proof, and its check of the client's.
    const server = listen({ clients: 1, hostname: HOST, port: 0, auth: { secret: p.secret } });
    const raw = await Raw.connect(server.port);
    try {
      await withRandom([ns, AUTH_TOKEN], async () => {
        await raw.send(handshakeMessage({ fedcomm: 3, type: "hello", ...name, nonce: nc }));
        const challenge = decode((await raw.frame()).subarray(6)) as Record<string, unknown>;
        assert.deepStrictEqual(challenge.nonce, ns);
        assert.equal(toHex(challenge.proof as Uint8Array), p.serverProof);
        const proof = fromHex(p.clientProof);
        await raw.send(handshakeMessage({ fedcomm: 3, type: "auth", proof }));
        const welcome = decode((await raw.frame()).subarray(6)) as Record<string, unknown>;
        assert.equal(welcome.type, "welcome");
      });
    } finally {
      raw.close();
      await server.close();
    }
    // The client's check of the server's proof, and its own.
    const peer = new RawServer();
    try {
      const client = await withRandom([nc], async () => {
        const connecting = connect({ hostname: HOST, port: peer.port, ...name, secret: p.secret });
        const s = await peer.accept();
        const hello = decode((await s.frame()).subarray(6)) as Record<string, unknown>;
        assert.deepStrictEqual(hello.nonce, nc);
        const proof = fromHex(p.serverProof);
        await s.send(handshakeMessage({ fedcomm: 3, type: "challenge", nonce: ns, proof }));
        const auth = decode((await s.frame()).subarray(6)) as Record<string, unknown>;
        assert.equal(toHex(auth.proof as Uint8Array), p.clientProof);
        await s.send("welcome-no-resume");
        return await connecting;
      });
      assert.equal(client.authenticated, true);
      await client.close();
    } finally {
      peer.close();
    }
  });
}

Deno.test("protocol vectors: the authenticated cases carry the site-a proofs", () => {
  const hello = jsonOf("hello-auth") as Record<string, Json>;
  const challenge = jsonOf("challenge") as Record<string, Json>;
  const auth = jsonOf("auth") as Record<string, Json>;
  assert.equal(hello.name, SITE_A.clientName);
  assert.deepStrictEqual(hello.nonce, { $bin: SITE_A.clientNonce });
  assert.deepStrictEqual(challenge.nonce, { $bin: SITE_A.serverNonce });
  assert.deepStrictEqual(challenge.proof, { $bin: SITE_A.serverProof });
  assert.deepStrictEqual(auth.proof, { $bin: SITE_A.clientProof });
  const welcome = jsonOf("welcome") as Record<string, Json>;
  assert.equal(welcome.maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
});
