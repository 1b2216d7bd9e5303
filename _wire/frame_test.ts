import assert from "node:assert/strict";
import {
  type ByteWindow,
  checkFrameLength,
  checkMaxFrameBytes,
  encodeHead,
  FrameDecoder,
  HEADER_BYTES,
  MAX_FRAME_BYTES_LIMIT,
} from "./frame.ts";
import { FrameTooLargeError, TruncatedFrameError } from "../errors.ts";
import { DEFAULT_MAX_FRAME_BYTES } from "../types.ts";

// ---------------------------------------------------------------------------
// Helpers

/** One frame: the 4-byte big-endian length, then the body. */
function frame(body: Uint8Array | number[]): Uint8Array {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  const out = new Uint8Array(HEADER_BYTES + bytes.byteLength);
  new DataView(out.buffer).setUint32(0, bytes.byteLength);
  out.set(bytes, HEADER_BYTES);
  return out;
}

/** Bytes 0, 1, 2, … (mod 251) so that misplaced bytes show. */
function pattern(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i + seed) % 251;
  return out;
}

/** Asserts that `fn` throws an instance of `type` with exactly `message`. */
function assertThrowsExactly(
  fn: () => unknown,
  // deno-lint-ignore no-explicit-any
  type: abstract new (...args: any[]) => Error,
  message: string,
): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof type, `expected a ${type.name}, got ${error}`);
    assert.equal(error.message, message);
    return true;
  });
}

/** A window over all of `bytes`, or over its first `end` bytes. */
function windowOf(bytes: Uint8Array, end = bytes.byteLength): ByteWindow {
  return { buf: bytes, start: 0, end };
}

/** Decodes every frame the window holds now. */
function drain(decoder: FrameDecoder, w: ByteWindow): Uint8Array[] {
  const bodies: Uint8Array[] = [];
  for (let body = decoder.decode(w); body !== undefined; body = decoder.decode(w)) {
    bodies.push(body.slice());
  }
  return bodies;
}

// ---------------------------------------------------------------------------
// FrameDecoder

Deno.test("FrameDecoder.decode() waits for a header split at every byte position", () => {
  const body = pattern(10, 7);
  const bytes = frame(body);
  for (let cut = 0; cut <= bytes.byteLength; cut++) {
    const decoder = new FrameDecoder();
    const w = windowOf(bytes, cut);
    const first = decoder.decode(w);
    if (cut === bytes.byteLength) {
      assert.deepStrictEqual(first, body, `cut ${cut}`);
      continue;
    }
    assert.equal(first, undefined, `cut ${cut}`);
    assert.equal(w.start, cut < HEADER_BYTES ? 0 : HEADER_BYTES, `cut ${cut}: start`);
    assert.equal(decoder.length, cut < HEADER_BYTES ? -1 : 10, `cut ${cut}: length`);
    w.end = bytes.byteLength;
    assert.deepStrictEqual(decoder.decode(w), body, `cut ${cut}`);
    assert.equal(w.start, bytes.byteLength);
    assert.equal(decoder.length, -1);
    assert.equal(decoder.decode(w), undefined);
  }
});

Deno.test("FrameDecoder.decode() cuts many frames out of one window", () => {
  const bodies = [pattern(3, 1), pattern(0), pattern(200, 2), pattern(1, 3), pattern(17, 4)];
  const all = new Uint8Array(bodies.reduce((n, b) => n + HEADER_BYTES + b.byteLength, 0));
  let offset = 0;
  for (const body of bodies) {
    all.set(frame(body), offset);
    offset += HEADER_BYTES + body.byteLength;
  }
  const decoder = new FrameDecoder();
  const w = windowOf(all);
  const got: Uint8Array[] = [];
  for (let body = decoder.decode(w); body !== undefined; body = decoder.decode(w)) {
    assert.equal(body.buffer, all.buffer, "a body is a view of the window, not a copy");
    got.push(body.slice());
  }
  assert.deepStrictEqual(got, bodies);
  assert.equal(w.start, all.byteLength);
  assert.equal(decoder.length, -1);
});

Deno.test("FrameDecoder.decode() returns a body once it is complete", () => {
  const body = pattern(1000, 5);
  const bytes = frame(body);
  const decoder = new FrameDecoder();
  const w = windowOf(bytes, HEADER_BYTES + 999);
  assert.equal(decoder.decode(w), undefined);
  assert.equal(decoder.length, 1000, "the header is consumed, the body is awaited");
  assert.equal(w.start, HEADER_BYTES, "no body byte is consumed yet");
  assert.equal(decoder.decode(w), undefined, "asking again changes nothing");
  assert.equal(w.start, HEADER_BYTES);
  w.end = bytes.byteLength;
  assert.deepStrictEqual(decoder.decode(w), body);
  assert.equal(w.start, bytes.byteLength);
});

Deno.test("FrameDecoder.decode() decodes a frame whose bytes arrive one at a time", () => {
  const bodies = [pattern(5, 9), pattern(0), pattern(2, 8)];
  const all = new Uint8Array([...frame(bodies[0]), ...frame(bodies[1]), ...frame(bodies[2])]);
  const decoder = new FrameDecoder();
  const w = windowOf(all, 0);
  const got: Uint8Array[] = [];
  while (w.end < all.byteLength) {
    w.end++;
    got.push(...drain(decoder, w));
  }
  assert.deepStrictEqual(got, bodies);
});

Deno.test("FrameDecoder.length is -1 while waiting for a header and the body length after it", () => {
  const decoder = new FrameDecoder();
  assert.equal(decoder.length, -1);
  const w = windowOf(frame(pattern(300)), 3);
  assert.equal(decoder.decodeHead(w), -1);
  assert.equal(decoder.length, -1);
  assert.equal(w.start, 0);
  w.end = HEADER_BYTES;
  assert.equal(decoder.decodeHead(w), 300);
  assert.equal(decoder.length, 300);
  assert.equal(w.start, HEADER_BYTES);
  // Once in the body state, decodeHead reads no further header.
  assert.equal(decoder.decodeHead(w), 300);
  assert.equal(w.start, HEADER_BYTES);
  w.end = w.buf.byteLength;
  assert.equal(decoder.decode(w)?.byteLength, 300);
  assert.equal(decoder.length, -1);
});

Deno.test("FrameDecoder.decode() returns an empty body for a zero-length frame (heartbeat)", () => {
  const decoder = new FrameDecoder();
  const w = windowOf(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 42]));
  const heartbeat = decoder.decode(w);
  assert.ok(heartbeat instanceof Uint8Array);
  assert.equal(heartbeat.byteLength, 0);
  assert.equal(w.start, HEADER_BYTES);
  assert.equal(decoder.length, -1);
  assert.deepStrictEqual(decoder.decode(w), new Uint8Array([42]));
});

Deno.test("FrameDecoder.decodeHead() accepts a frame exactly at the limit", () => {
  const decoder = new FrameDecoder(16);
  const w = windowOf(frame(pattern(16)));
  assert.equal(decoder.decodeHead(w), 16);
  assert.deepStrictEqual(decoder.decode(w), pattern(16));
});

Deno.test("FrameDecoder.decodeHead() throws FrameTooLargeError one over the limit, before the body", () => {
  const decoder = new FrameDecoder(16);
  decoder.clientId = 7;
  // Only the header is there: the error must not wait for the body.
  const w = windowOf(frame(pattern(17)), HEADER_BYTES);
  const check = (error: unknown) => {
    assert.ok(error instanceof FrameTooLargeError);
    assert.ok(error instanceof RangeError);
    assert.equal(error.clientId, 7);
    assert.equal(error.length, 17);
    assert.equal(error.limit, 16);
    assert.equal(error.message, "Frame too large: 17 bytes exceeds maxFrameBytes 16");
    return true;
  };
  assert.throws(() => decoder.decodeHead(w), check);
  assert.equal(w.start, 0, "the header is not consumed");
  assert.equal(decoder.length, -1);
  assert.throws(() => decoder.decode(w), check);
});

Deno.test("FrameDecoder.decodeHead() reads a length with the top bit set as unsigned", () => {
  const decoder = new FrameDecoder(MAX_FRAME_BYTES_LIMIT);
  const w = windowOf(new Uint8Array([0xff, 0xff, 0xff, 0xfe]));
  assert.equal(decoder.decodeHead(w), 2 ** 32 - 2);
  const small = new FrameDecoder(100);
  assert.throws(
    () => small.decodeHead(windowOf(new Uint8Array([0x80, 0, 0, 0]))),
    (error: unknown) => error instanceof FrameTooLargeError && error.length === 2 ** 31,
  );
});

Deno.test("FrameDecoder.maxFrameBytes may be raised between frames", () => {
  const bytes = new Uint8Array([...frame(pattern(8)), ...frame(pattern(100, 1))]);
  const decoder = new FrameDecoder(64);
  assert.equal(decoder.maxFrameBytes, 64);
  const w = windowOf(bytes);
  assert.deepStrictEqual(decoder.decode(w), pattern(8));
  assert.throws(() => decoder.decode(w), FrameTooLargeError);
  assert.equal(w.start, HEADER_BYTES + 8, "the refused header stays in the window");
  decoder.maxFrameBytes = 100;
  assert.equal(decoder.maxFrameBytes, 100);
  assert.deepStrictEqual(decoder.decode(w), pattern(100, 1));
  assert.throws(() => decoder.maxFrameBytes = -1, RangeError);
  assert.throws(() => decoder.maxFrameBytes = 2 ** 32, RangeError);
  assert.equal(decoder.maxFrameBytes, 100, "an invalid value changes nothing");
});

Deno.test("FrameDecoder() validates maxFrameBytes and defaults to 512 MiB", () => {
  assert.equal(new FrameDecoder().maxFrameBytes, DEFAULT_MAX_FRAME_BYTES);
  assert.equal(new FrameDecoder(0).maxFrameBytes, 0);
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 32]) {
    assert.throws(() => new FrameDecoder(bad), RangeError, String(bad));
  }
});

Deno.test("FrameDecoder.decodeEof() accepts the end of the stream between frames", () => {
  const decoder = new FrameDecoder();
  const bytes = frame(pattern(3));
  decoder.decodeEof(windowOf(bytes, 0)); // nothing received at all
  const w = windowOf(bytes);
  assert.deepStrictEqual(decoder.decode(w), pattern(3));
  decoder.decodeEof(w);
  decoder.decodeEof({ buf: new Uint8Array(0), start: 0, end: 0 });
});

Deno.test("FrameDecoder.decodeEof() throws TruncatedFrameError inside a header", () => {
  const decoder = new FrameDecoder();
  decoder.clientId = 3;
  const w = windowOf(new Uint8Array([0, 0, 0, 10]), 2);
  assert.equal(decoder.decode(w), undefined);
  assert.throws(() => decoder.decodeEof(w), (error: unknown) => {
    assert.ok(error instanceof TruncatedFrameError);
    assert.equal(error.message, "Truncated frame: expected 4 header bytes, received 2");
    assert.deepStrictEqual([error.expected, error.received, error.inHeader], [4, 2, true]);
    assert.equal(error.clientId, 3);
    return true;
  });
});

Deno.test("FrameDecoder.decodeEof() throws TruncatedFrameError inside a body", () => {
  const decoder = new FrameDecoder();
  decoder.clientId = 4;
  const w = windowOf(frame(pattern(10)), HEADER_BYTES + 3);
  assert.equal(decoder.decode(w), undefined);
  assert.throws(() => decoder.decodeEof(w), (error: unknown) => {
    assert.ok(error instanceof TruncatedFrameError);
    assert.equal(error.message, "Truncated frame: expected 10 bytes, received 3");
    assert.deepStrictEqual([error.expected, error.received, error.inHeader], [10, 3, false]);
    assert.equal(error.clientId, 4);
    return true;
  });
  // A header announcing a body with no body byte at all.
  const empty = new FrameDecoder();
  const w2 = windowOf(frame(pattern(10)), HEADER_BYTES);
  assert.equal(empty.decode(w2), undefined);
  assertThrowsExactly(
    () => empty.decodeEof(w2),
    TruncatedFrameError,
    "Truncated frame: expected 10 bytes, received 0",
  );
});

// ---------------------------------------------------------------------------
// encodeHead, checkFrameLength, checkMaxFrameBytes

Deno.test("encodeHead() writes a big-endian length that decodeHead() reads back", () => {
  for (const length of [0, 1, 255, 256, 65_535, 65_536, 0x01020304, 2 ** 31, 2 ** 32 - 1]) {
    const head = new Uint8Array(HEADER_BYTES);
    encodeHead(head, length);
    assert.equal(new DataView(head.buffer).getUint32(0), length, `length ${length}`);
    const decoder = new FrameDecoder(MAX_FRAME_BYTES_LIMIT);
    const w = windowOf(head);
    assert.equal(decoder.decodeHead(w), length, `length ${length}`);
    assert.equal(w.start, HEADER_BYTES);
  }
  const head = new Uint8Array(HEADER_BYTES);
  encodeHead(head, 2 ** 32 - 1);
  assert.deepStrictEqual(head, new Uint8Array([0xff, 0xff, 0xff, 0xff]));
  encodeHead(head, 0x01020304);
  assert.deepStrictEqual(head, new Uint8Array([1, 2, 3, 4]));
});

Deno.test("encodeHead() writes only the first 4 bytes of its target", () => {
  const target = new Uint8Array([9, 9, 9, 9, 9, 9]);
  encodeHead(target, 5);
  assert.deepStrictEqual(target, new Uint8Array([0, 0, 0, 5, 9, 9]));
});

Deno.test("checkFrameLength() throws FrameTooLargeError only over the limit", () => {
  checkFrameLength(0, 0);
  checkFrameLength(10, 10);
  assert.throws(() => checkFrameLength(11, 10, 2), (error: unknown) => {
    assert.ok(error instanceof FrameTooLargeError);
    assert.ok(error instanceof RangeError);
    assert.equal(error.clientId, 2);
    assert.equal(error.length, 11);
    assert.equal(error.limit, 10);
    return true;
  });
  assert.throws(
    () => checkFrameLength(1, 0),
    (error: unknown) => error instanceof FrameTooLargeError && error.clientId === undefined,
  );
});

Deno.test("checkMaxFrameBytes() accepts integers from 0 to 2³²−1 and rejects the rest", () => {
  assert.equal(checkMaxFrameBytes(undefined), DEFAULT_MAX_FRAME_BYTES);
  assert.equal(DEFAULT_MAX_FRAME_BYTES, 512 * 1024 * 1024);
  assert.equal(checkMaxFrameBytes(0), 0);
  assert.equal(checkMaxFrameBytes(1), 1);
  assert.equal(checkMaxFrameBytes(MAX_FRAME_BYTES_LIMIT), 2 ** 32 - 1);
  for (const bad of [-1, 2 ** 32, 1.5, NaN, Infinity, -Infinity]) {
    assertThrowsExactly(
      () => checkMaxFrameBytes(bad),
      RangeError,
      `Invalid maxFrameBytes: "${bad}" is not an integer from 0 to 4294967295`,
    );
  }
  assert.throws(() => checkMaxFrameBytes("10" as unknown as number), RangeError);
});
