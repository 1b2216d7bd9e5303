/**
 * The coordinator over real sockets on loopback: rounds, evaluation, bad
 * answers, deadlines and late replies, quorum and grace, removing a site,
 * stopping, the audit of refused logins, and resuming from a checkpoint.
 */

import assert from "node:assert/strict";
import { AuthenticationError, connect, listen, NdArray, type Server } from "../mod.ts";
import {
  Coordinator,
  type CoordinatorOptions,
  FedAdam,
  loadCheckpoint,
  type RoundRecord,
  type Weights,
} from "../fl.ts";
import { honest, resultOf, runSite, samplesOf, type SiteLog, train } from "./fl_sites.ts";
import type { Handler } from "./fl_sites.ts";
import { until } from "./test_util.ts";
import { FaultProxy } from "../bench/_fault_proxy.ts";

const MODEL = (): Weights => ({
  w: new NdArray(new Float32Array([0, 0.5, 1, 1.5]), [2, 2]),
  b: new Float64Array([0, -1]),
});

/** FedAvg by hand: each site's update in its dtype, the weighted mean rounded to the dtype. */
function expected(model: Weights, rounds: number[][], names: (r: number) => string[]): Weights {
  let global = model;
  rounds.forEach((_, index) => {
    const round = index + 1;
    const updates = names(round).map((name) => ({
      u: train(global, name, round),
      s: samplesOf(name),
    }));
    const next: Weights = {};
    for (const [key, tensor] of Object.entries(global)) {
      const data = tensor instanceof NdArray ? tensor.data : tensor;
      const out = new (data.constructor as Float64ArrayConstructor)(data.length);
      for (let i = 0; i < data.length; i++) {
        let sum = 0, weight = 0;
        for (const { u, s } of updates) {
          const d = u[key] instanceof NdArray ? (u[key] as NdArray).data : u[key];
          sum += s * (d as Float64Array)[i];
          weight += s;
        }
        out[i] = sum / weight;
      }
      next[key] = tensor instanceof NdArray ? new NdArray(out, tensor.shape) : out;
    }
    global = next;
  });
  return global;
}

async function readRecords(dir: string): Promise<RoundRecord[]> {
  const text = await Deno.readTextFile(`${dir}/rounds.jsonl`);
  return text.trim().split("\n").filter((l) => l !== "").map((line) => JSON.parse(line));
}

interface Job {
  server: Server;
  coordinator: Coordinator;
  dir: string;
  rounds: RoundRecord[];
  sites: Promise<SiteLog[]>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A server, a coordinator on a temp dir, and sites by name with their handlers. */
async function job(
  options: Partial<CoordinatorOptions>,
  handlers: Record<string, Handler>,
  listenOptions: Partial<Parameters<typeof listen>[0]> = {},
): Promise<Job> {
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "fl_coordinator_test_" });
  const server = listen({ clients: 16, open: true, ...listenOptions });
  const coordinator = new Coordinator(server, {
    job: "test",
    model: MODEL(),
    rounds: 1,
    roundTimeout: 20_000,
    ...options,
    dir,
  });
  const rounds: RoundRecord[] = [];
  coordinator.addEventListener("round", (e) => rounds.push((e as CustomEvent<RoundRecord>).detail));
  const sites = Promise.all(
    Object.entries(handlers).map(([name, handler]) =>
      runSite({
        name,
        port: server.port,
        handler,
        secret: listenOptions.auth === undefined ? undefined : secretOf(name),
      })
    ),
  );
  sites.catch(() => {}); // awaited by the test; a failure shows there
  const count = Object.keys(handlers).length;
  await until(() => server.connected.length >= count, `${count} sites connected`);
  return {
    server,
    coordinator,
    dir,
    rounds,
    sites,
    async [Symbol.asyncDispose]() {
      await server.close();
      await sites.catch(() => {});
      if (options.dir === undefined) await Deno.remove(dir, { recursive: true });
    },
  };
}

function secretOf(name: string): string {
  return `a secret of sixteen bytes or more for ${name}`;
}

/** A handler that never answers (it waits for its cancel). */
const silent: Handler = async (task, site) => {
  await site.cancelled(task.task);
  return undefined;
};

Deno.test("Coordinator.run() runs train and evaluate rounds and averages the results", async () => {
  const names = ["site-0", "site-1", "site-2"];
  await using j = await job(
    { rounds: 2, evaluateEvery: 1 },
    Object.fromEntries(names.map((n) => [n, honest])),
  );
  const siteEvents: string[] = [];
  j.coordinator.addEventListener("site", (e) => siteEvents.push((e as CustomEvent).detail.name));
  const result = await j.coordinator.run();
  assert.equal(result.state, "done");
  assert.equal(result.rounds, 2);
  assert.deepStrictEqual(result.weights, expected(MODEL(), [[], []], () => names));
  const records = await readRecords(j.dir);
  assert.deepStrictEqual(records, j.rounds);
  assert.deepStrictEqual(
    records.map((r) => [r.round, r.kind, r.task, r.answered, r.quorum]),
    [
      [1, "train", 1, names, true],
      [1, "evaluate", 2, names, true],
      [2, "train", 3, names, true],
      [2, "evaluate", 4, names, true],
    ],
  );
  // The metrics: sample-weighted means (loss 1/(round + index), weights 10, 20, 30).
  assert.ok(Math.abs(records[1].metrics.loss - (10 / 1 + 20 / 2 + 30 / 3) / 60) < 1e-12);
  assert.ok(records.every((r) => r.bytesIn > 0 && r.bytesOut > 0));
  const logs = await j.sites;
  for (const log of logs) {
    assert.equal(log.stop, "done");
    assert.deepStrictEqual(log.tasks.map((t) => [t.task, t.kind]), [
      [1, "train"],
      [2, "evaluate"],
      [3, "train"],
      [4, "evaluate"],
    ]);
  }
  // The evaluation carries the new model: round 1's evaluate task has round 1's result.
  const round1 = expected(MODEL(), [[]], () => names);
  assert.deepStrictEqual(logs[0].tasks[1].weights.b, round1.b);
  const snapshot = j.coordinator.snapshot();
  assert.equal(snapshot.state, "done");
  assert.deepStrictEqual(snapshot.sites.map((s) => [s.name, s.rounds, s.taken]), [
    ["site-0", [1, 2], 2],
    ["site-1", [1, 2], 2],
    ["site-2", [1, 2], 2],
  ]);
  assert.deepStrictEqual(
    [result.totals.rounds, result.totals.evaluations, result.totals.tasks, result.totals.results],
    [2, 2, 12, 12],
  );
  assert.ok(siteEvents.includes("site-1"));
  assert.deepStrictEqual(JSON.parse(JSON.stringify(snapshot)), { ...snapshot, reason: "done" });
  assert.equal((await loadCheckpoint(j.dir))?.round, 2);
});

Deno.test("Coordinator.run() records each bad answer as that site's error and goes on", async () => {
  const bad = (change: (r: Record<string, unknown>) => unknown): Handler => (task, site) =>
    change(resultOf(task, site.name));
  await using j = await job({ rounds: 1 }, {
    "good-0": honest,
    "failing-1": (task) => ({
      fl: 1,
      type: "failure",
      task: task.task,
      round: 1,
      error: "Disk full",
    }),
    "shape-2": bad((r) => ({ ...r, weights: { ...r.weights as Weights, b: new Float64Array(3) } })),
    "dtype-3": bad((r) => ({ ...r, weights: { ...r.weights as Weights, b: new Float32Array(2) } })),
    "nan-4": bad((r) => ({
      ...r,
      weights: { ...r.weights as Weights, b: new Float64Array([0, NaN]) },
    })),
    "task-5": bad((r) => ({ ...r, task: 9 })),
    "garbage-6": () => "hello",
    "evaluate-7": bad(({ weights: _, ...r }) => r),
  });
  const result = await j.coordinator.run();
  const [record] = j.rounds;
  assert.deepStrictEqual(record.answered, ["good-0"]);
  const errors = Object.fromEntries(record.failed.map((f) => [f.site, f.error]));
  assert.equal(errors["failing-1"], "Disk full");
  assert.match(errors["shape-2"], /Update has the wrong shape: "b" is \[3\], the model's is \[2\]/);
  assert.match(errors["dtype-3"], /wrong dtype: "b" is float32, the model's is float64/);
  assert.match(errors["nan-4"], /non-finite value: "b"\[1\] is NaN/);
  assert.match(errors["task-5"], /Answer is for task "9" of round "1", not task "1"/);
  assert.match(errors["garbage-6"], /Invalid FL message from the site/);
  assert.match(errors["evaluate-7"], /a train result has no "weights"/);
  assert.equal(record.failed.length, 7);
  assert.deepStrictEqual(result.weights, expected(MODEL(), [[]], () => ["good-0"]));
  assert.equal(result.totals.failures, 7);
  assert.equal(j.coordinator.cohort.site("nan-4")?.failures, 1);
});

Deno.test("Coordinator.run() cancels a site at the deadline and records its late reply", async () => {
  await using j = await job({ rounds: 2, roundTimeout: 500, staleHold: 60_000, minSites: 2 }, {
    "site-0": honest,
    "site-1": async (task, site) => {
      if (task.round !== 1) return resultOf(task, site.name);
      await site.cancelled(task.task);
      return resultOf(task, site.name); // after its cancel: late
    },
  });
  const result = await j.coordinator.run();
  const [first, second] = j.rounds;
  assert.deepStrictEqual(first.answered, ["site-0"]);
  assert.deepStrictEqual(first.missing, [
    { site: "site-1", reason: "no answer within the round's 500 ms" },
  ]);
  // Held after the deadline, site-1 is sampled again once its late reply showed it is done.
  assert.deepStrictEqual([...first.late, ...second.late], ["site-1"]);
  assert.deepStrictEqual(second.answered, ["site-0", "site-1"]);
  const logs = await j.sites;
  assert.deepStrictEqual(logs[1].cancels.map((c) => [c.task, c.reason]), [[1, "stale"]]);
  assert.equal(result.totals.late, 1);
  assert.equal(j.coordinator.cohort.site("site-1")?.late, 1);
  assert.deepStrictEqual(
    result.weights,
    expected(MODEL(), [[], []], (r) => r === 1 ? ["site-0"] : ["site-0", "site-1"]),
  );
});

Deno.test("Coordinator.run() ends a round grace ms after the quorum", async () => {
  await using j = await job({ rounds: 1, minResults: 2, grace: 100 }, {
    "site-0": honest,
    "site-1": honest,
    "site-2": silent,
  });
  await j.coordinator.run();
  const [record] = j.rounds;
  assert.deepStrictEqual(record.answered, ["site-0", "site-1"]);
  assert.equal(record.quorum, true);
  assert.deepStrictEqual(record.missing, [
    { site: "site-2", reason: "no answer within the grace of 100 ms after the quorum" },
  ]);
  assert.equal((await j.sites)[2].cancels[0].reason, "stale");
});

Deno.test("Coordinator.run() keeps the model when a round has no quorum", async () => {
  await using j = await job({ rounds: 1, minResults: 2, roundTimeout: 300 }, {
    "site-0": honest,
    "site-1": silent,
  });
  const result = await j.coordinator.run();
  assert.equal(j.rounds[0].quorum, false);
  assert.deepStrictEqual(result.weights, MODEL());
  assert.equal(result.rounds, 1);
});

Deno.test("Coordinator.removeSite() cancels its task, sends it stop and never samples it again", async () => {
  const ref: { coordinator?: Coordinator } = {};
  await using j = await job({ rounds: 2, minSites: 1 }, {
    "site-0": honest,
    "site-1": async (task, site) => {
      ref.coordinator!.removeSite("site-1");
      await site.cancelled(task.task);
      return undefined;
    },
  });
  ref.coordinator = j.coordinator;
  assert.throws(() => j.coordinator.removeSite("nobody"), {
    name: "RangeError",
    message: `Unknown site: "nobody" is not in the cohort`,
  });
  await j.coordinator.run();
  const [first, second] = j.rounds;
  assert.deepStrictEqual(first.missing, [{ site: "site-1", reason: "removed by the operator" }]);
  assert.deepStrictEqual(second.sampled, ["site-0"]);
  const logs = await j.sites;
  assert.deepStrictEqual(logs[1].cancels.map((c) => c.reason), ["removed"]);
  assert.equal(logs[1].stop, "removed");
  assert.equal(j.coordinator.snapshot().sites[1].removed, true);
  assert.deepStrictEqual((await loadCheckpoint(j.dir))?.sites.map((s) => s.removed), [false, true]);
});

Deno.test("Coordinator.stop() ends the round, sends stop to every site and resolves run()", async () => {
  const ref: { coordinator?: Coordinator } = {};
  const holdInRound2: Handler = async (task, site) => {
    if (task.round === 1) return resultOf(task, site.name);
    ref.coordinator!.stop("operator");
    await site.cancelled(task.task);
    return undefined;
  };
  await using j = await job({ rounds: 3, roundTimeout: 500 }, {
    "site-0": holdInRound2,
    "site-1": silent,
  });
  ref.coordinator = j.coordinator;
  // site-1 never answers round 1: a short deadline ends it.
  const result = await j.coordinator.run();
  assert.equal(result.state, "stopped");
  assert.equal(result.reason, "operator");
  assert.equal(result.rounds, 1);
  const logs = await j.sites;
  assert.deepStrictEqual(logs.map((l) => l.stop), ["operator", "operator"]);
  assert.ok(logs[0].cancels.some((c) => c.task === 3 && c.reason === "stopped"));
  assert.deepStrictEqual((await readRecords(j.dir)).map((r) => r.round), [1]);
  assert.equal((await loadCheckpoint(j.dir))?.round, 1);
  assert.equal(j.coordinator.snapshot().state, "stopped");
  await assert.rejects(() => j.coordinator.run(), Deno.errors.Busy);
});

Deno.test("Coordinator.run() writes refused logins to audit.jsonl", async () => {
  const auth = { clients: { "site-0": secretOf("site-0"), "site-1": secretOf("site-1") } };
  await using j = await job({ rounds: 1, minSites: 2 }, { "site-0": honest }, { auth });
  const running = j.coordinator.run();
  // The client gives up on the server's proof before the server has turned it away: wait for
  // the server's refusal, so that the job cannot end before the coordinator recorded it.
  const refused = new Promise((resolve) => j.server.addEventListener("refuse", resolve));
  await assert.rejects(
    connect({ port: j.server.port, name: "site-1", secret: "a wrong secret, sixteen bytes+" }),
    AuthenticationError, // the server's proof, made with site-1's secret, does not match
  );
  await refused;
  const late = runSite({
    name: "site-1",
    port: j.server.port,
    handler: honest,
    secret: secretOf("site-1"),
  });
  const result = await running;
  await late;
  assert.equal(result.totals.refused, 1);
  const lines = (await Deno.readTextFile(`${j.dir}/audit.jsonl`)).trim().split("\n");
  const [entry] = lines.map((line) => JSON.parse(line));
  assert.equal(entry.reason, "auth");
  assert.equal(entry.name, "site-1");
  assert.match(entry.address, /^127\.0\.0\.1:\d+$/);
});

Deno.test("Coordinator.run() resumes from the checkpoint of a job directory", async () => {
  const names = ["site-0", "site-1", "site-2"];
  const handlers = Object.fromEntries(names.map((n) => [n, honest]));
  const common = { strategy: new FedAdam(), sitesPerRound: 2, minSites: 3, seed: 5 };
  const dir = await Deno.makeTempDir({ prefix: "fl_resume_test_" });
  try {
    let before;
    {
      await using first = await job({ ...common, rounds: 2, dir }, handlers);
      before = await first.coordinator.run();
      assert.equal(before.rounds, 2);
    }
    await using second = await job(
      { ...common, strategy: new FedAdam(), rounds: 4, dir },
      handlers,
    );
    const resumed = await second.coordinator.run();
    assert.equal(resumed.resumedFrom, 2);
    assert.deepStrictEqual(second.rounds.map((r) => r.round), [3, 4]);
    await using straight = await job({ ...common, strategy: new FedAdam(), rounds: 4 }, handlers);
    const reference = await straight.coordinator.run();
    assert.deepStrictEqual(resumed.weights, reference.weights);
    assert.deepStrictEqual(
      (await readRecords(dir)).map((r) => r.sampled),
      straight.rounds.map((r) => r.sampled),
    );
    // The sites' histories went on across the restart.
    const sites = second.coordinator.snapshot().sites;
    assert.deepStrictEqual(sites.map((s) => s.sessions), [2, 2, 2]);
    assert.deepStrictEqual(sites.map((s) => s.taken), sites.map((s) => s.rounds.length));
    assert.equal(sites.reduce((n, s) => n + s.taken, 0), 8); // 4 rounds of 2 sites
    assert.equal(resumed.totals.rounds, 4);
    assert.equal(resumed.totals.results, 8);
    assert.ok(resumed.totals.bytesIn > before.totals.bytesIn);
    await using other = await job({ job: "other", rounds: 1, dir }, {});
    await assert.rejects(() => other.coordinator.run(), {
      name: "TypeError",
      message: `Checkpoint in "${dir}" is for job "test", not "other"`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Coordinator.run() stops cleanly when its signal aborts", async () => {
  const controller = new AbortController();
  await using j = await job({ rounds: 2 }, {
    "site-0": async (task, site) => {
      controller.abort(new Error("Shutting down"));
      await site.cancelled(task.task);
      return undefined;
    },
  });
  const result = await j.coordinator.run({ signal: controller.signal });
  assert.deepStrictEqual([result.state, result.rounds], ["stopped", 0]);
  assert.equal(result.reason, "aborted: Error: Shutting down");
  const [log] = await j.sites;
  assert.deepStrictEqual([log.cancels[0].reason, log.stop], ["stopped", result.reason]);
  assert.equal(await loadCheckpoint(j.dir), undefined);
});

Deno.test("Coordinator.run() records a task that cannot be sent as each site's error", async () => {
  // A fixed cohort of 3 with 2 joined: the transport sends nothing before all joined.
  await using j = await job({ rounds: 1 }, { "site-0": honest, "site-1": honest }, {
    clients: 3,
    open: false,
  });
  const result = await j.coordinator.run();
  const [record] = j.rounds;
  assert.equal(record.quorum, false);
  assert.deepStrictEqual(record.failed.map((f) => f.site), ["site-0", "site-1"]);
  assert.match(record.failed[0].error, /^Its task could not be sent: /);
  assert.deepStrictEqual(result.weights, MODEL());
});

Deno.test("Coordinator.run() folds the answers while the broadcast still sends to a stalled site, and ends on the grace without it", async () => {
  await using server = listen({ clients: 3, open: true });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 17 });
  const dir = await Deno.makeTempDir({ prefix: "fl_coordinator_test_" });
  // 256 KiB: the broadcast lends it, so it waits for every connected site's acknowledgement.
  const model: Weights = { w: new Float32Array(64 * 1024).fill(0.5) };
  const coordinator = new Coordinator(server, {
    job: "slow-link",
    model,
    rounds: 1,
    minResults: 2,
    grace: 100,
    roundTimeout: 20_000,
    dir,
  });
  const rounds: RoundRecord[] = [];
  coordinator.addEventListener("round", (e) => rounds.push((e as CustomEvent<RoundRecord>).detail));
  const sites = ["site-0", "site-1", "site-2"].map((name, i) =>
    runSite({ name, port: i === 2 ? proxy.port : server.port, handler: honest })
  );
  await until(() => server.connected.length === 3, "3 sites connected");
  // The slow site's link carries nothing towards it for 8 s: its task waits there.
  const stalled = proxy.stall({ ms: 8_000, direction: "down", connection: 0 });
  await coordinator.run();
  const [record] = rounds;
  assert.deepStrictEqual(record.answered, ["site-0", "site-1"]);
  assert.deepStrictEqual(record.missing, [
    { site: "site-2", reason: "no answer within the grace of 100 ms after the quorum" },
  ]);
  await server.close();
  await proxy[Symbol.asyncDispose](); // ends the stall
  assert.equal(((await stalled) as { kind: string }).kind, "stall-down");
  await Promise.allSettled(sites);
  await Deno.remove(dir, { recursive: true });
});
