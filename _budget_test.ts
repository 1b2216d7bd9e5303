import assert from "node:assert/strict";
import { ByteBudget, Meter, STEP_BYTES } from "./_budget.ts";

/** Whether a promise has settled after a turn of the event loop. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("FrameBudget.reserve() grants at once while steps fit", async () => {
  const budget = new ByteBudget(100);
  const a = budget.begin();
  const b = budget.begin();
  assert.equal(await a.reserve(60), true);
  assert.equal(await b.reserve(40), true);
  assert.equal(budget.used, 100);
  assert.equal(a.end().bytes, 60, "the steps add up to the frame's reservation");
});

Deno.test("FrameBudget.reserve() lets the oldest frame go over while only frames in progress hold the budget", async () => {
  const budget = new ByteBudget(100);
  const old = budget.begin();
  const young = budget.begin();
  assert.equal(await old.reserve(80), true);
  assert.equal(await young.reserve(20), true);
  // Over the limit: the oldest frame goes on (waiting could only deadlock)...
  assert.equal(await old.reserve(50), true);
  assert.equal(budget.used, 150);
  // ...and a younger one waits.
  const waiting = young.reserve(10);
  assert.equal(await settled(waiting), false, "a younger frame waits while over the limit");
  old.end().release();
  assert.equal(await waiting, true);
  assert.equal(budget.used, 30);
});

Deno.test("FrameBudget.reserve() makes even the oldest frame wait while a received message holds the budget", async () => {
  const budget = new ByteBudget(10);
  const received = budget.begin();
  await received.reserve(10);
  const message = received.end(); // a whole message, waiting to be taken
  const next = budget.begin();
  const waiting = next.reserve(5);
  assert.equal(await settled(waiting), false, "taking the message frees room: wait for it");
  message.release();
  assert.equal(await waiting, true);
  assert.equal(budget.used, 5);
});

Deno.test("FrameBudget.reserve() resolves false when cancelled, without reserving", async () => {
  const budget = new ByteBudget(10);
  budget.begin(); // an older frame, so the next one cannot go over the limit
  const held = budget.force(10);
  const frame = budget.begin();
  const controller = new AbortController();
  const waiting = frame.reserve(5, controller.signal);
  controller.abort();
  assert.equal(await waiting, false);
  held.release();
  assert.equal(budget.used, 0, "the cancelled step was dropped from the queue");
});

Deno.test("ByteBudget.force() reserves over the limit", () => {
  const budget = new ByteBudget(10);
  const a = budget.force(10);
  const forced = budget.force(5);
  assert.equal(budget.used, 15);
  forced.release();
  assert.equal(budget.used, 10);
  a.release();
});

Deno.test("Reservation.release() returns its bytes once, also through dispose", () => {
  const budget = new ByteBudget(10);
  {
    using reservation = budget.force(4);
    reservation.release();
    assert.equal(budget.used, 0);
    assert.equal(reservation.bytes, 0);
  }
  assert.equal(budget.used, 0, "dispose after release returns nothing more");
});

Deno.test("Meter.allowance() reserves a stalled frame's first step only, so others go on", async () => {
  const budget = new ByteBudget(2 * STEP_BYTES);
  const staller = new Meter();
  staller.budget = budget;
  // Announces 200 MiB and stalls: it holds one step, not the budget.
  assert.equal(await staller.allowance(0, 200 * 1024 * 1024, true), STEP_BYTES);
  assert.equal(budget.used, STEP_BYTES);
  const other = new Meter();
  other.budget = budget;
  assert.equal(
    await other.allowance(0, 1024 * 1024, true),
    1024 * 1024,
    "a 1 MiB upload fits beside it",
  );
  const reservation = other.complete()!;
  assert.equal(reservation.bytes, 1024 * 1024);
  reservation.release();
  staller.abort();
  assert.equal(budget.used, 0);
});

Deno.test("Meter.allowance() grows the reservation step by step to the whole body", async () => {
  const budget = new ByteBudget(100 * STEP_BYTES);
  const meter = new Meter();
  meter.budget = budget;
  const total = 2 * STEP_BYTES + 5;
  let allowed = await meter.allowance(0, total, true);
  assert.equal(allowed, STEP_BYTES);
  allowed = await meter.allowance(allowed, total, false);
  assert.equal(allowed, 2 * STEP_BYTES);
  allowed = await meter.allowance(allowed, total, false);
  assert.equal(allowed, total);
  assert.equal(meter.complete()!.bytes, total);
  assert.equal(budget.used, total);
});

Deno.test("Meter.allowance() reads without the budget when unmetered, also mid-wait", async () => {
  const budget = new ByteBudget(STEP_BYTES);
  budget.begin(); // an older frame in progress
  const held = budget.force(STEP_BYTES);
  const meter = new Meter();
  meter.budget = budget;
  const waiting = meter.allowance(0, 3 * STEP_BYTES, true);
  assert.equal(await settled(waiting), false);
  meter.metered = false;
  assert.equal(await waiting, 3 * STEP_BYTES, "unmetering ends the wait");
  assert.equal(meter.complete(), undefined);
  assert.equal(await meter.allowance(0, 10 * STEP_BYTES, true), 10 * STEP_BYTES);
  held.release();
  assert.equal(budget.used, 0);
});

Deno.test("ByteBudget() rejects a limit that is not a positive integer", () => {
  for (const limit of [0, -1, 1.5, NaN]) {
    assert.throws(() => new ByteBudget(limit), RangeError);
  }
});
