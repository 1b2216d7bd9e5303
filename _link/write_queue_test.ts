/**
 * Unit tests of `write_queue.ts`: writing (coalescing, chunks from the
 * caller's memory, partial writes), progress and the idle callback. Marks,
 * flush and failure are in `write_queue_marks_test.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { FakeWriter, head, newQueue } from "../tests/fake_writer.ts";
import { frame, KiB, MiB, pattern, tick } from "../tests/fake_conn.ts";
import { concat, delay } from "../tests/test_util.ts";

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

Deno.test("WriteQueue.push() writes a stable one-chunk frame from place when nothing waits, and batches it otherwise", async () => {
  const writer = new FakeWriter();
  const queue = newQueue(writer);
  const shared = frame(pattern(1000, 3)); // a broadcast's one encoding
  queue.push([shared], undefined, true);
  assert.equal(writer.calls[0].buffer, shared.buffer, "no copy: the frame itself");
  await queue.flush();
  writer.pause();
  const copied = frame(pattern(1000, 4));
  queue.push([copied]); // not stable: copied into a batch
  queue.push([shared], undefined, true); // stable, but a write is under way: batched
  writer.resume();
  await queue.flush();
  assert.notEqual(writer.calls[1].buffer, copied.buffer);
  assert.equal(writer.calls.length, 3);
  assert.notEqual(writer.calls[2].buffer, shared.buffer, "queued behind a write: copied");
  assert.deepStrictEqual(writer.bytes, concat([shared, copied, shared]));
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

Deno.test("WriteQueue.push() copies a small frame queued alone into a slab shared by every queue", async () => {
  const writers = [new FakeWriter(), new FakeWriter(), new FakeWriter()];
  const queues = writers.map((w) => newQueue(w));
  const frames = [1, 2, 3].map((salt) => frame(pattern(8, salt)));
  queues.forEach((queue, i) => queue.push([frames[i]]));
  await Promise.all(queues.map((queue) => queue.flush()));
  const calls = writers.map((w) => w.calls[0]);
  // Three tiny frames: a slab that fills up can part them once at most.
  assert.ok(new Set(calls.map((c) => c.buffer)).size <= 2, "one slab, no batch per queue");
  for (const call of calls) assert.equal(call.buffer.byteLength, 16 * KiB);
  for (let i = 1; i < 3; i++) {
    if (calls[i].buffer !== calls[i - 1].buffer) continue;
    assert.ok(calls[i].byteOffset >= calls[i - 1].byteOffset + frames[i - 1].byteLength);
  }
  assert.deepStrictEqual(writers.map((w) => w.bytes), frames, "exactly each frame");
});

/** Pushes `first` (written at once) and then `behind` while the writer is paused; returns the buffer `behind` went out in. */
async function behindAWrite(
  queue: ReturnType<typeof newQueue>,
  writer: FakeWriter,
  behind: Uint8Array,
): Promise<ArrayBufferLike> {
  writer.pause();
  queue.push([frame(pattern(4))]);
  queue.push([behind]);
  writer.resume();
  await queue.flush();
  return writer.calls.at(-1)!.buffer;
}

Deno.test("WriteQueue() hands small written batches to the next queue that needs one", async () => {
  const [w1, w2] = [new FakeWriter(), new FakeWriter()];
  const [q1, q2] = [newQueue(w1), newQueue(w2)];
  const first = await behindAWrite(q1, w1, frame(pattern(8)));
  assert.equal(first.byteLength, 4 * KiB, "a small batch");
  assert.equal(
    await behindAWrite(q2, w2, frame(pattern(8))),
    first,
    "the first queue kept none of it",
  );
});

Deno.test("WriteQueue() keeps a full-size batch while traffic goes on and gives it back when idle", async () => {
  const writer = new FakeWriter();
  let ping: (() => void) | undefined;
  const queue = newQueue(writer, { idleMs: 30, onIdle: () => ping?.() });
  const write = () => behindAWrite(queue, writer, frame(pattern(8)));
  writer.pause();
  for (let i = 0; i < 100; i++) queue.push([frame(pattern(100))]); // fills batches: heavy traffic
  writer.resume();
  await queue.flush();
  const busy = await write();
  assert.equal(busy.byteLength, 16 * KiB);
  assert.equal(await write(), busy, "the spare batch is reused");
  let idled = false;
  ping = () => {
    ping = undefined;
    idled = true;
  };
  while (!idled) await delay(10); // the idle clock's timer does not hold the loop
  assert.notEqual(await write(), busy, "idle: the spare batch was given back");
  queue.stopTimer();
});
