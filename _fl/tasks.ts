/**
 * The site's task loop: `for await (const task of tasks(client)) { … }`.
 *
 * A reader takes every message of the coordinator as it arrives, also while
 * the loop's body trains: a task becomes a {@linkcode Task} (a newer one makes
 * the one at work stale, and one not yet taken is skipped), a `cancel` aborts
 * its task's `signal`, a `stop` ends the loop, and a message that is not a
 * valid task is answered with a `failure` naming the problem while the loop
 * goes on. So at most one task waits to be taken: memory stays bounded
 * whatever the coordinator sends.
 *
 * @module
 */

import { type Client, PeerDisconnectedError, TimeoutError, type WaitOptions } from "../mod.ts";
import { type CancelReason, FL_VERSION, parseTask } from "./messages.ts";
import { describeError, failure, type StaleReason, Task, TaskCancelledError } from "./task.ts";

/** Options of {@linkcode tasks}. */
export interface TasksOptions {
  /** Ends the loop: the iteration rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * The most milliseconds to wait for each next task (default: no limit);
   * the iteration then rejects with a `TimeoutError`.
   */
  timeout?: number;
}

/** A task and the controller of its signal. */
interface Entry {
  readonly task: Task;
  readonly controller: AbortController;
}

const CANCEL_REASONS: readonly string[] = ["stale", "removed", "stopped"];

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !ArrayBuffer.isView(value) &&
    !Array.isArray(value);
}

function cancel(entry: Entry | undefined, reason: StaleReason): void {
  if (entry !== undefined && !entry.controller.signal.aborted) {
    entry.controller.abort(new TaskCancelledError(entry.task.id, reason));
  }
}

/** After `recv()` failed with `PeerDisconnectedError`: whether the server closed the session. */
async function endedCleanly(client: Client): Promise<boolean> {
  try {
    // The session is over: this ends at once if it was closed, throws if it was lost.
    return (await client[Symbol.asyncIterator]().next()).done === true;
  } catch {
    return false;
  }
}

/**
 * The coordinator's tasks for one client, in order of arrival: iterate it
 * with `for await`. Made by {@linkcode tasks}.
 */
export class TaskStream implements AsyncIterable<Task> {
  readonly #client: Client;
  readonly #options: TasksOptions;
  readonly #closing = new AbortController();
  #reader: Promise<void> | undefined;
  #pending: Entry | undefined;
  #current: Entry | undefined;
  #ended: { error?: unknown } | undefined;
  #stopReason: string | undefined;
  #wake: (() => void) | undefined;

  /**
   * Prefer {@linkcode tasks}.
   *
   * @param client The connected client.
   * @param options Cancellation, and the time limit of each wait for a task.
   * @throws {RangeError} If `timeout` is negative or not a number.
   */
  constructor(client: Client, options: TasksOptions = {}) {
    const { timeout } = options;
    if (timeout !== undefined && !(timeout >= 0)) {
      throw new RangeError(`Invalid timeout: "${timeout}" is not a non-negative number`);
    }
    this.#client = client;
    this.#options = options;
  }

  /** The reason of the coordinator's `stop`, once it came (`undefined` before, or without one). */
  get stopReason(): string | undefined {
    return this.#stopReason;
  }

  /**
   * Yields each task until the coordinator says `stop` or closes the session.
   *
   * @returns The iterator; leaving the loop stops the reader.
   */
  async *[Symbol.asyncIterator](): AsyncGenerator<Task, void, undefined> {
    this.#reader ??= this.#read();
    try {
      while (true) {
        const task = await this.#next();
        if (task === undefined) return;
        yield task;
      }
    } finally {
      await this.close();
    }
  }

  /**
   * Stops reading the coordinator's messages (the client stays open). Safe to call twice.
   *
   * @returns Resolves when the reader stopped.
   */
  async close(): Promise<void> {
    this.#closing.abort();
    await this.#reader;
  }

  async #next(): Promise<Task | undefined> {
    const { timeout, signal } = this.#options;
    const deadline = timeout === undefined ? undefined : performance.now() + timeout;
    while (true) {
      signal?.throwIfAborted();
      if (this.#pending !== undefined) {
        this.#current = this.#pending;
        this.#pending = undefined;
        return this.#current.task;
      }
      if (this.#ended !== undefined) {
        if (this.#ended.error !== undefined) throw this.#ended.error;
        return undefined;
      }
      await this.#changed(deadline);
    }
  }

  /** Waits until the reader filed something, the signal aborts or the deadline passes. */
  #changed(deadline: number | undefined): Promise<void> {
    const { signal, timeout } = this.#options;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#wake = resolve;
    const onAbort = () => reject(signal!.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const timer = deadline === undefined ? undefined : setTimeout(() =>
      reject(
        new TimeoutError(`No task arrived within ${timeout} ms`, { clientIds: [this.#client.id] }),
      ), Math.max(0, deadline - performance.now()));
    return promise.finally(() => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      this.#wake = undefined;
    });
  }

  /** The reader: takes every message and files it, until a stop, the session's end, or close. */
  async #read(): Promise<void> {
    const client = this.#client;
    let error: unknown;
    try {
      while (!this.#handle(await client.recv({ signal: this.#closing.signal }))) {
        // Filed; take the next one.
      }
    } catch (caught) {
      if (!this.#closing.signal.aborted) {
        const clean = caught instanceof PeerDisconnectedError && await endedCleanly(client);
        error = clean ? undefined : caught;
        cancel(this.#current, "stopped");
        cancel(this.#pending, "stopped");
        this.#pending = undefined;
      }
    }
    this.#ended = { error };
    this.#wake?.();
  }

  /** Files one message; returns whether the loop is over (a stop). */
  #handle(value: unknown): boolean {
    const type = isMap(value) && value.fl === FL_VERSION ? value.type : undefined;
    if (type === "stop") {
      const reason = (value as Record<string, unknown>).reason;
      this.#stopReason = typeof reason === "string" ? reason : "";
      cancel(this.#current, "stopped");
      cancel(this.#pending, "stopped");
      this.#pending = undefined;
      return true;
    }
    if (type === "cancel") {
      this.#cancel(value as Record<string, unknown>);
      return false;
    }
    const number = this.#client.lastReceived;
    let task: Task;
    const controller = new AbortController();
    try {
      task = new Task(this.#client, parseTask(value), number, controller.signal);
    } catch (error) {
      this.#refuse(value, number, error);
      return false;
    }
    cancel(this.#current, "superseded");
    cancel(this.#pending, "superseded");
    this.#pending = { task, controller };
    this.#wake?.();
    return false;
  }

  /** A cancel: aborts its task's signal (a task not yet taken is dropped). */
  #cancel(message: Record<string, unknown>): void {
    const reason =
      (CANCEL_REASONS.includes(message.reason as string)
        ? message.reason
        : "stale") as CancelReason;
    for (const entry of [this.#current, this.#pending]) {
      if (entry?.task.id === message.task) cancel(entry, reason);
    }
    if (this.#pending?.task.stale) this.#pending = undefined;
  }

  /** Answers a message that is not a valid task with a failure naming the problem. */
  #refuse(value: unknown, number: number, error: unknown): void {
    const id = (key: string): number => {
      const field = isMap(value) ? value[key] : undefined;
      return typeof field === "number" && Number.isSafeInteger(field) && field >= 0 ? field : 0;
    };
    const message = error instanceof TypeError ? error.message : describeError(error);
    // A session that ended meanwhile: the next receive says so.
    this.#client.reply(failure(id("task"), id("round"), message), { to: number }).catch(() => {});
  }
}

/**
 * The coordinator's tasks for `client`: `for await (const task of tasks(client)) { … }`.
 * The loop ends when the coordinator sends `stop` (its reason:
 * {@linkcode TaskStream.stopReason}) or closes the session; leaving it
 * early stops reading (the client stays open). Take no other messages from
 * the client meanwhile. Train in a `Worker`, or await between steps, so that
 * a cancel reaches `task.signal` while the task trains.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, listen } from "@fedcomm/fedcomm";
 * import { tasks } from "@fedcomm/fedcomm/fl";
 *
 * await using server = listen({ clients: 1 });
 * await using client = await connect({ port: server.port });
 * const base = { fl: 1, type: "task", job: "demo", round: 1, kind: "evaluate", config: {} };
 * await server.broadcast({ ...base, task: 1, weights: { b: new Float32Array(2) } });
 * const loop = tasks(client, { timeout: 10_000 });
 * for await (const task of loop) {
 *   assert.equal(task.id, 1);
 *   assert.equal(await task.reply({ samples: 3, metrics: { accuracy: 0.9 } }), true);
 *   const result = (await server.gather({ timeout: 10_000 })).get(0) as { samples: number };
 *   assert.equal(result.samples, 3);
 *   await server.broadcast({ ...base, task: 2, weights: "nonsense" }); // answered with a failure
 *   const failure = (await server.gather({ timeout: 10_000 })).get(0) as { error: string };
 *   assert.match(failure.error, /"weights" is not a map of tensors/);
 *   await server.broadcast({ fl: 1, type: "stop", reason: "done" }); // ends the loop
 * }
 * assert.equal(loop.stopReason, "done");
 * ```
 *
 * @param client A connected client.
 * @param options `signal` ends the loop; `timeout`: the most ms to wait for each next task.
 * @returns The tasks, an async iterable.
 * @throws {RangeError} If `timeout` is negative.
 * @throws {PeerDisconnectedError} (from the iteration) If the session was lost, not closed.
 * @throws {TimeoutError} (from the iteration) If no task came within `timeout`.
 */
export function tasks(client: Client, options?: TasksOptions & WaitOptions): TaskStream {
  return new TaskStream(client, options);
}
