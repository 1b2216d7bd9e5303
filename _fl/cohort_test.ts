import assert from "node:assert/strict";
import { type ClientStats, TimeoutError } from "../mod.ts";
import { Cohort } from "./cohort.ts";
import { sampleNames } from "./sample.ts";

const NAMES = ["a", "b", "c", "d", "e", "f"];

function cohortOf(names: readonly string[]): Cohort {
  const cohort = new Cohort();
  names.forEach((name, id) => cohort.join(id, name));
  return cohort;
}

function stats(id: number, more: Partial<ClientStats>): ClientStats {
  return {
    id,
    name: undefined,
    props: {},
    authenticated: false,
    address: "127.0.0.1:1",
    state: "connected",
    error: undefined,
    bytesSent: 0,
    bytesReceived: 0,
    messagesSent: 0,
    messagesReceived: 0,
    silentMs: 0,
    rttMs: undefined,
    queued: 0,
    unacknowledged: 0,
    resumes: 0,
    lateReplies: 0,
    ...more,
  };
}

Deno.test("Cohort.sample() is deterministic from the seed and round, whatever the join order", () => {
  const forward = cohortOf(NAMES), backward = cohortOf([...NAMES].reverse());
  const seen = new Set<string>();
  for (let round = 1; round <= 20; round++) {
    const sample = forward.sample(3, { seed: 42, round });
    assert.deepStrictEqual(backward.sample(3, { seed: 42, round }), sample);
    assert.equal(sample.length, 3);
    assert.deepStrictEqual([...sample].sort(), sample);
    assert.equal(new Set(sample).size, 3);
    seen.add(sample.join());
  }
  assert.ok(seen.size > 5, `20 rounds gave ${seen.size} different samples`);
  assert.notDeepStrictEqual(
    Array.from({ length: 10 }, (_, r) => forward.sample(2, { seed: 1, round: r }).join()),
    Array.from({ length: 10 }, (_, r) => forward.sample(2, { seed: 2, round: r }).join()),
  );
  assert.deepStrictEqual(forward.sample(100, { seed: 1, round: 1 }), NAMES);
  assert.throws(() => forward.sample(0, { seed: 1, round: 1 }), {
    name: "RangeError",
    message: `Invalid sample size: "0" is not a positive integer`,
  });
  assert.throws(() => forward.sample(1, { seed: 1.5, round: 1 }), /Invalid seed: "1.5"/);
  assert.deepStrictEqual(sampleNames([], 3, 0, 0), []);
});

Deno.test("Cohort.sample() leaves out sites busy, removed, away, gone or held", () => {
  const cohort = cohortOf(NAMES);
  cohort.assign("a", 1); // training
  cohort.remove("b");
  cohort.drop(2); // c resuming
  cohort.leave(3); // d gone
  cohort.missed("e", 60_000); // held after a deadline
  assert.deepStrictEqual(cohort.sample(6, { seed: 0, round: 1 }), ["f"]);
  assert.equal(cohort.available, 1);
  assert.deepStrictEqual(
    cohort.sites().map((s) => [s.name, s.state]),
    [["a", "training"], ["b", "idle"], ["c", "resuming"], ["d", "gone"], ["e", "training"], [
      "f",
      "idle",
    ]],
  );
  cohort.late("e"); // its late reply: it is done
  cohort.resume(2);
  cohort.answered("a", 1);
  assert.deepStrictEqual(cohort.sample(6, { seed: 0, round: 1 }), ["a", "c", "e", "f"]);
  assert.throws(() => cohort.remove("z"), RangeError);
});

Deno.test("Cohort.join() keeps a site's history by name across sessions", () => {
  const changes: string[] = [];
  const cohort = new Cohort({ onChange: (site) => changes.push(`${site.name}:${site.state}`) });
  assert.equal(cohort.join(0, "a"), "a");
  cohort.assign("a", 1);
  cohort.answered("a", 1);
  cohort.failed("a");
  cohort.late("a");
  cohort.leave(0);
  assert.equal(cohort.idOf("a"), undefined);
  assert.equal(cohort.join(7, "a"), "a");
  const site = cohort.site("a")!;
  assert.deepStrictEqual(
    [site.id, site.sessions, site.rounds, site.taken, site.failures, site.late, site.state],
    [7, 2, [1], 1, 1, 1, "idle"],
  );
  assert.equal(cohort.nameOfId(7), "a");
  assert.equal(cohort.nameOfId(0), undefined);
  // Another session of a name that is connected is another site.
  assert.equal(cohort.join(8, "a"), "a@8");
  assert.equal(cohort.size, 2);
  assert.ok(changes.includes("a:gone") && changes.includes("a:training"));
  assert.equal(Cohort.nameOf(3, undefined, { site: "lab" }), "lab");
  assert.equal(Cohort.nameOf(3, undefined, { site: 5 }), "3");
  assert.equal(Cohort.nameOf(3, "x", { site: "lab" }), "x");
});

Deno.test("Cohort.refresh() adds members it did not see join and counts bytes over sessions", () => {
  const cohort = new Cohort();
  cohort.refresh([
    stats(0, { name: "a", bytesReceived: 100, bytesSent: 50 }),
    stats(1, { props: { site: "b" }, state: "resuming" }),
    stats(2, { state: "gone" }),
  ]);
  assert.deepStrictEqual(cohort.sites().map((s) => [s.name, s.state, s.bytesIn, s.bytesOut]), [
    ["a", "idle", 100, 50],
    ["b", "resuming", 0, 0],
  ]);
  cohort.leave(0);
  cohort.join(5, "a"); // a new session: its bytes add to the earlier ones
  cohort.refresh([stats(5, { name: "a", bytesReceived: 10, bytesSent: 1 })]);
  assert.deepStrictEqual([cohort.site("a")?.bytesIn, cohort.site("a")?.bytesOut], [110, 51]);
});

Deno.test("Cohort.waitAvailable() waits for sites, holds ending, a timeout or an abort", async () => {
  const cohort = new Cohort();
  const waiting = cohort.waitAvailable(2, { timeout: 10_000 });
  cohort.join(0, "a");
  setTimeout(() => cohort.join(1, "b"), 10);
  assert.equal(await waiting, 2);
  cohort.missed("a", 30);
  cohort.missed("b", 30);
  assert.equal(cohort.available, 0);
  assert.equal(await cohort.waitAvailable(1, { timeout: 10_000 }), 2); // the holds end
  cohort.assign("a", 1);
  cohort.assign("b", 1);
  await assert.rejects(() => cohort.waitAvailable(1, { timeout: 20 }), {
    name: "TimeoutError",
    message: "Waiting for sites timed out after 20 ms: 0 of 1 available",
  });
  const controller = new AbortController();
  const aborted = cohort.waitAvailable(1, { signal: controller.signal });
  controller.abort(new Error("Stopped"));
  await assert.rejects(aborted, { message: "Stopped" });
  await assert.rejects(() => cohort.waitAvailable(0), RangeError);
  await assert.rejects(() => cohort.waitAvailable(1, { timeout: -1 }), RangeError);
  assert.ok(new TimeoutError("x") instanceof Error);
});

Deno.test("Cohort.restore() takes back histories, adding a session that joined first", () => {
  const before = cohortOf(["a", "b"]);
  before.answered("a", 1);
  before.answered("a", 2);
  before.remove("b");
  before.refresh([stats(0, { name: "a", bytesReceived: 40 })]);
  const histories = before.histories();

  const after = new Cohort();
  after.join(9, "a"); // joined before the checkpoint was read
  after.refresh([stats(9, { name: "a", bytesReceived: 5 })]);
  after.restore(structuredClone(histories));
  const a = after.site("a")!, b = after.site("b")!;
  assert.deepStrictEqual([a.id, a.state, a.rounds, a.sessions, a.bytesIn], [
    9,
    "idle",
    [1, 2],
    2,
    45,
  ]);
  assert.deepStrictEqual([b.state, b.removed], ["gone", true]);
  after.join(3, "b");
  assert.deepStrictEqual(after.sample(5, { seed: 0, round: 0 }), ["a"]); // b stays removed
  assert.throws(() => after.restore([{ name: "x" } as never]), {
    name: "TypeError",
    message: `Invalid site history of "x": "id" is not a number`,
  });
});

Deno.test("Cohort() forgets the gone sites heard from longest ago past maxSites", async () => {
  const cohort = new Cohort({ maxSites: 2 });
  cohort.join(0, "a");
  cohort.leave(0);
  await new Promise((resolve) => setTimeout(resolve, 5));
  cohort.join(1, "b");
  cohort.leave(1);
  cohort.join(2, "c");
  assert.deepStrictEqual(cohort.sites().map((s) => s.name), ["b", "c"]);
  assert.throws(() => new Cohort({ maxSites: 0 }), RangeError);
});
