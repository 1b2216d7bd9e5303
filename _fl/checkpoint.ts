/**
 * Checkpoints: after every completed round, the coordinator writes the
 * global model, the round, the cohort's history, the job totals and the
 * strategy's state into the job directory, atomically (a temporary file,
 * synced, renamed over the previous checkpoint, then the directory synced):
 * a crash at any moment leaves the previous checkpoint or the new one, whole.
 * A new coordinator on the same directory resumes from it.
 *
 * The file is one MessagePack value (the codec of `codec.ts`, tensors in the
 * msgpack-numpy convention), written from the tensors' memory without a
 * copy; a tensor must be under 4 GiB (MessagePack's binary limit).
 *
 * @module
 */

import { decode, encodeChunks } from "../codec.ts";
import { checkWeights, type Weights } from "./weights.ts";
import type { SiteHistory } from "./cohort.ts";
import type { JobTotals } from "./records.ts";

/** The checkpoint's file name in the job directory. */
export const CHECKPOINT_FILE = "checkpoint.msgpack";
/** The `format` field of a checkpoint. */
const FORMAT = "fedcomm-fl-checkpoint";
/** The version of the checkpoint layout. */
const VERSION = 1;

/** What a checkpoint holds: everything a restarted coordinator needs to go on. */
export interface Checkpoint {
  /** The job's name. */
  job: string;
  /** The last completed round. */
  round: number;
  /** The global model after it. */
  weights: Weights;
  /** The strategy's name. */
  strategy: string;
  /** The strategy's state (`strategy.state()`: e.g. FedAdam's moments). */
  strategyState: Record<string, unknown>;
  /** The cohort's history. */
  sites: SiteHistory[];
  /** The job totals. */
  totals: JobTotals;
  /** When it was written (ISO 8601). */
  time: string;
}

/**
 * Writes a checkpoint into `dir` atomically (see the module doc).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadCheckpoint, saveCheckpoint, Totals } from "@fedcomm/fedcomm/fl";
 *
 * const dir = await Deno.makeTempDir();
 * assert.equal(await loadCheckpoint(dir), undefined); // none yet
 * const checkpoint = {
 *   job: "demo", round: 3, weights: { b: new Float32Array([1, 2]) },
 *   strategy: "FedAvg", strategyState: {}, sites: [], totals: new Totals().get(),
 *   time: new Date().toISOString(),
 * };
 * await saveCheckpoint(dir, checkpoint);
 * const loaded = await loadCheckpoint(dir);
 * assert.equal(loaded?.round, 3);
 * assert.deepStrictEqual(loaded?.weights, { b: new Float32Array([1, 2]) });
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @param dir The job directory (made if missing).
 * @param checkpoint What to write.
 * @returns Resolves when the checkpoint is on disk.
 * @throws {TypeError} If the weights are not a map of float tensors, or a value has no
 * MessagePack form.
 * @throws {Deno.errors.PermissionDenied} If the directory cannot be written.
 */
export async function saveCheckpoint(dir: string, checkpoint: Checkpoint): Promise<void> {
  checkWeights(checkpoint.weights, "Checkpoint weights");
  const { chunks } = encodeChunks({ format: FORMAT, version: VERSION, ...checkpoint });
  await Deno.mkdir(dir, { recursive: true });
  const path = `${dir}/${CHECKPOINT_FILE}`;
  const temp = `${path}.tmp`;
  {
    using file = await Deno.open(temp, { write: true, create: true, truncate: true });
    for (const chunk of chunks) {
      for (let off = 0; off < chunk.byteLength;) off += await file.write(chunk.subarray(off));
    }
    await file.sync();
  }
  await Deno.rename(temp, path);
  using directory = await Deno.open(dir, { read: true });
  await directory.sync();
}

/**
 * Reads the checkpoint in `dir`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { loadCheckpoint } from "@fedcomm/fedcomm/fl";
 *
 * const dir = await Deno.makeTempDir();
 * assert.equal(await loadCheckpoint(dir), undefined);
 * await Deno.writeTextFile(`${dir}/checkpoint.msgpack`, "not one");
 * await assert.rejects(() => loadCheckpoint(dir), TypeError);
 * await Deno.remove(dir, { recursive: true });
 * ```
 *
 * @param dir The job directory.
 * @returns The checkpoint, or `undefined` when there is none.
 * @throws {TypeError} If the file is not a checkpoint of this layout (it names the file).
 */
export async function loadCheckpoint(dir: string): Promise<Checkpoint | undefined> {
  const path = `${dir}/${CHECKPOINT_FILE}`;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  let value: unknown;
  try {
    // The coordinator's own file: no cost limit (a large cohort's history is many small values).
    value = decode(bytes, { costLimit: Infinity, costPerByte: Infinity });
  } catch (error) {
    throw new TypeError(
      `Invalid checkpoint: "${path}" is not MessagePack: ${(error as Error).message}`,
    );
  }
  return checkCheckpoint(value, path);
}

function checkCheckpoint(value: unknown, path: string): Checkpoint {
  const map = value as Record<string, unknown> | null;
  const bad = (what: string) => new TypeError(`Invalid checkpoint: "${path}" ${what}`);
  if (typeof map !== "object" || map === null || map.format !== FORMAT) {
    throw bad("is not a fedcomm FL checkpoint");
  }
  if (map.version !== VERSION) {
    throw bad(`has layout version "${map.version}", this coordinator reads ${VERSION}`);
  }
  if (typeof map.job !== "string") throw bad(`has no job name`);
  if (!Number.isSafeInteger(map.round) || (map.round as number) < 0) throw bad(`has no round`);
  if (typeof map.strategy !== "string") throw bad(`has no strategy name`);
  const state = map.strategyState;
  if (typeof state !== "object" || state === null || Array.isArray(state)) {
    throw bad(`has no strategy state`);
  }
  if (!Array.isArray(map.sites)) throw bad(`has no site list`);
  if (typeof map.totals !== "object" || map.totals === null) throw bad(`has no totals`);
  try {
    checkWeights(map.weights, "Checkpoint weights");
  } catch (error) {
    throw bad(`has invalid weights: ${(error as Error).message}`);
  }
  return {
    job: map.job,
    round: map.round as number,
    weights: map.weights,
    strategy: map.strategy,
    strategyState: state as Record<string, unknown>,
    sites: map.sites as SiteHistory[],
    totals: map.totals as JobTotals,
    time: typeof map.time === "string" ? map.time : "",
  };
}
