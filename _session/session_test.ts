import assert from "node:assert/strict";
import { ackFrame } from "../_wire/control.ts";
import { decode, encode } from "../codec.ts";
import {
  FrameTooLargeError,
  PeerDisconnectedError,
  ProtocolError,
  TruncatedFrameError,
} from "../errors.ts";
import {
  binFrame,
  fakeSession,
  frame,
  KiB,
  MiB,
  next,
  pattern,
  split,
  takeAll,
  tick,
  until,
  valueFrame,
} from "../tests/fake_conn.ts";
import { concat } from "../tests/test_util.ts";

// The receive budget: session_budget_test.ts. The handshake before a session:
// _handshake/greeting_test.ts.

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

Deno.test("Session() reads values into the inbox decoded and in order across any chunking", async () => {
  const stream = concat(VALUES.map(valueFrame));
  for (const size of [1, 2, 3, 5, 7, 13, 1000, 4096, 4097, stream.byteLength]) {
    const { fake, session } = fakeSession();
    fake.feed(...split(stream, size));
    fake.end();
    await until(() => session.ended !== undefined, "the end");
    assert.deepStrictEqual(takeAll(session), VALUES, `chunks of ${size}`);
    assert.equal(session.bytesReceived, stream.byteLength);
    assert.equal(session.messagesReceived, VALUES.length);
    assert.ok(session.ended instanceof PeerDisconnectedError);
    await session.close();
  }
});

Deno.test("Session() reads values fed while it waits", async () => {
  const { fake, session } = fakeSession();
  for (const value of VALUES) {
    const bytes = valueFrame(value);
    const half = bytes.byteLength >> 1;
    fake.feed(bytes.subarray(0, half));
    await tick();
    assert.equal(session.inbox.size, 0, "half a frame is not a message");
    fake.feed(bytes.subarray(half));
    assert.deepStrictEqual(await next(session), value);
  }
  await session.close();
});

Deno.test("Session() reads frames larger than the read buffer across any chunking", async () => {
  const values = [pattern(100 * KiB, 1), "small", pattern(64 * KiB, 2), pattern(300 * KiB, 3)];
  const stream = concat(values.map(valueFrame));
  for (const size of [999, 4096, 65_536, 70_000, stream.byteLength]) {
    const { fake, session } = fakeSession();
    fake.feed(...split(stream, size));
    fake.end();
    await until(() => session.ended !== undefined, "the end");
    assert.deepStrictEqual(takeAll(session), values, `chunks of ${size}`);
    assert.equal(session.bytesReceived, stream.byteLength);
    await session.close();
  }
});

Deno.test("Session() does not deliver a heartbeat (zero-length frame) as a message", async () => {
  const { fake, session } = fakeSession();
  const heartbeat = frame([]);
  fake.feed(heartbeat, valueFrame("a"), heartbeat, heartbeat, concat([valueFrame("b"), heartbeat]));
  fake.end();
  await until(() => session.ended !== undefined, "the end");
  assert.deepStrictEqual(takeAll(session), ["a", "b"]);
  assert.equal(session.messagesReceived, 2);
  assert.equal(session.bytesReceived, 4 * 4 + valueFrame("a").byteLength * 2);
  await session.close();
});

Deno.test("Session() ends the inbox with PeerDisconnectedError at EOF between frames", async () => {
  const { fake, session } = fakeSession({ clientId: 2 });
  fake.feed(valueFrame("last words"));
  fake.end();
  await until(() => session.ended !== undefined, "the end");
  assert.ok(fake.closed, "an ended session closes its socket at once");
  const ended = session.ended;
  assert.ok(ended instanceof PeerDisconnectedError);
  assert.equal(ended.message, 'Client "2" disconnected');
  assert.equal(ended.clientId, 2);
  // What was received is still there, then the end.
  assert.equal(await next(session), "last words");
  await assert.rejects(next(session), (e: unknown) => e === ended);
  await assert.rejects(session.sender.send("late"), PeerDisconnectedError);
  await session.close();
});

Deno.test("Session() names the peer in the end reason", async () => {
  {
    const { fake, session } = fakeSession({ peerIsServer: true, clientId: 0 });
    fake.end();
    await until(() => session.ended !== undefined, "the end");
    assert.equal(session.ended?.message, "Server disconnected");
    await session.close();
  }
  {
    const { fake, session } = fakeSession({ clientId: 3 });
    fake.end();
    await until(() => session.ended !== undefined, "the end");
    assert.equal(session.ended?.message, 'Client "3" disconnected');
    assert.equal((session.ended as PeerDisconnectedError).clientId, 3);
    await session.close();
  }
});

Deno.test("Session() ends the inbox with TruncatedFrameError (a ProtocolError) at EOF inside a frame", async () => {
  const cases: [Uint8Array, string][] = [
    [new Uint8Array([0, 0]), "expected 4 header bytes, received 2"],
    [new Uint8Array([0, 0, 0, 10, 1, 2, 3]), "expected 10 bytes, received 3"],
    [
      concat([new Uint8Array([0, 1, 144, 0]), pattern(1000)]), // 102,400 announced
      "expected 102400 bytes, received 1000",
    ],
  ];
  for (const [bytes, message] of cases) {
    const { fake, session } = fakeSession({ clientId: 4 });
    fake.feed(valueFrame("ok"), bytes);
    fake.end();
    await until(() => session.ended !== undefined, "the end");
    const ended = session.ended;
    assert.ok(ended instanceof TruncatedFrameError, `${ended}`);
    assert.ok(ended instanceof ProtocolError);
    assert.equal(ended.message, `Truncated frame: ${message}: from client "4"`);
    assert.equal(ended.clientId, 4);
    assert.ok(fake.closed);
    assert.equal(await next(session), "ok");
    await assert.rejects(next(session), (e: unknown) => e === ended);
    await session.close();
  }
});

Deno.test("Session() ends the inbox with ProtocolError for a body that is not MessagePack", async () => {
  const { fake, session } = fakeSession({ clientId: 5 });
  fake.feed(valueFrame(1), frame([0x92, 0x01])); // an array of 2 with 1 element
  await until(() => session.ended !== undefined, "the end");
  const ended = session.ended;
  assert.ok(ended instanceof ProtocolError, `${ended}`);
  assert.ok(!(ended instanceof TruncatedFrameError), "the frame was whole");
  assert.equal(ended.clientId, 5);
  assert.match(ended.message, /: from client "5"$/);
  assert.doesNotMatch(ended.message, /from client "5".*from client "5"/, "named once");
  assert.deepStrictEqual(takeAll(session), [1]);
  await session.close();
});

Deno.test("Session() fails a frame over maxFrameBytes, naming the client", async () => {
  const { fake, session } = fakeSession({ maxFrameBytes: 64, clientId: 6 });
  fake.feed(binFrame(64).frame, binFrame(65).frame);
  await until(() => session.ended !== undefined, "the end");
  const ended = session.ended;
  assert.ok(ended instanceof FrameTooLargeError, `${ended}`);
  assert.ok(ended instanceof RangeError);
  assert.equal(ended.length, 65);
  assert.equal(ended.limit, 64);
  assert.equal(ended.clientId, 6);
  assert.equal(
    ended.message,
    'Frame too large: 65 bytes exceeds maxFrameBytes 64: from client "6"',
  );
  assert.equal(session.inbox.size, 1, "only the frame of exactly maxFrameBytes");
  assert.equal(session.inbox.peek()?.bytes, 64);
  assert.ok(fake.closed);
  await session.close();
});

Deno.test("Session() fails an oversized frame before its body arrives", async () => {
  const { fake, session } = fakeSession({ maxFrameBytes: 64 });
  fake.feed(new Uint8Array([0, 0, 0, 65])); // the header alone
  await until(() => session.ended !== undefined, "the end");
  assert.ok(session.ended instanceof FrameTooLargeError);
  await session.close();
});

// ---------------------------------------------------------------------------
// Sending

Deno.test("Session.sender.send() writes one whole frame", async () => {
  const { fake, session } = fakeSession();
  const value = { round: 3, weights: [0.5, -1.25], name: "client" };
  await session.sender.send(value);
  await until(() => fake.writes.length > 0, "the write");
  await tick();
  assert.equal(fake.writes.length, 1, "header and body in one write");
  const [bytes] = fake.writes;
  const length = new DataView(bytes.buffer).getUint32(0);
  assert.equal(length, bytes.byteLength - 4);
  assert.deepStrictEqual(decode(bytes.subarray(4)), value);
  assert.equal(session.messagesSent, 1);
  assert.equal(session.bytesSent, bytes.byteLength);
  fake.feed(ackFrame(1)); // else close() waits 5 s for it
  await session.close();
});

Deno.test("Session.sender.send() writes a large binary as one frame", async () => {
  const { fake, session } = fakeSession();
  const value = pattern(200 * KiB, 5);
  const sending = session.sender.send(value); // lends its memory: waits for the peer's ack
  const frameBytes = 4 + encode(value).byteLength;
  await until(() => fake.written.byteLength >= frameBytes, "the frame to be written");
  const bytes = fake.written;
  assert.equal(bytes.byteLength, frameBytes);
  fake.feed(ackFrame(1));
  await sending;
  assert.equal(new DataView(bytes.buffer).getUint32(0), bytes.byteLength - 4);
  assert.deepStrictEqual(decode(bytes.subarray(4)), value);
  await session.close();
});

Deno.test("Session.sender.send() keeps at most retainBytes plus one message unacknowledged, also for concurrent sends", async () => {
  const { fake, session } = fakeSession({ retainBytes: MiB });
  const value = pattern(50 * KiB); // copied when sent: no wait for the acknowledgement
  const sends = Array.from({ length: 40 }, () => session.sender.send(value));
  await tick();
  const frame = 4 + encode(value).byteLength;
  assert.equal(session.messagesSent, Math.ceil(MiB / frame), "as many as fit, plus one");
  assert.ok(session.outbox.bytes < MiB + frame);
  fake.feed(ackFrame(10));
  await tick();
  assert.ok(session.outbox.bytes < MiB + frame, `${session.outbox.bytes} retained`);
  assert.equal(session.messagesSent, 10 + Math.ceil(MiB / frame));
  fake.feed(ackFrame(session.messagesSent));
  await until(() => session.messagesSent === 40, "every send to be queued");
  fake.feed(ackFrame(40));
  await Promise.all(sends);
  assert.equal(session.outbox.bytes, 0);
  await session.close();
});

Deno.test("Session.sender.send() refuses a value over the send limit and writes nothing", async () => {
  {
    const { fake, session } = fakeSession({ maxFrameBytes: 100 });
    await assert.rejects(session.sender.send(pattern(200)), FrameTooLargeError);
    assert.equal(session.messagesSent, 0);
    await session.close();
    assert.equal(fake.written.byteLength, 6, "only the close frame");
  }
  {
    // The peer accepts less than this session: its limit applies to sending.
    const { fake, session } = fakeSession({ maxFrameBytes: 100, peerMaxFrameBytes: 50 });
    assert.equal(session.maxFrameBytes, 100);
    await assert.rejects(session.sender.send(pattern(200)), FrameTooLargeError);
    await assert.rejects(session.sender.send(pattern(60)), FrameTooLargeError, "62 bytes > 50");
    await session.sender.send(pattern(46)); // 48 bytes: within both limits
    await until(() => fake.writes.length > 0, "the write");
    await tick();
    assert.equal(fake.writes.length, 1);
    assert.equal(fake.written.byteLength, 4 + 48);
    assert.equal(session.messagesSent, 1);
    fake.feed(ackFrame(1));
    await session.close();
  }
});

// ---------------------------------------------------------------------------
// Closing

Deno.test("Session.close() flushes queued writes, closes the socket and ends the inbox", async () => {
  const { fake, session } = fakeSession();
  fake.pauseWrites();
  await session.sender.send("first");
  await session.sender.send({ second: 2 });
  // Acknowledged (though not written yet): close() waits for the writes alone.
  fake.feed(ackFrame(2));
  await until(() => session.outbox.acked === 2, "the acknowledgement");
  const closing = session.close();
  for (let i = 0; i < 5; i++) await tick();
  assert.equal(fake.closed, false, "the socket stays open while writes are queued");
  fake.resumeWrites();
  await closing;
  assert.ok(fake.closed);
  assert.deepStrictEqual(
    fake.written,
    concat([valueFrame("first"), valueFrame({ second: 2 }), frame([0xc1, 0x06])]),
    "the messages, then the close frame",
  );
  assert.ok(session.closedCleanly);
  const ended = session.ended;
  assert.ok(ended instanceof PeerDisconnectedError);
  assert.equal(ended.message, "Connection closed: close() was called");
  await assert.rejects(next(session), (e: unknown) => e === ended);
  await assert.rejects(session.sender.send("late"), PeerDisconnectedError);
  await session.close(); // again: nothing more to do
});

Deno.test("Session.close() keeps what was received in the inbox", async () => {
  const { fake, session } = fakeSession();
  fake.feed(valueFrame("kept"));
  await until(() => session.inbox.size === 1, "the message");
  await session.close();
  assert.equal(await next(session), "kept");
  await assert.rejects(next(session), PeerDisconnectedError);
});
