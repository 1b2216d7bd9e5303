import assert from "node:assert/strict";
import { ByteBudget } from "./budget.ts";
import { Inbox } from "./inbox.ts";
import { NO_DEADLINE, startDeadline, type TimeoutDetail } from "../_util/wait.ts";
import { PeerDisconnectedError, TimeoutError } from "../errors.ts";

// ---------------------------------------------------------------------------
// Helpers

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

/** Takes every waiting value. */
function takeAll(inbox: Inbox): unknown[] {
  const values = [];
  for (let a = inbox.take(); a !== undefined; a = inbox.take()) values.push(a.value);
  return values;
}

const gone = () => new PeerDisconnectedError("Peer disconnected");

// ---------------------------------------------------------------------------
// push, peek, take, putBack

Deno.test("Inbox.take() returns messages in the order they were pushed", () => {
  const inbox = new Inbox();
  assert.equal(inbox.size, 0);
  inbox.push("a", 1);
  inbox.push({ b: 2 }, 4);
  inbox.push([3], 2);
  assert.equal(inbox.size, 3);
  const a = inbox.take()!;
  const b = inbox.take()!;
  const c = inbox.take()!;
  assert.deepStrictEqual([a.value, b.value, c.value], ["a", { b: 2 }, [3]]);
  assert.deepStrictEqual([a.bytes, b.bytes, c.bytes], [1, 4, 2]);
  assert.ok(a.seq < b.seq && b.seq < c.seq, "seq increases in order of arrival");
  assert.equal(a.reserved, 0);
  assert.equal(a.reservation, undefined);
  assert.equal(inbox.size, 0);
});

Deno.test("Inbox.push() numbers arrivals across inboxes in order", () => {
  const one = new Inbox();
  const two = new Inbox();
  one.push(1, 1);
  two.push(2, 1);
  one.push(3, 1);
  const [a, b, c] = [one.take()!, two.take()!, one.take()!];
  assert.ok(a.seq < b.seq && b.seq < c.seq);
});

Deno.test("Inbox.take() returns undefined when nothing waits", () => {
  const inbox = new Inbox();
  assert.equal(inbox.take(), undefined);
  inbox.push(1, 1);
  inbox.take();
  assert.equal(inbox.take(), undefined);
  assert.equal(inbox.size, 0);
  inbox.end(gone());
  assert.equal(inbox.take(), undefined, "an ended inbox does not throw on take");
});

Deno.test("Inbox.peek() returns the next message without taking it", () => {
  const inbox = new Inbox();
  assert.equal(inbox.peek(), undefined);
  inbox.push("x", 1);
  inbox.push("y", 1);
  assert.equal(inbox.peek()?.value, "x");
  assert.equal(inbox.peek()?.value, "x");
  assert.equal(inbox.size, 2);
  assert.equal(inbox.take()?.value, "x");
  assert.equal(inbox.peek()?.value, "y");
  inbox.take();
  assert.equal(inbox.peek(), undefined);
});

Deno.test("Inbox.take() releases the message's reservation", () => {
  const budget = new ByteBudget(1000);
  const inbox = new Inbox();
  inbox.push("big", 600, budget.force(600));
  inbox.push("small", 10);
  assert.equal(budget.used, 600);
  const peeked = inbox.peek()!;
  assert.equal(peeked.reserved, 600);
  assert.equal(peeked.reservation?.bytes, 600);
  assert.equal(budget.used, 600, "peek does not release");
  const big = inbox.take()!;
  assert.equal(budget.used, 0);
  assert.equal(big.reservation, undefined);
  assert.equal(big.reserved, 600, "what it held when it arrived stays recorded");
  inbox.take();
  assert.equal(budget.used, 0);
});

Deno.test("Inbox.putBack() restores a taken message at the front with its reservation", () => {
  const budget = new ByteBudget(1000);
  const inbox = new Inbox();
  inbox.push("a", 300, budget.force(300));
  inbox.push("b", 200, budget.force(200));
  const a = inbox.take()!;
  assert.equal(budget.used, 200);
  inbox.putBack(a, budget.force(a.reserved));
  assert.equal(budget.used, 500);
  assert.equal(inbox.size, 2);
  assert.equal(inbox.peek(), a);
  assert.equal(a.reservation?.bytes, 300);
  // Taking it again releases the new reservation.
  assert.equal(inbox.take(), a);
  assert.equal(budget.used, 200);
  assert.equal(inbox.take()?.value, "b");
  assert.equal(budget.used, 0);
});

Deno.test("Inbox.putBack() puts a message back into an empty inbox and counts its bytes", () => {
  const inbox = new Inbox({ maxBytes: 100 });
  inbox.push("only", 100);
  const only = inbox.take()!;
  assert.equal(inbox.full, false);
  inbox.putBack(only);
  assert.equal(inbox.size, 1);
  assert.equal(inbox.full, true, "its bytes count again");
  assert.equal(inbox.take(), only);
  assert.equal(inbox.take(), undefined);
  // Into a fresh inbox, where nothing was taken yet (the front is index 0).
  const fresh = new Inbox();
  fresh.push("second", 1);
  fresh.putBack(only);
  assert.deepStrictEqual(takeAll(fresh), ["only", "second"]);
});

Deno.test("Inbox.take() keeps the order across many messages", () => {
  const inbox = new Inbox();
  for (let i = 0; i < 3000; i++) inbox.push(i, 1);
  for (let i = 0; i < 2500; i++) assert.equal(inbox.take()?.value, i);
  const taken = inbox.take()!;
  inbox.putBack(taken);
  for (let i = 3000; i < 4000; i++) inbox.push(i, 1);
  assert.equal(inbox.size, 1500);
  const rest = takeAll(inbox);
  assert.deepStrictEqual(rest, Array.from({ length: 1500 }, (_, i) => 2500 + i));
});

// ---------------------------------------------------------------------------
// listen, end

Deno.test("Inbox.listen() throws Deno.errors.Busy for a second consumer", () => {
  const inbox = new Inbox();
  const stop = inbox.listen(() => {});
  assert.throws(
    () => inbox.listen(() => {}),
    (error: unknown) => {
      assert.ok(error instanceof Deno.errors.Busy);
      assert.equal(error.message, "Concurrent receive: this connection is already being read from");
      return true;
    },
  );
  stop();
  const again = inbox.listen(() => {});
  again();
});

Deno.test("Inbox.listen() returns a function that unregisters only its own listener", () => {
  const inbox = new Inbox();
  let first = 0;
  let second = 0;
  const stopFirst = inbox.listen(() => first++);
  inbox.push(1, 1);
  stopFirst();
  inbox.push(2, 1);
  assert.equal(first, 1, "not called once unregistered");
  const stopSecond = inbox.listen(() => second++);
  stopFirst(); // stale: must not remove the second listener
  inbox.push(3, 1);
  assert.equal(second, 1);
  assert.throws(() => inbox.listen(() => {}), Deno.errors.Busy);
  stopSecond();
});

Deno.test("Inbox.listen() calls the listener on every push and on the end", () => {
  const inbox = new Inbox();
  const events: string[] = [];
  const stop = inbox.listen(() =>
    events.push(`size ${inbox.size}, ended ${inbox.ended !== undefined}`)
  );
  inbox.push("a", 1);
  inbox.push("b", 1);
  inbox.take(); // taking is not an arrival
  inbox.end(gone());
  assert.deepStrictEqual(events, [
    "size 1, ended false",
    "size 2, ended false",
    "size 1, ended true",
  ]);
  stop();
});

Deno.test("Inbox.end() keeps the first reason", () => {
  const inbox = new Inbox();
  assert.equal(inbox.ended, undefined);
  const first = gone();
  inbox.end(first);
  inbox.end(new Error("second"));
  assert.equal(inbox.ended, first);
});

// ---------------------------------------------------------------------------
// next

Deno.test("Inbox.next() returns queued messages, then waits, then rejects with the end reason", async () => {
  const inbox = new Inbox();
  inbox.push("a", 1);
  inbox.push("b", 1);
  assert.equal(await inbox.next(NO_DEADLINE), "a");
  assert.equal(await inbox.next(NO_DEADLINE), "b");
  const waiting = inbox.next(NO_DEADLINE);
  assert.equal(await settled(waiting), false);
  inbox.push("c", 1);
  assert.equal(await waiting, "c");
  // Messages received before the end are still returned.
  inbox.push("d", 1);
  const reason = gone();
  inbox.end(reason);
  assert.equal(await inbox.next(NO_DEADLINE), "d");
  await assert.rejects(inbox.next(NO_DEADLINE), (e: unknown) => e === reason);
  // A waiting call is woken by the end.
  const other = new Inbox();
  const pending = other.next(NO_DEADLINE);
  assert.equal(await settled(pending), false);
  other.end(reason);
  await assert.rejects(pending, (e: unknown) => e === reason);
});

Deno.test("Inbox.next() rejects with a TimeoutError described by the deadline", async () => {
  const inbox = new Inbox();
  const describe = (): TimeoutDetail => ({
    what: "Receive",
    detail: 'waiting for client "3"',
    clientIds: [3],
  });
  {
    using deadline = startDeadline({ timeout: 20 }, describe);
    await assert.rejects(inbox.next(deadline), (error: unknown) => {
      assert.ok(error instanceof TimeoutError);
      assert.equal(error.message, 'Receive timed out after 20 ms: waiting for client "3"');
      assert.deepStrictEqual(error.clientIds, [3]);
      assert.equal(error.clientId, 3);
      return true;
    });
  }
  // The timed-out call no longer listens: another consumer may.
  const stop = inbox.listen(() => {});
  stop();
  // A message already waiting is returned even with a deadline.
  inbox.push("late", 1);
  using deadline = startDeadline({ timeout: 20 }, describe);
  assert.equal(await inbox.next(deadline), "late");
});

Deno.test("Inbox.next() rejects with the reason of an aborted signal", async () => {
  const inbox = new Inbox();
  const describe = (): TimeoutDetail => ({ what: "Receive", detail: "", clientIds: [] });
  const reason = new DOMException("stopped", "AbortError");
  {
    using deadline = startDeadline({ signal: AbortSignal.abort(reason) }, describe);
    await assert.rejects(inbox.next(deadline), (e: unknown) => e === reason);
  }
  // Aborted while waiting.
  const controller = new AbortController();
  {
    using deadline = startDeadline({ signal: controller.signal }, describe);
    const waiting = inbox.next(deadline);
    assert.equal(await settled(waiting), false);
    controller.abort(reason);
    await assert.rejects(waiting, (e: unknown) => e === reason);
  }
  // The aborted call unregistered: a later one gets the next message.
  inbox.push("after", 1);
  assert.equal(await inbox.next(NO_DEADLINE), "after");
});

Deno.test("Inbox.next() throws Deno.errors.Busy while another consumer waits", async () => {
  const inbox = new Inbox();
  const first = inbox.next(NO_DEADLINE);
  await assert.rejects(inbox.next(NO_DEADLINE), Deno.errors.Busy);
  inbox.push("one", 1);
  assert.equal(await first, "one");
});

// ---------------------------------------------------------------------------
// full, space

Deno.test("Inbox.full is true at the byte limit", () => {
  const inbox = new Inbox({ maxBytes: 100 });
  assert.equal(inbox.full, false);
  inbox.push("a", 60);
  assert.equal(inbox.full, false);
  inbox.push("b", 39);
  assert.equal(inbox.full, false, "99 bytes");
  inbox.push("c", 1);
  assert.equal(inbox.full, true, "100 bytes");
  inbox.take();
  assert.equal(inbox.full, false);
});

Deno.test("Inbox.full is true at the message limit", () => {
  const inbox = new Inbox({ maxMessages: 2 });
  inbox.push("a", 0);
  assert.equal(inbox.full, false);
  inbox.push("b", 0);
  assert.equal(inbox.full, true);
  inbox.take();
  assert.equal(inbox.full, false);
});

Deno.test("Inbox.full uses the defaults of 64 MiB and 65,536 messages", () => {
  const bytes = new Inbox();
  bytes.push("a", 64 * 1024 * 1024 - 1);
  assert.equal(bytes.full, false);
  bytes.push("b", 1);
  assert.equal(bytes.full, true);
  const messages = new Inbox();
  for (let i = 0; i < 65_535; i++) messages.push(i, 0);
  assert.equal(messages.full, false);
  messages.push("last", 0);
  assert.equal(messages.full, true);
});

Deno.test("Inbox.space() resolves when a take makes room", async () => {
  const inbox = new Inbox({ maxMessages: 2 });
  inbox.push("a", 1);
  inbox.push("b", 1);
  const calls: boolean[] = [];
  const space = inbox.space((full) => {
    calls.push(full);
    return full;
  });
  assert.equal(await settled(space), false);
  inbox.take();
  await space;
  assert.deepStrictEqual(calls.at(-1), false);
  assert.equal(calls[0], true);
});

Deno.test("Inbox.space() resolves at once when there is room", async () => {
  const inbox = new Inbox({ maxMessages: 2 });
  inbox.push("a", 1);
  assert.equal(await settled(inbox.space((full) => full)), true);
});

Deno.test("Inbox.space() resolves when the inbox ends", async () => {
  const inbox = new Inbox({ maxBytes: 10 });
  inbox.push("a", 10);
  const space = inbox.space((full) => full);
  assert.equal(await settled(space), false);
  inbox.end(gone());
  assert.equal(await settled(space), true);
  assert.equal(inbox.size, 1, "what was received stays");
  // Once ended it never waits.
  assert.equal(await settled(inbox.space(() => true)), true);
});

Deno.test("Inbox.wakeReader() makes space() check mustWait again", async () => {
  const inbox = new Inbox();
  let hold = true;
  const space = inbox.space(() => hold);
  assert.equal(await settled(space), false);
  inbox.wakeReader();
  assert.equal(await settled(space), false, "still told to wait");
  hold = false;
  inbox.wakeReader();
  assert.equal(await settled(space), true);
});
