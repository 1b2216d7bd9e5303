/**
 * The root of a hierarchical job: it puts each round's model into the
 * object store, publishes the task to the edges, and merges their partial
 * aggregates into the round's FedAvg aggregate.
 *
 * @module
 */

import { AckPolicy, type Consumer, DeliverPolicy } from "@nats-io/jetstream";
import { aggregateMetrics, WeightedSum } from "../_fl/aggregate.ts";
import { checkWeights } from "../_fl/weights.ts";
import type { WaitOptions } from "../types.ts";
import { collect } from "./collect.ts";
import { checkJobOptions, checkName, type JobContext, openJob } from "./context.ts";
import { checkQuorum } from "./edge.ts";
import { packParts } from "./pack.ts";
import { retrying, type Until, until } from "./retry.ts";
import { importKey, sealDown } from "./seal.ts";
import { deletePack, putPack } from "./store.ts";
import type { RootOptions, RoundOptions, RoundResult } from "./types.ts";
import type { TaskBody } from "./wire.ts";

/** The default round at the root: 10 minutes. */
const DEFAULT_ROUND_MS = 600_000;
/**
 * The root's consumer delivers a message again if it is not acknowledged
 * within this time: a message lost on its way (the connection dropped, NATS
 * restarted) comes again within 10 s, not at the next round. While the root
 * reads a partial, it tells NATS it is still working on it (`collect.ts`).
 */
const ACK_WAIT_NS = 10 * 1e9;

/** A random run id: 16 hex digits. */
function runId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The root of a hierarchical job, made by {@linkcode root}: one
 * {@linkcode NatsRoot.round} per round, then {@linkcode NatsRoot.stop}.
 */
export class NatsRoot implements AsyncDisposable {
  readonly #context: JobContext;
  readonly #keys: ReadonlyMap<string, CryptoKey>;
  readonly #consumer: Consumer;
  readonly #run = runId();
  readonly #sitesOf = new Map<string, string[]>();
  #lastRound = 0;
  #lastTask = -1;
  #busy = false;
  #closed: Promise<void> | undefined;

  /** Use {@linkcode root}. */
  private constructor(
    context: JobContext,
    keys: ReadonlyMap<string, CryptoKey>,
    consumer: Consumer,
  ) {
    this.#context = context;
    this.#keys = keys;
    this.#consumer = consumer;
  }

  /**
   * Connects to NATS and sets up the job's stream, bucket and the root's
   * durable consumer (made anew: messages of an earlier run are not read).
   *
   * @param options See {@linkcode RootOptions}.
   * @returns The root.
   */
  static async start(options: RootOptions): Promise<NatsRoot> {
    const settings = checkJobOptions(options);
    const { edges } = options;
    if (typeof edges !== "object" || edges === null || Array.isArray(edges)) {
      throw new TypeError(`Invalid edges: "${String(edges)}" is not a map of names to secrets`);
    }
    const entries = edges instanceof Map ? [...edges] : Object.entries(edges);
    if (entries.length === 0) throw new TypeError("Invalid edges: no edge is listed");
    const keys = new Map<string, CryptoKey>();
    for (const [name, secret] of entries) {
      keys.set(checkName(name, "edge"), await importKey(secret, name));
    }
    const context = await openJob(options, settings, `fedcomm root ${settings.job}`);
    try {
      const consumer = await retrying("Setting up the root's consumer", async () => {
        await context.jsm.consumers.delete(context.stream, "root").catch(() => {});
        await context.jsm.consumers.add(context.stream, {
          durable_name: "root",
          filter_subject: context.upSubject(">"),
          ack_policy: AckPolicy.Explicit,
          deliver_policy: DeliverPolicy.New,
          ack_wait: ACK_WAIT_NS,
        });
        return await context.js.consumers.get(context.stream, "root");
      }, until(30_000));
      return new NatsRoot(context, keys, consumer);
    } catch (error) {
      await context.nc.close().catch(() => {});
      throw error;
    }
  }

  /** The job's name. */
  get job(): string {
    return this.#context.job;
  }

  /** This run's id: messages of other runs of the job are refused. */
  get run(): string {
    return this.#run;
  }

  /** The edges it accepts partial aggregates from. */
  get edges(): string[] {
    return [...this.#keys.keys()];
  }

  /**
   * Runs one round across the edges: puts the model into the object store
   * (once: its name is its SHA-256), publishes the task, and merges the
   * partial aggregates that come back until every edge sent one, or the
   * quorum of `min` sites answered and `grace` passed, or the deadline. An
   * edge that is down, or killed during the round, costs only its sites:
   * they are listed in `missing`.
   *
   * @param options The round, its model, the quorum and the deadline.
   * @returns The aggregate and who answered, who did not and why.
   * @throws {TypeError} If the weights are not a map of float tensors, or another round runs.
   * @throws {RangeError} If the round is not above the last one, or an option is out of range.
   * @throws {NatsError} If NATS stayed unreachable until the deadline, or refused the root's
   * messages (its NATS user's permissions).
   * @throws {Error} The signal's reason if it aborts.
   */
  async round(options: RoundOptions): Promise<RoundResult> {
    const { task, timeout, edgeTimeout } = this.#check(options);
    this.#busy = true;
    const deadline = until(timeout, options.signal);
    let model: string | undefined;
    try {
      model = (await putPack(this.#context, packParts({}, options.weights), deadline)).name;
      const body: TaskBody = {
        v: 1,
        type: "task",
        job: this.#context.job,
        run: this.#run,
        task,
        round: options.round,
        kind: options.kind ?? "train",
        config: options.config ?? {},
        model,
        timeout: edgeTimeout,
        expires: timeout,
        issued: Date.now(),
      };
      await this.#publish({ ...body }, `${this.#run}.task.${task}`, deadline);
      const sum = body.kind === "train" ? new WeightedSum(options.weights) : undefined;
      const collected = await collect({
        context: this.#context,
        consumer: this.#consumer,
        keys: this.#keys,
        task: body,
        sum,
        min: options.min,
        grace: options.grace ?? 0,
        deadline,
        timeout,
        sitesOf: this.#sitesOf,
      });
      const metrics = aggregateMetrics(
        collected.answered.map(([, samples, metrics]) => ({ samples, metrics })),
      );
      return {
        round: options.round,
        task,
        weights: sum !== undefined && sum.weight > 0 ? sum.mean() : undefined,
        metrics,
        weight: collected.answered.reduce((n, [, samples]) => n + samples, 0),
        sites: new Map(collected.answered.map(([site, samples]) => [site, samples])),
        ...collected,
      };
    } finally {
      this.#busy = false;
      if (model !== undefined) await deletePack(this.#context, model);
    }
  }

  /** Checks a round's options; returns its task number and deadlines. */
  #check(options: RoundOptions): { task: number; timeout: number; edgeTimeout: number } {
    if (this.#busy) throw new TypeError("Another round is running: wait for it to end");
    if (this.#closed !== undefined) throw new TypeError("The root is closed");
    const { round } = options;
    if (!Number.isSafeInteger(round) || round <= this.#lastRound) {
      throw new RangeError(
        `Invalid round: "${round}" is not an integer above the last round, "${this.#lastRound}"`,
      );
    }
    const task = options.task ?? round;
    if (!Number.isSafeInteger(task) || task <= this.#lastTask) {
      throw new RangeError(
        `Invalid task: "${task}" is not an integer above the last task, "${this.#lastTask}"`,
      );
    }
    if (options.kind !== undefined && options.kind !== "train" && options.kind !== "evaluate") {
      throw new TypeError(`Invalid kind: "${options.kind}" is not "train" or "evaluate"`);
    }
    checkWeights(options.weights, "Round weights");
    checkQuorum(options.min, options.grace);
    const timeout = options.timeout ?? DEFAULT_ROUND_MS;
    const edgeTimeout = options.edgeTimeout ?? Math.floor(timeout * 0.8);
    for (const [what, ms] of [["timeout", timeout], ["edgeTimeout", edgeTimeout]] as const) {
      if (!(typeof ms === "number" && ms > 0 && ms < Infinity)) {
        throw new RangeError(`Invalid ${what}: "${ms}" is not a positive number of ms`);
      }
    }
    this.#lastRound = round;
    this.#lastTask = task;
    return { task, timeout, edgeTimeout };
  }

  /** Seals a message for every edge and publishes it on the task subject, once. */
  async #publish(body: Record<string, unknown>, msgID: string, deadline: Until): Promise<void> {
    const bytes = await sealDown(this.#keys, body);
    await retrying(
      "Publishing the task",
      () => this.#context.js.publish(this.#context.taskSubject, bytes, { msgID, timeout: 5_000 }),
      deadline,
    );
  }

  /**
   * Ends the job: the edges tell their sites to stop and their `run()` returns `reason`.
   *
   * @param reason Why, for the sites' logs (default `"done"`).
   * @param options Cancellation and time limit (default 30 s).
   * @returns Resolves once the stop is stored in NATS.
   * @throws {NatsError} If NATS stayed unreachable until the deadline.
   */
  async stop(reason = "done", options?: WaitOptions): Promise<void> {
    const body = { v: 1, type: "stop", job: this.#context.job, run: this.#run, reason };
    const deadline = until(options?.timeout ?? 30_000, options?.signal);
    await this.#publish(body, `${this.#run}.stop`, deadline);
  }

  /**
   * Closes the NATS connection (the stream, the bucket and the edges stay).
   *
   * @returns Resolves when it is closed.
   */
  close(): Promise<void> {
    this.#closed ??= this.#context.nc.close().catch(() => {});
    return this.#closed;
  }

  /** Closes the root: `await using r = await root(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
