/**
 * The messages between the root and its edges (sealed by `seal.ts`), and
 * the parsers that check their bodies.
 *
 * Root → edges, on `fedcomm.J.task`:
 * - `task`: `{ v: 1, type, job, run, task, round, kind, config, model, timeout, expires, issued }`,
 *   `model` naming the round's model in the object store, `timeout` the edge's
 *   local round in ms, `expires` the root's whole round in ms, `issued` the
 *   root's clock (ms since the epoch; edges skip a task past `issued + timeout`
 *   by theirs, so clocks must agree to well within a round);
 * - `stop`: `{ v: 1, type, job, run, reason }`.
 *
 * Edge → root, on `fedcomm.J.up.E`:
 * - `taken`: `{ v: 1, type, job, run, edge, task, round, roster, sites }`: the
 *   edge took the task with `sites` sites, listed in the `roster` object;
 * - `partial`: `{ v: 1, type, job, run, edge, task, round, pack, size, weight, count }`:
 *   the partial aggregate in the `pack` object (its f64 sums, and in its
 *   header the sites that answered with their samples and metrics, and the
 *   missing ones with why).
 *
 * `run` is a random id the root draws when it starts: a message of an
 * earlier run of the same job is never taken for one of this run.
 *
 * @module
 */

import type { Config, TaskKind } from "../_fl/messages.ts";
import { Refused } from "./seal.ts";

/** The version of these messages. */
export const WIRE_VERSION = 1;

/** The root's task for the edges. */
export interface TaskBody {
  v: 1;
  type: "task";
  job: string;
  run: string;
  task: number;
  round: number;
  kind: TaskKind;
  config: Config;
  model: string;
  timeout: number;
  expires: number;
  issued: number;
}

/** The root's end of the job. */
export interface StopBody {
  v: 1;
  type: "stop";
  job: string;
  run: string;
  reason: string;
}

/** An edge took a task. */
export interface TakenBody {
  v: 1;
  type: "taken";
  job: string;
  run: string;
  edge: string;
  task: number;
  round: number;
  roster: string;
  sites: number;
}

/** An edge's partial aggregate for a task. */
export interface PartialBody {
  v: 1;
  type: "partial";
  job: string;
  run: string;
  edge: string;
  task: number;
  round: number;
  pack: string;
  size: number;
  weight: number;
  count: number;
}

/** What the root sends. */
export type DownBody = TaskBody | StopBody;
/** What an edge sends. */
export type UpBody = TakenBody | PartialBody;

function field(map: Record<string, unknown>, key: string, kind: "string" | "count" | "number") {
  const value = map[key];
  const ok = kind === "string"
    ? typeof value === "string"
    : kind === "count"
    ? Number.isSafeInteger(value) && (value as number) >= 0
    : typeof value === "number" && Number.isFinite(value) && value >= 0;
  if (!ok) {
    const what = kind === "string" ? "a string" : kind === "count" ? "a count" : "a number ≥ 0";
    throw new Refused(`Invalid ${String(map.type)} message: "${key}" is not ${what}`);
  }
  return value;
}

function fields<K extends string>(
  map: Record<string, unknown>,
  spec: Record<K, "string" | "count" | "number">,
): Record<K, unknown> {
  const out = {} as Record<K, unknown>;
  for (const key of Object.keys(spec) as K[]) out[key] = field(map, key, spec[key]);
  return out;
}

function checkVersion(map: Record<string, unknown>, types: readonly string[]): string {
  if (map.v !== WIRE_VERSION) {
    throw new Refused(`Unsupported message version: "${String(map.v)}" (this side speaks "1")`);
  }
  const type = map.type;
  if (typeof type !== "string" || !types.includes(type)) {
    const expected = types.map((t) => `"${t}"`).join(" or ");
    throw new Refused(`Invalid message: "type" is "${String(type)}", not ${expected}`);
  }
  return type;
}

function checkConfig(value: unknown): Config {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Refused(`Invalid task message: "config" is not a map`);
  }
  for (const [key, entry] of Object.entries(value)) {
    if (!["number", "string", "boolean"].includes(typeof entry)) {
      throw new Refused(`Invalid task message: config "${key}" is not a number, string or boolean`);
    }
  }
  return { ...value } as Config;
}

/**
 * Checks a body from the root.
 *
 * @param map The authenticated body.
 * @returns The task or stop, with the known fields only.
 * @throws {Refused} If it is not a valid one, naming the first bad field.
 */
export function parseDown(map: Record<string, unknown>): DownBody {
  const type = checkVersion(map, ["task", "stop"]);
  if (type === "stop") {
    return {
      v: 1,
      type,
      ...fields(map, { job: "string", run: "string", reason: "string" }),
    } as StopBody;
  }
  if (map.kind !== "train" && map.kind !== "evaluate") {
    throw new Refused(`Invalid task message: "kind" is "${String(map.kind)}"`);
  }
  return {
    v: 1,
    type,
    ...fields(map, {
      job: "string",
      run: "string",
      task: "count",
      round: "count",
      model: "string",
      timeout: "number",
      expires: "number",
      issued: "number",
    }),
    kind: map.kind,
    config: checkConfig(map.config),
  } as TaskBody;
}

/**
 * Checks a body from an edge.
 *
 * @param map The authenticated body.
 * @returns The taken or partial message, with the known fields only.
 * @throws {Refused} If it is not a valid one, naming the first bad field.
 */
export function parseUp(map: Record<string, unknown>): UpBody {
  const type = checkVersion(map, ["taken", "partial"]);
  const common = fields(map, {
    job: "string",
    run: "string",
    edge: "string",
    task: "count",
    round: "count",
  });
  if (type === "taken") {
    return {
      v: 1,
      type,
      ...common,
      ...fields(map, { roster: "string", sites: "count" }),
    } as TakenBody;
  }
  const rest = fields(map, { pack: "string", size: "count", weight: "number", count: "count" });
  return { v: 1, type, ...common, ...rest } as PartialBody;
}

/** One site's answer, as a partial's header lists it: `[site, samples, metrics]`. */
export type SiteAnswer = [site: string, samples: number, metrics: Record<string, number>];

/** One missing site, as a partial's header lists it: `[site, reason]`. */
export type SiteMissing = [site: string, reason: string];

/** What a partial pack's header holds besides its sums. */
export interface PartialMeta {
  answered: SiteAnswer[];
  missing: SiteMissing[];
}

/**
 * Checks a partial pack's header.
 *
 * @param meta The header's metadata.
 * @param edge The edge it came from, for errors.
 * @returns The answers and the missing sites.
 * @throws {Refused} If a list or an entry is malformed.
 */
export function parsePartialMeta(meta: Record<string, unknown>, edge: string): PartialMeta {
  const { answered, missing } = meta;
  const bad = (what: string) => new Refused(`Partial from "${edge}" has an invalid ${what}`);
  if (!Array.isArray(answered) || !Array.isArray(missing)) throw bad("site list");
  for (const entry of answered) {
    const [site, samples, metrics] = Array.isArray(entry) ? entry : [];
    const metricsOk = typeof metrics === "object" && metrics !== null &&
      Object.values(metrics).every((m) => typeof m === "number" && Number.isFinite(m));
    if (typeof site !== "string" || !Number.isFinite(samples) || samples < 0 || !metricsOk) {
      throw bad("answer");
    }
  }
  for (const entry of missing) {
    const [site, reason] = Array.isArray(entry) ? entry : [];
    if (typeof site !== "string" || typeof reason !== "string") throw bad("missing site");
  }
  return { answered, missing } as PartialMeta;
}
