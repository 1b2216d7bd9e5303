/**
 * What the cohort keeps of each site: the history that is checkpointed, its
 * state, and the checks of a history read back from a checkpoint.
 *
 * @module
 */

/**
 * What the cohort reads of a member's `server.stats()` entry (a
 * `ClientStats` is one).
 */
export interface MemberStats {
  /** Its id. */
  readonly id: number;
  /** The name from its hello, if any. */
  readonly name: string | undefined;
  /** The metadata from its hello. */
  readonly props: Readonly<Record<string, string | number | boolean | null>>;
  /** Connected, waiting for its resume, or gone. */
  readonly state: "connected" | "resuming" | "gone";
  /** Bytes sent to it in this session. */
  readonly bytesSent: number;
  /** Bytes received from it in this session. */
  readonly bytesReceived: number;
  /** Milliseconds since the last byte from it. */
  readonly silentMs: number;
}

/** A site's state: free for a task, working on one, away (its connection dropped), or gone. */
export type SiteState = "idle" | "training" | "resuming" | "gone";

/** What the job remembers of a site, by name; checkpointed, so it outlives restarts. */
export interface SiteHistory {
  /** The site's name. */
  name: string;
  /** Its id in its latest session (ids change when it connects anew). */
  id: number;
  /** The latest rounds (at most {@linkcode MAX_ROUNDS_KEPT}) it answered with a valid result. */
  rounds: number[];
  /** How many rounds it answered with a valid result, in all. */
  taken: number;
  /** Bytes received from it, over all its sessions. */
  bytesIn: number;
  /** Bytes sent to it, over all its sessions. */
  bytesOut: number;
  /** When it was last heard from (ms since the epoch). */
  lastSeen: number;
  /** Its replies that came after their round (recorded, never aggregated). */
  late: number;
  /** Its failures: failure messages and invalid results. */
  failures: number;
  /** How many sessions it had (a new connection that is no resume). */
  sessions: number;
  /** Whether the operator removed it from the job. */
  removed: boolean;
}

/** A site as the operator sees it: its history, its state, its task. */
export interface SiteSnapshot extends SiteHistory {
  /** Its state now. */
  state: SiteState;
  /** The task it is working on, or `null`. */
  task: number | null;
}

/** The most rounds a site's history lists (older ones only count in `taken`). */
export const MAX_ROUNDS_KEPT = 1000;

/** One site: its history and what it is doing. */
export interface Site {
  history: SiteHistory;
  connection: "connected" | "resuming" | "gone";
  task: number | undefined;
  /** Not sampled before this time (ms since the epoch): it missed a deadline. */
  holdUntil: number;
  /** Bytes of sessions before the current one (and before a restart). */
  baseIn: number;
  baseOut: number;
}

/** A site first seen now, connected. */
export function newSite(name: string, id: number): Site {
  return {
    history: {
      name,
      id,
      rounds: [],
      taken: 0,
      bytesIn: 0,
      bytesOut: 0,
      lastSeen: Date.now(),
      late: 0,
      failures: 0,
      sessions: 0,
      removed: false,
    },
    connection: "connected",
    task: undefined,
    holdUntil: 0,
    baseIn: 0,
    baseOut: 0,
  };
}

/** Whether the site can be sampled at `now`. */
export function isAvailable(site: Site, now: number): boolean {
  return site.connection === "connected" && site.task === undefined && !site.history.removed &&
    site.holdUntil <= now;
}

/** The site's state, from its connection, task and hold. */
export function stateOf(site: Site): SiteState {
  if (site.connection !== "connected") return site.connection;
  return site.task !== undefined || site.holdUntil > Date.now() ? "training" : "idle";
}

/** A copy of the site's history with its state and task. */
export function snapshotOf(site: Site): SiteSnapshot {
  const history = { ...site.history, rounds: [...site.history.rounds] };
  return { ...history, state: stateOf(site), task: site.task ?? null };
}

/** Orders names by code unit, as `sort()` does. */
export function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Checks one checkpointed history, field by field. */
export function checkHistory(entry: unknown): SiteHistory {
  const h = entry as Record<string, unknown> | null;
  if (typeof h !== "object" || h === null || typeof h.name !== "string" || h.name === "") {
    throw new TypeError(`Invalid site history: it has no name`);
  }
  for (
    const key of ["id", "taken", "bytesIn", "bytesOut", "lastSeen", "late", "failures", "sessions"]
  ) {
    if (typeof h[key] !== "number" || !Number.isFinite(h[key])) {
      throw new TypeError(`Invalid site history of "${h.name}": "${key}" is not a number`);
    }
  }
  if (!Array.isArray(h.rounds) || !h.rounds.every((r) => Number.isSafeInteger(r))) {
    throw new TypeError(`Invalid site history of "${h.name}": "rounds" is not a list of rounds`);
  }
  return {
    name: h.name,
    id: h.id as number,
    rounds: [...h.rounds as number[]].slice(-MAX_ROUNDS_KEPT),
    taken: h.taken as number,
    bytesIn: h.bytesIn as number,
    bytesOut: h.bytesOut as number,
    lastSeen: h.lastSeen as number,
    late: h.late as number,
    failures: h.failures as number,
    sessions: h.sessions as number,
    removed: h.removed === true,
  };
}

/**
 * A site back from a checkpoint: gone until it joins, or, if it joined
 * before the checkpoint was read, that session added to its history.
 */
export function restoredSite(history: SiteHistory, joined: Site | undefined): Site {
  const site = joined ?? newSite(history.name, history.id);
  if (joined === undefined) site.connection = "gone";
  else {
    history.id = joined.history.id;
    history.sessions += joined.history.sessions;
    history.removed ||= joined.history.removed;
    history.bytesIn += joined.history.bytesIn - joined.baseIn;
    history.bytesOut += joined.history.bytesOut - joined.baseOut;
    history.lastSeen = Math.max(history.lastSeen, joined.history.lastSeen);
  }
  // The current session's bytes come on top of the base.
  site.baseIn = history.bytesIn - (site.history.bytesIn - site.baseIn);
  site.baseOut = history.bytesOut - (site.history.bytesOut - site.baseOut);
  site.history = history;
  return site;
}

/**
 * Takes a member's statistics: its session's state, bytes and last heard from.
 *
 * @returns Whether its state changed.
 */
export function applyStats(site: Site, member: MemberStats, now: number): boolean {
  const changed = site.connection !== member.state;
  site.connection = member.state;
  site.history.bytesIn = site.baseIn + member.bytesReceived;
  site.history.bytesOut = site.baseOut + member.bytesSent;
  site.history.lastSeen = Math.max(site.history.lastSeen, Math.round(now - member.silentMs));
  return changed;
}

/** Forgets the gone sites heard from longest ago until at most `max` are left. */
export function forget(sites: Map<string, Site>, byId: Map<number, Site>, max: number): void {
  if (sites.size <= max) return;
  const gone = [...sites.values()].filter((s) => s.connection === "gone")
    .sort((a, b) => a.history.lastSeen - b.history.lastSeen);
  for (const site of gone) {
    if (sites.size <= max) break;
    sites.delete(site.history.name);
    if (byId.get(site.history.id) === site) byId.delete(site.history.id);
  }
}
