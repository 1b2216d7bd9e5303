/**
 * A job's settings, what it reports (its snapshot for the operator) and
 * what it returns: the option and result types of the {@linkcode Coordinator}
 * and their checks.
 *
 * @module
 */

import type { Strategy } from "./strategy.ts";
import { checkWeights, type Weights } from "./weights.ts";
import type { SiteSnapshot } from "./cohort.ts";
import type { JobTotals, RoundRecord } from "./records.ts";

/** Options of a {@linkcode Coordinator}. */
export interface CoordinatorOptions {
  /** The job's name: sent with every task, and checked against a checkpoint's. */
  job: string;
  /** The initial global model (a checkpoint's model replaces it when the job resumes). */
  model: Weights;
  /** How many train rounds the job has. */
  rounds: number;
  /** How the rounds are configured and aggregated (default: a new `FedAvg`). */
  strategy?: Strategy;
  /** How many sites each round samples (default: every site available when it starts). */
  sitesPerRound?: number;
  /**
   * How many sites must be available before a round starts (default:
   * `sitesPerRound`, else 1). With a fixed cohort (`listen({ clients: N })`)
   * make it N: the transport sends nothing before all N joined.
   */
  minSites?: number;
  /** How many valid results a train round needs to update the model (default 1). */
  minResults?: number;
  /** Milliseconds each round has, from its tasks being sent (default 600,000). */
  roundTimeout?: number;
  /**
   * Milliseconds a round goes on once `minResults` valid results came
   * (default: until every site answered or the deadline).
   */
  grace?: number;
  /** Milliseconds to wait for `minSites` before a round (default 600,000): then `run()` fails. */
  waitTimeout?: number;
  /** Evaluate after every this many train rounds (default 0: never). */
  evaluateEvery?: number;
  /** How many sites each evaluation samples (default: as `sitesPerRound`). */
  sitesPerEvaluation?: number;
  /** The seed of the site sampling (default 0): the same seed samples the same sites. */
  seed?: number;
  /**
   * Milliseconds a site that missed a deadline is left out of sampling
   * (default: `roundTimeout`), unless its late reply comes first.
   */
  staleHold?: number;
  /**
   * The job directory: the checkpoint, `rounds.jsonl` and `audit.jsonl`
   * (default: none, nothing is written and a restart starts over).
   */
  dir?: string;
  /** How many recent round records the snapshot lists (default 100). */
  recentRounds?: number;
}

/** The settings of a job, checked, with the defaults filled in. */
export interface JobSettings {
  job: string;
  rounds: number;
  sitesPerRound: number | undefined;
  minSites: number;
  minResults: number;
  roundTimeout: number;
  grace: number | undefined;
  waitTimeout: number;
  evaluateEvery: number;
  sitesPerEvaluation: number | undefined;
  seed: number;
  staleHold: number;
  dir: string | undefined;
  recentRounds: number;
}

/** Where a job is. */
export type JobState = "idle" | "waiting" | "running" | "stopping" | "done" | "stopped" | "failed";

/** A job as the operator sees it: plain JSON. */
export interface JobSnapshot {
  /** The job's name. */
  job: string;
  /** Its state. */
  state: JobState;
  /** The round running, or the last completed one between rounds. */
  round: number;
  /** The train rounds the job has. */
  rounds: number;
  /** The round it resumed after (from a checkpoint; 0 when it started afresh). */
  resumedFrom: number;
  /** The strategy's name. */
  strategy: string;
  /** Every site, by name. */
  sites: SiteSnapshot[];
  /** The latest round records, oldest first. */
  recent: RoundRecord[];
  /** The job totals. */
  totals: JobTotals;
  /** Why it stopped or failed (`null` while it runs). */
  reason: string | null;
}

/** What {@linkcode Coordinator.run} resolves with. */
export interface JobResult {
  /** The job's name. */
  job: string;
  /** `"done"` after every round, `"stopped"` after `stop()` or the run's signal. */
  state: "done" | "stopped";
  /** Why it stopped (`"done"` when it finished). */
  reason: string;
  /** The last completed train round. */
  rounds: number;
  /** The round it resumed after (0 when it started afresh). */
  resumedFrom: number;
  /** The global model after the last completed round. */
  weights: Weights;
  /** The metrics of the last train round with results, and of the last evaluation. */
  metrics: { train: Record<string, number>; evaluate: Record<string, number> };
  /** The job totals. */
  totals: JobTotals;
}

function positive(name: string, value: unknown, fallback?: number): number {
  const v = value ?? fallback;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
    throw new RangeError(`Invalid ${name}: "${v}" is not a positive integer`);
  }
  return v;
}

function ms(name: string, value: unknown, fallback: number): number {
  const v = value ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) {
    throw new RangeError(`Invalid ${name}: "${v}" is not a non-negative number of ms`);
  }
  return v;
}

/**
 * Checks a coordinator's options and fills in the defaults.
 *
 * @param options The options.
 * @returns The settings.
 * @throws {TypeError} If `job` is not a non-empty string or `model` not a map of float tensors.
 * @throws {RangeError} If a count or a time is out of range.
 */
export function checkOptions(options: CoordinatorOptions): JobSettings {
  if (typeof options?.job !== "string" || options.job === "") {
    throw new TypeError(`Invalid job: "${options?.job}" is not a non-empty string`);
  }
  checkWeights(options.model, "Model");
  const sitesPerRound = options.sitesPerRound === undefined
    ? undefined
    : positive("sitesPerRound", options.sitesPerRound);
  const minSites = positive("minSites", options.minSites, sitesPerRound ?? 1);
  const minResults = positive("minResults", options.minResults, 1);
  const roundTimeout = ms("roundTimeout", options.roundTimeout, 600_000);
  const evaluateEvery = options.evaluateEvery ?? 0;
  if (!Number.isSafeInteger(evaluateEvery) || evaluateEvery < 0) {
    throw new RangeError(`Invalid evaluateEvery: "${evaluateEvery}" is not a non-negative integer`);
  }
  const seed = options.seed ?? 0;
  if (!Number.isSafeInteger(seed)) {
    throw new RangeError(`Invalid seed: "${seed}" is not an integer`);
  }
  return {
    job: options.job,
    rounds: positive("rounds", options.rounds),
    sitesPerRound,
    minSites,
    minResults,
    roundTimeout,
    grace: options.grace === undefined ? undefined : ms("grace", options.grace, 0),
    waitTimeout: ms("waitTimeout", options.waitTimeout, 600_000),
    evaluateEvery,
    sitesPerEvaluation: options.sitesPerEvaluation === undefined
      ? sitesPerRound
      : positive("sitesPerEvaluation", options.sitesPerEvaluation),
    seed,
    staleHold: ms("staleHold", options.staleHold, roundTimeout),
    dir: options.dir,
    recentRounds: positive("recentRounds", options.recentRounds, 100),
  };
}
