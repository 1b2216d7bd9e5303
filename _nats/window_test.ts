import assert from "node:assert/strict";
import { OrderedWindow } from "./window.ts";

/** A promise and its resolve function. */
function later<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

Deno.test("OrderedWindow.take() gives the outcomes in the order the work started, whatever order it ends in", async () => {
  const window = new OrderedWindow<number>(4);
  const ends = [0, 1, 2, 3].map(() => later<number>());
  let running = 0;
  let most = 0;
  for (const [i, end] of ends.entries()) {
    window.add(async () => {
      most = Math.max(most, ++running);
      const value = await end.promise;
      running--;
      return value * 10 + i; // 11 × i: the value tells which piece it is
    });
  }
  assert.equal(window.full, true);
  assert.throws(() => window.add(() => Promise.resolve(9)), RangeError);
  for (const i of [3, 2, 1]) ends[i].resolve(i); // the newest ends first
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(window.ready, false, "the oldest is not done, so nothing may be taken");
  assert.throws(() => window.take(), RangeError);
  assert.equal(most, 4, "all four ran at once");
  ends[0].resolve(0);
  const taken: number[] = [];
  while (window.size > 0) {
    await window.next;
    const outcome = window.take();
    assert.ok(outcome.ok);
    taken.push(outcome.value);
  }
  assert.deepStrictEqual(taken, [0, 11, 22, 33]);
});

Deno.test("OrderedWindow.add() keeps a rejection as the outcome, and the window refuses a limit below 1", async () => {
  const window = new OrderedWindow<string>(1);
  window.add(() => Promise.reject(new Error("lost")));
  await window.next;
  const outcome = window.take();
  assert.equal(outcome.ok, false);
  assert.equal(!outcome.ok && (outcome.error as Error).message, "lost");
  assert.equal(window.next, undefined);
  assert.throws(() => new OrderedWindow(0), {
    name: "RangeError",
    message: `Invalid limit: "0" is not a positive integer`,
  });
});
