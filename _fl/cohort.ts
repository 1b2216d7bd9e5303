/**
 * The cohort: every site the job has seen, by name, across reconnects and
 * coordinator restarts: its state (idle, training, resuming, gone) and its
 * history (rounds taken part in, bytes, last seen, late replies, failures).
 * A site's name is its proven `connect({ name })`, else its `props.site`,
 * else its id. The coordinator feeds it the server's `join`, `disconnect`,
 * `resume` and `leave` events and `server.stats()`; it samples the sites
 * available for a round, deterministically from a seed and the round.
 *
 * @module
 */

import { TimeoutError } from "../mod.ts";
import { Changes, sampleNames } from "./sample.ts";
import {
  applyStats,
  checkHistory,
  compare,
  forget,
  isAvailable,
  MAX_ROUNDS_KEPT,
  type MemberStats,
  newSite,
  restoredSite,
  type Site,
  type SiteHistory,
  type SiteSnapshot,
  snapshotOf,
} from "./site_history.ts";

export {
  MAX_ROUNDS_KEPT,
  type MemberStats,
  type SiteHistory,
  type SiteSnapshot,
  type SiteState,
} from "./site_history.ts";

/** Options of a {@linkcode Cohort}. */
export interface CohortOptions {
  /** Called whenever a site changes (joins, drops, takes a task, answers, …). */
  onChange?: (site: SiteSnapshot) => void;
  /**
   * The most sites remembered (default 100,000): past it, the gone site not
   * heard from for longest is forgotten, so that memory stays bounded.
   */
  maxSites?: number;
}

/**
 * The sites of a job, by name. See the module doc.
 *
 * @example Sites join, one is sampled, answers and is idle again
 * ```ts
 * import assert from "node:assert/strict";
 * import { Cohort } from "@fedcomm/fedcomm/fl";
 *
 * const cohort = new Cohort();
 * cohort.join(0, "site-a");
 * cohort.join(1, "site-b");
 * const [name] = cohort.sample(1, { seed: 7, round: 1 });
 * assert.deepStrictEqual(cohort.sample(1, { seed: 7, round: 1 }), [name]); // deterministic
 * cohort.assign(name, 1);
 * assert.equal(cohort.site(name)?.state, "training");
 * cohort.answered(name, 1);
 * assert.deepStrictEqual(cohort.site(name)?.rounds, [1]);
 * assert.equal(cohort.available, 2);
 * ```
 */
export class Cohort {
  readonly #sites = new Map<string, Site>();
  readonly #byId = new Map<number, Site>();
  readonly #onChange: ((site: SiteSnapshot) => void) | undefined;
  readonly #maxSites: number;
  readonly #changes = new Changes();

  /**
   * Makes an empty cohort.
   *
   * @param options Who to tell of changes, and how many sites to remember.
   * @throws {RangeError} If `maxSites` is not a positive integer.
   */
  constructor(options?: CohortOptions) {
    const maxSites = options?.maxSites ?? 100_000;
    if (!Number.isSafeInteger(maxSites) || maxSites < 1) {
      throw new RangeError(`Invalid maxSites: "${maxSites}" is not a positive integer`);
    }
    this.#maxSites = maxSites;
    this.#onChange = options?.onChange;
  }

  /**
   * The name a session stands for: its `name`, else its `props.site` (a
   * string), else its id.
   *
   * @param id The session's id.
   * @param name The name from its hello.
   * @param props The props from its hello.
   * @returns The site's name.
   */
  static nameOf(id: number, name: string | undefined, props?: MemberStats["props"]): string {
    if (name !== undefined && name !== "") return name;
    const site = props?.site;
    return typeof site === "string" && site !== "" ? site : String(id);
  }

  /** How many sites can be sampled now: connected, idle, not removed, not held. */
  get available(): number {
    return this.#available().length;
  }

  /** How many sites are remembered. */
  get size(): number {
    return this.#sites.size;
  }

  /**
   * A session joined (a new one, not a resume): the site of that name is
   * connected and idle, with its history if it was seen before. Another
   * session of a name that is still connected is a different site, named
   * `name@id`.
   *
   * @param id The session's id.
   * @param name The site's name (see {@linkcode Cohort.nameOf}).
   * @returns The name the site is known by.
   */
  join(id: number, name: string): string {
    let site = this.#sites.get(name);
    if (site !== undefined && site.connection === "connected" && site.history.id !== id) {
      name = `${name}@${id}`;
      site = this.#sites.get(name);
    }
    if (site === undefined) {
      site = newSite(name, id);
      this.#sites.set(name, site);
      this.#bound();
    } else {
      if (this.#byId.get(site.history.id) === site) this.#byId.delete(site.history.id);
      site.baseIn = site.history.bytesIn;
      site.baseOut = site.history.bytesOut;
    }
    site.history.id = id;
    site.history.sessions++;
    site.history.lastSeen = Date.now();
    site.connection = "connected";
    site.task = undefined;
    site.holdUntil = 0;
    this.#byId.set(id, site);
    this.#changed(site);
    return name;
  }

  /**
   * The session's connection dropped: the site is resuming (its task stands).
   *
   * @param id The session's id.
   */
  drop(id: number): void {
    this.#set(id, (site) => site.connection = "resuming");
  }

  /**
   * The session resumed on a new connection.
   *
   * @param id The session's id.
   */
  resume(id: number): void {
    this.#set(id, (site) => site.connection = "connected");
  }

  /**
   * The session is over for good: the site is gone until it connects again.
   *
   * @param id The session's id.
   */
  leave(id: number): void {
    this.#set(id, (site) => site.connection = "gone");
  }

  /**
   * Brings the cohort in line with `server.stats()`: members it did not know
   * (they joined before it listened) join, states follow the sessions, and
   * bytes and last-seen times are updated.
   *
   * @param stats Every member's statistics.
   */
  refresh(stats: readonly MemberStats[]): void {
    const now = Date.now();
    for (const member of stats) {
      let site = this.#byId.get(member.id);
      if (site === undefined) {
        if (member.state === "gone") continue;
        site = this.#sites.get(
          this.join(member.id, Cohort.nameOf(member.id, member.name, member.props)),
        )!;
      }
      if (applyStats(site, member, now)) this.#changed(site);
    }
  }

  /**
   * The name of the site whose session has `id`, if it is known.
   *
   * @param id A session's id.
   * @returns The name, or `undefined`.
   */
  nameOfId(id: number): string | undefined {
    return this.#byId.get(id)?.history.name;
  }

  /**
   * The id of the named site's latest session, if it is not gone.
   *
   * @param name A site's name.
   * @returns The id, or `undefined` when the site is gone or unknown.
   */
  idOf(name: string): number | undefined {
    const site = this.#sites.get(name);
    return site === undefined || site.connection === "gone" ? undefined : site.history.id;
  }

  /**
   * One site's snapshot.
   *
   * @param name The site's name.
   * @returns Its history and state, or `undefined` if no site has that name.
   */
  site(name: string): SiteSnapshot | undefined {
    const site = this.#sites.get(name);
    return site === undefined ? undefined : snapshotOf(site);
  }

  /**
   * Every site's snapshot, by name.
   *
   * @returns The snapshots, sorted by name.
   */
  sites(): SiteSnapshot[] {
    return [...this.#sites.values()].map(snapshotOf).sort((a, b) => compare(a.name, b.name));
  }

  /**
   * The histories to checkpoint.
   *
   * @returns A copy of every site's history, sorted by name.
   */
  histories(): SiteHistory[] {
    return this.sites().map(({ state: _s, task: _t, ...history }) => history);
  }

  /**
   * Takes back histories from a checkpoint (each site is gone until it joins).
   *
   * @param histories What {@linkcode Cohort.histories} returned.
   * @throws {TypeError} If an entry is not a site history.
   */
  restore(histories: readonly SiteHistory[]): void {
    for (const entry of histories) {
      const history = checkHistory(entry);
      const site = restoredSite(history, this.#sites.get(history.name));
      this.#sites.set(history.name, site);
    }
    this.#bound();
  }

  /**
   * Chooses up to `k` of the available sites (connected, idle, not removed,
   * not held after a missed deadline): the same ones for the same seed,
   * round and available sites, whatever the order they joined in.
   *
   * @param k How many (all available ones when fewer are).
   * @param options The job's seed and the round (any integers).
   * @returns Their names, sorted.
   * @throws {RangeError} If `k` is not a positive integer, or the seed or round not an integer.
   */
  sample(k: number, options: { seed: number; round: number }): string[] {
    return sampleNames(this.#available(), k, options.seed, options.round);
  }

  /**
   * Waits until at least `min` sites are available.
   *
   * @param min How many.
   * @param options Cancellation and time limit.
   * @returns The number available then.
   * @throws {RangeError} If `min` is not a positive integer or the timeout is invalid.
   * @throws {TimeoutError} If they were not available in time.
   * @throws {Error} The signal's reason if it aborts.
   */
  async waitAvailable(
    min: number,
    options?: { signal?: AbortSignal; timeout?: number },
  ): Promise<number> {
    if (!Number.isSafeInteger(min) || min < 1) {
      throw new RangeError(`Invalid minimum: "${min}" is not a positive integer`);
    }
    const timeout = options?.timeout ?? Infinity;
    if (typeof timeout !== "number" || !(timeout >= 0)) {
      throw new RangeError(`Invalid timeout: "${timeout}" is not a non-negative number of ms`);
    }
    const signal = options?.signal;
    const end = Date.now() + timeout;
    while (true) {
      signal?.throwIfAborted();
      const available = this.available;
      if (available >= min) return available;
      const now = Date.now();
      if (now >= end) {
        throw new TimeoutError(
          `Waiting for sites timed out after ${timeout} ms: ${available} of ${min} available`,
        );
      }
      const held = this.#nextRelease(now);
      await this.#changes.next(Math.min(end, held) - now, signal);
    }
  }

  /**
   * The site takes a task.
   *
   * @param name The site's name.
   * @param task The task's number.
   */
  assign(name: string, task: number): void {
    this.#named(name, (site) => site.task = task);
  }

  /**
   * The site answered a round with a valid result: the round joins its history.
   *
   * @param name The site's name.
   * @param round The round (for a train task; an evaluation passes `undefined`).
   */
  answered(name: string, round: number | undefined): void {
    this.#named(name, (site) => {
      site.task = undefined;
      site.holdUntil = 0;
      if (round === undefined) return;
      site.history.taken++;
      site.history.rounds.push(round);
      if (site.history.rounds.length > MAX_ROUNDS_KEPT) site.history.rounds.shift();
    });
  }

  /**
   * The site failed its task (a failure message, or an invalid result).
   *
   * @param name The site's name.
   */
  failed(name: string): void {
    this.#named(name, (site) => {
      site.task = undefined;
      site.history.failures++;
    });
  }

  /**
   * The site gave no answer by the deadline: its task is cancelled, and it
   * is not sampled for `holdMs` (it may still be busy with it), unless a late
   * reply shows first that it is done.
   *
   * @param name The site's name.
   * @param holdMs How long to leave it out.
   */
  missed(name: string, holdMs: number): void {
    this.#named(name, (site) => {
      site.task = undefined;
      site.holdUntil = Date.now() + holdMs;
    });
  }

  /**
   * A reply of the site came after its round: counted, and the site is no
   * longer held.
   *
   * @param name The site's name.
   */
  late(name: string): void {
    this.#named(name, (site) => {
      site.history.late++;
      site.holdUntil = 0;
      site.history.lastSeen = Date.now();
    });
  }

  /**
   * The operator removed the site: it is never sampled again (it is kept, and checkpointed, as removed).
   *
   * @param name The site's name.
   * @throws {RangeError} If no site has that name.
   */
  remove(name: string): void {
    if (!this.#sites.has(name)) {
      throw new RangeError(`Unknown site: "${name}" is not in the cohort`);
    }
    this.#named(name, (site) => {
      site.history.removed = true;
      site.task = undefined;
    });
  }

  #available(): string[] {
    const now = Date.now();
    const names: string[] = [];
    for (const [name, site] of this.#sites) {
      if (isAvailable(site, now)) names.push(name);
    }
    return names;
  }

  /** When the next held (otherwise available) site is released, or Infinity. */
  #nextRelease(now: number): number {
    let next = Infinity;
    for (const site of this.#sites.values()) {
      if (site.holdUntil > now && isAvailable({ ...site, holdUntil: 0 }, now)) {
        next = Math.min(next, site.holdUntil);
      }
    }
    return next;
  }

  #set(id: number, change: (site: Site) => void): void {
    const site = this.#byId.get(id);
    if (site === undefined) return;
    change(site);
    site.history.lastSeen = Date.now();
    this.#changed(site);
  }

  #named(name: string, change: (site: Site) => void): void {
    const site = this.#sites.get(name);
    if (site === undefined) return;
    change(site);
    this.#changed(site);
  }

  #changed(site: Site): void {
    this.#changes.notify();
    this.#onChange?.(snapshotOf(site));
  }

  /** Forgets the gone sites heard from longest ago, past `maxSites`. */
  #bound(): void {
    forget(this.#sites, this.#byId, this.#maxSites);
  }
}
