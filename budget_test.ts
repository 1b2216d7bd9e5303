import assert from "node:assert/strict";
import { ByteBudget } from "./budget.ts";

Deno.test("ByteBudget.acquire() grants at once while reservations fit", () => {
  const budget = new ByteBudget(100);
  assert.equal(budget.acquire(60), undefined);
  assert.equal(budget.acquire(40), undefined);
  assert.equal(budget.used, 100);
});

Deno.test("ByteBudget.acquire() waits for a release, first come first served", async () => {
  const budget = new ByteBudget(100);
  budget.acquire(80);
  const order: string[] = [];
  const first = budget.acquire(50)!.then(() => order.push("first"));
  const second = budget.acquire(10)!.then(() => order.push("second"));
  assert.equal(budget.used, 80, "waiting reservations are not counted");
  budget.release(80);
  await Promise.all([first, second]);
  assert.deepEqual(order, ["first", "second"]);
  assert.equal(budget.used, 60);
});

Deno.test("ByteBudget.acquire() admits one reservation larger than the limit when idle", async () => {
  const budget = new ByteBudget(100);
  assert.equal(budget.acquire(500), undefined);
  const next = budget.acquire(1);
  assert.ok(next instanceof Promise, "nothing else fits beside it");
  budget.release(500);
  await next;
  assert.equal(budget.used, 1);
});

Deno.test("ByteBudget.acquire() gives up when its signal aborts, without reserving", async () => {
  const budget = new ByteBudget(10);
  budget.acquire(10);
  const controller = new AbortController();
  const waiting = budget.acquire(5, controller.signal)!;
  controller.abort(new Error("closed"));
  await assert.rejects(waiting, { message: "closed" });
  budget.release(10);
  assert.equal(budget.used, 0, "the aborted reservation was dropped from the queue");
});

Deno.test("ByteBudget.force() reserves over the limit", () => {
  const budget = new ByteBudget(10);
  budget.acquire(10);
  budget.force(5);
  assert.equal(budget.used, 15);
});

Deno.test("ByteBudget() rejects a limit that is not a positive integer", () => {
  for (const limit of [0, -1, 1.5, NaN]) {
    assert.throws(() => new ByteBudget(limit), RangeError);
  }
});
