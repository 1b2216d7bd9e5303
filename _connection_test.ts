import assert from "node:assert/strict";
import { ByteBudget } from "./_budget.ts";
import { Connection, type ConnectionOptions } from "./_connection.ts";
import { ackFrame } from "./_control.ts";
import { NO_DEADLINE } from "./_wait.ts";
import { decode, encode } from "./codec.ts";
import { FrameTooLargeError, PeerDisconnectedError, ProtocolError } from "./errors.ts";
import { concat } from "./test_util.ts";

// ---------------------------------------------------------------------------
// Helpers

const KiB = 1024;
const MiB = 1024 * 1024;

/**
 * A `Deno.Conn` without a socket: `read` hands out the chunks fed to it, one
 * chunk (or what fits of it) per call, and waits when there are none; `end()`
 * is the peer closing its side. Writes are recorded and can be paused.
 */
class FakeConn {
  readonly writes: Uint8Array[] = [];
  readonly remoteAddr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 4321 };
  readonly localAddr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1234 };
  /** Bytes handed to the reader so far. */
  bytesRead = 0;
  closed = false;
  noDelay: boolean | undefined;
  #chunks: Uint8Array[] = [];
  #eof = false;
  #pendingRead:
    | { p: Uint8Array; resolve: (n: number | null) => void; reject: (e: Error) => void }
    | undefined;
  #writesPaused = false;
  #waitingWrites: (() => void)[] = [];

  /** Queues bytes for the reader, one chunk per read at most. */
  feed(...chunks: Uint8Array[]): void {
    this.#chunks.push(...chunks.map((c) => c.slice()));
    this.#serve();
  }

  /** The peer closes its side: reads return `null` once the fed bytes are read. */
  end(): void {
    this.#eof = true;
    this.#serve();
  }

  /** Bytes fed but not read yet. */
  get unread(): number {
    return this.#chunks.reduce((n, c) => n + c.byteLength, 0);
  }

  read(p: Uint8Array): Promise<number | null> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("Bad resource ID"));
    assert.equal(this.#pendingRead, undefined, "one read at a time");
    const { promise, resolve, reject } = Promise.withResolvers<number | null>();
    this.#pendingRead = { p, resolve, reject };
    this.#serve();
    return promise;
  }

  #serve(): void {
    const pending = this.#pendingRead;
    if (pending === undefined) return;
    const chunk = this.#chunks[0];
    if (chunk !== undefined) {
      const n = Math.min(chunk.byteLength, pending.p.byteLength);
      pending.p.set(chunk.subarray(0, n));
      if (n === chunk.byteLength) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(n);
      this.bytesRead += n;
      this.#pendingRead = undefined;
      pending.resolve(n);
    } else if (this.#eof) {
      this.#pendingRead = undefined;
      pending.resolve(null);
    }
  }

  async write(p: Uint8Array): Promise<number> {
    if (this.closed) throw new Deno.errors.BadResource("Bad resource ID");
    if (this.#writesPaused) await new Promise<void>((resolve) => this.#waitingWrites.push(resolve));
    if (this.closed) throw new Deno.errors.BadResource("Bad resource ID");
    this.writes.push(p.slice());
    return p.byteLength;
  }

  /** Makes writes wait until {@linkcode FakeConn.resumeWrites}. */
  pauseWrites(): void {
    this.#writesPaused = true;
  }

  resumeWrites(): void {
    this.#writesPaused = false;
    for (const wake of this.#waitingWrites.splice(0)) wake();
  }

  /** Every byte written, in order. */
  get written(): Uint8Array {
    return concat(this.writes);
  }

  close(): void {
    if (this.closed) throw new Deno.errors.BadResource("Bad resource ID");
    this.closed = true;
    const pending = this.#pendingRead;
    this.#pendingRead = undefined;
    pending?.reject(new Deno.errors.BadResource("Bad resource ID"));
  }

  setNoDelay(noDelay = true): void {
    this.noDelay = noDelay;
  }

  setKeepAlive(): void {}
  ref(): void {}
  unref(): void {}
}

/** A connection over a fake socket, without heartbeat or liveness timers. */
function connect(options?: ConnectionOptions): { fake: FakeConn; connection: Connection } {
  const fake = new FakeConn();
  const connection = new Connection(fake as unknown as Deno.Conn, {
    heartbeatMs: 0,
    idleTimeout: 0,
    ...options,
  });
  return { fake, connection };
}

/** One frame: the 4-byte big-endian length, then the body. */
function frame(body: Uint8Array | number[]): Uint8Array {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  const out = new Uint8Array(4 + bytes.byteLength);
  new DataView(out.buffer).setUint32(0, bytes.byteLength);
  out.set(bytes, 4);
  return out;
}

/** The frame of one MessagePack value. */
function valueFrame(value: unknown): Uint8Array {
  return frame(encode(value));
}

/** A handshake control frame (`c1 03` and a map, PROTOCOL.md §3.2). */
function handshakeControlFrame(message: Record<string, unknown>): Uint8Array {
  return frame([0xc1, 0x03, ...encode(message)]);
}

/** Bytes 0, 1, 2, … (mod 251) so that misplaced bytes show. */
function pattern(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length);
  const period = Math.min(251, length);
  for (let i = 0; i < period; i++) out[i] = (i + seed) % 251;
  // The pattern repeats every 251 bytes: copy what is there, doubling.
  for (let filled = period; filled < length; filled *= 2) {
    out.copyWithin(filled, 0, Math.min(filled, length - filled));
  }
  return out;
}

/** A frame whose body is exactly `bodyBytes` long: a MessagePack bin of the right size. */
function binFrame(bodyBytes: number, seed = 0): { frame: Uint8Array; value: Uint8Array } {
  const head = bodyBytes - 2 < 256 ? 2 : bodyBytes - 3 < 65_536 ? 3 : 5;
  const value = pattern(bodyBytes - head, seed);
  const body = encode(value);
  assert.equal(body.byteLength, bodyBytes);
  return { frame: frame(body), value };
}

/** Cuts `bytes` into chunks of `size`. */
function split(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks = [];
  for (let i = 0; i < bytes.byteLength; i += size) chunks.push(bytes.subarray(i, i + size));
  return chunks;
}

/** Lets every pending promise callback run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Waits, a turn of the event loop at a time, until `condition` holds. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (condition()) return;
    await tick();
  }
  throw new Error(`Still waiting for ${what}`);
}

/** Waits for and takes the next message, as a receive does. */
function next(connection: Connection): Promise<unknown> {
  return connection.inbox.next(NO_DEADLINE);
}

/** Takes every waiting value. */
function takeAll(connection: Connection): unknown[] {
  const values = [];
  for (let a = connection.inbox.take(); a !== undefined; a = connection.inbox.take()) {
    values.push(a.value);
  }
  return values;
}

// ---------------------------------------------------------------------------
// Reading

const VALUES: unknown[] = [
  1,
  "two",
  { three: 3, list: [1, 2, 3] },
  [4, [5, 6]],
  pattern(7, 1),
  null,
  1.5,
  true,
  "x".repeat(5000), // a body over 4 KiB, copied to its own buffer
  -123456789,
  pattern(3000, 2),
];

Deno.test("Connection() reads values into the inbox decoded and in order across any chunking", async () => {
  const stream = concat(VALUES.map(valueFrame));
  for (const size of [1, 2, 3, 5, 7, 13, 1000, 4096, 4097, stream.byteLength]) {
    const { fake, connection } = connect();
    fake.feed(...split(stream, size));
    fake.end();
    await until(() => connection.ended !== undefined, "the end");
    assert.deepStrictEqual(takeAll(connection), VALUES, `chunks of ${size}`);
    assert.equal(connection.bytesReceived, stream.byteLength);
    assert.equal(connection.messagesReceived, VALUES.length);
    assert.ok(connection.ended instanceof PeerDisconnectedError);
    await connection.close();
  }
});

Deno.test("Connection() reads values fed while it waits", async () => {
  const { fake, connection } = connect();
  for (const value of VALUES) {
    const bytes = valueFrame(value);
    const half = bytes.byteLength >> 1;
    fake.feed(bytes.subarray(0, half));
    await tick();
    assert.equal(connection.inbox.size, 0, "half a frame is not a message");
    fake.feed(bytes.subarray(half));
    assert.deepStrictEqual(await next(connection), value);
  }
  await connection.close();
});

Deno.test("Connection() reads frames larger than the read buffer across any chunking", async () => {
  const values = [pattern(100 * KiB, 1), "small", pattern(64 * KiB, 2), pattern(300 * KiB, 3)];
  const stream = concat(values.map(valueFrame));
  for (const size of [999, 4096, 65_536, 70_000, stream.byteLength]) {
    const { fake, connection } = connect();
    fake.feed(...split(stream, size));
    fake.end();
    await until(() => connection.ended !== undefined, "the end");
    assert.deepStrictEqual(takeAll(connection), values, `chunks of ${size}`);
    assert.equal(connection.bytesReceived, stream.byteLength);
    await connection.close();
  }
});

Deno.test("Connection() does not deliver a heartbeat (zero-length frame) as a message", async () => {
  const { fake, connection } = connect();
  const heartbeat = frame([]);
  fake.feed(heartbeat, valueFrame("a"), heartbeat, heartbeat, concat([valueFrame("b"), heartbeat]));
  fake.end();
  await until(() => connection.ended !== undefined, "the end");
  assert.deepStrictEqual(takeAll(connection), ["a", "b"]);
  assert.equal(connection.messagesReceived, 2);
  assert.equal(connection.bytesReceived, 4 * 4 + valueFrame("a").byteLength * 2);
  await connection.close();
});

Deno.test("Connection() ends the inbox with PeerDisconnectedError at EOF between frames", async () => {
  const { fake, connection } = connect();
  fake.feed(valueFrame("last words"));
  fake.end();
  await until(() => connection.ended !== undefined, "the end");
  assert.ok(fake.closed, "an ended connection closes its socket at once");
  const ended = connection.ended;
  assert.ok(ended instanceof PeerDisconnectedError);
  assert.equal(ended.message, "Peer disconnected");
  assert.equal(ended.clientId, undefined);
  // What was received is still there, then the end.
  assert.equal(await next(connection), "last words");
  await assert.rejects(next(connection), (e: unknown) => e === ended);
  await assert.rejects(connection.send("late"), PeerDisconnectedError);
  await connection.close();
});

Deno.test("Connection() names the peer in the end reason", async () => {
  {
    const { fake, connection } = connect({ peerIsServer: true });
    fake.end();
    await until(() => connection.ended !== undefined, "the end");
    assert.equal(connection.ended?.message, "Server disconnected");
    await connection.close();
  }
  {
    const { fake, connection } = connect();
    connection.open(3);
    fake.end();
    await until(() => connection.ended !== undefined, "the end");
    assert.equal(connection.ended?.message, 'Client "3" disconnected');
    assert.equal((connection.ended as PeerDisconnectedError).clientId, 3);
    await connection.close();
  }
});

Deno.test("Connection() ends the inbox with ProtocolError at EOF inside a frame", async () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array([0, 0]), "Truncated frame: expected 4 header bytes, received 2: from peer"],
    [
      new Uint8Array([0, 0, 0, 10, 1, 2, 3]),
      "Truncated frame: expected 10 bytes, received 3: from peer",
    ],
    [
      concat([new Uint8Array([0, 1, 144, 0]), pattern(1000)]), // 102,400 announced
      "Truncated frame: expected 102400 bytes, received 1000: from peer",
    ],
  ];
  for (const [bytes, message] of cases) {
    const { fake, connection } = connect();
    fake.feed(valueFrame("ok"), bytes);
    fake.end();
    await until(() => connection.ended !== undefined, "the end");
    const ended = connection.ended;
    assert.ok(ended instanceof ProtocolError, `${ended}`);
    assert.equal(ended.message, message);
    assert.ok(fake.closed);
    assert.equal(await next(connection), "ok");
    await assert.rejects(next(connection), (e: unknown) => e === ended);
    await connection.close();
  }
});

Deno.test("Connection() ends the inbox with ProtocolError for a body that is not MessagePack", async () => {
  const { fake, connection } = connect();
  connection.open(5);
  fake.feed(valueFrame(1), frame([0x92, 0x01])); // an array of 2 with 1 element
  await until(() => connection.ended !== undefined, "the end");
  const ended = connection.ended;
  assert.ok(ended instanceof ProtocolError, `${ended}`);
  assert.equal(ended.clientId, 5);
  assert.match(ended.message, /: from client "5"$/);
  assert.deepStrictEqual(takeAll(connection), [1]);
  await connection.close();
});

// ---------------------------------------------------------------------------
// Handshake phase

Deno.test("Connection() fails a frame over handshakeFrameBytes during the handshake", async () => {
  const { fake, connection } = connect({ handshakeFrameBytes: 64 });
  fake.feed(binFrame(65).frame);
  await until(() => connection.ended !== undefined, "the end");
  const ended = connection.ended;
  assert.ok(ended instanceof FrameTooLargeError, `${ended}`);
  assert.ok(ended instanceof RangeError);
  assert.equal(ended.length, 65);
  assert.equal(ended.limit, 64);
  assert.equal(ended.message, "Frame too large: 65 bytes exceeds maxFrameBytes 64: from peer");
  assert.equal(connection.inbox.size, 0);
  assert.ok(fake.closed);
  await connection.close();
});

Deno.test("Connection() fails an oversized frame before its body arrives", async () => {
  const { fake, connection } = connect({ handshakeFrameBytes: 64 });
  fake.feed(new Uint8Array([0, 0, 0, 65])); // the header alone
  await until(() => connection.ended !== undefined, "the end");
  assert.ok(connection.ended instanceof FrameTooLargeError);
  await connection.close();
});

Deno.test("Connection() accepts a frame of exactly handshakeFrameBytes during the handshake", async () => {
  const { fake, connection } = connect({ handshakeFrameBytes: 64 });
  fake.feed(binFrame(64).frame);
  await until(() => connection.inbox.size === 1, "the message");
  assert.equal(connection.ended, undefined);
  assert.equal(connection.inbox.peek()?.bytes, 64);
  await connection.close();
});

Deno.test("Connection.open() resumes reading paused after the first handshake message", async () => {
  for (const bodyBytes of [100, 100 * KiB]) {
    const { fake, connection } = connect({ handshakeFrameBytes: 64 });
    const big = binFrame(bodyBytes, 1);
    // The hello and a large frame right behind it, in one segment.
    fake.feed(concat([handshakeControlFrame({ type: "hello" }), big.frame, valueFrame("after")]));
    await until(() => connection.inbox.size === 1, "the hello");
    for (let i = 0; i < 10; i++) await tick();
    assert.equal(connection.ended, undefined, "the large frame is not checked before open()");
    assert.equal(connection.inbox.size, 1, "reading waits for open()");
    connection.open(1);
    await until(() => connection.inbox.size === 3, `the frames after the hello (${bodyBytes})`);
    assert.equal(connection.ended, undefined);
    assert.deepStrictEqual(connection.inbox.take()?.value, { type: "hello" });
    assert.deepStrictEqual(connection.inbox.take()?.value, big.value);
    assert.equal(connection.inbox.take()?.value, "after");
    assert.equal(connection.clientId, 1);
    await connection.close();
  }
});

Deno.test("Connection.open() right after the handshake takes the welcome reads the next frame with the raised limit", async () => {
  // As greetServer() does: take the welcome, check it, open.
  const { fake, connection } = connect({ handshakeFrameBytes: 64, peerIsServer: true });
  const receive = async () => {
    const value = await connection.inbox.next(NO_DEADLINE);
    return value;
  };
  const answer = receive();
  const big = binFrame(100, 2);
  fake.feed(concat([handshakeControlFrame({ type: "welcome", id: 0 }), big.frame]));
  assert.deepStrictEqual(await answer, { type: "welcome", id: 0 });
  connection.open(0);
  await until(() => connection.inbox.size === 1 || connection.ended !== undefined, "the frame");
  assert.equal(connection.ended, undefined);
  assert.deepStrictEqual(connection.inbox.take()?.value, big.value);
  await connection.close();
});

Deno.test({
  name: "Connection.open() reads the frame behind a taken handshake message with the raised limit",
  // Regression (fixed): _connection.ts #mustWait (lines 276-277) pauses reading only while a handshake
  // message sits in the inbox (`this.#handshaking && this.inbox.size > 0`), not until
  // open() as open()'s doc (lines 222-226) says. Once the welcome (or hello) is taken, the
  // reader resumes by itself and checks the next header against handshakeFrameBytes: a
  // large frame sent right behind the welcome fails with FrameTooLargeError unless open()
  // runs within two microtask turns of the take. greetServer() (`await receive()`, which
  // awaits inbox.next(), then open()) uses exactly those two turns: `await
  // inbox.next()` then two `await Promise.resolve()` before open() already fails, and so
  // does any real await (here one macrotask). Expected: reading stays paused after a
  // handshake message until open() (or until the handshake asks for the next message).

  async fn() {
    const { fake, connection } = connect({ handshakeFrameBytes: 64, peerIsServer: true });
    const big = binFrame(100, 3);
    fake.feed(concat([handshakeControlFrame({ type: "welcome", id: 0 }), big.frame]));
    assert.deepStrictEqual(await next(connection), { type: "welcome", id: 0 });
    await tick(); // e.g. an await in the handshake between the take and open()
    connection.open(0);
    await until(() => connection.inbox.size === 1 || connection.ended !== undefined, "the frame");
    assert.equal(connection.ended, undefined, `${connection.ended}`);
    assert.deepStrictEqual(connection.inbox.take()?.value, big.value);
    await connection.close();
  },
});

// ---------------------------------------------------------------------------
// Sending

Deno.test("Connection.send() writes one whole frame", async () => {
  const { fake, connection } = connect();
  const value = { round: 3, weights: [0.5, -1.25], name: "client" };
  await connection.send(value);
  await connection.drained();
  assert.equal(fake.writes.length, 1, "header and body in one write");
  const [bytes] = fake.writes;
  const length = new DataView(bytes.buffer).getUint32(0);
  assert.equal(length, bytes.byteLength - 4);
  assert.deepStrictEqual(decode(bytes.subarray(4)), value);
  assert.equal(connection.messagesSent, 1);
  assert.equal(connection.bytesSent, bytes.byteLength);
  await connection.close();
});

Deno.test("Connection.send() writes a large binary as one frame", async () => {
  const { fake, connection } = connect();
  const value = pattern(200 * KiB, 5);
  const sending = connection.send(value); // lends its memory: waits for the peer's ack
  await connection.drained();
  const bytes = fake.written;
  fake.feed(ackFrame(1));
  await sending;
  assert.equal(new DataView(bytes.buffer).getUint32(0), bytes.byteLength - 4);
  assert.deepStrictEqual(decode(bytes.subarray(4)), value);
  await connection.close();
});

Deno.test("Connection.send() keeps at most retainBytes plus one message unacknowledged, also for concurrent sends", async () => {
  const { fake, connection } = connect({ retainBytes: MiB });
  const value = pattern(50 * KiB); // copied when sent: no wait for the acknowledgement
  const sends = Array.from({ length: 40 }, () => connection.send(value));
  await tick();
  const frame = 4 + encode(value).byteLength;
  assert.equal(connection.messagesSent, Math.ceil(MiB / frame), "as many as fit, plus one");
  assert.ok(connection.outbox.bytes < MiB + frame);
  fake.feed(ackFrame(10));
  await tick();
  assert.ok(connection.outbox.bytes < MiB + frame, `${connection.outbox.bytes} retained`);
  assert.equal(connection.messagesSent, 10 + Math.ceil(MiB / frame));
  fake.feed(ackFrame(connection.messagesSent));
  await until(() => connection.messagesSent === 40, "every send to be queued");
  fake.feed(ackFrame(40));
  await Promise.all(sends);
  assert.equal(connection.outbox.bytes, 0);
  await connection.close();
});

Deno.test("Connection.send() refuses a value over the send limit and writes nothing", async () => {
  const { fake, connection } = connect({ maxFrameBytes: 100 });
  await assert.rejects(connection.send(pattern(200)), FrameTooLargeError);
  connection.open(1, 50);
  assert.equal(connection.sendMaxFrameBytes, 50);
  assert.equal(connection.maxFrameBytes, 100);
  await assert.rejects(connection.send(pattern(60)), FrameTooLargeError);
  await connection.send(pattern(10));
  await connection.drained();
  assert.equal(fake.writes.length, 1);
  await connection.close();
});

// ---------------------------------------------------------------------------
// Closing

Deno.test("Connection.close() flushes queued writes, closes the socket and ends the inbox", async () => {
  const { fake, connection } = connect();
  fake.pauseWrites();
  await connection.send("first");
  await connection.send({ second: 2 });
  const closing = connection.close();
  for (let i = 0; i < 5; i++) await tick();
  assert.equal(fake.closed, false, "the socket stays open while writes are queued");
  fake.resumeWrites();
  await closing;
  assert.ok(fake.closed);
  assert.deepStrictEqual(fake.written, concat([valueFrame("first"), valueFrame({ second: 2 })]));
  const ended = connection.ended;
  assert.ok(ended instanceof PeerDisconnectedError);
  assert.equal(ended.message, "Connection closed: close() was called");
  await assert.rejects(next(connection), (e: unknown) => e === ended);
  await assert.rejects(connection.send("late"), PeerDisconnectedError);
  await connection.close(); // again: nothing more to do
});

Deno.test("Connection.close() keeps what was received in the inbox", async () => {
  const { fake, connection } = connect();
  fake.feed(valueFrame("kept"));
  await until(() => connection.inbox.size === 1, "the message");
  await connection.close();
  assert.equal(await next(connection), "kept");
  await assert.rejects(next(connection), PeerDisconnectedError);
});

// ---------------------------------------------------------------------------
// Receive budget

Deno.test("Connection() holds a large message's bytes of the budget until it is taken", async () => {
  const budget = new ByteBudget(MiB);
  const { fake, connection } = connect({ budget });
  const message = binFrame(700 * KiB, 1);
  fake.feed(message.frame);
  await until(() => connection.inbox.size === 1, "the message");
  assert.equal(budget.used, 700 * KiB);
  const taken = connection.inbox.take()!;
  assert.deepStrictEqual(taken.value, message.value);
  assert.equal(taken.reserved, 700 * KiB);
  assert.equal(budget.used, 0);
  await connection.close();
});

Deno.test("Connection() reads a frame larger than the whole budget", async () => {
  const budget = new ByteBudget(MiB);
  const { fake, connection } = connect({ budget });
  const message = binFrame(5 * MiB, 2);
  fake.feed(...split(message.frame, 256 * KiB));
  await until(() => connection.inbox.size === 1, "the message");
  assert.equal(connection.inbox.peek()?.reserved, 5 * MiB);
  assert.equal(budget.used, 5 * MiB);
  assert.deepStrictEqual(connection.inbox.take()?.value, message.value);
  assert.equal(budget.used, 0);
  await connection.close();
});

Deno.test({
  name: "Connection() does not read a second large frame while the first message holds the budget",
  // Regression (fixed): _budget.ts #grants (`this.#frames[0] === frame`) lets the oldest frame in progress
  // go over the limit even when the budget is held by messages already received and not yet
  // taken, and a connection's next frame is always the oldest in progress once its previous
  // frame ended. So a peer's large frames are read one after another however much of the
  // budget their untaken messages hold: here 2 × 700 KiB against a 1 MiB budget, and in
  // general every frame up to the inbox limit. This contradicts the module doc of
  // _budget.ts ("When the budget is spent, reads wait ... never holds all 16 at once";
  // "Memory held is at most the budget, plus one step per client reading a frame, plus the
  // oldest frame"). Expected: the second frame waits until the first message is taken
  // (only a frame that would otherwise deadlock, e.g. with nothing held, goes over).

  async fn() {
    const budget = new ByteBudget(MiB);
    const { fake, connection } = connect({ budget });
    const first = binFrame(700 * KiB, 1);
    const second = binFrame(700 * KiB, 2);
    fake.feed(first.frame, second.frame);
    await until(() => connection.inbox.size > 0, "the first message");
    for (let i = 0; i < 10; i++) await tick();
    assert.equal(connection.inbox.size, 1, "the second waits for the budget");
    assert.equal(budget.used, 700 * KiB);
    assert.ok(fake.unread > 600 * KiB, "its body stays in the socket");
    assert.deepStrictEqual(connection.inbox.take()?.value, first.value);
    await until(() => connection.inbox.size === 1, "the second message");
    assert.equal(budget.used, 700 * KiB, "now held by the second");
    assert.deepStrictEqual(connection.inbox.take()?.value, second.value);
    assert.equal(budget.used, 0);
    await connection.close();
  },
});

/**
 * Two connections sharing a 1 MiB budget: `a` has begun a 10 MiB frame and
 * stalls after 100 KiB of it (holding its whole length), `b` has a 700 KiB frame
 * that must wait for the budget.
 */
async function stalledAndWaiting() {
  const budget = new ByteBudget(MiB);
  const a = connect({ budget });
  const b = connect({ budget });
  const big = binFrame(10 * MiB, 3);
  const small = binFrame(700 * KiB, 4);
  a.fake.feed(big.frame.subarray(0, 4 + 100 * KiB));
  await until(() => a.fake.unread === 0, "the start of the large frame");
  await until(() => budget.used > 0, "the reservation of the large frame");
  b.fake.feed(small.frame);
  for (let i = 0; i < 10; i++) await tick();
  return { budget, a, b, big, small };
}

Deno.test("Connection() waits for the budget while another connection's frame is in progress", async () => {
  const { budget, a, b, big, small } = await stalledAndWaiting();
  assert.equal(budget.used, 10 * MiB, "the stalled frame holds its whole length");
  assert.equal(b.connection.inbox.size, 0, "b waits for the budget");
  assert.ok(b.fake.unread > 600 * KiB, "its body stays in the socket");
  a.fake.feed(big.frame.subarray(4 + 100 * KiB));
  await until(() => a.connection.inbox.size === 1, "the large message");
  // a's message now holds the budget: b waits until it is taken.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(b.connection.inbox.size, 0, "b still waits while a's message is untaken");
  assert.deepStrictEqual(a.connection.inbox.take()?.value, big.value);
  await until(() => b.connection.inbox.size === 1, "b's message");
  assert.equal(budget.used, 700 * KiB);
  assert.deepStrictEqual(b.connection.inbox.take()?.value, small.value);
  assert.equal(budget.used, 0);
  await a.connection.close();
  await b.connection.close();
});

Deno.test("Connection.meter.metered = false lets a large frame through without waiting for the budget", async () => {
  const { budget, a, b, small } = await stalledAndWaiting();
  assert.equal(b.connection.inbox.size, 0);
  assert.equal(b.connection.meter.metered, true);
  b.connection.meter.metered = false;
  await until(() => b.connection.inbox.size === 1, "b's message");
  assert.equal(budget.used, 10 * MiB, "b's message holds nothing of the budget");
  const taken = b.connection.inbox.take()!;
  assert.deepStrictEqual(taken.value, small.value);
  assert.equal(taken.reserved, 0);
  await a.connection.close();
  assert.equal(budget.used, 0, "closing releases the frame in progress");
  await b.connection.close();
});

Deno.test("Connection.close() ends a wait for the budget", async () => {
  const { budget, a, b } = await stalledAndWaiting();
  await b.connection.close();
  assert.ok(b.connection.ended instanceof PeerDisconnectedError);
  assert.equal(b.connection.ended.message, "Connection closed: close() was called");
  assert.equal(budget.used, 10 * MiB, "b holds nothing");
  await a.connection.close();
  assert.equal(budget.used, 0);
});

Deno.test("Connection() releases the budget of a frame cut short by the peer", async () => {
  const budget = new ByteBudget(MiB);
  const { fake, connection } = connect({ budget });
  fake.feed(binFrame(700 * KiB).frame.subarray(0, 200 * KiB));
  fake.end();
  await until(() => connection.ended !== undefined, "the end");
  assert.ok(connection.ended instanceof ProtocolError);
  assert.equal(budget.used, 0);
  await connection.close();
});

Deno.test({
  name: "Connection() releases the budget held by a plain frame read during the handshake",
  // Regression (fixed): _connection.ts #deliver (lines 380-383) pushes a plain frame received while
  // handshaking as a PlainFrame without the reservation it got from the meter and without
  // releasing it, so a frame large enough to be metered (over 65,532 bytes, within
  // handshakeFrameBytes) leaks its bytes from the shared budget for good. Latent: a
  // Connection built with both `budget` and `handshakeFrameBytes` shows it; the server
  // avoids it today only because it calls useBudget() and open() in the same synchronous
  // step (_admission.ts). Expected: release the reservation (or pass it to inbox.push) as
  // the control-frame path does.

  async fn() {
    const budget = new ByteBudget(MiB);
    const { fake, connection } = connect({ budget, handshakeFrameBytes: 100 * KiB });
    fake.feed(binFrame(70 * KiB).frame);
    await until(() => connection.inbox.size === 1, "the plain frame");
    connection.inbox.take();
    assert.equal(budget.used, 0, "nothing is left reserved once the message is taken");
    await connection.close();
  },
});

Deno.test("Connection() does not draw on the budget for small frames", async () => {
  const budget = new ByteBudget(MiB);
  const { fake, connection } = connect({ budget });
  fake.feed(valueFrame(pattern(10 * KiB)), valueFrame("small"));
  await until(() => connection.inbox.size === 2, "the messages");
  assert.equal(budget.used, 0);
  assert.equal(connection.inbox.peek()?.reserved, 0);
  await connection.close();
});
