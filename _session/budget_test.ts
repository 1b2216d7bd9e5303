import assert from "node:assert/strict";
import { ByteBudget, Meter, Reservation } from "./budget.ts";

/** Whether a promise has settled after a turn of the event loop. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

Deno.test("ByteBudget.reserve() grants at once while reservations fit", async () => {
  const budget = new ByteBudget(100);
  assert.ok((await budget.reserve(60)) instanceof Reservation);
  assert.ok((await budget.reserve(40)) instanceof Reservation);
  assert.equal(budget.used, 100);
});

Deno.test("ByteBudget.reserve() waits for a release, first come first served", async () => {
  const budget = new ByteBudget(100);
  const held = (await budget.reserve(80))!;
  const order: string[] = [];
  const first = budget.reserve(50).then(() => order.push("first"));
  const second = budget.reserve(10).then(() => order.push("second"));
  assert.equal(await settled(first), false);
  assert.equal(budget.used, 80, "waiting reservations are not counted");
  held.release();
  await Promise.all([first, second]);
  assert.deepEqual(order, ["first", "second"]);
  assert.equal(budget.used, 60);
});

Deno.test("ByteBudget.reserve() admits one reservation larger than the limit when idle", async () => {
  const budget = new ByteBudget(100);
  const big = (await budget.reserve(500))!;
  const next = budget.reserve(1);
  assert.equal(await settled(next), false, "nothing else fits beside it");
  big.release();
  await next;
  assert.equal(budget.used, 1);
});

Deno.test("ByteBudget.reserve() gives up when cancelled, without reserving", async () => {
  const budget = new ByteBudget(10);
  const held = (await budget.reserve(10))!;
  const controller = new AbortController();
  const waiting = budget.reserve(5, undefined, controller.signal);
  controller.abort(new Error("closed"));
  assert.equal(await waiting, undefined);
  held.release();
  assert.equal(budget.used, 0, "the cancelled reservation was dropped from the queue");
});

Deno.test("ByteBudget.reserve() grants a client holding nothing its fair share, past a hostage", async () => {
  // 3 clients share 128 units: a fair share is 42.
  const budget = new ByteBudget(128, 3);
  const [hostage, a, b] = [{}, {}, {}];
  const stalled = (await budget.reserve(200, hostage))!; // admitted alone, then stalls
  const first = budget.reserve(10, a);
  assert.equal(await settled(first), true, "a holds nothing: its fair share goes past the hostage");
  const second = budget.reserve(10, a);
  assert.equal(await settled(second), false, "a now holds something: it waits its turn");
  assert.equal(await settled(budget.reserve(50, b)), false, "more than a fair share waits");
  assert.equal(budget.heldBy(a), 10);
  stalled.release();
  assert.equal(await settled(second), true);
});

Deno.test("ByteBudget.force() reserves over the limit", async () => {
  const budget = new ByteBudget(10);
  await budget.reserve(10);
  const forced = budget.force(5);
  assert.equal(budget.used, 15);
  forced.release();
  assert.equal(budget.used, 10);
});

Deno.test("Reservation.release() returns its bytes once, also through dispose", async () => {
  const budget = new ByteBudget(10);
  {
    using reservation = (await budget.reserve(4))!;
    reservation.release();
    assert.equal(budget.used, 0);
    assert.equal(reservation.bytes, 0);
  }
  assert.equal(budget.used, 0, "dispose after release returns nothing more");
});

Deno.test("Meter.allowance() reserves a body's length once, and none when unmetered", async () => {
  const budget = new ByteBudget(100, 2);
  const meter = new Meter();
  meter.budget = budget;
  assert.equal(await meter.allowance(0, 40, true), 40);
  assert.equal(await meter.allowance(20, 40, false), 40, "later calls reserve nothing more");
  assert.equal(budget.used, 40);
  const reservation = meter.complete()!;
  assert.equal(reservation.bytes, 40);
  meter.metered = false;
  assert.equal(await meter.allowance(0, 1000, true), 1000);
  assert.equal(meter.complete(), undefined);
  reservation.release();
  assert.equal(budget.used, 0);
});

Deno.test("Meter.metered = false ends a wait for the budget", async () => {
  const budget = new ByteBudget(10);
  const held = budget.force(10);
  const meter = new Meter();
  meter.budget = budget;
  const waiting = meter.allowance(0, 5, true);
  assert.equal(await settled(waiting), false);
  assert.equal(meter.waiting, true);
  meter.metered = false;
  assert.equal(await waiting, 5);
  assert.equal(meter.complete(), undefined, "read without the budget");
  held.release();
});

Deno.test("ByteBudget() rejects a limit that is not a positive integer", () => {
  for (const limit of [0, -1, 1.5, NaN]) {
    assert.throws(() => new ByteBudget(limit), RangeError);
  }
});
