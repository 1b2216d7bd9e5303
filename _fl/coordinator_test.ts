import assert from "node:assert/strict";
import { listen, type Server } from "../mod.ts";
import type { WeightedSum } from "./aggregate.ts";
import { Coordinator } from "./coordinator.ts";
import { FedAvg } from "./fed_avg.ts";
import { runSite, type SiteResult } from "./site.ts";
import type { Task } from "./task.ts";
import { cloneWeights, type Weights } from "./weights.ts";
import { lines } from "../examples/fl_processes.ts";

/** One `update()` call as the coordinator made it. */
interface Call {
  global: Weights;
  sum: WeightedSum;
  into: Weights | undefined;
  next: Weights;
  /** The next model's values when it was made. */
  made: Weights;
}

/** FedAvg that records each update. */
class Spy extends FedAvg {
  readonly calls: Call[] = [];

  override update(global: Weights, sum: WeightedSum, round: number, into?: Weights): Weights {
    const next = super.update(global, sum, round, into);
    this.calls.push({ global, sum, into, next, made: cloneWeights(next) });
    return next;
  }
}

/** A model of one float32 tensor of `n` values, each `value`. */
const modelOf = (n: number, value: number): Weights => ({ w: new Float32Array(n).fill(value) });

/**
 * Whether every value of a model made by {@linkcode modelOf} is `value`
 * (asserted with `assert.ok`: a failing `deepStrictEqual` of a large array
 * takes minutes to describe).
 */
const allAre = (model: Weights, value: number): boolean =>
  (model.w as Float32Array).every((x) => x === value);

/** A site that answers train tasks with its weights plus `add`, evaluate tasks with a loss. */
function site(server: Server, name: string, add: number, gate?: Promise<void>) {
  return runSite({
    port: server.port,
    name,
    timeout: 10_000,
    reconnectTimeout: 10_000,
    train: async (task: Task) => {
      if (task.round === 1) await gate;
      const w = (task.weights.w as Float32Array).map((x) => x + add);
      return { weights: { w }, samples: 10 * add, metrics: { loss: 1 } };
    },
    evaluate: () => ({ samples: 1, metrics: { loss: 0.5 } }),
  });
}

Deno.test("Coordinator.run() writes later models into the last one's memory, never into the caller's", async () => {
  await using server = listen({ clients: 2, open: true });
  const caller = modelOf(1 << 16, 0);
  const strategy = new Spy();
  const coordinator = new Coordinator(server, {
    job: "in-place",
    model: caller,
    rounds: 3,
    strategy,
    minSites: 2,
    roundTimeout: 10_000,
    waitTimeout: 10_000,
  });
  const sites = [site(server, "a", 1), site(server, "b", 3)];
  const result = await coordinator.run();
  const ends: SiteResult[] = await Promise.all(sites);
  assert.deepStrictEqual(ends.map((s) => s.stopReason), ["done", "done"]);
  assert.ok(allAre(caller, 0), "the caller's model was written");
  const [first, second, third] = strategy.calls;
  assert.equal(strategy.calls.length, 3);
  assert.ok(first.global === caller);
  assert.ok(first.into === undefined, "round 1 must not write into the caller's model");
  assert.ok(first.next !== caller);
  assert.ok(second.into === first.next, "round 2 did not write into round 1's model");
  assert.ok(second.next === first.next);
  assert.ok(third.into === first.next, "round 3 did not write into round 2's model");
  assert.ok(result.weights === first.next);
  assert.ok(second.sum === first.sum, "one sum for every round");
  assert.ok(third.sum === first.sum);
  // Each round adds (10·1 + 30·3) / 40 = 2.5, exactly as new memory would hold it.
  for (const [r, call] of strategy.calls.entries()) {
    assert.ok(allAre(call.made, 2.5 * (r + 1)), `round ${r + 1}`);
  }
});

/** Waits until `check()` holds, polling, for up to 10 s. */
async function until(check: () => boolean, what: string): Promise<void> {
  for (const deadline = Date.now() + 10_000; !check();) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("Coordinator.run() does not write a model that a broadcast may still be sending", async () => {
  await using server = listen({ clients: 2, open: true });
  // A site in a process of its own, stopped (SIGSTOP) once it acknowledged
  // its first task: the evaluation's broadcast of round 1's model never
  // completes to it, so that model stays in its outbox, for a resume.
  const mod = new URL("../mod.ts", import.meta.url).href;
  const code = `import { connect } from "${mod}";
    const client = await connect({ port: ${server.port}, name: "stuck", timeout: 10000 });
    console.log("joined");
    await client.recv();
    console.log("got");
    setInterval(() => {}, 1000);`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const out = lines(child.stdout);
  try {
    assert.equal((await out.next()).value, "joined");
    let release!: () => void;
    const gate = new Promise<void>((resolve) => release = resolve);
    const strategy = new Spy();
    const coordinator = new Coordinator(server, {
      job: "lent",
      model: modelOf(1 << 18, 0),
      rounds: 3,
      strategy,
      minResults: 1,
      grace: 0,
      staleHold: 0,
      evaluateEvery: 1,
      roundTimeout: 3_000,
      waitTimeout: 10_000,
    });
    coordinator.addEventListener("round", (event) => {
      const { round, kind } = (event as CustomEvent).detail;
      if (round === 1 && kind === "evaluate") {
        coordinator.removeSite("stuck");
        child.kill("SIGKILL");
      }
    });
    await until(() => server.stats().length === 1, "the stuck site");
    const good = site(server, "good", 1, gate);
    await until(() => server.stats().length === 2, "the good site");
    const running = coordinator.run();
    // Round 1's task acknowledged, then the stuck site stops; only then does the good site answer.
    assert.equal((await out.next()).value, "got");
    const stuck = server.stats().find((s) => s.name === "stuck")!;
    await until(() => server.stats(stuck.id).unacknowledged === 0, "the stuck site's ack");
    child.kill("SIGSTOP");
    release();
    const result = await running;
    assert.equal((await good).stopReason, "done");
    const [first, second, third] = strategy.calls;
    assert.equal(strategy.calls.length, 3);
    assert.ok(first.into === undefined);
    // Round 1's model was lent to the evaluation's broadcast: round 2 makes new memory.
    assert.ok(second.global === first.next);
    assert.ok(second.into === undefined, "round 2 wrote into a model still lent to a broadcast");
    assert.ok(second.next !== first.next);
    assert.ok(allAre(first.next, 1), "a lent model was written");
    // Round 2's model was sent in full: round 3 writes into it.
    assert.ok(third.into === second.next, "round 3 did not write into round 2's model");
    assert.ok(result.weights === second.next);
    assert.ok(allAre(result.weights, 3));
    const evaluation = coordinator.snapshot().recent.find((r) => r.kind === "evaluate")!;
    // Its broadcast never completed to the stuck site, yet the good site's answer was taken.
    assert.deepStrictEqual(evaluation.answered, ["good"]);
    assert.deepStrictEqual(evaluation.missing.map((m) => m.site), ["stuck"]);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // Gone already.
    }
    await child.status;
    for await (const _ of out) {
      // Drained.
    }
  }
});
