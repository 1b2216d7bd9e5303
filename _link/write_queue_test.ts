import assert from "node:assert/strict";
import { WriteQueue, type Writer } from "./write_queue.ts";
import { concat } from "../tests/test_util.ts";

// ---------------------------------------------------------------------------
// Helpers

/** One `write(p)` call as the fake writer saw it. */
interface Call {
  /** A copy of `p`, taken when the call was made. */
  bytes: Uint8Array;
  /** `p.buffer`, to tell a copy from the caller's memory. */
  buffer: ArrayBufferLike;
  /** `p.byteOffset`. */
  byteOffset: number;
}

/**
 * A socket's write side: records every call, can take only part of a buffer
 * per call, can be paused (calls wait until released) and can fail.
 */
class FakeWriter implements Writer {
  readonly calls: Call[] = [];
  /** The bytes taken by each call, in order. */
  readonly taken: Uint8Array[] = [];
  /** The most bytes one call takes. */
  maxPerCall = Infinity;
  /** Calls under way now, and the most ever at once. */
  inFlight = 0;
  maxInFlight = 0;
  #paused = false;
  #waiting: (() => void)[] = [];
  #failure: unknown;

  async write(p: Uint8Array): Promise<number> {
    this.calls.push({ bytes: p.slice(), buffer: p.buffer, byteOffset: p.byteOffset });
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      if (this.#paused) await new Promise<void>((resolve) => this.#waiting.push(resolve));
      if (this.#failure !== undefined) throw this.#failure;
      const n = Math.min(p.byteLength, this.maxPerCall);
      this.taken.push(p.slice(0, n));
      return n;
    } finally {
      this.inFlight--;
    }
  }

  /** Makes later calls wait until released. */
  pause(): void {
    this.#paused = true;
  }

  /** Calls waiting to be released. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Lets the oldest waiting call finish; later calls still wait. */
  release(): void {
    this.#waiting.shift()?.();
  }

  /** Lets every call finish at once from now on. */
  resume(): void {
    this.#paused = false;
    for (const wake of this.#waiting.splice(0)) wake();
  }

  /** Makes the waiting call and every later one reject with `error`. */
  fail(error: unknown): void {
    this.#failure = error;
    this.resume();
  }

  /** Every byte taken, in order. */
  get bytes(): Uint8Array {
    return concat(this.taken);
  }

  /** How many bytes were taken. */
  get bytesTaken(): number {
    return this.taken.reduce((n, t) => n + t.byteLength, 0);
  }
}

/** The error a queue makes of a writer's failure. */
class DescribedError extends Error {
  constructor(cause: unknown) {
    super("Peer disconnected", { cause });
    this.name = "DescribedError";
  }
}

function newQueue(writer: Writer, options?: { idleMs?: number; onIdle?: () => void }) {
  return new WriteQueue(writer, {
    describeError: (cause) => new DescribedError(cause),
    ...options,
  });
}

/** One frame: the 4-byte big-endian length, then the body. */
function frame(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + body.byteLength);
  new DataView(out.buffer).setUint32(0, body.byteLength);
  out.set(body, 4);
  return out;
}

/** A frame header alone. */
function head(length: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, length);
  return out;
}

/** Bytes 0, 1, 2, … (mod 251) so that misplaced bytes show. */
function pattern(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (i + seed) % 251;
  return out;
}

/** Lets every pending promise callback run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Whether a promise has settled after a turn of the event loop. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await tick();
  return done;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const KiB = 1024;
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// Writing

Deno.test("WriteQueue.push() starts the first write at once", async () => {
  const writer = new FakeWriter();
  const queue = newQueue(writer);
  const bytes = frame(pattern(10));
  const mark = queue.push([bytes]);
  assert.equal(writer.calls.length, 1, "written synchronously, not after a microtask");
  assert.deepStrictEqual(writer.calls[0].bytes, bytes);
  assert.equal(mark, bytes.byteLength);
  await queue.flush();
  assert.equal(queue.bytesSent, bytes.byteLength);
});

Deno.test("WriteQueue.push() coalesces small frames queued during a write into few writes", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  const frames: Uint8Array[] = [];
  for (let i = 0; i < 1000; i++) {
    const body = pattern(1 + (i * 7) % 40, i);
    frames.push(frame(body));
    // Header and body as separate chunks, as the encoder hands them over.
    queue.push([head(body.byteLength), body]);
  }
  const total = frames.reduce((n, f) => n + f.byteLength, 0);
  assert.equal(writer.calls.length, 1, "one write under way, the rest queued");
  assert.equal(writer.calls[0].bytes.byteLength, frames[0].byteLength);
  writer.resume();
  await queue.flush();
  assert.deepStrictEqual(writer.bytes, concat(frames), "byte-exact and in order");
  assert.ok(total > 20 * KiB, `${total} bytes`);
  // 4 KiB for the first batch, then batches of 16 KiB.
  assert.ok(writer.calls.length <= 5, `${writer.calls.length} writes for 1000 frames`);
  assert.equal(writer.maxInFlight, 1, "one write at a time");
  assert.equal(queue.bytesSent, total);
});

Deno.test("WriteQueue.push() keeps frames in order across small, medium and large chunks", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  const bodies = [
    pattern(3, 1),
    pattern(10 * KiB, 2), // copied on its own
    pattern(5, 3),
    pattern(100 * KiB, 4), // written from place
    pattern(7, 5),
    pattern(9 * KiB, 6),
    pattern(64 * KiB, 7),
  ];
  for (const body of bodies) queue.push([head(body.byteLength), body]);
  writer.resume();
  await queue.flush();
  assert.deepStrictEqual(writer.bytes, concat(bodies.map(frame)));
  assert.equal(queue.bytesSent, concat(bodies.map(frame)).byteLength);
});

Deno.test("WriteQueue.push() writes a chunk of 64 KiB or more from the caller's memory", async () => {
  const writer = new FakeWriter();
  const queue = newQueue(writer);
  const body = pattern(100 * KiB, 9);
  queue.push([head(body.byteLength), body]);
  await queue.flush();
  assert.equal(writer.calls.length, 2);
  // The header and the head of the body go out together…
  const [first, second] = writer.calls;
  assert.deepStrictEqual(first.bytes.subarray(0, 4), head(body.byteLength));
  assert.notEqual(first.buffer, body.buffer);
  const headBytes = first.bytes.byteLength - 4;
  assert.ok(headBytes > 0);
  assert.deepStrictEqual(first.bytes.subarray(4), body.subarray(0, headBytes));
  // …and the rest is the caller's memory, not a copy.
  assert.equal(second.buffer, body.buffer);
  assert.equal(second.byteOffset, headBytes);
  assert.equal(second.bytes.byteLength, body.byteLength - headBytes);
  assert.deepStrictEqual(writer.bytes, frame(body));
});

Deno.test("WriteQueue.push() sends a header queued before a large chunk in the same write as its head", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  queue.push([frame(pattern(5))]); // under way
  const body = pattern(80 * KiB, 3);
  queue.push([head(body.byteLength)]); // queued alone…
  queue.push([body]); // …then the body, in another push
  writer.resume();
  await queue.flush();
  assert.equal(writer.calls.length, 3);
  const second = writer.calls[1];
  assert.deepStrictEqual(second.bytes.subarray(0, 4), head(body.byteLength));
  assert.ok(second.bytes.byteLength > 4, "the header does not go out alone");
  assert.deepStrictEqual(second.bytes.subarray(4), body.subarray(0, second.bytes.byteLength - 4));
  assert.equal(writer.calls[2].buffer, body.buffer);
  assert.deepStrictEqual(writer.bytes, concat([frame(pattern(5)), frame(body)]));
});

Deno.test("WriteQueue.push() copies chunks under 64 KiB at once", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  queue.push([frame(pattern(1))]); // under way
  const small = pattern(100, 1);
  const medium = pattern(20 * KiB, 2);
  queue.push([head(small.byteLength), small]);
  queue.push([head(medium.byteLength), medium]);
  small.fill(0);
  medium.fill(0); // the caller may reuse its memory at once
  writer.resume();
  await queue.flush();
  assert.deepStrictEqual(
    writer.bytes,
    concat([frame(pattern(1)), frame(pattern(100, 1)), frame(pattern(20 * KiB, 2))]),
  );
  for (const call of writer.calls) {
    assert.notEqual(call.buffer, small.buffer);
    assert.notEqual(call.buffer, medium.buffer);
  }
});

Deno.test("WriteQueue.push() retries partial writes until the chunk is whole", async () => {
  const writer = new FakeWriter();
  writer.maxPerCall = 1000;
  const queue = newQueue(writer);
  const frames = [frame(pattern(10)), frame(pattern(100 * KiB, 1)), frame(pattern(3 * KiB, 2))];
  let mark = 0;
  for (const f of frames) mark = queue.push([f]);
  await queue.written(mark);
  const total = concat(frames).byteLength;
  assert.deepStrictEqual(writer.bytes, concat(frames));
  assert.ok(writer.calls.length >= Math.ceil(total / 1000));
  for (const call of writer.taken) assert.ok(call.byteLength <= 1000);
  assert.equal(queue.bytesSent, total);
});

Deno.test("WriteQueue.bytesSent counts the bytes the writer has taken", async () => {
  const writer = new FakeWriter();
  writer.maxPerCall = 300;
  writer.pause();
  const queue = newQueue(writer);
  queue.push([frame(pattern(996))]); // 1000 bytes
  assert.equal(queue.bytesSent, 0);
  for (let i = 1; i <= 3; i++) {
    while (writer.waiting === 0) await tick();
    writer.release();
    await tick();
    assert.equal(queue.bytesSent, 300 * i);
    assert.equal(queue.bytesSent, writer.bytesTaken);
  }
  writer.resume();
  await queue.flush();
  assert.equal(queue.bytesSent, 1000);
  assert.equal(writer.bytesTaken, 1000);
});

// ---------------------------------------------------------------------------
// Marks, backpressure, flush

Deno.test("WriteQueue.written() resolves only once the writer has taken everything up to the mark", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  const first = queue.push([frame(pattern(10))]);
  const second = queue.push([frame(pattern(20))]);
  assert.equal(first, 14);
  assert.equal(second, 38);
  const firstWritten = queue.written(first);
  const secondWritten = queue.written(second);
  assert.equal(await settled(firstWritten), false);
  assert.equal(await settled(secondWritten), false);
  writer.release(); // the first frame
  assert.equal(await settled(firstWritten), true);
  assert.equal(await settled(secondWritten), false);
  writer.release(); // the second
  assert.equal(await settled(secondWritten), true);
  await queue.written(first); // already written: resolves at once
  await queue.written(0);
  await queue.flush();
});

Deno.test({
  name: "WriteQueue.written() resolves an earlier mark asked for after a later one",
  // Regression (fixed): _write_queue.ts written() (line 174) appends marks in call order and #writeChunk
  // (lines 245-247) resolves them from the front only while `until <= #written`, so a mark
  // asked for after a larger one waits until the larger one is written too. Expected: it
  // resolves as soon as its own bytes are taken (keep #marks sorted by `until`, or scan all).

  async fn() {
    const writer = new FakeWriter();
    writer.pause();
    const queue = newQueue(writer);
    const first = queue.push([frame(pattern(10))]);
    const second = queue.push([frame(pattern(20))]);
    const secondWritten = queue.written(second);
    const firstWritten = queue.written(first);
    writer.release(); // the first frame only
    const firstDone = await settled(firstWritten);
    writer.resume();
    await Promise.all([firstWritten, secondWritten]);
    assert.equal(firstDone, true, "the first frame was taken, its mark must resolve");
  },
});

Deno.test("WriteQueue.written() waits for a partially written chunk to be whole", async () => {
  const writer = new FakeWriter();
  writer.maxPerCall = 10;
  writer.pause();
  const queue = newQueue(writer);
  const mark = queue.push([frame(pattern(21))]); // 25 bytes: three calls
  const written = queue.written(mark);
  writer.release();
  assert.equal(await settled(written), false);
  while (writer.waiting === 0) await tick();
  writer.release();
  assert.equal(await settled(written), false);
  while (writer.waiting === 0) await tick();
  writer.release();
  assert.equal(await settled(written), true);
  assert.equal(writer.bytesTaken, 25);
});

Deno.test("WriteQueue.congested turns true above 1 MiB unwritten and false once written", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  assert.equal(queue.congested, false);
  const big = new Uint8Array(MiB);
  queue.push([big]); // under way, exactly 1 MiB unwritten
  assert.equal(queue.congested, false, "exactly 1 MiB is not over");
  const mark = queue.push([new Uint8Array(1)]);
  assert.equal(queue.congested, true);
  writer.release(); // the 1 MiB chunk
  await tick();
  assert.equal(queue.congested, false, "1 byte unwritten");
  writer.resume();
  await queue.written(mark);
  assert.equal(queue.congested, false);
  assert.equal(queue.bytesSent, MiB + 1);
});

Deno.test("WriteQueue.flush() waits until everything queued is written", async () => {
  const writer = new FakeWriter();
  await newQueue(writer).flush(); // nothing queued: resolves at once
  writer.pause();
  const queue = newQueue(writer);
  const frames = [frame(pattern(5)), frame(pattern(70 * KiB, 1)), frame(pattern(6, 2))];
  for (const f of frames) queue.push([f]);
  const flushed = queue.flush();
  assert.equal(await settled(flushed), false);
  writer.release();
  assert.equal(await settled(flushed), false);
  writer.resume();
  await flushed;
  assert.deepStrictEqual(writer.bytes, concat(frames));
});

// ---------------------------------------------------------------------------
// Failure

Deno.test("WriteQueue.push() throws the described error after the writer failed", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  const first = queue.push([frame(pattern(5))]);
  const second = queue.push([frame(pattern(6))]);
  const firstWritten = queue.written(first);
  const secondWritten = queue.written(second);
  const cause = new Deno.errors.BrokenPipe("Broken pipe (os error 32)");
  writer.fail(cause);
  const isDescribed = (error: unknown) => {
    assert.ok(error instanceof DescribedError);
    assert.equal(error.cause, cause);
    return true;
  };
  await assert.rejects(firstWritten, isDescribed);
  await assert.rejects(secondWritten, isDescribed);
  assert.ok(queue.error instanceof DescribedError);
  const error = queue.error;
  assert.throws(() => queue.push([frame(pattern(1))]), (e: unknown) => e === error);
  await assert.rejects(queue.written(second), (e: unknown) => e === error);
  await assert.rejects(queue.flush(), (e: unknown) => e === error);
  assert.equal(writer.calls.length, 1, "nothing more is written after the failure");
});

Deno.test("WriteQueue.fail() rejects waiting marks and later pushes", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  const mark = queue.push([frame(pattern(5))]);
  const written = queue.written(mark);
  const reason = new Error("Connection closed");
  queue.fail(reason);
  await assert.rejects(written, (e: unknown) => e === reason);
  assert.equal(queue.error, reason);
  assert.throws(() => queue.push([frame(pattern(1))]), (e: unknown) => e === reason);
  await assert.rejects(queue.written(mark + 1), (e: unknown) => e === reason);
  queue.fail(new Error("another")); // the first reason stays
  assert.equal(queue.error, reason);
  writer.resume();
  await assert.rejects(queue.flush(), (e: unknown) => e === reason);
});

Deno.test("WriteQueue.fail() drops frames not yet handed to the writer", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  queue.push([frame(pattern(5))]); // under way
  queue.push([frame(pattern(6))]);
  queue.push([frame(pattern(100 * KiB))]);
  queue.fail(new Error("Connection closed"));
  writer.resume();
  await assert.rejects(queue.flush());
  assert.equal(writer.calls.length, 1);
  assert.deepStrictEqual(writer.bytes, frame(pattern(5)));
});

Deno.test({
  name: "WriteQueue.fail() writes nothing more once the write under way returns",
  // Regression (fixed): _write_queue.ts #pump (lines 219-224) takes the whole pending list into a local
  // `chunks` and writes all of it without checking #error between chunks, so fail() while
  // one of them is under way still writes the others afterwards, including a large chunk
  // written from the caller's memory whose written(mark) fail() has already rejected (the
  // caller may be reusing that memory by then). Expected: the loop stops after the chunk
  // under way (`if (this.#error !== undefined) break;`).

  async fn() {
    const writer = new FakeWriter();
    writer.pause();
    const queue = newQueue(writer);
    queue.push([frame(pattern(5))]); // write 1, under way
    const body = pattern(100 * KiB, 1);
    const mark = queue.push([head(body.byteLength), body]); // a batch and the body, from place
    const written = queue.written(mark);
    writer.release(); // write 1 done: the pump takes the batch and the body
    while (writer.calls.length < 2) await tick();
    const reason = new Error("Connection closed");
    queue.fail(reason);
    await assert.rejects(written, (e: unknown) => e === reason);
    body.fill(0); // the caller takes its memory back
    writer.resume();
    await assert.rejects(queue.flush(), (e: unknown) => e === reason);
    assert.equal(writer.calls.length, 2, "the body is not written after fail()");
  },
});

// ---------------------------------------------------------------------------
// Progress

Deno.test("WriteQueue.push() reports progress of a 10 MiB frame up to exactly its total", async () => {
  const writer = new FakeWriter();
  const queue = newQueue(writer);
  const body = new Uint8Array(10 * MiB);
  const reports: [number, number][] = [];
  const mark = queue.push([head(body.byteLength), body], (done, total) => {
    reports.push([done, total]);
  });
  await queue.written(mark);
  const total = 10 * MiB + 4;
  assert.ok(reports.length >= 3, `${reports.length} reports`);
  for (const [, t] of reports) assert.equal(t, total);
  for (let i = 1; i < reports.length; i++) {
    assert.ok(reports[i][0] > reports[i - 1][0], `report ${i}: ${reports[i][0]}`);
  }
  assert.deepStrictEqual(reports.at(-1), [total, total]);
  for (const call of writer.calls) {
    assert.ok(call.bytes.byteLength <= 4 * MiB, "written in slices of 4 MiB at most");
  }
  assert.equal(queue.bytesSent, total);
});

Deno.test("WriteQueue.push() reports progress of each frame in its own numbering", async () => {
  const writer = new FakeWriter();
  writer.pause();
  const queue = newQueue(writer);
  const a: [number, number][] = [];
  const b: [number, number][] = [];
  queue.push([frame(pattern(100))]); // untracked, under way
  queue.push([frame(pattern(200 * KiB))], (done, total) => a.push([done, total]));
  queue.push([frame(pattern(50))], (done, total) => b.push([done, total]));
  writer.resume();
  await queue.flush();
  const aTotal = 200 * KiB + 4;
  assert.deepStrictEqual(a.at(-1), [aTotal, aTotal]);
  for (const [done] of a) assert.ok(done > 0 && done <= aTotal);
  assert.deepStrictEqual(b, [[54, 54]]);
});

// ---------------------------------------------------------------------------
// Idle callback

Deno.test("WriteQueue() calls onIdle when nothing was written for idleMs", async () => {
  const writer = new FakeWriter();
  let idle = 0;
  const queue = newQueue(writer, { idleMs: 20, onIdle: () => idle++ });
  await delay(100);
  assert.ok(idle >= 1, `${idle} idle calls`);
  queue.stopTimer();
  const after = idle;
  await delay(50);
  assert.equal(idle, after, "stopTimer() stops it");
  queue.push([frame(pattern(1))]); // queued frames still go out
  await queue.flush();
  assert.equal(writer.calls.length, 1);
});

Deno.test("WriteQueue() does not call onIdle while a write is under way", async () => {
  const writer = new FakeWriter();
  writer.pause();
  let idle = 0;
  const queue = newQueue(writer, { idleMs: 20, onIdle: () => idle++ });
  queue.push([frame(pattern(1))]);
  await delay(80);
  assert.equal(idle, 0);
  writer.resume();
  await queue.flush();
  queue.fail(new Error("done")); // also stops the timer
  const after = idle;
  await delay(50);
  assert.equal(idle, after);
});

Deno.test("WriteQueue() does not call onIdle while writes keep going", async () => {
  const writer = new FakeWriter();
  let idle = 0;
  const queue = newQueue(writer, { idleMs: 40, onIdle: () => idle++ });
  for (let i = 0; i < 10; i++) {
    queue.push([frame(pattern(1))]);
    await delay(5);
  }
  assert.equal(idle, 0);
  assert.ok(queue.idleFor < 40);
  queue.stopTimer();
  await queue.flush();
});
