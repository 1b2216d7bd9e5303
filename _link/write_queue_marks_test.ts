/**
 * Unit tests of `write_queue.ts`: marks (`written()`), backpressure
 * (`congested`), `flush()` and failure.
 *
 * @module
 */

import assert from "node:assert/strict";
import { DescribedError, FakeWriter, head, newQueue } from "../tests/fake_writer.ts";
import { frame, KiB, MiB, pattern, tick } from "../tests/fake_conn.ts";
import { concat, settled } from "../tests/test_util.ts";

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
  // Regression (fixed): _link/write_queue.ts written() appended marks in call order and
  // #writeChunk resolves them from the front only while `until <= #written`, so a mark
  // asked for after a larger one waited until the larger one was written too. Expected: it
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
  // Regression (fixed): _link/write_queue.ts #pump took the whole pending list into a local
  // `chunks` and wrote all of it without checking #error between chunks, so fail() while
  // one of them was under way still wrote the others afterwards, including a large chunk
  // written from the caller's memory whose written(mark) fail() had already rejected (the
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
