/**
 * Minimal FL sites for the coordinator's socket tests, written directly on
 * `connect()`, `client.recv()` and `client.reply()` per the FL message
 * convention (so that they do not depend on `_fl/tasks.ts`), and the
 * deterministic training they do. Not published.
 *
 * @module
 */

import { type Client, connect, PeerDisconnectedError, RejectedError } from "../mod.ts";
import type { CancelMessage, TaskMessage } from "../_fl/messages.ts";
import type { Weights } from "../_fl/weights.ts";
import { NdArray } from "../tensor.ts";

/** What a site does with a task: the value to reply, or `undefined` for no reply. */
export type Handler = (task: TaskMessage, site: SiteContext) => Promise<unknown> | unknown;

/** What a handler may look at. */
export interface SiteContext {
  /** The site's name. */
  readonly name: string;
  /** Its current session's client. */
  readonly client: Client;
  /** Its session: 1, then 2 after a reconnect, … */
  readonly session: number;
  /** Resolves with the cancel for `task`, when it comes. */
  cancelled(task: number): Promise<CancelMessage>;
}

/** Options of {@linkcode runSite}. */
export interface SiteOptions {
  name: string;
  port: number;
  secret?: string;
  handler: Handler;
  /** Connect again (same name) when the session is lost: the coordinator restarted. */
  reconnect?: boolean;
  /** The most ms the whole site may run (default 60,000). */
  timeout?: number;
}

/** What a site saw. */
export interface SiteLog {
  name: string;
  tasks: TaskMessage[];
  cancels: CancelMessage[];
  stop: string | undefined;
  sessions: number;
}

/**
 * Runs a site until the coordinator says `stop`.
 *
 * @returns What it saw.
 */
export async function runSite(options: SiteOptions): Promise<SiteLog> {
  const log: SiteLog = { name: options.name, tasks: [], cancels: [], stop: undefined, sessions: 0 };
  const deadline = Date.now() + (options.timeout ?? 60_000);
  let pause = 50;
  while (log.stop === undefined) {
    if (Date.now() > deadline) throw new Error(`Site "${options.name}" timed out`);
    try {
      await oneSession(options, log, deadline);
    } catch (error) {
      const lost = error instanceof PeerDisconnectedError ||
        (error instanceof RejectedError && error.reason !== "auth");
      if (!options.reconnect || !lost) throw error;
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 1000);
    }
  }
  return log;
}

async function oneSession(options: SiteOptions, log: SiteLog, deadline: number): Promise<void> {
  await using client = await connect({
    port: options.port,
    name: options.name,
    secret: options.secret,
    waitForServer: true,
    timeout: Math.max(1, deadline - Date.now()),
  });
  log.sessions++;
  const waiting = new Map<number, (cancel: CancelMessage) => void>();
  const site: SiteContext = {
    name: options.name,
    client,
    session: log.sessions,
    cancelled: (task) =>
      new Promise((resolve) => {
        const already = log.cancels.find((c) => c.task === task);
        if (already !== undefined) resolve(already);
        else waiting.set(task, resolve);
      }),
  };
  const work: Promise<void>[] = [];
  while (true) {
    const message = await client.recv({ timeout: Math.max(1, deadline - Date.now()) }) as
      | TaskMessage
      | CancelMessage
      | { type: "stop"; reason: string };
    if (message.type === "stop") {
      log.stop = message.reason;
      await Promise.all(work);
      return;
    }
    if (message.type === "cancel") {
      log.cancels.push(message);
      waiting.get(message.task)?.(message);
      continue;
    }
    log.tasks.push(message);
    const to = client.lastReceived;
    // Handled in the background, so that cancels and stops keep coming in.
    work.push((async () => {
      const reply = await options.handler(message, site);
      if (reply !== undefined) await client.reply(reply, { to }).catch(() => {});
    })());
  }
}

/** The index of a test site by its name ("site-0" → 0). */
function indexOf(name: string): number {
  const index = Number(name.split("-").at(-1));
  return Number.isSafeInteger(index) ? index : 0;
}

/** How many samples site `name` has: 10, 20, 30, … */
export function samplesOf(name: string): number {
  return 10 * (indexOf(name) + 1);
}

/**
 * The deterministic training of the test sites: every value plus
 * (index + 1) / 8 + round / 64 (exact in float32), computed in each tensor's dtype.
 */
export function train(weights: Weights, name: string, round: number): Weights {
  const step = (indexOf(name) + 1) / 8 + round / 64;
  const out: Weights = {};
  for (const [key, tensor] of Object.entries(weights)) {
    const data = tensor instanceof NdArray ? tensor.data : tensor;
    const next = data.map((w) => w + step) as typeof data;
    out[key] = tensor instanceof NdArray ? new NdArray(next, tensor.shape) : next;
  }
  return out;
}

/** The result a test site replies to a task (train: with trained weights). */
export function resultOf(task: TaskMessage, name: string): Record<string, unknown> {
  const result: Record<string, unknown> = {
    fl: 1,
    type: "result",
    task: task.task,
    round: task.round,
    samples: samplesOf(name),
    metrics: { loss: 1 / (task.round + indexOf(name)), accuracy: indexOf(name) / 10 },
  };
  if (task.kind === "train") result.weights = train(task.weights, name, task.round);
  return result;
}

/** A handler that trains and answers at once. */
export const honest: Handler = (task, site) => resultOf(task, site.name);
