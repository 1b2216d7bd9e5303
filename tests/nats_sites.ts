/**
 * Minimal FL sites for the NATS tests, written on `connect()`, `recv()` and
 * `reply()` directly (fl version 1): a train task is answered with a
 * deterministic update of the weights, an evaluate task with metrics; a stop
 * ends the site. A site whose server goes away connects again (to a restarted
 * edge on the same port). A gate lets a test hold the answers back.
 *
 * @module
 */

import { type Client, connect, NdArray } from "../mod.ts";
import { edge, type NatsEdge, type NatsRoot, root } from "../nats.ts";
import { WeightedSum } from "../_fl/aggregate.ts";
import type { Weights } from "../_fl/weights.ts";

/** The test model: a 20×30 matrix and 30 biases. */
export function testModel(): Weights {
  const w = new Float32Array(600).map((_, i) => Math.sin(i) * 0.1);
  const b = new Float32Array(30).map((_, i) => Math.cos(i) * 0.1);
  return { w: new NdArray(w, [20, 30]), b };
}

/** A site's number of samples: its weight. */
export function samplesOf(site: number): number {
  return 10 + 7 * site;
}

/** The update site `site` sends for `round`: the weights plus a small deterministic step. */
export function updateOf(weights: Weights, site: number, round: number): Weights {
  const update: Weights = {};
  for (const [name, tensor] of Object.entries(weights)) {
    const data = tensor instanceof NdArray ? tensor.data : tensor;
    const out = new Float32Array(data.length);
    for (let i = 0; i < out.length; i++) {
      out[i] = data[i] + Math.sin(site * 131 + i * 7 + round) / 64;
    }
    update[name] = tensor instanceof NdArray ? new NdArray(out, tensor.shape) : out;
  }
  return update;
}

/**
 * Flat FedAvg over the sites' updates, folded in the order given (the test
 * passes another order than the edges see).
 *
 * @param weights The round's model.
 * @param sites The sites' numbers.
 * @param round The round.
 * @returns The aggregate.
 */
export function flatFedAvg(weights: Weights, sites: number[], round: number): Weights {
  const sum = new WeightedSum(weights);
  for (const site of sites) sum.add(updateOf(weights, site, round), samplesOf(site));
  return sum.mean();
}

/** One test site. */
export interface TestSite {
  /** Its number (the update's seed). */
  readonly site: number;
  /** Its name: `s<number>`. */
  readonly name: string;
  /** The rounds it received tasks for, in order. */
  readonly tasks: number[];
  /** Why it stopped, once it did. */
  readonly stopped: Promise<string>;
  /** Whether it is connected to its edge now. */
  connected: boolean;
  /** Rounds whose task it takes but never answers (a site that hangs). */
  readonly skip: Set<number>;
  /** Set to hold the answers: each waits until the promise resolves. */
  gate: Promise<void> | undefined;
  /** Resolves each time a task arrives (replaced after each). */
  nextTask: Promise<number>;
  /** Stops the site. */
  close(): void;
}

/**
 * Starts a site connecting to `port`, answering until stopped.
 *
 * @param port The edge's fedcomm port.
 * @param site The site's number.
 * @returns The site.
 */
export function startSite(port: number, site: number): TestSite {
  const closing = new AbortController();
  let taskArrived!: (round: number) => void;
  const state: TestSite = {
    site,
    name: `s${site}`,
    tasks: [],
    gate: undefined,
    skip: new Set(),
    connected: false,
    nextTask: new Promise((resolve) => taskArrived = resolve),
    close: () => closing.abort(),
    stopped: Promise.resolve(""),
  };
  const arrived = (round: number) => {
    state.tasks.push(round);
    const resolve = taskArrived;
    state.nextTask = new Promise((r) => taskArrived = r);
    resolve(round);
  };
  (state as { stopped: Promise<string> }).stopped = (async () => {
    while (!closing.signal.aborted) {
      try {
        await using client = await connect({
          port,
          name: state.name,
          waitForServer: true,
          timeout: 30_000,
          signal: closing.signal,
        });
        closing.signal.addEventListener("abort", () => client.close(), { once: true });
        state.connected = true;
        const reason = await serve(client, state, arrived);
        if (reason !== undefined) return reason;
      } catch {
        // The edge went away: connect again.
      }
      state.connected = false;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return "closed";
  })();
  return state;
}

/** Answers the tasks of one session; returns the stop's reason, or `undefined` if it ended. */
async function serve(
  client: Client,
  state: TestSite,
  arrived: (round: number) => void,
): Promise<string | undefined> {
  for await (const message of client) {
    const m = message as Record<string, unknown>;
    if (m.type === "stop") return String(m.reason);
    if (m.type !== "task") continue;
    arrived(m.round as number);
    if (state.skip.has(m.round as number)) continue;
    await state.gate;
    const weights = m.weights as Weights;
    const reply = m.kind === "train"
      ? { weights: updateOf(weights, state.site, m.round as number) }
      : {};
    await client.reply({
      fl: 1,
      type: "result",
      task: m.task,
      round: m.round,
      samples: samplesOf(state.site),
      metrics: { loss: state.site + (m.round as number) / 10 },
      ...reply,
    });
  }
  return undefined;
}

/**
 * Whether two weight maps hold the same tensors, bit for bit.
 *
 * @param a One.
 * @param b The other.
 * @returns Whether every tensor's bytes are equal.
 */
export function sameBits(a: Weights, b: Weights): boolean {
  const names = Object.keys(a);
  if (names.length !== Object.keys(b).length) return false;
  return names.every((name) => {
    const x = a[name] instanceof NdArray ? (a[name] as NdArray).data : a[name];
    const y = b[name] instanceof NdArray ? (b[name] as NdArray).data : b[name];
    if (y === undefined || x.byteLength !== y.byteLength) return false;
    const bx = new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    const by = new Uint8Array(y.buffer, y.byteOffset, y.byteLength);
    return bx.every((v, i) => v === by[i]);
  });
}

/** The edges' secrets of the tests. */
export const SECRETS = { a: "edge-a-secret-0123456789", b: "edge-b-secret-0123456789" };

/** A root and its two edges `a` and `b`, running; disposing closes them. */
export interface TwoEdges extends AsyncDisposable {
  readonly root: NatsRoot;
  readonly a: NatsEdge;
  readonly b: NatsEdge;
  /** The edges' `run()`s (their rejection on close is handled). */
  readonly runs: Promise<string>[];
}

/**
 * Starts a root for edges `a` and `b`, and both edges, running.
 *
 * @param servers The NATS server.
 * @param job The job's name.
 * @param chunkBytes The object store's chunk size, if not the default.
 * @returns The three.
 */
export async function startTwoEdges(
  servers: string,
  job: string,
  chunkBytes?: number,
): Promise<TwoEdges> {
  const options = { nats: { servers }, job, chunkBytes };
  const r = await root({ ...options, edges: SECRETS });
  const a = await edge({ ...options, name: "a", secret: SECRETS.a });
  const b = await edge({ ...options, name: "b", secret: SECRETS.b });
  const runs = [a.run(), b.run()];
  for (const run of runs) run.catch(() => {}); // awaited by the tests; a failing test closes them
  return {
    root: r,
    a,
    b,
    runs,
    [Symbol.asyncDispose]: async () => {
      await Promise.all([a.close(), b.close()]);
      await r.close();
    },
  };
}

/**
 * Waits until every site is connected to its edge (at most 20 s).
 *
 * @param sites The sites.
 * @returns Resolves once they are.
 * @throws {Error} If they were not within 20 s.
 */
export async function connected(sites: TestSite[]): Promise<void> {
  const end = Date.now() + 20_000;
  while (!sites.every((site) => site.connected)) {
    if (Date.now() > end) throw new Error("The sites did not connect within 20 s");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * Holds the sites' answers until the function returned is called.
 *
 * @param sites The sites.
 * @returns Lets them answer.
 */
export function hold(sites: TestSite[]): () => void {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => open = resolve);
  for (const site of sites) site.gate = gate;
  return () => {
    for (const site of sites) site.gate = undefined;
    open();
  };
}
