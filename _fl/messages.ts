/**
 * The FL task convention (fl version 1, PROTOCOL.md's appendix): the five
 * messages a coordinator and its sites exchange as ordinary fedcomm values,
 * and the parsers both sides check them with.
 *
 * Server → site: `task` (train or evaluate these weights), `cancel` (drop
 * that task), `stop` (the job is over). Site → server, as a reply to the task
 * message: `result` or `failure`. Every parser returns a fresh object with the
 * known fields only and throws a `TypeError` that names the message and the
 * field; it looks at each tensor once but not at its values (see
 * `checkFinite`).
 *
 * @module
 */

import { checkWeights, kindOf, type Weights } from "./weights.ts";

/** The version of the convention this module speaks: the `fl` field of every message. */
export const FL_VERSION = 1;

/** What a task asks a site to do. */
export type TaskKind = "train" | "evaluate";

/** A task's settings for the site: `{ epochs: 2, lr: 0.05, proximal_mu: 0.01 }`. */
export type Config = Record<string, number | string | boolean>;

/** What a site measured: `{ loss: 0.31, accuracy: 0.9 }`; every value finite. */
export type Metrics = Record<string, number>;

/** Why the server cancelled a task. */
export type CancelReason = "stale" | "removed" | "stopped";

/** Server → site: train or evaluate `weights`. */
export interface TaskMessage {
  /** The convention's version: 1. */
  fl: 1;
  /** The message type. */
  type: "task";
  /** The job's name. */
  job: string;
  /** The task's number: unique and increasing within the job. */
  task: number;
  /** The round it belongs to. */
  round: number;
  /** Train (answer with weights) or evaluate (answer with metrics only). */
  kind: TaskKind;
  /** The strategy's settings for this round. */
  config: Config;
  /** The global model. */
  weights: Weights;
}

/** Site → server, a reply to the task message: the task's outcome. */
export interface ResultMessage {
  /** The convention's version: 1. */
  fl: 1;
  /** The message type. */
  type: "result";
  /** The number of the task it answers. */
  task: number;
  /** That task's round. */
  round: number;
  /** How many samples the site trained or evaluated on: the result's weight. */
  samples: number;
  /** What the site measured. */
  metrics: Metrics;
  /** The trained weights: present for a train task, absent for an evaluate task. */
  weights?: Weights;
}

/** Site → server, a reply to the task message: the site could not do the task. */
export interface FailureMessage {
  /** The convention's version: 1. */
  fl: 1;
  /** The message type. */
  type: "failure";
  /** The number of the task that failed. */
  task: number;
  /** That task's round. */
  round: number;
  /** What went wrong, for the operator. */
  error: string;
}

/** Server → site: drop this task if still working on it. */
export interface CancelMessage {
  /** The convention's version: 1. */
  fl: 1;
  /** The message type. */
  type: "cancel";
  /** The number of the task to drop. */
  task: number;
  /** That task's round. */
  round: number;
  /** Why: its round is over, the site was removed, or the job stopped. */
  reason: CancelReason;
}

/** Server → site: the job is over; the site's task loop ends. */
export interface StopMessage {
  /** The convention's version: 1. */
  fl: 1;
  /** The message type. */
  type: "stop";
  /** Why, for the site's log. */
  reason: string;
}

/** What a site receives. */
export type ServerMessage = TaskMessage | CancelMessage | StopMessage;

/** What a coordinator receives. */
export type SiteMessage = ResultMessage | FailureMessage;

const KINDS: readonly string[] = ["train", "evaluate"];
const CANCEL_REASONS: readonly string[] = ["stale", "removed", "stopped"];

/** A value as an error message quotes it: `"-1"`, `"abc"`, or its kind for an object. */
function show(value: unknown): string {
  if (typeof value === "string") {
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  }
  if (typeof value === "object" && value !== null) return kindOf(value);
  return `"${String(value)}"`;
}

/** Whether `value` is a plain object (a decoded MessagePack map). */
function isMap(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Checks the envelope `{ fl: 1, type }` and returns the map. */
function envelope(value: unknown, type: string): Record<string, unknown> {
  if (!isMap(value)) {
    throw new TypeError(`Invalid ${type} message: it is ${show(value)}, not a map`);
  }
  if (value.fl !== FL_VERSION) {
    throw new TypeError(
      `Unsupported FL message: "fl" is ${show(value.fl)}, this side speaks version ${FL_VERSION}`,
    );
  }
  if (value.type !== type) {
    throw new TypeError(`Invalid ${type} message: "type" is ${show(value.type)}, not "${type}"`);
  }
  return value;
}

/** The fields of a message about one task: the envelope, `task` and `round`. */
interface TaskHead<T extends string> {
  fl: 1;
  type: T;
  task: number;
  round: number;
}

/** Checks the envelope, `task` and `round` of a message about one task. */
function taskHead<T extends string>(
  value: unknown,
  type: T,
): { map: Record<string, unknown>; head: TaskHead<T> } {
  const map = envelope(value, type);
  const head = {
    fl: FL_VERSION,
    type,
    task: count(map, "task", type),
    round: count(map, "round", type),
  };
  return { map, head } as { map: Record<string, unknown>; head: TaskHead<T> };
}

function count(map: Record<string, unknown>, key: string, type: string): number {
  const value = map[key];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(
      `Invalid ${type} message: "${key}" is ${show(value)}, not a non-negative integer`,
    );
  }
  return value;
}

function text(map: Record<string, unknown>, key: string, type: string, empty = true): string {
  const value = map[key];
  if (typeof value !== "string" || (!empty && value === "")) {
    const what = empty ? "a string" : "a non-empty string";
    throw new TypeError(`Invalid ${type} message: "${key}" is ${show(value)}, not ${what}`);
  }
  return value;
}

function oneOf<T extends string>(
  map: Record<string, unknown>,
  key: string,
  type: string,
  allowed: readonly string[],
): T {
  const value = map[key];
  if (typeof value !== "string" || !allowed.includes(value)) {
    const list = allowed.map((a) => `"${a}"`).join(" or ");
    throw new TypeError(`Invalid ${type} message: "${key}" is ${show(value)}, not ${list}`);
  }
  return value as T;
}

function config(map: Record<string, unknown>, type: string): Config {
  const value = map.config;
  if (!isMap(value)) {
    throw new TypeError(`Invalid ${type} message: "config" is ${show(value)}, not a map`);
  }
  for (const [key, entry] of Object.entries(value)) {
    const kind = typeof entry;
    if (kind !== "number" && kind !== "string" && kind !== "boolean") {
      throw new TypeError(
        `Invalid ${type} message: config "${key}" is ${show(entry)}, ` +
          `not a number, string or boolean`,
      );
    }
  }
  return { ...value } as Config;
}

function metrics(map: Record<string, unknown>, type: string): Metrics {
  const value = map.metrics;
  if (!isMap(value)) {
    throw new TypeError(`Invalid ${type} message: "metrics" is ${show(value)}, not a map`);
  }
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== "number" || !Number.isFinite(entry)) {
      throw new TypeError(
        `Invalid ${type} message: metric "${key}" is ${show(entry)}, not a finite number`,
      );
    }
  }
  return { ...value } as Metrics;
}

/**
 * Checks a task message (what a site receives to train or evaluate).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseTask } from "@fedcomm/fedcomm/fl";
 *
 * const task = parseTask({
 *   fl: 1, type: "task", job: "mnist", task: 7, round: 3, kind: "train",
 *   config: { epochs: 1 }, weights: { b: new Float32Array(2) },
 * });
 * assert.equal(task.round, 3);
 * assert.throws(() => parseTask({ ...task, kind: "fit" }), {
 *   name: "TypeError",
 *   message: `Invalid task message: "kind" is "fit", not "train" or "evaluate"`,
 * });
 * ```
 *
 * @param value The value received.
 * @returns The task, with the known fields only.
 * @throws {TypeError} If it is not a version 1 task message with valid fields
 * (naming the first bad one), or its weights are not float tensors.
 */
export function parseTask(value: unknown): TaskMessage {
  const map = envelope(value, "task");
  const message: TaskMessage = {
    fl: FL_VERSION,
    type: "task",
    job: text(map, "job", "task", false),
    task: count(map, "task", "task"),
    round: count(map, "round", "task"),
    kind: oneOf<TaskKind>(map, "kind", "task", KINDS),
    config: config(map, "task"),
    weights: map.weights as Weights,
  };
  checkWeights(map.weights, `Task message "weights"`);
  return message;
}

/**
 * Checks a result message (a site's answer to a task). With `kind`, also
 * checks that a train result has weights and an evaluate result has none.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseResult } from "@fedcomm/fedcomm/fl";
 *
 * const result = { fl: 1, type: "result", task: 7, round: 3, samples: 120, metrics: { loss: 0.4 } };
 * assert.equal(parseResult(result, "evaluate").samples, 120);
 * assert.throws(() => parseResult(result, "train"), /a train result has no "weights"/);
 * assert.throws(() => parseResult({ ...result, samples: -1 }), /"samples" is "-1"/);
 * ```
 *
 * @param value The value received.
 * @param kind The kind of the task it answers, if known.
 * @returns The result, with the known fields only (`weights` only if present).
 * @throws {TypeError} If it is not a version 1 result message with valid
 * fields (samples a non-negative integer, metrics finite numbers), naming the
 * first bad one, or its weights are not float tensors, or they are missing
 * from a train result or present in an evaluate result.
 */
export function parseResult(value: unknown, kind?: TaskKind): ResultMessage {
  const { map, head } = taskHead(value, "result");
  const message: ResultMessage = {
    ...head,
    samples: count(map, "samples", "result"),
    metrics: metrics(map, "result"),
  };
  const weights = map.weights ?? undefined;
  if (weights !== undefined) {
    if (kind === "evaluate") {
      throw new TypeError(`Invalid result message: an evaluate result has "weights"`);
    }
    checkWeights(weights, `Result message "weights"`);
    message.weights = weights;
  } else if (kind === "train") {
    throw new TypeError(`Invalid result message: a train result has no "weights"`);
  }
  return message;
}

/**
 * Checks a failure message (a site could not do its task).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseFailure } from "@fedcomm/fedcomm/fl";
 *
 * const failure = parseFailure({ fl: 1, type: "failure", task: 7, round: 3, error: "Out of memory" });
 * assert.equal(failure.error, "Out of memory");
 * assert.throws(() => parseFailure({ ...failure, error: 42 }), TypeError);
 * ```
 *
 * @param value The value received.
 * @returns The failure, with the known fields only.
 * @throws {TypeError} If it is not a version 1 failure message with valid
 * fields, naming the first bad one.
 */
export function parseFailure(value: unknown): FailureMessage {
  const { map, head } = taskHead(value, "failure");
  return { ...head, error: text(map, "error", "failure") };
}

/**
 * Checks a cancel message (the server dropped a task).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseCancel } from "@fedcomm/fedcomm/fl";
 *
 * const cancel = parseCancel({ fl: 1, type: "cancel", task: 7, round: 3, reason: "stale" });
 * assert.equal(cancel.reason, "stale");
 * assert.throws(() => parseCancel({ ...cancel, reason: "bored" }), TypeError);
 * ```
 *
 * @param value The value received.
 * @returns The cancel, with the known fields only.
 * @throws {TypeError} If it is not a version 1 cancel message with valid
 * fields (reason `"stale"`, `"removed"` or `"stopped"`), naming the first bad one.
 */
export function parseCancel(value: unknown): CancelMessage {
  const { map, head } = taskHead(value, "cancel");
  return { ...head, reason: oneOf<CancelReason>(map, "reason", "cancel", CANCEL_REASONS) };
}

/**
 * Checks a stop message (the job is over).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseStop } from "@fedcomm/fedcomm/fl";
 *
 * assert.equal(parseStop({ fl: 1, type: "stop", reason: "done" }).reason, "done");
 * assert.throws(() => parseStop({ fl: 2, type: "stop", reason: "done" }), /version 1/);
 * ```
 *
 * @param value The value received.
 * @returns The stop, with the known fields only.
 * @throws {TypeError} If it is not a version 1 stop message with a string reason.
 */
export function parseStop(value: unknown): StopMessage {
  const map = envelope(value, "stop");
  return { fl: FL_VERSION, type: "stop", reason: text(map, "reason", "stop") };
}

/** The `type` of a map, for the dispatching parsers. */
function typeOf(value: unknown, allowed: readonly string[], side: string): string {
  const type = isMap(value) ? value.type : undefined;
  if (typeof type !== "string" || !allowed.includes(type)) {
    const shown = isMap(value) ? `"type" is ${show(type)}` : `it is ${show(value)}, not a map`;
    const list = allowed.map((a) => `"${a}"`).join(", ");
    throw new TypeError(`Invalid FL message from the ${side}: ${shown}, not one of ${list}`);
  }
  return type;
}

/**
 * Checks any message a site may receive: a task, a cancel or a stop.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseServerMessage } from "@fedcomm/fedcomm/fl";
 *
 * const message = parseServerMessage({ fl: 1, type: "stop", reason: "done" });
 * assert.equal(message.type, "stop");
 * assert.throws(() => parseServerMessage({ fl: 1, type: "result" }), TypeError);
 * ```
 *
 * @param value The value received.
 * @returns The message, checked by its type's parser.
 * @throws {TypeError} If it is none of the three, or not a valid one.
 */
export function parseServerMessage(value: unknown): ServerMessage {
  const type = typeOf(value, ["task", "cancel", "stop"], "server");
  return type === "task"
    ? parseTask(value)
    : type === "cancel"
    ? parseCancel(value)
    : parseStop(value);
}

/**
 * Checks any message a coordinator may receive: a result or a failure.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { parseSiteMessage } from "@fedcomm/fedcomm/fl";
 *
 * const message = parseSiteMessage({ fl: 1, type: "failure", task: 1, round: 1, error: "Crashed" });
 * assert.equal(message.type, "failure");
 * assert.throws(() => parseSiteMessage({ fl: 1, type: "task" }), TypeError);
 * ```
 *
 * @param value The value received.
 * @param kind The kind of the task it answers, if known (see {@linkcode parseResult}).
 * @returns The message, checked by its type's parser.
 * @throws {TypeError} If it is neither, or not a valid one.
 */
export function parseSiteMessage(value: unknown, kind?: TaskKind): SiteMessage {
  const type = typeOf(value, ["result", "failure"], "site");
  return type === "result" ? parseResult(value, kind) : parseFailure(value);
}
