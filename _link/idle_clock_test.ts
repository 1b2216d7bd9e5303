import assert from "node:assert/strict";
import { DUE_PER_TURN, IdleClock, Watch } from "./idle_clock.ts";

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Touches `busy` every 20 ms until `done()` (at most 5 s). */
async function keepTouching(clock: IdleClock, busy: Watch[], done: () => boolean): Promise<void> {
  const end = performance.now() + 5_000;
  while (!done() && performance.now() < end) {
    for (const w of busy) clock.touch(w);
    await delay(20);
  }
}

Deno.test("IdleClock.touch() keeps a watch from coming due; an untouched one comes due once", async () => {
  const clock = IdleClock.of(300);
  const due: string[] = [];
  const quiet = new Watch({ due: () => due.push("quiet") });
  const busy = new Watch({ due: () => due.push("busy") });
  clock.touch(quiet);
  clock.touch(busy);
  assert.equal(clock.size, 2);
  const start = performance.now();
  await keepTouching(clock, [busy], () => due.length > 0);
  assert.ok(performance.now() - start >= 300, "not before its period");
  assert.deepStrictEqual(due, ["quiet"]);
  assert.equal(quiet.clock, undefined, "a due watch has left the clock");
  assert.equal(clock.size, 1);
  clock.remove(busy);
  assert.equal(clock.size, 0);
});

Deno.test("IdleClock.remove() takes a watch off for good", async () => {
  const clock = IdleClock.of(30);
  let due = 0;
  const watch = new Watch({ due: () => due++ });
  clock.touch(watch);
  clock.remove(watch);
  await delay(100);
  assert.equal(due, 0);
});

Deno.test("IdleClock.of() shares one clock per period; touch() moves a watch between clocks", () => {
  assert.equal(IdleClock.of(1234), IdleClock.of(1234));
  const a = IdleClock.of(1235);
  const b = IdleClock.of(1236);
  const watch = new Watch({ due: () => {} });
  a.touch(watch);
  b.touch(watch);
  assert.deepStrictEqual([a.size, b.size, watch.clock === b], [0, 1, true]);
  b.remove(watch);
  a.remove(watch); // not on it: nothing happens
  assert.deepStrictEqual([a.size, b.size], [0, 0]);
});

Deno.test("IdleClock ticks call the due watches only, oldest first", async () => {
  const clock = IdleClock.of(300);
  const order: number[] = [];
  // 1,000 watches, touched in order; only the first 10 go quiet.
  const watches = Array.from({ length: 1000 }, (_, i) => new Watch({ due: () => order.push(i) }));
  for (const w of watches) clock.touch(w);
  try {
    await keepTouching(clock, watches.slice(10), () => order.length >= 10);
  } finally {
    for (const w of watches) clock.remove(w);
  }
  assert.deepStrictEqual(order, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

Deno.test("IdleClock tells at most DUE_PER_TURN due watches per turn of the event loop, in order", async () => {
  const clock = IdleClock.of(60);
  const count = 3 * DUE_PER_TURN + 10;
  const order: number[] = [];
  // The due callbacks of one turn run in one task: a microtask closes the turn.
  const turns: number[] = [];
  let open = false;
  const watches = Array.from({ length: count }, (_, i) =>
    new Watch({
      due: () => {
        if (!open) {
          open = true;
          turns.push(0);
          queueMicrotask(() => open = false);
        }
        turns[turns.length - 1]++;
        order.push(i);
      },
    }));
  for (const w of watches) clock.touch(w);
  try {
    const end = performance.now() + 5_000;
    while (order.length < count && performance.now() < end) await delay(20);
  } finally {
    for (const w of watches) clock.remove(w);
  }
  assert.deepStrictEqual(order, Array.from({ length: count }, (_, i) => i));
  assert.deepStrictEqual(turns, [DUE_PER_TURN, DUE_PER_TURN, DUE_PER_TURN, 10]);
  assert.equal(clock.size, 0);
});

Deno.test("IdleClock: a watch that a due callback touches is not due in that tick", async () => {
  const clock = IdleClock.of(40);
  const due: [string, number][] = [];
  const second = new Watch({ due: () => due.push(["second", performance.now()]) });
  const first = new Watch({
    due: () => {
      due.push(["first", performance.now()]);
      clock.touch(second);
    },
  });
  clock.touch(first);
  clock.touch(second);
  await keepTouching(clock, [], () => due.length >= 2);
  assert.deepStrictEqual(due.map(([name]) => name), ["first", "second"]);
  assert.ok(due[1][1] - due[0][1] >= 40, "second came due a period after its touch");
});

Deno.test("IdleClock: a watch touched often, as the only one or among others, never comes due", async () => {
  const clock = IdleClock.of(120);
  const due: string[] = [];
  const only = new Watch({ due: () => due.push("only") });
  clock.touch(only);
  const start = performance.now();
  await keepTouching(clock, [only], () => performance.now() - start > 500);
  const other = new Watch({ due: () => due.push("other") });
  clock.touch(other);
  await keepTouching(clock, [only, other], () => performance.now() - start > 1000);
  clock.remove(only);
  clock.remove(other);
  assert.deepStrictEqual(due, []);
});
