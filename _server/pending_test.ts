import assert from "node:assert/strict";
import { EVICTABLE_AFTER_MS, PendingHandshakes, type PendingPlace } from "./pending.ts";

const later = EVICTABLE_AFTER_MS + 1;

/** Places `hosts` at time `at`, collecting what is evicted. */
function fill(pending: PendingHandshakes, hosts: string[], at: number, evicted: PendingPlace[]) {
  return hosts.map((host) => pending.place(host, at, (place) => evicted.push(place)));
}

Deno.test("PendingHandshakes.place() turns away a newcomer over its address's share", () => {
  const pending = new PendingHandshakes(8, 2);
  const evicted: PendingPlace[] = [];
  const [a, b, c] = fill(pending, ["1.1.1.1", "1.1.1.1", "1.1.1.1"], 0, evicted);
  assert.ok(typeof a !== "string" && typeof b !== "string");
  assert.equal(c, "address");
  assert.equal(pending.size, 2);
  // Past EVICTABLE_AFTER_MS the address's oldest silent place goes to its newcomer.
  const d = pending.place("1.1.1.1", later, (place) => evicted.push(place));
  assert.ok(typeof d !== "string");
  assert.deepStrictEqual(evicted, [a]);
  assert.ok(a.evicted.aborted === false, "the caller evicts it");
  // Another address is not held back by the first one's share.
  assert.ok(typeof pending.place("2.2.2.2", later, () => {}) !== "string");
});

Deno.test("PendingHandshakes.place() when full evicts the oldest silent place of the address holding the most", () => {
  const pending = new PendingHandshakes(4, 4);
  const evicted: PendingPlace[] = [];
  const [legit, flood1] = fill(
    pending,
    ["10.0.0.1", "6.6.6.6", "6.6.6.6", "6.6.6.6"],
    0,
    evicted,
  ) as PendingPlace[];
  // Too young to lose a place: the newcomer waits for one.
  const young = pending.place("10.0.0.2", EVICTABLE_AFTER_MS - 1, () => {}) as PendingPlace;
  assert.equal(young.waiting, true);
  assert.deepStrictEqual([pending.size, pending.waiting], [4, 1]);
  const newcomer = pending.place("10.0.0.3", later, (place) => evicted.push(place));
  assert.ok(typeof newcomer !== "string" && !newcomer.waiting);
  assert.deepStrictEqual(evicted, [flood1], "the flood's oldest, not the older legitimate one");
  void legit;
});

Deno.test("PendingHandshakes.greet() gives a waiting connection that says hello the place of a silent one", () => {
  const pending = new PendingHandshakes(2, 2);
  const evicted: PendingPlace[] = [];
  const [silent, talker] = fill(pending, ["6.6.6.6", "10.0.0.1"], 0, evicted) as PendingPlace[];
  assert.equal(pending.greet(talker, (place) => evicted.push(place)), true);
  const waiting = pending.place("10.0.0.2", 1, () => {}) as PendingPlace;
  assert.equal(waiting.waiting, true);
  // Its hello beats the silent one, however young that one is.
  assert.equal(pending.greet(waiting, (place) => evicted.push(place)), true);
  assert.deepStrictEqual(evicted, [silent]);
  assert.equal(waiting.waiting, false);
  assert.deepStrictEqual([pending.size, pending.waiting], [2, 0]);
  // When every place said hello, a waiting one that says hello must go.
  const late = pending.place("10.0.0.3", 2, () => {}) as PendingPlace;
  assert.equal(pending.greet(late, () => assert.fail("nothing to evict")), false);
});

Deno.test("PendingHandshakes.place() gives a full waiting room's spot of the address holding the most away", () => {
  const pending = new PendingHandshakes(2, 8);
  const evicted: PendingPlace[] = [];
  fill(pending, ["6.6.6.6", "6.6.6.6"], 0, evicted); // both places, too young to lose them
  const [legit, flood] = fill(pending, ["10.0.0.1", "6.6.6.6"], 1, evicted) as PendingPlace[];
  assert.ok(legit.waiting && flood.waiting);
  const newcomer = pending.place("6.6.6.6", 2, (place) => evicted.push(place)) as PendingPlace;
  assert.ok(newcomer.waiting);
  assert.deepStrictEqual(evicted, [flood], "the flood's spot, not the older legitimate one");
  assert.deepStrictEqual([pending.size, pending.waiting], [2, 2]);
});

Deno.test("PendingHandshakes.remove() frees the place and the address's share once", () => {
  const pending = new PendingHandshakes(2, 1);
  const place = pending.place("1.1.1.1", 0, () => {}) as PendingPlace;
  assert.equal(pending.place("1.1.1.1", 0, () => {}), "address");
  pending.remove(place);
  pending.remove(place);
  assert.equal(pending.size, 0);
  assert.ok(typeof pending.place("1.1.1.1", 0, () => {}) !== "string");
});

Deno.test("PendingHandshakes() rejects limits that are not positive integers", () => {
  assert.throws(() => new PendingHandshakes(0, 1), RangeError);
  assert.throws(() => new PendingHandshakes(4, 1.5), /Invalid maxPendingPerAddress: "1.5"/);
});
