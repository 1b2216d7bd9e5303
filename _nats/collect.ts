/**
 * The root's side of a round: the edges' messages, consumed durably from the
 * job's stream (each acknowledged once handled, so a NATS restart loses
 * none), checked (known edge, HMAC, this run and task), and their partial
 * aggregates merged, until every edge sent one, the quorum and its grace, or
 * the deadline.
 *
 * @module
 */

import type { Consumer, JsMsg } from "@nats-io/jetstream";
import type { WeightedSum } from "../_fl/aggregate.ts";
import type { JobContext } from "./context.ts";
import { remaining, sleep, type Until } from "./retry.ts";
import { openUp, Refused } from "./seal.ts";
import { deletePack, getPack } from "./store.ts";
import type { Rejection, RoundResult } from "./types.ts";
import {
  parsePartialMeta,
  parseUp,
  type PartialBody,
  type SiteAnswer,
  type TakenBody,
  type TaskBody,
} from "./wire.ts";
import { until } from "./retry.ts";

/** The most refused messages a round lists; the others are counted in one last entry. */
const MAX_REJECTIONS = 100;

/** What one round collects: the round's result but the aggregate, and the answers as listed. */
export type Collected =
  & Pick<RoundResult, "missing" | "edges" | "missingEdges" | "rejected" | "quorum">
  & { readonly answered: SiteAnswer[] };

/** How one round is collected. */
export interface CollectOptions {
  readonly context: JobContext;
  readonly consumer: Consumer;
  readonly keys: ReadonlyMap<string, CryptoKey>;
  readonly task: TaskBody;
  readonly sum: WeightedSum | undefined;
  readonly min: number | undefined;
  readonly grace: number;
  readonly deadline: Until;
  readonly timeout: number;
  /** Each edge's sites, as last known (from its rosters and partials); updated. */
  readonly sitesOf: Map<string, string[]>;
}

/** One round's collection in progress. */
class Round {
  readonly answered: SiteAnswer[] = [];
  readonly missing = new Map<string, string>();
  readonly partials = new Set<string>();
  readonly taken = new Map<string, TakenBody>();
  readonly rejected: Rejection[] = [];
  graceEnd = Infinity;
  /** Refusals past {@linkcode MAX_REJECTIONS}: counted, not kept (a flood costs no memory). */
  unlisted = 0;

  constructor(readonly options: CollectOptions) {}

  /** Whether the round is over. */
  get done(): boolean {
    const { keys, min } = this.options;
    if (this.partials.size === keys.size) return true;
    if (min !== undefined && this.answered.length >= min && this.graceEnd === Infinity) {
      this.graceEnd = performance.now() + this.options.grace;
    }
    return performance.now() >= this.graceEnd || remaining(this.options.deadline) === 0;
  }

  /** Handles one message from an edge. */
  async take(message: JsMsg): Promise<void> {
    const { keys, task } = this.options;
    const edge = message.subject.slice(message.subject.lastIndexOf(".") + 1);
    try {
      const body = parseUp(await openUp(keys, edge, message.data));
      if (body.job !== task.job || body.run !== task.run) {
        throw new Refused(`Message from "${edge}" is from another run of the job`);
      }
      if (body.task !== task.task || body.round !== task.round) {
        throw new Refused(
          `Message from "${edge}" is for task ${body.task} of round ${body.round}, ` +
            `not task ${task.task} of round ${task.round}: late or replayed`,
        );
      }
      if (body.type === "taken") this.taken.set(edge, body);
      else if (!this.partials.has(edge)) await this.#merge(edge, body);
    } catch (error) {
      if (
        !(error instanceof Refused || error instanceof TypeError || error instanceof RangeError)
      ) {
        throw error;
      }
      if (this.rejected.length < MAX_REJECTIONS) {
        this.rejected.push({ edge, reason: error.message });
      } else this.unlisted++;
    }
  }

  /** Reads a partial's pack and merges it. */
  async #merge(edge: string, body: PartialBody): Promise<void> {
    const { context, sum, deadline } = this.options;
    const pack = await getPack(context, body.pack, deadline).catch((error) => {
      throw new Refused(`Partial from "${edge}" could not be read: ${(error as Error).message}`);
    });
    const meta = parsePartialMeta(pack.meta, edge);
    const prefix = `${edge}/`;
    const foreign = [...meta.answered, ...meta.missing].find(([site]) => !site.startsWith(prefix));
    if (foreign !== undefined) {
      throw new Refused(`Partial from "${edge}" lists a site of another edge: "${foreign[0]}"`);
    }
    if (sum !== undefined && body.count > 0) {
      sum.merge({ sums: pack.tensors as never, weight: body.weight, count: body.count });
    }
    this.partials.add(edge);
    this.answered.push(...meta.answered);
    for (const [site, reason] of meta.missing) this.missing.set(site, reason);
    this.options.sitesOf.set(edge, [...meta.answered, ...meta.missing].map(([site]) => site));
    await deletePack(context, body.pack);
  }

  /** The edges whose partial did not come: each site they had is missing. */
  async reportMissingEdges(): Promise<Map<string, string>> {
    const { keys, context, timeout, sitesOf, deadline } = this.options;
    const after = `before the round ended (after ${Math.round(timeout - remaining(deadline))} ms)`;
    const missingEdges = new Map<string, string>();
    for (const edge of keys.keys()) {
      if (this.partials.has(edge)) continue;
      const taken = this.taken.get(edge);
      const why = taken === undefined
        ? `Edge "${edge}" did not take the task ${after}`
        : `Edge "${edge}" sent no partial aggregate ${after}`;
      missingEdges.set(edge, why);
      if (taken !== undefined) {
        const roster = await getPack(context, taken.roster, until(2_000)).catch(() => undefined);
        const sites = roster?.meta.sites;
        if (Array.isArray(sites) && sites.every((s) => typeof s === "string")) {
          sitesOf.set(edge, sites.filter((s) => s.startsWith(`${edge}/`)));
        }
      }
      const sites = sitesOf.get(edge) ?? [`${edge}/*`];
      for (const site of sites) this.missing.set(site, why);
    }
    return missingEdges;
  }
}

/**
 * Collects one round's partial aggregates from the edges, merging them into `sum`.
 *
 * @param options The job, the consumer, the keys, the task, the quorum and the deadline.
 * @returns Who answered, who is missing and why, what was refused, and whether the quorum held.
 * @throws {Error} The signal's reason if it aborts.
 */
export async function collect(options: CollectOptions): Promise<Collected> {
  const round = new Round(options);
  const { consumer, deadline } = options;
  while (!round.done) {
    const wait = Math.min(remaining(deadline), round.graceEnd - performance.now());
    let message: JsMsg | null;
    try {
      message = await consumer.next({ expires: Math.max(1_000, Math.min(wait, 2_000)) });
    } catch {
      await sleep(Math.min(200, wait), deadline.signal); // NATS is away: try again
      continue;
    }
    deadline.signal?.throwIfAborted();
    if (message === null) continue;
    await round.take(message);
    message.ack();
  }
  const missingEdges = await round.reportMissingEdges();
  if (round.unlisted > 0) {
    round.rejected.push({ edge: "*", reason: `${round.unlisted} more messages were refused` });
  }
  const { min } = options;
  const quorum = min === undefined
    ? round.partials.size === options.keys.size
    : round.answered.length >= min;
  return {
    answered: round.answered,
    missing: round.missing,
    edges: [...round.partials],
    missingEdges,
    rejected: round.rejected,
    quorum,
  };
}
