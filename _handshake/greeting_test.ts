import assert from "node:assert/strict";
import { type Greeting, PlainFrame } from "./greeting.ts";
import { Session } from "../_session/session.ts";
import { ackFrame, controlFrame, PING, PONG } from "../_wire/control.ts";
import { NO_DEADLINE } from "../_util/wait.ts";
import { encode } from "../codec.ts";
import { FrameTooLargeError, PeerDisconnectedError, ProtocolError } from "../errors.ts";
import {
  binFrame,
  fakeGreeting,
  frame,
  handshakeControlFrame,
  KiB,
  MiB,
  tick,
  until,
  valueFrame,
} from "../tests/fake_conn.ts";
import { concat } from "../tests/test_util.ts";

// The session a greeting hands its link to: _session/session_test.ts.

/** The error `greeting.next()` fails with (the test fails if it resolves). */
async function failure(greeting: Greeting): Promise<Error> {
  let error: unknown;
  await assert.rejects(greeting.next(NO_DEADLINE), (e: unknown) => (error = e) !== undefined);
  assert.ok(error instanceof Error);
  return error;
}

/** The session a server makes of a released greeting (client 1, a 512 MiB limit). */
function sessionOf(greeting: Greeting, peerIsServer = false): Session {
  return new Session(greeting.release(), {
    clientId: peerIsServer ? 0 : 1,
    maxFrameBytes: 512 * MiB,
    peerIsServer,
    bytesReceived: greeting.bytesReceived,
  });
}

// ---------------------------------------------------------------------------
// The handshake limit

Deno.test("Greeting() fails a frame over handshakeFrameBytes during the handshake", async () => {
  const { fake, greeting } = fakeGreeting({ handshakeFrameBytes: 64 });
  fake.feed(binFrame(65).frame);
  const error = await failure(greeting);
  assert.ok(error instanceof FrameTooLargeError, `${error}`);
  assert.ok(error instanceof RangeError);
  assert.equal(error.length, 65);
  assert.equal(error.limit, 64);
  assert.equal(error.message, "Frame too large: 65 bytes exceeds maxFrameBytes 64: from peer");
  assert.throws(() => greeting.release(), (e: unknown) => e === error, "no link to hand over");
  assert.ok(fake.closed);
  await greeting.close();
});

Deno.test("Greeting() fails an oversized frame before its body arrives", async () => {
  const { fake, greeting } = fakeGreeting({ handshakeFrameBytes: 64 });
  fake.feed(new Uint8Array([0, 0, 0, 65])); // the header alone
  assert.ok(await failure(greeting) instanceof FrameTooLargeError);
  await greeting.close();
});

Deno.test("Greeting() accepts a frame of exactly handshakeFrameBytes during the handshake", async () => {
  const { fake, greeting } = fakeGreeting({ handshakeFrameBytes: 64 });
  assert.equal(greeting.maxFrameBytes, 64);
  const plain = binFrame(64);
  let pad = 0;
  while (encode({ type: "hello", pad: "x".repeat(pad) }).byteLength + 2 < 64) pad++;
  const hello = { type: "hello", pad: "x".repeat(pad) };
  const control = handshakeControlFrame(hello);
  assert.equal(control.byteLength, 4 + 64);
  fake.feed(plain.frame, control);
  const first = await greeting.next(NO_DEADLINE);
  assert.ok(first instanceof PlainFrame);
  assert.deepStrictEqual(first.value, plain.value);
  assert.deepStrictEqual(await greeting.next(NO_DEADLINE), hello);
  assert.equal(greeting.bytesReceived, 2 * (4 + 64));
  await greeting.close();
});

// ---------------------------------------------------------------------------
// Pausing after a handshake message

Deno.test("Greeting.release() resumes reading paused after the first handshake message", async () => {
  for (const bodyBytes of [100, 100 * KiB]) {
    const { fake, greeting } = fakeGreeting({ handshakeFrameBytes: 64 });
    const big = binFrame(bodyBytes, 1);
    // The hello and a large frame right behind it, in one segment.
    fake.feed(concat([handshakeControlFrame({ type: "hello" }), big.frame, valueFrame("after")]));
    await until(() => fake.unread < big.frame.byteLength, "the hello");
    for (let i = 0; i < 10; i++) await tick();
    const unread = fake.unread;
    assert.deepStrictEqual(await greeting.next(NO_DEADLINE), { type: "hello" });
    const session = sessionOf(greeting); // throws if the large frame failed the greeting
    if (bodyBytes > 64 * KiB) assert.ok(unread > 90 * KiB, "reading waits for release()");
    await until(() => session.inbox.size === 2, `the frames after the hello (${bodyBytes})`);
    assert.equal(session.ended, undefined);
    assert.deepStrictEqual(session.inbox.take()?.value, big.value);
    assert.equal(session.inbox.take()?.value, "after");
    assert.equal(session.clientId, 1);
    await session.close();
  }
});

Deno.test("Greeting.release() right after next() returns the welcome reads the next frame with the session's limit", async () => {
  // As greetServer() does: ask for the welcome, check it, release.
  const { fake, greeting } = fakeGreeting({ handshakeFrameBytes: 64, peerIsServer: true });
  const answer = greeting.next(NO_DEADLINE);
  const big = binFrame(100, 2);
  fake.feed(concat([handshakeControlFrame({ type: "welcome", id: 0 }), big.frame]));
  assert.deepStrictEqual(await answer, { type: "welcome", id: 0 });
  const session = sessionOf(greeting, true);
  await until(() => session.inbox.size === 1 || session.ended !== undefined, "the frame");
  assert.equal(session.ended, undefined);
  assert.deepStrictEqual(session.inbox.take()?.value, big.value);
  await session.close();
});

/**
 * The welcome and a 100-byte frame right behind it (over the 64-byte handshake
 * limit), with next() called before they arrive or after; an await, then
 * release(): the session must read that frame.
 */
async function welcomeThenLargeFrame(askFirst: boolean): Promise<void> {
  const { fake, greeting } = fakeGreeting({ handshakeFrameBytes: 64, peerIsServer: true });
  const big = binFrame(100, 3);
  const bytes = concat([handshakeControlFrame({ type: "welcome", id: 0 }), big.frame]);
  let answer: Promise<unknown>;
  if (askFirst) {
    answer = greeting.next(NO_DEADLINE);
    fake.feed(bytes);
  } else {
    fake.feed(bytes);
    await until(() => fake.unread === 0, "the welcome");
    await tick();
    answer = greeting.next(NO_DEADLINE);
  }
  assert.deepStrictEqual(await answer, { type: "welcome", id: 0 });
  await tick(); // e.g. an await in the handshake between the take and release()
  let session: Session | undefined;
  assert.doesNotThrow(() => session = sessionOf(greeting, true), "the greeting failed");
  await until(() => session!.inbox.size === 1 || session!.ended !== undefined, "the frame");
  assert.equal(session!.ended, undefined, `${session!.ended}`);
  assert.deepStrictEqual(session!.inbox.take()?.value, big.value);
  await session!.close();
}

Deno.test({
  name:
    "Greeting.release() after an await reads the frame behind a taken handshake message with the session's limit",
  // Regression (fixed in the old Connection): reading resumed by itself once a handshake
  // message was taken, so a large frame right behind the welcome was checked against
  // handshakeFrameBytes unless the handshake handed the link over within two microtask turns
  // of the take. Expected (greeting.ts module doc): reading stays paused after a handshake
  // message until the handshake asks for the next one or releases the link.
  fn: () => welcomeThenLargeFrame(true),
});

Deno.test({
  name:
    "Greeting.next() taking a message that arrived before it was asked for keeps reading paused behind it",
  // Bug (open): greeting.ts next() calls #resumeReading() before it looks at #messages, so the
  // call that takes an already-queued message (the hello a server reads once it has a place,
  // a welcome that came in before the client asked for it) also resumes reading past it. The
  // frame right behind it is then read by the greeting, under handshakeFrameBytes, while the
  // handshake is still busy with the message: a large first broadcast behind the welcome fails
  // the greeting with FrameTooLargeError ("100 bytes exceeds maxFrameBytes 64: from server")
  // if release() comes after any await. The pause after message M should end only when the
  // handshake asks for a message not read yet: resume reading in next() only when #messages is
  // empty.
  fn: () => welcomeThenLargeFrame(false),
});

// ---------------------------------------------------------------------------
// What a greeting reads

Deno.test("Greeting() hands a plain frame over as a PlainFrame", async () => {
  const { fake, greeting } = fakeGreeting();
  const v1Hello = { type: "hello", version: 1, name: "old" };
  fake.feed(valueFrame(v1Hello));
  const value = await greeting.next(NO_DEADLINE);
  assert.ok(value instanceof PlainFrame);
  assert.deepStrictEqual(value.value, v1Hello);
  await greeting.close();
});

Deno.test("Greeting() answers a ping with a pong and reads on", async () => {
  const { fake, greeting } = fakeGreeting();
  const payload = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
  const answer = greeting.next(NO_DEADLINE);
  fake.feed(controlFrame(PING, payload), frame([]), handshakeControlFrame({ type: "hello" }));
  assert.deepStrictEqual(await answer, { type: "hello" }, "not a ping, nor a heartbeat");
  await until(() => fake.writes.length > 0, "the pong");
  assert.deepStrictEqual(fake.written, controlFrame(PONG, payload));
  await greeting.close();
});

Deno.test("Greeting() fails with ProtocolError on an ack or close control frame during the handshake", async () => {
  const cases: [Uint8Array, string][] = [
    [ackFrame(1), 'Invalid control frame: kind "4" with 10 body bytes: from peer'],
    [frame([0xc1, 0x06]), 'Invalid control frame: kind "6" with 2 body bytes: from peer'],
    [frame([0xc1]), "Invalid control frame: no kind byte: from peer"],
  ];
  for (const [bytes, message] of cases) {
    const { fake, greeting } = fakeGreeting();
    fake.feed(bytes, handshakeControlFrame({ type: "hello" }));
    const error = await failure(greeting);
    assert.ok(error instanceof ProtocolError, `${error}`);
    assert.equal(error.message, message);
    assert.ok(fake.closed);
    await greeting.close();
  }
});

Deno.test("Greeting() fails with PeerDisconnectedError at EOF, naming the peer", async () => {
  for (
    const [peerIsServer, message] of [[false, "Peer disconnected"], [true, "Server disconnected"]]
  ) {
    const { fake, greeting } = fakeGreeting({ peerIsServer: peerIsServer as boolean });
    fake.end();
    const error = await failure(greeting);
    assert.ok(error instanceof PeerDisconnectedError, `${error}`);
    assert.equal(error.message, message);
    assert.equal(error.clientId, undefined);
    await greeting.close();
  }
});

// ---------------------------------------------------------------------------
// Closing

Deno.test("Greeting.close() writes what is queued, closes the socket and fails next()", async () => {
  const { fake, greeting } = fakeGreeting();
  fake.pauseWrites();
  const reject = handshakeControlFrame({ type: "reject", reason: "full" });
  const sent = greeting.send(reject);
  const closing = greeting.close();
  for (let i = 0; i < 5; i++) await tick();
  assert.equal(fake.closed, false, "the socket stays open while writes are queued");
  fake.resumeWrites();
  await closing;
  await sent;
  assert.ok(fake.closed);
  assert.deepStrictEqual(fake.written, reject);
  const error = await failure(greeting);
  assert.ok(error instanceof PeerDisconnectedError);
  assert.equal(error.message, "Connection closed: close() was called");
  await assert.rejects(greeting.send(reject), (e: unknown) => e === error);
  await greeting.close(); // again: nothing more to do
});

Deno.test("Greeting.close() after release() leaves the socket to the session", async () => {
  const { fake, greeting } = fakeGreeting();
  const session = sessionOf(greeting);
  await greeting.close();
  assert.equal(fake.closed, false);
  fake.feed(valueFrame("for the session"));
  await until(() => session.inbox.size === 1, "the message");
  await session.close();
  assert.ok(fake.closed);
});
