/**
 * The job's accounting: a record per round, appended as a JSON line to
 * `rounds.jsonl`; an audit of refused logins in `audit.jsonl`; and job
 * totals that only go up (checkpointed, so they survive restarts).
 *
 * A round's record is written before its checkpoint. After a crash, a
 * coordinator opening the job directory keeps only the records of rounds up
 * to its checkpoint's (a round that ran again is recorded once, and a line a
 * crash cut short is dropped).
 *
 * @module
 */

import type { TaskKind } from "./messages.ts";

/** What happened in one round (or one evaluation): a line of `rounds.jsonl`. */
export interface RoundRecord {
  /** The job's name. */
  job: string;
  /** The round. */
  round: number;
  /** Train (the model was updated from the results) or evaluate. */
  kind: TaskKind;
  /** The task's number. */
  task: number;
  /** When the round started (ISO 8601). */
  time: string;
  /** The sites sampled, by name. */
  sampled: string[];
  /** Those that answered with a valid result (folded into the aggregate), sorted. */
  answered: string[];
  /** Sites whose replies came after their round, during this one: recorded, not aggregated. */
  late: string[];
  /** Sampled sites with no answer, and why. */
  missing: { site: string; reason: string }[];
  /** Sampled sites that failed or answered with an invalid result, and the error. */
  failed: { site: string; error: string }[];
  /** Whether enough valid results came (`minResults`) for the model to be updated. */
  quorum: boolean;
  /** Bytes the server received during the round. */
  bytesIn: number;
  /** Bytes the server sent during the round. */
  bytesOut: number;
  /** How long the round took, in ms. */
  ms: number;
  /** The sample-weighted mean of the sites' metrics. */
  metrics: Record<string, number>;
}

/** The job's totals: each only goes up, across rounds and restarts. */
export interface JobTotals {
  /** Train rounds completed. */
  rounds: number;
  /** Evaluations completed. */
  evaluations: number;
  /** Tasks sent (one per sampled site per round). */
  tasks: number;
  /** Valid results received. */
  results: number;
  /** Late replies received. */
  late: number;
  /** Failures and invalid results. */
  failures: number;
  /** Sampled sites that gave no answer. */
  missing: number;
  /** Logins refused. */
  refused: number;
  /** Bytes received by the coordinator's server. */
  bytesIn: number;
  /** Bytes sent by the coordinator's server. */
  bytesOut: number;
}

/** A line of `audit.jsonl`: a refused login. */
export interface AuditEntry {
  /** When (ISO 8601). */
  time: string;
  /** The reason of the refusal (`auth`, `full`, `busy`, `duplicate`, `tls`, …). */
  reason: string;
  /** The server's explanation. */
  message: string;
  /** The peer's address, `host:port`. */
  address: string | undefined;
  /** The name the peer gave, if any. */
  name: string | undefined;
}

/** A refused login, as the server's `refuse` event tells it (a `RefuseEvent` is one). */
export interface RefusedLogin {
  /** The reason of the refusal. */
  readonly reason: string;
  /** The explanation. */
  readonly message: string;
  /** The peer's address. */
  readonly address?: Deno.Addr | undefined;
  /** The name the peer gave, if any. */
  readonly name?: string | undefined;
}

/** The name of the round records' file in the job directory. */
export const ROUNDS_FILE = "rounds.jsonl";
/** The name of the audit file in the job directory. */
export const AUDIT_FILE = "audit.jsonl";
/** The most audit lines written per minute; the others are counted in one line. */
export const AUDIT_PER_MINUTE = 600;

const COUNTERS = [
  "rounds",
  "evaluations",
  "tasks",
  "results",
  "late",
  "failures",
  "missing",
  "refused",
  "bytesIn",
  "bytesOut",
] as const;

/**
 * Job totals that only go up.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Totals } from "@fedcomm/fedcomm/fl";
 *
 * const totals = new Totals({ rounds: 2, bytesIn: 100 });
 * totals.add({ rounds: 1, results: 3 });
 * totals.bytes(50, 10); // the server's bytes since the job (re)started
 * assert.equal(totals.get().rounds, 3);
 * assert.equal(totals.get().bytesIn, 150);
 * assert.throws(() => totals.add({ late: -1 }), RangeError);
 * ```
 */
export class Totals {
  readonly #totals: JobTotals;
  readonly #baseIn: number;
  readonly #baseOut: number;

  /**
   * Starts from zero, or from checkpointed totals.
   *
   * @param from Totals to start from (missing counters are 0).
   * @throws {RangeError} If a counter is not a non-negative number.
   */
  constructor(from?: Partial<JobTotals>) {
    this.#totals = Object.fromEntries(COUNTERS.map((k) => [k, 0])) as unknown as JobTotals;
    this.add(from ?? {});
    this.#baseIn = this.#totals.bytesIn;
    this.#baseOut = this.#totals.bytesOut;
  }

  /**
   * Adds to the counters.
   *
   * @param counts How much to add to each (missing: 0).
   * @throws {RangeError} If an amount is not a non-negative number (nothing is added then).
   */
  add(counts: Partial<JobTotals>): void {
    for (const key of COUNTERS) {
      const value = counts[key] ?? 0;
      if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
        throw new RangeError(`Invalid total: "${key}" is "${value}", not a non-negative number`);
      }
    }
    for (const key of COUNTERS) this.#totals[key] += counts[key] ?? 0;
  }

  /**
   * Sets the byte totals to the starting ones plus the server's bytes since
   * this job started in this process (they never go down).
   *
   * @param received Bytes the server received since then.
   * @param sent Bytes it sent since then.
   */
  bytes(received: number, sent: number): void {
    this.#totals.bytesIn = Math.max(this.#totals.bytesIn, this.#baseIn + received);
    this.#totals.bytesOut = Math.max(this.#totals.bytesOut, this.#baseOut + sent);
  }

  /**
   * The totals now.
   *
   * @returns A copy.
   */
  get(): JobTotals {
    return { ...this.#totals };
  }
}

/**
 * The job's record files, `rounds.jsonl` and `audit.jsonl` in the job
 * directory; and the latest round records, in memory, for the operator.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { Records } from "@fedcomm/fedcomm/fl";
 *
 * const dir = await Deno.makeTempDir();
 * const records = await Records.open(dir, { after: 0 });
 * const record = {
 *   job: "demo", round: 1, kind: "train" as const, task: 1, time: new Date().toISOString(),
 *   sampled: ["a"], answered: ["a"], late: [], missing: [], failed: [], quorum: true,
 *   bytesIn: 10, bytesOut: 20, ms: 5, metrics: { loss: 0.5 },
 * };
 * await records.round(record);
 * await records.close();
 * const lines = (await Deno.readTextFile(`${dir}/rounds.jsonl`)).trim().split("\n");
 * assert.deepStrictEqual(lines.map((line) => JSON.parse(line)), [record]);
 * // A coordinator restarted from the checkpoint of round 0 drops round 1's record:
 * const again = await Records.open(dir, { after: 0 });
 * assert.deepStrictEqual(again.recent, []);
 * await again.close();
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export class Records {
  readonly #rounds: Deno.FsFile;
  readonly #audit: Deno.FsFile;
  readonly #recent: RoundRecord[];
  readonly #keep: number;
  readonly #now: () => number;
  #writing: Promise<void> = Promise.resolve();
  #minute = 0;
  #written = 0;
  #suppressed = 0;

  private constructor(
    rounds: Deno.FsFile,
    audit: Deno.FsFile,
    recent: RoundRecord[],
    keep: number,
    now: () => number,
  ) {
    this.#now = now;
    this.#rounds = rounds;
    this.#audit = audit;
    this.#recent = recent;
    this.#keep = keep;
  }

  /**
   * Opens (creating them as needed) the record files in `dir`, keeping the
   * records of rounds up to `after` only: those of later rounds were written
   * by a coordinator that crashed before their checkpoint.
   *
   * @param dir The job directory (made if missing).
   * @param options `after`: the last round checkpointed (0: none); `keep`:
   * how many recent records to hold in memory (default 100); `now`: the
   * clock of the audit's limit (default `Date.now`).
   * @returns The open records.
   * @throws {Deno.errors.PermissionDenied} If the directory cannot be written.
   */
  static async open(
    dir: string,
    options: { after: number; keep?: number; now?: () => number },
  ): Promise<Records> {
    await Deno.mkdir(dir, { recursive: true });
    const keep = options.keep ?? 100;
    const path = `${dir}/${ROUNDS_FILE}`;
    const kept = await keptRecords(path, options.after);
    if (kept.rewrite) await rewrite(path, kept.lines);
    const recent = kept.records.slice(-keep);
    const append = { append: true, create: true } as const;
    const rounds = await Deno.open(path, append);
    const audit = await Deno.open(`${dir}/${AUDIT_FILE}`, append);
    return new Records(rounds, audit, recent, keep, options.now ?? Date.now);
  }

  /** The latest round records (oldest first), at most `keep`. */
  get recent(): RoundRecord[] {
    return [...this.#recent];
  }

  /**
   * Appends a round's record to `rounds.jsonl` and waits until it is on disk.
   *
   * @param record The record.
   * @returns Resolves when it is written and synced.
   */
  round(record: RoundRecord): Promise<void> {
    this.#recent.push(record);
    if (this.#recent.length > this.#keep) this.#recent.shift();
    return this.#write(this.#rounds, `${JSON.stringify(record)}\n`, true);
  }

  /**
   * Appends a refused login to `audit.jsonl` (at most {@linkcode AUDIT_PER_MINUTE}
   * lines a minute: past it, the next line written says how many were left out).
   *
   * @param event The server's `refuse` event.
   * @returns Resolves when it is written.
   */
  refused(event: RefusedLogin): Promise<void> {
    const now = this.#now();
    const minute = Math.floor(now / 60_000);
    if (minute !== this.#minute) {
      this.#minute = minute;
      this.#written = 0;
    }
    if (this.#written >= AUDIT_PER_MINUTE) {
      this.#suppressed++;
      return this.#writing;
    }
    this.#written++;
    let lines = "";
    if (this.#suppressed > 0) {
      lines += `${
        JSON.stringify({ time: new Date(now).toISOString(), suppressed: this.#suppressed })
      }\n`;
      this.#suppressed = 0;
    }
    const entry: AuditEntry = {
      time: new Date(now).toISOString(),
      reason: event.reason,
      message: event.message,
      address: event.address === undefined ? undefined : formatAddr(event.address),
      name: event.name,
    };
    return this.#write(this.#audit, lines + `${JSON.stringify(entry)}\n`, false);
  }

  /**
   * Writes what is pending and closes the files.
   *
   * @returns Resolves when they are closed.
   */
  async close(): Promise<void> {
    await this.#writing;
    this.#rounds.close();
    this.#audit.close();
  }

  /** Writes in order, one write at a time; a failed write fails its caller only. */
  #write(file: Deno.FsFile, text: string, sync: boolean): Promise<void> {
    const bytes = new TextEncoder().encode(text);
    const next = this.#writing.then(async () => {
      for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
      if (sync) await file.syncData();
    });
    this.#writing = next.catch(() => {});
    return next;
  }
}

function formatAddr(addr: Deno.Addr): string {
  return "hostname" in addr ? `${addr.hostname}:${addr.port}` : addr.transport;
}

/** The lines of `rounds.jsonl` to keep (rounds up to `after`, whole JSON lines only). */
async function keptRecords(
  path: string,
  after: number,
): Promise<{ lines: string[]; records: RoundRecord[]; rewrite: boolean }> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { lines: [], records: [], rewrite: false };
    throw error;
  }
  const lines: string[] = [], records: RoundRecord[] = [];
  let rewrite = text !== "" && !text.endsWith("\n");
  for (const line of text.split("\n")) {
    if (line === "") continue;
    let record: RoundRecord | undefined;
    try {
      record = JSON.parse(line);
    } catch {
      record = undefined;
    }
    if (record === undefined || typeof record.round !== "number" || record.round > after) {
      rewrite = true;
      continue;
    }
    lines.push(line);
    records.push(record);
  }
  return { lines, records, rewrite };
}

/** Replaces a file's lines atomically: a temporary file, synced, renamed over it. */
async function rewrite(path: string, lines: string[]): Promise<void> {
  const temp = `${path}.tmp`;
  await using file = await Deno.open(temp, { write: true, create: true, truncate: true });
  const bytes = new TextEncoder().encode(lines.map((line) => `${line}\n`).join(""));
  for (let off = 0; off < bytes.length;) off += await file.write(bytes.subarray(off));
  await file.sync();
  await Deno.rename(temp, path);
}
