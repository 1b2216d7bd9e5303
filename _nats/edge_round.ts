/**
 * One round at an edge, on its fedcomm server, in the FL message contract
 * (fl version 1): the task to the sites connected, their results folded into
 * a weighted sum as they arrive (so the edge holds one f64 sum and the update
 * being folded, whatever the number of sites), and the sites that gave none
 * with why. The sites are the same programs as with one flat coordinator.
 *
 * @module
 */

import { FedcommError } from "../errors.ts";
import type { Server } from "../server.ts";
import { WeightedSum } from "../_fl/aggregate.ts";
import { parseSiteMessage } from "../_fl/messages.ts";
import type { Weights } from "../_fl/weights.ts";
import { remaining, type Until } from "./retry.ts";
import type { SiteAnswer, SiteMissing, TaskBody } from "./wire.ts";

/** What one local round gave. */
export interface LocalRound {
  /** The sites that answered, with their samples and metrics. */
  readonly answered: SiteAnswer[];
  /** The sites that did not, with why. */
  readonly missing: SiteMissing[];
  /** The weighted sum of the updates (a train task), or `undefined` (evaluate). */
  readonly sum: WeightedSum | undefined;
}

/** How one round at an edge runs. */
export interface LocalRoundOptions {
  /** The sites (ids on the server) that take part, and their names (`edge/site`). */
  readonly sites: ReadonlyMap<number, string>;
  /** The local quorum (default 1). */
  readonly min?: number;
  /** Milliseconds after the quorum (default: until the deadline). */
  readonly grace?: number;
  /** The end of the local round. */
  readonly deadline: Until;
}

/**
 * The sites' names, `edge/name` (the name from their hello, or `#id`; a name
 * two sites share gets `#id` too), for the sites connected now.
 *
 * @param server The edge's server.
 * @param edge The edge's name.
 * @returns Name by id.
 */
export function siteNames(server: Server, edge: string): Map<number, string> {
  const ids = server.connected;
  const names = ids.map((id) => server.stats(id).name);
  const counts = new Map<string, number>();
  for (const name of names) if (name !== undefined) counts.set(name, (counts.get(name) ?? 0) + 1);
  return new Map(ids.map((id, i) => {
    const name = names[i];
    const local = name === undefined ? `#${id}` : counts.get(name)! > 1 ? `${name}#${id}` : name;
    return [id, `${edge}/${local}`];
  }));
}

/**
 * Runs one task on the sites: broadcasts it, folds the results, cancels the
 * stragglers.
 *
 * @param server The edge's server.
 * @param task The task from the root.
 * @param weights The round's model.
 * @param options The sites, the quorum and the deadline.
 * @returns The answers, the missing sites and the sum.
 * @throws {Error} The signal's reason if it aborts.
 */
export async function runLocalRound(
  server: Server,
  task: TaskBody,
  weights: Weights,
  options: LocalRoundOptions,
): Promise<LocalRound> {
  const { sites, deadline } = options;
  const sum = task.kind === "train" ? new WeightedSum(weights) : undefined;
  const answered: SiteAnswer[] = [];
  const missing = new Map<number, string>();
  const ids = [...sites.keys()];
  const message = {
    fl: 1,
    type: "task",
    job: task.job,
    task: task.task,
    round: task.round,
    kind: task.kind,
    config: task.config,
    weights,
  };
  const reached = await broadcastTo(server, ids, message, missing, deadline);
  let ended = "deadline";
  if (reached.length > 0) {
    const min = Math.min(options.min ?? 1, reached.length);
    const grace = Math.min(options.grace ?? Infinity, remaining(deadline));
    try {
      const uploads = server.uploads({
        ids: reached,
        min,
        grace,
        timeout: remaining(deadline),
        signal: deadline.signal,
      });
      for await (const { id, value } of uploads) {
        const problem = fold(value, task, sum, sites.get(id)!, answered);
        if (problem !== undefined) missing.set(id, problem);
        server.recycle(value);
      }
      ended = remaining(deadline) > 0 ? "grace" : "deadline";
    } catch (error) {
      deadline.signal?.throwIfAborted();
      if (!(error instanceof FedcommError)) throw error;
    }
  }
  const answeredIds = new Set(answered.map(([site]) => site));
  const silent = ids.filter((id) => !missing.has(id) && !answeredIds.has(sites.get(id)!));
  for (const id of silent) missing.set(id, silentReason(server, id, ended, options));
  await cancelTask(server, silent, task);
  return { answered, missing: [...missing].map(([id, why]) => [sites.get(id)!, why]), sum };
}

/** Broadcasts to `ids`; those gone are put in `missing`. Returns those it reached. */
async function broadcastTo(
  server: Server,
  ids: number[],
  message: Record<string, unknown>,
  missing: Map<number, string>,
  deadline: Until,
): Promise<number[]> {
  let targets = ids;
  while (targets.length > 0) {
    try {
      await server.broadcast(message, {
        ids: targets,
        timeout: remaining(deadline),
        signal: deadline.signal,
      });
      return targets;
    } catch (error) {
      deadline.signal?.throwIfAborted();
      const id = (error as FedcommError).clientId;
      if (!(error instanceof FedcommError) || id === undefined || !targets.includes(id)) {
        for (const t of targets) missing.set(t, `The task could not be sent: ${String(error)}`);
        return [];
      }
      missing.set(id, `The task could not be sent: ${error.message}`);
      targets = targets.filter((t) => t !== id);
    }
  }
  return targets;
}

/** Folds one site's answer; returns why it is no answer, or `undefined`. */
function fold(
  value: unknown,
  task: TaskBody,
  sum: WeightedSum | undefined,
  site: string,
  answered: SiteAnswer[],
): string | undefined {
  try {
    const message = parseSiteMessage(value, task.kind);
    if (message.task !== task.task || message.round !== task.round) {
      return `Answered task ${message.task} of round ${message.round}, ` +
        `not task ${task.task} of round ${task.round}`;
    }
    if (message.type === "failure") return `The site failed: ${message.error}`;
    if (sum !== undefined) sum.add(message.weights!, message.samples);
    answered.push([site, message.samples, message.metrics]);
    return undefined;
  } catch (error) {
    if (!(error instanceof TypeError || error instanceof RangeError)) throw error;
    return `Invalid result: ${error.message}`;
  }
}

/** Why a site that was sent the task gave no answer. */
function silentReason(server: Server, id: number, ended: string, options: LocalRoundOptions) {
  let stats;
  try {
    stats = server.stats(id);
  } catch {
    return "It left and was replaced";
  }
  if (stats.state === "gone") return `It left: ${stats.error?.message ?? "closed"}`;
  if (stats.state === "resuming") return "It was disconnected and had not resumed";
  return ended === "grace"
    ? `No answer within the grace of ${options.grace} ms after the quorum of ${options.min}`
    : "No answer by the edge's deadline";
}

/**
 * Tells the sites still working on a task that it is over (best effort, 1 s at most).
 *
 * @param server The edge's server.
 * @param ids The sites.
 * @param task The task.
 * @returns Resolves when sent, or failed.
 */
export async function cancelTask(server: Server, ids: number[], task: TaskBody): Promise<void> {
  const live = new Set(server.connected);
  const targets = ids.filter((id) => live.has(id));
  if (targets.length === 0) return;
  const message = { fl: 1, type: "cancel", task: task.task, round: task.round, reason: "stale" };
  await server.broadcast(message, { ids: targets, timeout: 1_000 }).catch(() => {});
}
