/**
 * One task at a site: what the coordinator asked (train or evaluate these
 * weights), a signal that aborts when the task turns stale, and the answer
 * (`reply` with the result, or `fail`), sent as a reply to the task's
 * message. {@linkcode tasks} makes them.
 *
 * @module
 */

import { type Client, FedcommError, SendTimeoutError, type WaitOptions } from "../mod.ts";
import {
  type CancelReason,
  type Config,
  type FailureMessage,
  FL_VERSION,
  type Metrics,
  parseResult,
  type ResultMessage,
  type TaskKind,
  type TaskMessage,
} from "./messages.ts";
import { checkCompatible, checkFinite, type Weights } from "./weights.ts";

/** Why a task turned stale: the coordinator's cancel reason, or `"superseded"` by a newer task. */
export type StaleReason = CancelReason | "superseded";

/**
 * The reason a task's `signal` aborts with: the coordinator cancelled the
 * task (`reason` from its `cancel`, `"stopped"` when the job stopped or the
 * session ended) or sent a newer one (`"superseded"`). Work on it is wasted:
 * its answer would not be used.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { FedcommError } from "@fedcomm/fedcomm";
 * import { TaskCancelledError } from "@fedcomm/fedcomm/fl";
 *
 * const error = new TaskCancelledError(7, "superseded");
 * assert.ok(error instanceof FedcommError);
 * assert.equal(error.message, `Task "7" was cancelled: superseded`);
 * assert.deepStrictEqual([error.task, error.reason], [7, "superseded"]);
 * ```
 */
export class TaskCancelledError extends FedcommError {
  /** The task's number. */
  readonly task: number;
  /** Why it was cancelled. */
  readonly reason: StaleReason;

  /**
   * Creates the error.
   *
   * @param task The task's number.
   * @param reason Why it was cancelled.
   */
  constructor(task: number, reason: StaleReason) {
    super(`Task "${task}" was cancelled: ${reason}`);
    this.name = "TaskCancelledError";
    this.task = task;
    this.reason = reason;
  }
}

/** What {@linkcode Task.reply} sends. */
export interface TaskResult {
  /** The trained weights (train tasks; none for evaluate): the task's names, dtypes and shapes. */
  weights?: Weights;
  /** How many samples the site trained or evaluated on: its weight in the average. */
  samples: number;
  /** What the site measured (`{ loss: 0.3 }`), finite numbers; default none. */
  metrics?: Metrics;
}

/**
 * A task from the coordinator, as {@linkcode tasks} yields it. Answer it
 * once, with {@linkcode Task.reply} or {@linkcode Task.fail}; once it is
 * stale (cancelled, or a newer task came), answering sends nothing and
 * returns `false`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, listen } from "@fedcomm/fedcomm";
 * import { tasks } from "@fedcomm/fedcomm/fl";
 *
 * await using server = listen({ clients: 1 });
 * await using client = await connect({ port: server.port });
 * const model = { b: new Float32Array([1, 2]) };
 * await server.broadcast({
 *   fl: 1, type: "task", job: "demo", task: 1, round: 1, kind: "train", config: {}, weights: model,
 * });
 * for await (const task of tasks(client, { timeout: 10_000 })) {
 *   const b = (task.weights.b as Float32Array).map((x) => x * 2);
 *   assert.equal(await task.reply({ weights: { b }, samples: 5 }), true);
 *   assert.equal(await task.reply({ weights: { b }, samples: 5 }), false); // answered already
 *   const answer = (await server.gather({ timeout: 10_000 })).get(0) as { weights: typeof model };
 *   assert.deepStrictEqual(answer.weights.b, new Float32Array([2, 4]));
 *   await server.broadcast({ fl: 1, type: "stop", reason: "done" });
 * }
 * ```
 */
export class Task {
  /** The job's name. */
  readonly job: string;
  /** The task's number in the job (unique, increasing). */
  readonly id: number;
  /** The round it belongs to. */
  readonly round: number;
  /** Train (answer with weights) or evaluate (answer with metrics only). */
  readonly kind: TaskKind;
  /** The strategy's settings for this round (FedProx: `proximal_mu`). */
  readonly config: Config;
  /** The global model, as received (views of the message: copy before changing, or change in place). */
  readonly weights: Weights;
  /** The number of the coordinator's message that carried the task: what the answer replies to. */
  readonly number: number;
  /** Aborts, with a {@linkcode TaskCancelledError}, when the task turns stale. */
  readonly signal: AbortSignal;
  readonly #client: Client;
  #answered = false;

  /**
   * Prefer {@linkcode tasks}, which makes tasks from the coordinator's messages.
   *
   * @param client The client the task came on.
   * @param message The checked task message.
   * @param number Its message number.
   * @param signal Aborts when the task turns stale.
   */
  constructor(client: Client, message: TaskMessage, number: number, signal: AbortSignal) {
    this.#client = client;
    this.job = message.job;
    this.id = message.task;
    this.round = message.round;
    this.kind = message.kind;
    this.config = message.config;
    this.weights = message.weights;
    this.number = number;
    this.signal = signal;
  }

  /** Whether the coordinator cancelled the task or sent a newer one: an answer would be wasted. */
  get stale(): boolean {
    return this.signal.aborted;
  }

  /** Why the task turned stale, or `undefined` while it is not. */
  get reason(): StaleReason | undefined {
    const reason = this.signal.reason;
    return this.signal.aborted && reason instanceof TaskCancelledError ? reason.reason : undefined;
  }

  /** Whether {@linkcode Task.reply} or {@linkcode Task.fail} sent the task's answer. */
  get answered(): boolean {
    return this.#answered;
  }

  /**
   * Sends the task's result, as a reply to its message.
   *
   * @param result The weights (train tasks only), the sample count and the metrics.
   * @param options Cancellation and time limit of the send.
   * @returns `true` once sent; `false` (nothing sent) if the task is stale or
   * was already answered.
   * @throws {TypeError} If the weights are missing (train), present
   * (evaluate), or differ from the task's in a name, dtype or shape; if
   * `samples` is not a non-negative integer or a metric not a finite number.
   * @throws {RangeError} If a weight is NaN or infinite, naming the tensor and index.
   * @throws {PeerDisconnectedError} If the session is over.
   * @throws {SendTimeoutError} If the send ran out of time (when its
   * `queued` is `false`, nothing was sent and the task can be answered again).
   */
  async reply(result: TaskResult, options?: WaitOptions): Promise<boolean> {
    const message: ResultMessage = {
      fl: FL_VERSION,
      type: "result",
      task: this.id,
      round: this.round,
      samples: result.samples,
      metrics: result.metrics ?? {},
    };
    if (result.weights !== undefined) message.weights = result.weights;
    parseResult(message, this.kind);
    if (result.weights !== undefined) {
      checkCompatible(this.weights, result.weights);
      checkFinite(result.weights);
    }
    return await this.#answer(message, options);
  }

  /**
   * Sends a failure for the task: it could not be done.
   *
   * @param error The error (sent as `"Name: message"`) or a message.
   * @param options Cancellation and time limit of the send.
   * @returns `true` once sent; `false` if the task is stale or was already answered.
   * @throws {PeerDisconnectedError} If the session is over.
   * @throws {SendTimeoutError} If the send ran out of time.
   */
  async fail(error: unknown, options?: WaitOptions): Promise<boolean> {
    return await this.#answer(failure(this.id, this.round, describeError(error)), options);
  }

  async #answer(message: ResultMessage | FailureMessage, options?: WaitOptions): Promise<boolean> {
    if (this.#answered || this.stale) return false;
    this.#answered = true;
    try {
      await this.#client.reply(message, { ...options, to: this.number });
    } catch (error) {
      // Nothing was sent: the task may be answered again.
      if (error instanceof SendTimeoutError && !error.queued) this.#answered = false;
      throw error;
    }
    return true;
  }
}

/**
 * A failure message.
 *
 * @param task The task's number (0 when unknown).
 * @param round Its round (0 when unknown).
 * @param error What went wrong.
 * @returns The message.
 */
export function failure(task: number, round: number, error: string): FailureMessage {
  return { fl: FL_VERSION, type: "failure", task, round, error };
}

/**
 * An error as a failure message says it: `"RangeError: out of memory"`.
 *
 * @param error An error or anything else.
 * @returns The text.
 */
export function describeError(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
