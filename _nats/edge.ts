/**
 * An edge aggregator: an ordinary fedcomm server for its local sites, which
 * takes each round's task and model from the root through NATS, runs the
 * round locally and sends up one partial aggregate.
 *
 * @module
 */

import { AckPolicy, type Consumer, DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { listen, type Server } from "../server.ts";
import type { Weights } from "../_fl/weights.ts";
import { checkJobOptions, checkName, type JobContext, openJob } from "./context.ts";
import { cancelTask, runLocalRound, siteNames } from "./edge_round.ts";
import { NatsError, PermanentNatsError } from "./errors.ts";
import { packParts } from "./pack.ts";
import { remaining, retrying, sleep, type Until, until } from "./retry.ts";
import { importKey, openDown, Refused, sealUp } from "./seal.ts";
import { getPack, putPack } from "./store.ts";
import type { EdgeOptions, EdgeStats } from "./types.ts";
import { parseDown, type TaskBody } from "./wire.ts";

/** How long a pull for the next task waits before asking again (NATS's minimum is 1 s). */
const PULL_MS = 2_000;
/** The least time an edge keeps trying to send its partial up, past its local deadline. */
const MIN_UPLOAD_MS = 5_000;
/** A task lost on its way (not acknowledged: the edge acknowledges on receipt) comes again in 5 s. */
const ACK_WAIT_NS = 5 * 1e9;

/**
 * An edge aggregator, made by {@linkcode edge}: its fedcomm server is
 * {@linkcode NatsEdge.server}; {@linkcode NatsEdge.run} takes the root's
 * tasks until the root stops the job.
 */
export class NatsEdge implements AsyncDisposable {
  readonly #context: JobContext;
  readonly #name: string;
  readonly #key: CryptoKey;
  readonly #server: Server;
  readonly #min: number | undefined;
  readonly #grace: number | undefined;
  readonly #closing = new AbortController();
  #model: { name: string; weights: Weights } | undefined;
  #last = { run: "", task: -1 }; // the last task taken, in its run of the job
  #current: { run: string; task: number; superseded: AbortController } | undefined;
  #stats = {
    rounds: 0,
    modelsFetched: 0,
    bytesFetched: 0,
    skipped: 0,
    failed: 0,
    lastRoundMs: undefined as number | undefined,
  };
  #closed: Promise<void> | undefined;
  #running = false;

  /** Use {@linkcode edge}. */
  private constructor(context: JobContext, name: string, key: CryptoKey, options: EdgeOptions) {
    this.#context = context;
    this.#name = name;
    this.#key = key;
    this.#min = options.min;
    this.#grace = options.grace;
    this.#server = listen({ clients: 10_000, open: true, ...options.listen });
  }

  /**
   * Connects to NATS, sets up the edge's durable consumer and starts its server.
   *
   * @param options See {@linkcode EdgeOptions}.
   * @returns The edge.
   */
  static async start(options: EdgeOptions): Promise<NatsEdge> {
    const settings = checkJobOptions(options);
    const name = checkName(options.name, "edge");
    checkQuorum(options.min, options.grace);
    const key = await importKey(options.secret, name);
    const context = await openJob(options, settings, `fedcomm edge ${name}`);
    try {
      await retrying("Setting up the edge's consumer", async () => {
        await context.jsm.consumers.info(context.stream, `edge-${name}`).catch(() =>
          context.jsm.consumers.add(context.stream, {
            durable_name: `edge-${name}`,
            filter_subject: context.taskSubject,
            ack_policy: AckPolicy.Explicit,
            deliver_policy: DeliverPolicy.LastPerSubject,
            ack_wait: ACK_WAIT_NS,
          })
        );
      }, until(30_000));
      return new NatsEdge(context, name, key, options);
    } catch (error) {
      await context.nc.close().catch(() => {});
      throw error;
    }
  }

  /** The edge's name. */
  get name(): string {
    return this.#name;
  }

  /** The fedcomm server the sites connect to (`edge.server.port`). */
  get server(): Server {
    return this.#server;
  }

  /**
   * What the edge did so far.
   *
   * @returns Rounds, model fetches and skipped tasks.
   */
  stats(): EdgeStats {
    return { ...this.#stats };
  }

  /**
   * Takes the root's tasks, one at a time, and runs each with the sites
   * connected when it arrives, until the root stops the job; then tells the
   * sites to stop. Tasks that are stale (a newer one is queued, or past
   * their deadline) or not sealed for this edge are skipped.
   *
   * @param options A signal to stop taking tasks.
   * @returns The root's reason for stopping the job.
   * @throws {NatsError} If the edge was closed, or NATS refused to take the edge's messages
   * (its NATS user may not publish on the edge's subject or in the object store).
   * @throws {TypeError} If it is running already.
   * @throws {Error} The signal's reason if it aborts.
   */
  async run(options?: { signal?: AbortSignal }): Promise<string> {
    if (this.#running) throw new TypeError(`Edge "${this.#name}" is running already`);
    this.#running = true;
    try {
      return await this.#run(options?.signal);
    } finally {
      this.#running = false;
    }
  }

  async #run(outer: AbortSignal | undefined): Promise<string> {
    const signal = outer === undefined
      ? this.#closing.signal
      : AbortSignal.any([outer, this.#closing.signal]);
    const consumer = await retrying(
      "Opening the edge's consumer",
      () => this.#context.js.consumers.get(this.#context.stream, `edge-${this.#name}`),
      until(30_000, signal),
    );
    // Newer tasks, as they are published: they end a round still running (the root moved on).
    const watch = this.#context.nc.subscribe(this.#context.taskSubject, {
      callback: (_error, message) => void this.#supersede(message.data),
    });
    try {
      return await this.#takeAll(consumer, signal);
    } finally {
      watch.unsubscribe();
    }
  }

  /** Ends the round running if `data` is a newer task of the root, or its stop. */
  async #supersede(data: Uint8Array): Promise<void> {
    const current = this.#current;
    if (current === undefined || current.superseded.signal.aborted) return;
    try {
      const body = parseDown(await openDown(this.#key, this.#name, data));
      const newer = body.type === "stop" || body.run !== current.run || body.task > current.task;
      if (newer) current.superseded.abort(new Refused("A newer task superseded this one"));
    } catch {
      // Not the root's: the durable consumer skips it too.
    }
  }

  /** The consumer's loop: one task at a time, until a stop. */
  async #takeAll(consumer: Consumer, signal: AbortSignal): Promise<string> {
    while (true) {
      signal.throwIfAborted();
      let message: JsMsg | null;
      try {
        message = await consumer.next({ expires: PULL_MS });
      } catch {
        await sleep(200, signal); // NATS is away: try again
        continue;
      }
      if (message === null) continue;
      message.ack();
      const reason = await this.#take(message, signal);
      if (reason !== undefined) return reason;
    }
  }

  /** Handles one message from the root; returns the stop reason for a stop. */
  async #take(message: JsMsg, signal: AbortSignal): Promise<string | undefined> {
    let body;
    try {
      body = parseDown(await openDown(this.#key, this.#name, message.data));
      if (body.job !== this.#context.job) throw new Refused(`Message is for job "${body.job}"`);
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      this.#stats.skipped++;
      return undefined;
    }
    if (body.type === "stop") {
      const stop = { fl: 1, type: "stop", reason: body.reason };
      await this.#server.broadcast(stop, { timeout: 5_000 }).catch(() => {});
      return body.reason;
    }
    const late = Date.now() > body.issued + body.timeout;
    const repeat = body.run === this.#last.run && body.task <= this.#last.task;
    if (message.info.pending > 0 || late || repeat) {
      this.#stats.skipped++;
      return undefined;
    }
    this.#last = { run: body.run, task: body.task };
    try {
      await this.#round(body, signal);
    } catch (error) {
      signal.throwIfAborted();
      // NATS refused the edge's messages (its user's permissions): no later round can do better.
      if (!(error instanceof NatsError) || error instanceof PermanentNatsError) throw error;
      this.#stats.failed++; // NATS was away until the round's deadline: on to the next task
    }
    return undefined;
  }

  /** Runs one task and sends up its partial aggregate (none if a newer task superseded it). */
  async #round(task: TaskBody, signal: AbortSignal): Promise<void> {
    const started = performance.now();
    const superseded = new AbortController();
    this.#current = { run: task.run, task: task.task, superseded };
    const localMs = Math.max(0, Math.min(task.timeout, task.issued + task.timeout - Date.now()));
    const local = until(localMs, AbortSignal.any([signal, superseded.signal]));
    const upMs = Math.max(MIN_UPLOAD_MS, task.issued + task.expires - Date.now());
    const up = until(upMs, signal);
    const sites = siteNames(this.#server, this.#name);
    const roster = await putPack(this.#context, packParts({ sites: [...sites.values()] }), up);
    await this.#publish({ type: "taken", task, roster: roster.name, sites: sites.size }, up);
    const packed = await this.#local(task, sites, local);
    if (packed === undefined) {
      signal.throwIfAborted();
      this.#stats.skipped++; // the root moved on: tell the sites, send nothing up
      await cancelTask(this.#server, [...sites.keys()], task);
      return;
    }
    const pack = await putPack(this.#context, packed.parts, up);
    await this.#publish({
      type: "partial",
      task,
      pack: pack.name,
      size: pack.size,
      weight: packed.weight,
      count: packed.count,
    }, up);
    this.#stats.rounds++;
    this.#stats.lastRoundMs = performance.now() - started;
  }

  /** The local round and its partial, or `undefined` if a newer task superseded it. */
  async #local(task: TaskBody, sites: Map<number, string>, local: Until) {
    try {
      const weights = await this.#fetchModel(task.model, local);
      const result = await runLocalRound(this.#server, task, weights, {
        sites,
        min: this.#min,
        grace: this.#grace,
        deadline: local,
      });
      const meta = { answered: result.answered, missing: result.missing };
      const sums = result.sum?.toPartial().sums;
      const weight = result.sum?.weight ?? 0;
      return {
        parts: packParts(meta, sums),
        weight,
        count: result.sum?.count ?? meta.answered.length,
      };
    } catch (error) {
      if (local.signal?.aborted) return undefined;
      const why = `The edge could not run the round: ${(error as Error)?.message ?? error}`;
      const missing = [...sites.values()].map((site) => [site, why]);
      return { parts: packParts({ answered: [], missing }), weight: 0, count: 0 };
    }
  }

  /** The round's model: fetched once, kept for the next round if it is the same. */
  async #fetchModel(name: string, deadline: Until): Promise<Weights> {
    if (this.#model?.name === name) return this.#model.weights;
    this.#model = undefined;
    const { tensors, size } = await getPack(this.#context, name, deadline);
    this.#stats.modelsFetched++;
    this.#stats.bytesFetched += size;
    this.#model = { name, weights: tensors };
    return tensors;
  }

  /** Seals and publishes a message to the root, once (NATS drops a repeat by its id). */
  async #publish(
    message: { type: string; task: TaskBody } & Record<string, unknown>,
    deadline: Until,
  ): Promise<void> {
    const { type, task, ...rest } = message;
    const body = {
      v: 1,
      type,
      job: task.job,
      run: task.run,
      edge: this.#name,
      task: task.task,
      round: task.round,
      ...rest,
    };
    const bytes = await sealUp(this.#key, body);
    const msgID = `${task.run}.${task.task}.${this.#name}.${type}`;
    const timeout = Math.max(1_000, Math.min(5_000, remaining(deadline)));
    await retrying(
      `Publishing the ${type} message`,
      () =>
        this.#context.js.publish(this.#context.upSubject(this.#name), bytes, { msgID, timeout }),
      deadline,
    );
  }

  /**
   * Stops taking tasks, closes the server (the sites' sessions end) and the NATS connection.
   *
   * @returns Resolves when everything is closed.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort(new NatsError(`Edge "${this.#name}" was closed`));
      await this.#server.close();
      await this.#context.nc.close().catch(() => {});
    })();
    return this.#closed;
  }

  /** Closes the edge: `await using e = await edge(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * Checks a quorum's `min` and `grace`.
 *
 * @param min A positive integer, or `undefined`.
 * @param grace Milliseconds ≥ 0, or `undefined`.
 * @throws {RangeError} If either is out of range.
 */
export function checkQuorum(min: number | undefined, grace: number | undefined): void {
  if (min !== undefined && !(Number.isSafeInteger(min) && min > 0)) {
    throw new RangeError(`Invalid min: "${min}" is not a positive integer`);
  }
  if (grace !== undefined && !(typeof grace === "number" && grace >= 0 && grace < Infinity)) {
    throw new RangeError(`Invalid grace: "${grace}" is not a finite number of ms ≥ 0`);
  }
}
