/**
 * The root's side of a round: the edges' messages, consumed durably from the
 * job's stream (each acknowledged once handled, so a NATS restart loses
 * none), checked (known edge, HMAC, this run and task), and their partial
 * aggregates merged, until every edge sent one, the quorum and its grace, or
 * the deadline. Up to {@linkcode MAX_READS} partials (within
 * {@linkcode READ_BYTES}) are read from the object store at once, while the
 * next messages are pulled; they are merged in the order their messages
 * came, so the sum is the one a reader of one partial at a time makes, bit
 * for bit.
 *
 * @module
 */

import type { Consumer, JsMsg } from "@nats-io/jetstream";
import type { WeightedSum } from "../_fl/aggregate.ts";
import type { JobContext } from "./context.ts";
import type { Packed } from "./pack.ts";
import { Pull } from "./pull.ts";
import { remaining, sleep, type Until, until } from "./retry.ts";
import { openUp, Refused } from "./seal.ts";
import { deletePack, getPack } from "./store.ts";
import type { Rejection, RoundResult } from "./types.ts";
import { OrderedWindow } from "./window.ts";
import {
  parsePartialMeta,
  parseUp,
  type PartialBody,
  type SiteAnswer,
  type TakenBody,
  type TaskBody,
} from "./wire.ts";

/** The most refused messages a round lists; the others are counted in one last entry. */
const MAX_REJECTIONS = 100;
/**
 * The most partial aggregates (or rosters) the root reads from the object
 * store at once; it folds them in the order their messages came all the same.
 * Reading small partials is bound by round trips, so this saves time; large
 * ones are bound by bandwidth and CPU, so they are read one at a time past
 * {@linkcode READ_BYTES} (the root holds no more of them at once).
 */
export const MAX_READS = 4;
/** A partial is read alongside others only while the bytes being read stay within 64 MiB. */
export const READ_BYTES = 64 * 1024 * 1024;
/** The longest pull for the next message (NATS's shortest is 1 s). */
const PULL_MS = 2_000;
/**
 * How often the root tells NATS it is still working on the partials it
 * holds (being read, or waiting to be merged in order), so that they are
 * not delivered again (the root's consumer's `ack_wait` is 10 s).
 */
const WORKING_MS = 3_000;

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

/** A partial aggregate read from the object store (or not), with its message. */
interface Read {
  readonly message: JsMsg;
  readonly edge: string;
  readonly body: PartialBody;
  readonly pack: (Packed & { size: number }) | undefined;
  readonly error: unknown;
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
  /** The partials' messages held, unacknowledged, until they are merged. */
  readonly held = new Set<JsMsg>();
  /** The merged partials' packs being deleted (not waited for between merges). */
  readonly deletions: Promise<void>[] = [];
  /** The bytes of the partials being read, or read and waiting for their turn to be merged. */
  readingBytes = 0;

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

  /** Milliseconds until the grace or the deadline ends the round. */
  get waitMs(): number {
    const left = Math.min(remaining(this.options.deadline), this.graceEnd - performance.now());
    return Math.max(0, left);
  }

  /**
   * Handles one message as it arrives: returns a partial to read, or handles
   * and acknowledges anything else (a `taken`, a refusal, a repeat).
   */
  async arrive(message: JsMsg): Promise<{ edge: string; body: PartialBody } | undefined> {
    const { keys, task } = this.options;
    // Delivered again while held (a "working" lost on the way): the first copy is acknowledged.
    if ([...this.held].some((held) => held.seq === message.seq)) return undefined;
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
      else if (!this.partials.has(edge)) {
        this.held.add(message);
        return { edge, body };
      }
    } catch (error) {
      this.#refuse(edge, error);
    }
    message.ack();
    return undefined;
  }

  /** Merges a partial read, in the order the partials came, and acknowledges its message. */
  fold(read: Read): void {
    const { edge, pack } = read;
    this.readingBytes -= read.body.size;
    if (!this.partials.has(edge)) { // else a repeat, read while the first was
      if (pack === undefined) this.options.deadline.signal?.throwIfAborted();
      try {
        if (pack === undefined) {
          const why = (read.error as Error)?.message ?? String(read.error);
          throw new Refused(`Partial from "${edge}" could not be read: ${why}`);
        }
        this.#merge(edge, read.body, pack);
      } catch (error) {
        this.#refuse(edge, error);
      }
    }
    this.held.delete(read.message);
    read.message.ack();
  }

  /** Lists a refusal (a `Refused`, `TypeError` or `RangeError`); throws anything else. */
  #refuse(edge: string, error: unknown): void {
    if (!(error instanceof Refused || error instanceof TypeError || error instanceof RangeError)) {
      throw error;
    }
    if (this.rejected.length < MAX_REJECTIONS) this.rejected.push({ edge, reason: error.message });
    else this.unlisted++;
  }

  /** Merges a partial's pack, and starts deleting it. */
  #merge(edge: string, body: PartialBody, pack: Packed): void {
    const { context, sum } = this.options;
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
    this.deletions.push(deletePack(context, body.pack));
  }

  /** The edges whose partial did not come: each site they had is missing, with why. */
  async reportMissingEdges(): Promise<Map<string, string>> {
    const { keys, timeout, sitesOf, deadline } = this.options;
    const after = `before the round ended (after ${Math.round(timeout - remaining(deadline))} ms)`;
    const absent = [...keys.keys()].filter((edge) => !this.partials.has(edge));
    await this.#readRosters(absent);
    const missingEdges = new Map<string, string>();
    for (const edge of absent) {
      let why = this.taken.has(edge)
        ? `Edge "${edge}" sent no partial aggregate ${after}`
        : `Edge "${edge}" did not take the task ${after}`;
      const refused = this.rejected.find((rejection) => rejection.edge === edge);
      if (refused !== undefined) why += `; a message in its name was refused: ${refused.reason}`;
      missingEdges.set(edge, why);
      for (const site of sitesOf.get(edge) ?? [`${edge}/*`]) this.missing.set(site, why);
    }
    return missingEdges;
  }

  /** Reads the rosters of the edges that took the task (2 s in all, a few at once). */
  async #readRosters(edges: string[]): Promise<void> {
    const { context, sitesOf } = this.options;
    const deadline = until(2_000);
    const reads = new OrderedWindow<void>(MAX_READS);
    for (const edge of edges) {
      const taken = this.taken.get(edge);
      if (taken === undefined) continue;
      if (reads.full) await reads.next!.then(() => reads.take());
      reads.add(async () => {
        const roster = await getPack(context, taken.roster, deadline).catch(() => undefined);
        const sites = roster?.meta.sites;
        if (Array.isArray(sites) && sites.every((s) => typeof s === "string")) {
          sitesOf.set(edge, sites.filter((s) => s.startsWith(`${edge}/`)));
        }
      });
    }
    while (reads.size > 0) await reads.next!.then(() => reads.take());
  }

  /** The round's outcome, once it is over (and the merged partials' packs deleted). */
  async finish(): Promise<Collected> {
    const missingEdges = await this.reportMissingEdges();
    await Promise.all(this.deletions);
    if (this.unlisted > 0) {
      this.rejected.push({ edge: "*", reason: `${this.unlisted} more messages were refused` });
    }
    const { min, keys } = this.options;
    return {
      answered: this.answered,
      missing: this.missing,
      edges: [...this.partials],
      missingEdges,
      rejected: this.rejected,
      quorum: min === undefined ? this.partials.size === keys.size : this.answered.length >= min,
    };
  }
}

/** Starts reading a partial's pack; the read never rejects (its error is kept). */
function read(options: CollectOptions, message: JsMsg, edge: string, body: PartialBody) {
  return async (): Promise<Read> => {
    try {
      const pack = await getPack(options.context, body.pack, options.deadline);
      return { message, edge, body, pack, error: undefined };
    } catch (error) {
      return { message, edge, body, pack: undefined, error };
    }
  };
}

/** Resolves when the first promise settles or `ms` passed; rejects if the signal aborts. */
function firstOf(
  promises: (Promise<void> | undefined)[],
  ms: number,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
      resolve();
    };
    const abort = () => {
      done();
      reject(signal!.reason);
    };
    const timer = setTimeout(done, Math.min(ms, 60_000));
    if (signal?.aborted) return abort();
    signal?.addEventListener("abort", abort, { once: true });
    for (const promise of promises) promise?.then(done, done);
  });
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
  const reads = new OrderedWindow<Read>(MAX_READS);
  const { signal } = options.deadline;
  /** Handles what a pull gave: a message, nothing, or NATS away (then a pause). */
  const took = async (pull: Pull, pause: boolean) => {
    if (pull.failed && pause) await sleep(Math.min(200, round.waitMs), signal);
    if (pull.message === null) return;
    const partial = await round.arrive(pull.message);
    if (partial === undefined) return;
    const { size } = partial.body;
    while (reads.full || (reads.size > 0 && round.readingBytes + size > READ_BYTES)) {
      await reads.next!.then(() => round.fold(take(reads)));
    }
    round.readingBytes += size;
    reads.add(read(options, pull.message, partial.edge, partial.body));
  };
  let pull: Pull | undefined;
  const working = setInterval(() => {
    for (const message of round.held) message.working();
  }, WORKING_MS);
  try {
    while (!round.done) {
      if (reads.ready) {
        round.fold(take(reads));
        continue;
      }
      if (pull === undefined && !reads.full) {
        pull = new Pull(options.consumer, Math.max(1_000, Math.min(round.waitMs, PULL_MS)));
      }
      await firstOf([pull?.settled, reads.next], round.waitMs, signal);
      if (pull?.done) {
        const pulled = pull;
        pull = undefined;
        await took(pulled, true);
      }
    }
    if (pull !== undefined) { // a message on its way as the round ended is still taken
      pull.stop();
      await pull.settled;
      await took(pull, false);
    }
    while (reads.size > 0) {
      await reads.next;
      round.fold(take(reads));
    }
  } catch (error) {
    pull?.stop();
    throw error;
  } finally {
    clearInterval(working);
  }
  return await round.finish();
}

/** The oldest read, done. */
function take(reads: OrderedWindow<Read>): Read {
  const outcome = reads.take();
  if (!outcome.ok) throw outcome.error; // a read keeps its error: never the case
  return outcome.value;
}
