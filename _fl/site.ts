/**
 * A whole site in one call: {@linkcode runSite} connects, answers each task
 * with the site's `train` or `evaluate` handler, and connects again (same
 * name, secret and TLS options) when the coordinator restarts, until the
 * coordinator says `stop`.
 *
 * @module
 */

import {
  type Client,
  connect,
  type ConnectOptions,
  PeerDisconnectedError,
  ProtocolError,
  RejectedError,
  TimeoutError,
} from "../mod.ts";
import type { Task, TaskResult } from "./task.ts";
import { tasks } from "./tasks.ts";

/**
 * A site's handler of one kind of task: returns the result to send (train:
 * with `weights`), or `undefined` after answering the task itself. A throw
 * is sent as the task's failure.
 */
export type TaskHandler = (task: Task) => Promise<TaskResult | undefined> | TaskResult | undefined;

/** Options of {@linkcode runSite}: those of `connect()` and the handlers. */
export interface SiteOptions extends ConnectOptions {
  /** Answers train tasks (none: they fail). */
  train?: TaskHandler;
  /** Answers evaluate tasks (none: they fail). */
  evaluate?: TaskHandler;
  /**
   * The most milliseconds to keep trying to connect, from the start and after
   * each lost session (default 300,000). `timeout` bounds each try.
   */
  reconnectTimeout?: number;
  /** The most milliseconds to wait for each next task (default: no limit). */
  taskTimeout?: number;
  /** Called with each new session's client (the first, and each after a reconnect). */
  onSession?: (client: Client) => void;
}

/** What {@linkcode runSite} did. */
export interface SiteResult {
  /** Tasks answered with a result. */
  results: number;
  /** Tasks answered with a failure (the handler threw, or there was none for the kind). */
  failures: number;
  /** Tasks that turned stale before their answer: nothing was sent. */
  stale: number;
  /** New sessions after the first (the coordinator restarted, or the session was lost). */
  reconnects: number;
  /** The reason of the coordinator's `stop` (`undefined`: it closed the session without one). */
  stopReason: string | undefined;
}

/** Reconnecting: the first pause, doubled each try up to the last. */
const FIRST_PAUSE_MS = 100;
const MAX_PAUSE_MS = 5_000;
/** Rejects after which a later try can succeed. */
const RETRY_REASONS: readonly string[] = ["busy", "full", "duplicate", "live", "resume"];

/** Whether connecting again may succeed after `error`. */
function retryable(error: unknown): boolean {
  if (error instanceof RejectedError) return RETRY_REASONS.includes(error.reason);
  return error instanceof PeerDisconnectedError || error instanceof TimeoutError ||
    error instanceof ProtocolError || error instanceof Deno.errors.ConnectionRefused;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(timer);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** Connects, trying again with pauses until `deadline` (a `performance.now()` time). */
async function connectUntil(options: ConnectOptions, deadline: number): Promise<Client> {
  const perTry = options.timeout ?? 10_000;
  for (let pause = FIRST_PAUSE_MS;; pause = Math.min(2 * pause, MAX_PAUSE_MS)) {
    options.signal?.throwIfAborted();
    const left = deadline - performance.now();
    try {
      return await connect({
        ...options,
        waitForServer: true,
        timeout: Math.max(50, Math.min(left, perTry)),
      });
    } catch (error) {
      if (!retryable(error) || performance.now() + pause > deadline) throw error;
    }
    await sleep(pause, options.signal);
  }
}

/** Runs one task through its handler and answers it; counts the outcome. */
async function work(
  task: Task,
  handler: TaskHandler | undefined,
  outcome: SiteResult,
): Promise<void> {
  let result: TaskResult | undefined;
  try {
    if (handler === undefined) {
      throw new TypeError(`This site has no handler for "${task.kind}" tasks`);
    }
    result = await handler(task);
    if (result === undefined && !task.answered && !task.stale) {
      throw new TypeError("The handler returned nothing and did not answer the task");
    }
    if (result !== undefined) await task.reply(result);
  } catch (error) {
    if (error instanceof PeerDisconnectedError) throw error; // the session: connect again
    if (await task.fail(error)) outcome.failures++;
    else if (task.stale) outcome.stale++;
    return;
  }
  if (task.answered) outcome.results++;
  else outcome.stale++;
}

/**
 * Runs a site until the coordinator says `stop`: connects (waiting for the
 * server), answers each task with `train(task)` or `evaluate(task)`, and,
 * when the session is lost (a coordinator killed and started again cannot
 * resume it), connects again with the same options, so the same name,
 * pausing from 100 ms doubling to 5 s, for at most `reconnectTimeout` ms.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { listen } from "@fedcomm/fedcomm";
 * import { runSite, type Weights } from "@fedcomm/fedcomm/fl";
 *
 * await using server = listen({ clients: 1 });
 * const site = runSite({
 *   port: server.port,
 *   name: "site-a",
 *   train: (task) => ({ weights: task.weights, samples: 10, metrics: { loss: 0.5 } }),
 * });
 * await server.ready({ timeout: 10_000 });
 * const weights: Weights = { b: new Float32Array([1, 2]) };
 * await server.broadcast({
 *   fl: 1, type: "task", job: "demo", task: 1, round: 1, kind: "train", config: {}, weights,
 * });
 * const result = (await server.gather({ timeout: 10_000 })).get(0) as { samples: number };
 * assert.equal(result.samples, 10);
 * await server.broadcast({ fl: 1, type: "stop", reason: "done" });
 * assert.deepStrictEqual(await site, {
 *   results: 1, failures: 0, stale: 0, reconnects: 0, stopReason: "done",
 * });
 * ```
 *
 * @param options Those of `connect()` (`timeout` bounds each try, `signal`
 * stops the site), the handlers, `reconnectTimeout` and `taskTimeout`.
 * @returns What the site did, once the coordinator said stop or closed the session.
 * @throws {RangeError} If `reconnectTimeout` is not positive.
 * @throws {AuthenticationError} If the server cannot prove it knows the secret.
 * @throws {RejectedError} If the server refuses for a reason that does not
 * change (`auth`, `version`).
 * @throws {TimeoutError} If no connection could be made within `reconnectTimeout`,
 * or no task came within `taskTimeout`.
 */
export async function runSite(options: SiteOptions): Promise<SiteResult> {
  const { train, evaluate, reconnectTimeout = 300_000, taskTimeout, onSession, ...connectOptions } =
    options;
  if (!(reconnectTimeout > 0)) {
    throw new RangeError(`Invalid reconnectTimeout: "${reconnectTimeout}" is not positive`);
  }
  const outcome: SiteResult = {
    results: 0,
    failures: 0,
    stale: 0,
    reconnects: 0,
    stopReason: undefined,
  };
  const handlers = { train, evaluate };
  for (let sessions = 0;; sessions++) {
    const client = await connectUntil(connectOptions, performance.now() + reconnectTimeout);
    outcome.reconnects = sessions;
    onSession?.(client);
    try {
      const loop = tasks(client, { signal: options.signal, timeout: taskTimeout });
      for await (const task of loop) await work(task, handlers[task.kind], outcome);
      outcome.stopReason = loop.stopReason;
      return outcome;
    } catch (error) {
      if (!(error instanceof PeerDisconnectedError)) throw error;
      // Lost: connect again.
    } finally {
      await client.close();
    }
  }
}
