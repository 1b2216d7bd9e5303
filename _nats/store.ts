/**
 * Packs in the object store, content-addressed: an object's name is
 * `sha256-` and the SHA-256 of its bytes in hex, so a model is put once
 * however many rounds or edges use it, and whoever gets it checks that the
 * bytes are the ones named (on top of the object store's own digest check).
 * Every operation is tried again across a NATS restart, until its deadline.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { JobContext } from "./context.ts";
import { PermanentNatsError } from "./errors.ts";
import { type Packed, type PackParts, Unpacker } from "./pack.ts";
import { retrying, type Until } from "./retry.ts";
import { MAX_HEADER_BYTES } from "./pack.ts";

/** A pack in the object store. */
export interface StoredPack {
  /** Its name: `sha256-<hex>`. */
  readonly name: string;
  /** Its length in bytes. */
  readonly size: number;
}

/**
 * The SHA-256 of the parts, in hex (node:crypto, over the views: no copy).
 *
 * @param parts The bytes, in order.
 * @returns The hex digest.
 */
export function sha256Hex(parts: readonly Uint8Array[]): string {
  const hash = createHash("sha256");
  for (const part of parts) hash.update(part);
  return hash.digest("hex");
}

/** The parts as a stream, each once, in order. */
function streamOf(parts: readonly Uint8Array[]): ReadableStream<Uint8Array> {
  let next = 0;
  return new ReadableStream({
    pull(controller) {
      if (next < parts.length) controller.enqueue(parts[next++]);
      else controller.close();
    },
  }, { highWaterMark: 0 });
}

/**
 * Puts a pack under its SHA-256 name, unless it is there already.
 *
 * @param context The job.
 * @param pack The pack's parts.
 * @param deadline When to give up.
 * @returns Its name and size.
 * @throws {NatsError} If it could not be put before the deadline.
 */
export async function putPack(
  context: JobContext,
  pack: PackParts,
  deadline: Until,
): Promise<StoredPack> {
  const name = `sha256-${sha256Hex(pack.parts)}`;
  await retrying(`Putting "${name}" into the object store`, async () => {
    const info = await context.store.info(name);
    if (info !== null && !info.deleted && info.size === pack.size) return;
    const meta = { name, options: { max_chunk_size: context.chunkBytes } };
    await context.store.put(meta, streamOf(pack.parts));
  }, deadline);
  return { name, size: pack.size };
}

/**
 * Gets a pack by name, reading it straight into its tensors, and checks its
 * bytes against the name.
 *
 * @param context The job.
 * @param name The pack's name (`sha256-<hex>`).
 * @param deadline When to give up.
 * @returns The pack, and its size.
 * @throws {NatsError} If it is missing, does not match its name, or could not be read before
 * the deadline.
 * @throws {TypeError} If it is not a well-formed pack (a `PackError`).
 * @throws {RangeError} If it is larger than the job's `maxModelBytes`.
 */
export async function getPack(
  context: JobContext,
  name: string,
  deadline: Until,
): Promise<Packed & { size: number }> {
  const expected = /^sha256-([0-9a-f]{64})$/.exec(name)?.[1];
  if (expected === undefined) throw new TypeError(`Invalid object name: "${name}"`);
  return await retrying(`Getting "${name}" from the object store`, async () => {
    const result = await context.store.get(name);
    if (result === null) {
      throw new PermanentNatsError(`Object "${name}" is not in the object store`);
    }
    const size = result.info.size;
    if (size > context.maxModelBytes + MAX_HEADER_BYTES) {
      await result.data.cancel();
      throw new RangeError(
        `Object "${name}" is too large: "${size}" bytes, at most ${context.maxModelBytes}`,
      );
    }
    const unpacker = new Unpacker(context.maxModelBytes);
    const hash = createHash("sha256");
    for await (const chunk of result.data) {
      hash.update(chunk);
      unpacker.push(chunk);
    }
    const error = await result.error;
    if (error) throw error;
    const actual = hash.digest("hex");
    if (actual !== expected) {
      throw new PermanentNatsError(
        `Object "${name}" does not match its name: its SHA-256 is "${actual}"`,
      );
    }
    return { ...unpacker.finish(), size };
  }, deadline);
}

/**
 * Deletes a pack, if it is there; failures are ignored (the bucket's max age removes it).
 *
 * @param context The job.
 * @param name The pack's name.
 * @returns Resolves when done or failed.
 */
export async function deletePack(context: JobContext, name: string): Promise<void> {
  await context.store.delete(name).catch(() => {});
}
