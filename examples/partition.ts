/**
 * How the training set is dealt out to the clients: IID (each client a
 * uniform random share) or by label shards, the non-IID split of the FedAvg
 * paper (McMahan et al., 2017), where each client sees only a few classes.
 *
 * @module
 */

import { type Random, shuffle } from "./random.ts";

/** The ways {@linkcode partition} can split the data. */
export const PARTITIONS = ["iid", "shards"] as const;

/** A way to split the data: `"iid"` or `"shards"`. */
export type PartitionKind = (typeof PARTITIONS)[number];

/** Options for {@linkcode partition}. */
export interface PartitionOptions {
  /** `"iid"`: uniform random shares; `"shards"`: a few label-sorted shards per client. */
  kind: PartitionKind;
  /** How many clients. */
  clients: number;
  /** With `"shards"`: how many shards each client gets (default 2). */
  shardsPerClient?: number;
  /** The source of randomness. */
  random: Random;
}

/**
 * Splits sample indices among clients. Every index goes to exactly one
 * client, and the shares differ in size by at most one sample (`"iid"`) or
 * one sample per shard (`"shards"`).
 *
 * With `"shards"`, the indices are sorted by label, cut into
 * `clients × shardsPerClient` equal runs, and each client gets
 * `shardsPerClient` runs at random, so it holds only a few classes.
 *
 * @param indices The sample indices to split.
 * @param labels The label of every sample, indexed by sample index.
 * @param options The kind of split, the client count and the randomness.
 * @returns One sorted index array per client.
 * @throws {RangeError} If there are fewer samples than shards, or a count is not a positive integer.
 */
export function partition(
  indices: ArrayLike<number>,
  labels: ArrayLike<number>,
  options: PartitionOptions,
): Uint32Array[] {
  const { kind, clients, random } = options;
  const shardsPerClient = kind === "shards" ? options.shardsPerClient ?? 2 : 1;
  for (const [name, value] of [["clients", clients], ["shardsPerClient", shardsPerClient]]) {
    if (!Number.isSafeInteger(value) || (value as number) < 1) {
      throw new RangeError(`Invalid ${name}: "${value}" is not a positive integer`);
    }
  }
  const shards = clients * shardsPerClient;
  if (indices.length < shards) {
    throw new RangeError(`Cannot split ${indices.length} samples into ${shards} shards`);
  }
  const order = shuffle(Uint32Array.from(indices), random);
  if (kind === "shards") {
    // A stable sort keeps the shuffled order within each class.
    const sorted = [...order].sort((a, b) => labels[a] - labels[b]);
    order.set(sorted);
  } else if (kind !== "iid") {
    throw new RangeError(`Invalid partition: "${kind}" is not one of ${PARTITIONS.join(", ")}`);
  }
  const owners = Array.from({ length: shards }, (_, shard) => shard % clients);
  if (kind === "shards") shuffle(owners, random);
  const parts: number[][] = Array.from({ length: clients }, () => []);
  for (let shard = 0; shard < shards; shard++) {
    const from = Math.floor((shard * order.length) / shards);
    const to = Math.floor(((shard + 1) * order.length) / shards);
    for (let i = from; i < to; i++) parts[owners[shard]].push(order[i]);
  }
  return parts.map((part) => Uint32Array.from(part).sort());
}
