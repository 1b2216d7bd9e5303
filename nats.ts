/**
 * Hierarchical rounds over NATS: past one machine and one failure domain.
 *
 * One fedcomm coordinator holds some 20,000 connections. Beyond that, or
 * across sites that should not share a failure domain, a **root** runs the
 * job and **edge aggregators** serve the sites: each edge is an ordinary
 * fedcomm server (`listen()`) for its local sites, speaking the FL
 * message contract (fl version 1, `@fedcomm/fedcomm/fl`), so sites are the
 * same programs as with one flat coordinator. The root and the edges talk
 * through [NATS](https://nats.io) with JetStream:
 *
 * 1. The root puts the round's model into JetStream's object store, named by
 *    its SHA-256 and chunked (`chunkBytes`, 256 KiB by default: any number of
 *    chunks, so models over 4 GiB go through), and publishes the task on the
 *    job's stream.
 * 2. Each edge takes the task from its durable consumer, fetches the model
 *    once however many sites it serves, runs the round on the sites connected
 *    (quorum `min`, `grace`, its deadline: the transport's `uploads()`),
 *    folding each result into an f64 weighted sum as it arrives, and puts the
 *    partial aggregate into the object store the same way: the sums Σ wᵢ·xᵢ,
 *    the total weight, the sites that answered (samples, metrics) and those
 *    missing with why.
 * 3. The root consumes the partials durably, reads them from the object
 *    store (up to 4 at once, within 64 MiB), merges them in the order they came
 *    (`WeightedSum.merge`: the same f64 additions, grouped by edge) and
 *    returns the FedAvg mean, rounded once to each tensor's dtype. For a
 *    float32 model that is the flat coordinator's answer bit for bit (unless
 *    a sum lies within 2⁻²⁹ of an f32 rounding boundary: see `WeightedSum`).
 *
 * **Faults.** An edge killed mid-round costs its sites only: they are listed
 * as missing at the root (from the roster the edge published when it took
 * the task), and the round completes on the root's quorum. A restarted edge
 * (same name) resumes its durable consumer and takes the next task, and its
 * sites connect to it again. A NATS server restarted mid-job (JetStream on
 * disk) loses nothing: tasks and partials are in the stream, the object
 * store is a stream, the root acknowledges a partial once merged (one lost
 * on its way to the root is delivered again within 10 s), and every
 * publish, put and get is tried again (NATS drops repeated publishes by
 * their id) until the round's deadline. NATS refusing a message (the user's
 * permissions) is not tried again: the call fails at once with a `NatsError`.
 *
 * **Security.** NATS credentials (user and password, token, nkey seed,
 * `.creds`) and TLS to NATS are options ({@linkcode NatsConnectOptions}). The
 * root accepts partial aggregates only from the edges it lists, each with a
 * secret: every message is sealed with HMAC-SHA-256 under that edge's secret
 * over its exact bytes, naming the job's run, the round and the edge, and
 * referring to the partial's tensors by their SHA-256, so a forged, altered
 * or replayed partial is refused (and listed in `rejected`). The root's tasks
 * carry one MAC per edge, so an edge cannot forge tasks for the others. HMACs
 * rather than NATS permissions alone: they need no operator or account set-up
 * kept in step with the root's list, protect the content end to end through
 * NATS's servers and disks, and still hold for a message replayed from the
 * stream; restricting each edge's NATS user to its own subject adds a second
 * wall.
 *
 * **Which client.** `@nats-io/transport-node` 3.4 with `@nats-io/jetstream`
 * and `@nats-io/obj` (the 3.x modules; their Deno transport is on JSR only,
 * and the Node.js one runs in Deno through `node:net`). Measured here (Deno
 * 2.9.6, nats-server 2.9.10 on loopback, 2 shared cores): 100 MiB object
 * store put 108 MB/s and get 106 MB/s with `setSha256Backend("native")`
 * (node:crypto), against 49 MB/s and 43 MB/s for the `nats` 2.29 package,
 * whose object store hashes in JavaScript; 118,842 against 80,730 published
 * and received 128-byte messages per second. The 3.x client is also the
 * maintained one, and its modules keep JetStream and the object store out of
 * the connection package. The core module does not depend on NATS: only this
 * export (`./nats`) does.
 *
 * @example A root, two edges, their sites (assumes `nats-server -js` on 127.0.0.1:4222)
 * ```ts ignore
 * import { edge, root } from "@fedcomm/fedcomm/nats";
 *
 * const nats = { servers: "127.0.0.1:4222" };
 * const secrets = { a: "edge-a-secret-0123456789", b: "edge-b-secret-0123456789" };
 * // On each edge's machine:
 * const a = await edge({ nats, job: "mnist", name: "a", secret: secrets.a, listen: { port: 7000 } });
 * a.run(); // takes tasks until the root stops the job
 * // On the root's:
 * await using r = await root({ nats, job: "mnist", edges: secrets });
 * let weights = initialModel();
 * for (let round = 1; round <= 10; round++) {
 *   const result = await r.round({ round, weights, min: 100, grace: 5_000, timeout: 300_000 });
 *   for (const [site, why] of result.missing) console.warn(`${site}: ${why}`);
 *   weights = result.weights ?? weights;
 * }
 * await r.stop("done");
 * ```
 *
 * @module
 */

import { NatsEdge } from "./_nats/edge.ts";
import { NatsRoot } from "./_nats/root.ts";
import type { EdgeOptions, RootOptions } from "./_nats/types.ts";

export { NatsEdge } from "./_nats/edge.ts";
export { NatsError } from "./_nats/errors.ts";
export { NatsRoot } from "./_nats/root.ts";
export type {
  EdgeOptions,
  EdgeStats,
  JobOptions,
  NatsConnectOptions,
  NatsTlsOptions,
  Rejection,
  RootOptions,
  RoundOptions,
  RoundResult,
} from "./_nats/types.ts";

/**
 * Starts the root of a hierarchical job: connects to NATS and sets up the
 * job's stream, object store bucket and the root's durable consumer.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { root } from "@fedcomm/fedcomm/nats";
 *
 * // Options are checked before anything is connected.
 * await assert.rejects(
 *   root({ nats: { servers: "127.0.0.1:4222" }, job: "a.b", edges: { a: "0123456789abcdef" } }),
 *   { name: "TypeError", message: `Invalid job name: "a.b" is not 1-64 letters, digits, "_" or "-"` },
 * );
 * await assert.rejects(
 *   root({ nats: { servers: "127.0.0.1:4222" }, job: "j", edges: { a: "short" } }),
 *   RangeError,
 * );
 * ```
 *
 * @param options The NATS connection, the job, and the edges with their secrets.
 * @returns The root.
 * @throws {TypeError} If the job or an edge name is invalid, no edge is listed, or the
 * credentials or TLS options are malformed (two kinds of credentials, `user` without `pass`, a
 * seed that is not one).
 * @throws {RangeError} If a secret is shorter than 16 bytes, or a size is invalid.
 * @throws {NatsError} If NATS cannot be reached, refuses the credentials or the TLS handshake,
 * or has no JetStream: its message names the address and what was refused.
 */
export function root(options: RootOptions): Promise<NatsRoot> {
  return NatsRoot.start(options);
}

/**
 * Starts an edge aggregator: connects to NATS, sets up its durable consumer
 * and starts its fedcomm server for the sites (see `listen()`); then
 * `await edge.run()` takes the root's tasks.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { edge } from "@fedcomm/fedcomm/nats";
 *
 * await assert.rejects(
 *   edge({ nats: { servers: "127.0.0.1:4222" }, job: "j", name: "a", secret: "0123456789abcdef", min: 0 }),
 *   { name: "RangeError", message: `Invalid min: "0" is not a positive integer` },
 * );
 * ```
 *
 * @param options The NATS connection, the job, this edge's name and secret,
 * its server's options and its local quorum.
 * @returns The edge, its server listening.
 * @throws {TypeError} If the job or edge name is invalid, or the credentials or TLS options are
 * malformed.
 * @throws {RangeError} If the secret is shorter than 16 bytes, or `min` or `grace` is invalid.
 * @throws {NatsError} If NATS cannot be reached, refuses the credentials or the TLS handshake,
 * or has no JetStream: its message names the address and what was refused.
 */
export function edge(options: EdgeOptions): Promise<NatsEdge> {
  return NatsEdge.start(options);
}
