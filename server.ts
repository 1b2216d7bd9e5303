/**
 * The coordinator: admits clients and gives each an id (a fixed cohort of N,
 * or open membership), then broadcasts, scatters and gathers, with quorums
 * and deadlines; clients that drop resume their sessions with nothing lost.
 * ARCHITECTURE.md follows a broadcast from here to the socket.
 *
 * @module
 */

import { Admission } from "./_server/admission.ts";
import { ByteBudget, DEFAULT_RECEIVE_BUFFER_BYTES } from "./_session/budget.ts";
import { BufferPool } from "./_session/pool.ts";
import type { Session } from "./_session/session.ts";
import type { Arrival } from "./_session/inbox.ts";
import { encodeFrame, type LongOptions } from "./_codec/encode_frame.ts";
import { checkListenOptions, checkReadyCount } from "./_server/listen_options.ts";
import { gatherFrom } from "./_server/gather.ts";
import { uploadsCount, uploadsFrom } from "./_server/uploads.ts";
import { Members } from "./_server/members.ts";
import { fanOut } from "./_server/fan_out.ts";
import { FedcommEventTarget, RefuseEvent, type ServerEventMap } from "./events.ts";
import type {
  BroadcastOptions,
  ClientStats,
  GatherOptions,
  GatherResult,
  ListenOptions,
  ReadyOptions,
  Upload,
  UploadsOptions,
  WaitOptions,
} from "./types.ts";
/**
 * Starts a coordinator listening for `clients` clients. The socket is bound
 * when this returns; `await server.ready()` waits for the clients.
 *
 * @param options The client count, address and limits.
 * @returns The server.
 * @throws {RangeError} If `clients` is not a positive integer or a limit is invalid.
 * @throws {Deno.errors.AddrInUse} If the port is taken.
 *
 * @example One round: broadcast, then gather
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, listen } from "@fedcomm/fedcomm";
 *
 * await using server = listen({ port: 0, clients: 2 });
 * const clients = await Promise.all([0, 1].map(() => connect({ port: server.port })));
 * await server.ready();
 *
 * await server.broadcast({ round: 1, weights: new Float32Array([0.5, 0.5]) });
 * for (const client of clients) {
 *   const { weights } = await client.recv() as { weights: Float32Array };
 *   await client.send({ update: weights.map((w) => w + client.id) });
 * }
 * const updates = await server.gather({ timeout: 10_000 });
 * assert.deepStrictEqual(updates.get(1), { update: new Float32Array([1.5, 1.5]) });
 * for (const client of clients) await client.close();
 * ```
 */
export function listen(options: ListenOptions): Server {
  return new Server(options);
}

/**
 * A coordinator serving a cohort of clients, made by {@linkcode listen}; an `EventTarget` of
 * {@linkcode ServerEventMap}: `join`, `disconnect`, `resume`, `leave`, `late`, `refuse`, `progress`.
 */
export class Server extends FedcommEventTarget<ServerEventMap> implements AsyncDisposable {
  readonly #clients: number;
  readonly #open: boolean;
  readonly #maxFrameBytes: number;
  /** A value as a frame, or a long message (each session checks its client's limit). */
  readonly #encode = (value: unknown) =>
    encodeFrame(value, this.#maxFrameBytes, false, undefined, this.#long);
  readonly #long: LongOptions;
  readonly #members: Members;
  readonly #connections: ReadonlyMap<number, Session>; // the members' sessions by id
  readonly #admission: Admission;
  readonly #pool = new BufferPool(); // large bodies' memory, recycled
  #closed: Promise<void> | undefined;

  /**
   * Prefer {@linkcode listen}.
   *
   * @param options See {@linkcode ListenOptions}.
   */
  constructor(options: ListenOptions) {
    super();
    const { clients, open, maxFrameBytes, grace, maxMessageBytes } = checkListenOptions(options);
    this.#clients = clients;
    this.#open = open;
    this.#maxFrameBytes = maxFrameBytes;
    this.#long = { maxMessageBytes };
    const budgetBytes = options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES;
    const budget = new ByteBudget(budgetBytes, clients);
    const namedSecrets = options.auth?.clients !== undefined;
    const cohort = { capacity: clients, open, grace, namedSecrets };
    this.#members = new Members(cohort, this, options.logger);
    this.#connections = this.#members.connections;
    const refused = (reason: string, message: string, address?: Deno.Addr, name?: string) =>
      this.dispatchEvent(new RefuseEvent({ reason, message, address, name }));
    this.#admission = new Admission(options, {
      budget,
      pool: this.#pool,
      members: this.#members,
      maxFrameBytes,
      maxMessageBytes,
      refused,
    });
  }

  /** The address the server listens on. */
  get hostname(): string {
    return this.#admission.addr.hostname;
  }

  /** The TCP port the server listens on. */
  get port(): number {
    return this.#admission.addr.port;
  }

  /** How many clients the server serves (with `open`: at most at once). */
  get clients(): number {
    return this.#clients;
  }

  /** How many clients joined: ids given so far (fixed cohort), or members now (`open`). */
  get joined(): number {
    return this.#open ? this.#members.present : Math.min(this.#members.started, this.#clients);
  }

  /** How many connections are in their handshake now (each holds one of `maxPendingHandshakes`). */
  get pending(): number {
    return this.#admission.pending;
  }

  /** The ids of the clients connected now (not those waiting for their resume). */
  get connected(): number[] {
    return [...this.#connections].filter(([, c]) => c.state === "connected").map(([id]) => id);
  }

  /** Bytes received from every member the server had, headers included: it only goes up. */
  get bytesReceived(): number {
    return this.#members.bytesReceived;
  }

  /** Bytes sent to every member the server had, headers included: it only goes up. */
  get bytesSent(): number {
    return this.#members.bytesSent;
  }

  /** Progress events are made once someone listens to them (`type` is the event's). */
  protected override listening(type: string): void {
    if (type === "progress") this.#members.reportProgress();
  }

  /**
   * Each member: address, state, traffic, last heard from, round-trip time.
   *
   * @returns One entry per member (connected, resuming, or gone and not yet
   * replaced), in order of id. The index is not the id once a member has
   * left: use {@linkcode Server.stats} with an id, or each entry's `id`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { connect, listen } from "@fedcomm/fedcomm";
   *
   * await using server = listen({ clients: 1 });
   * await using client = await connect({ port: server.port, name: "site-a" });
   * await server.ready();
   * await client.send("hello");
   * await server.gather();
   * const [stats] = server.stats();
   * assert.equal(stats.name, "site-a");
   * assert.equal(stats.messagesReceived, 1);
   * assert.equal(stats.bytesReceived, client.bytesSent);
   * assert.equal(server.stats(client.id).name, "site-a"); // by id
   * ```
   */
  stats(): ClientStats[];
  /**
   * One member's statistics, by id.
   *
   * @param id The client's id.
   * @returns Its address, state, traffic, last heard from, round-trip time.
   * @throws {RangeError} If no member has that id (never given, or gone and replaced).
   */
  stats(id: number): ClientStats;
  stats(id?: number): ClientStats[] | ClientStats {
    if (id === undefined) return this.#members.stats();
    const stats = this.#members.statsOf(id);
    if (stats === undefined) throw new RangeError(`Unknown client id: "${id}" is not a member`);
    return stats;
  }

  /**
   * Waits until `clients` clients joined (see {@linkcode Server.joined}).
   *
   * @param options How many (default: the `clients` of {@linkcode listen}),
   * cancellation and time limit.
   * @returns Resolves when that many clients joined.
   * @throws {TimeoutError} If they were not in time; `clientIds` lists the ids not yet taken.
   */
  async ready(options?: ReadyOptions): Promise<void> {
    const count = checkReadyCount(options?.clients, this.#clients);
    await this.#members.untilJoined(count, () => this.joined, options);
  }

  /**
   * Sends the same value to every client (by default; see
   * {@linkcode Server.gather} for who that is) or to `options.ids`. The value
   * is encoded once, and its large binaries are written to each socket
   * straight from your memory and kept (not copied) until each connected
   * client acknowledged them: do not change them until this resolves. Small
   * values are copied and this resolves once they are queued.
   *
   * A client that is away (its connection dropped and the server waits for
   * its resume) is not waited for: it gets the message when it resumes, from
   * one copy made for all the clients away, so you may change your memory as
   * soon as this resolves. A client away that already holds twice
   * `retainBytes` of unacknowledged messages is dropped instead (a `leave`
   * event), so that a dead site neither stalls a round nor grows the
   * server's memory without bound.
   *
   * A client answers with `client.reply()`; its replies to earlier messages
   * than this one are late from now on (see the `late` event).
   *
   * @param value The value.
   * @param options The target ids, cancellation and time limit.
   * @returns Resolves when the message is queued for every target, or, for a
   * value that lends large binaries (or a congested client), when every
   * connected target acknowledged it.
   * @throws {FedcommError} If a fixed cohort has not joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice, or the value cannot be encoded.
   * @throws {RangeError} If an id is not a member's.
   * @throws {FrameTooLargeError} If the value encodes to more than `maxFrameBytes` and a target
   * takes no long messages (the others still get it as one).
   * @throws {MessageTooLargeError} If it exceeds a target's `maxMessageBytes` (or the server's).
   * @throws {PeerDisconnectedError} If a target client is gone for good (the others still get it).
   * @throws {TimeoutError} If a connected client did not acknowledge in time (it may still
   * be sending it from your memory: keep it unchanged until that client is gone or acked).
   */
  async broadcast(value: unknown, options?: BroadcastOptions): Promise<void> {
    const ids = this.#members.targets(options?.ids, "broadcast");
    const frame = this.#encode(value);
    await fanOut(this.#connections, ids, frame, "Broadcast", options, this.#progress);
  }

  /**
   * Sends a different value to each named client (scatter). Every value is
   * encoded before anything is sent, so a value that cannot be encoded sends
   * nothing. Delivery is as for {@linkcode Server.broadcast}.
   *
   * @param messages Values by client id, as a `Map` or an object.
   * @param options Cancellation and time limit.
   * @returns Resolves when every message is queued, or acknowledged (as for `broadcast`).
   * @throws {FedcommError} If a fixed cohort has not joined yet.
   * @throws {TypeError} If an id is not an integer, or a value cannot be encoded.
   * @throws {RangeError} If an id is not a member's.
   * @throws {FrameTooLargeError} As for `broadcast`; or a `MessageTooLargeError`.
   * @throws {PeerDisconnectedError} If a target client is gone for good (the others still get theirs).
   * @throws {TimeoutError} If the acknowledgements did not come in time.
   *
   * @example
   * ```ts ignore
   * await server.send({ 0: { lr: 0.1 }, 2: { lr: 0.05 } });
   * ```
   */
  async send(
    messages: ReadonlyMap<number, unknown> | Readonly<Record<number, unknown>>,
    options?: WaitOptions,
  ): Promise<void> {
    const [ids, values] = this.#members.scatter(messages);
    const frames = values.map(this.#encode);
    await fanOut(this.#connections, ids, frames, "Send", options, this.#progress);
  }

  /** A client's send progress callback, if progress is reported. */
  readonly #progress = (id: number) => this.#members.events.sendProgress(id);

  /** A late reply was dropped by a receiving call. */
  readonly #onLate = (clientId: number, arrival: Arrival, latest: number): void =>
    this.#members.events.late(clientId, arrival, latest);

  /**
   * Receives one message from every client (or from `options.ids`): the
   * seed's `recv_all` and `recv(index)`. Messages that arrived earlier were
   * queued per client, in order; a gather that fails or times out puts back
   * what it took, so it loses nothing. A late reply (a client's reply to an
   * earlier message than the last one sent to it) is no answer: it is
   * dropped, counted in `stats()` and dispatched as a `late` event, and the
   * gather keeps waiting for that client.
   *
   * With `min`, `min` answers are enough: the gather returns them (and any
   * others received within `grace` ms after the `min`-th), fails only once
   * `min` answers cannot come any more, and at the deadline returns what it
   * has if that is at least `min`.
   *
   * @param options The clients (default: all), the quorum, cancellation and time limit.
   * @returns The values by client id, in the order of the ids.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice, or `min` or `grace` is not a number.
   * @throws {RangeError} If an id is out of range, `min` is not from 1 to the number of clients
   * asked, or `grace` is negative or not finite.
   * @throws {Deno.errors.Busy} If another call is receiving from one of the clients.
   * @throws {PeerDisconnectedError} As soon as a listed client is gone with nothing queued
   * (with `min`: as soon as the quorum cannot be reached; the first failure is thrown).
   * @throws {ProtocolError} If a listed client sent a malformed frame.
   * @throws {FrameTooLargeError} If a listed client announced a frame over `maxFrameBytes`.
   * @throws {TimeoutError} If time ran out (with `min`: before the quorum); `clientIds` lists
   * the clients not heard from.
   *
   * @example Three answers of five are enough; stragglers get 2 s more
   * ```ts ignore
   * const updates = await server.gather({ min: 3, grace: 2_000, timeout: 60_000 });
   * ```
   */
  async gather(options?: GatherOptions): Promise<Map<number, unknown>> {
    return (await this.#gather("gather", true, options)).received;
  }

  /** One answer per client ({@linkcode gatherFrom}): failures fail the call if `strict`. */
  async #gather(what: string, strict: boolean, options?: GatherOptions): Promise<GatherResult> {
    const ids = this.#members.targets(options?.ids, what);
    return await gatherFrom(this.#connections, ids, what, strict, options, this.#onLate);
  }

  /**
   * Like {@linkcode Server.gather}, but a client that disconnects, breaks the
   * protocol or does not answer in time does not fail the call: it is listed
   * in `failed` with its error, and the answers of the others are returned.
   * For rounds that tolerate stragglers and dropouts. Late replies are
   * dropped as in `gather` and counted in `late`.
   *
   * It completes when every client asked answered or failed; with `min`, also
   * once `min` answered and `grace` ms passed since, or at once when `min`
   * answers cannot come any more; and at the deadline. The clients still
   * silent then are in `failed`: one that is away with a
   * `PeerDisconnectedError`, the others with a `TimeoutError` (deadline or
   * grace) or, for an unreachable quorum, a `FedcommError`; `quorum` says
   * whether `min` (default: all asked) answered.
   *
   * @param options The clients (default: all), the quorum, cancellation and time limit.
   * @returns The answers by client id (in the order of the ids), the clients that gave
   * none, the late replies dropped, and whether the quorum was reached.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice, or `min` or `grace` is not a number.
   * @throws {RangeError} If an id is out of range, `min` is not from 1 to the number of clients
   * asked, or `grace` is negative or not finite.
   * @throws {Deno.errors.Busy} If another call is receiving from one of the clients.
   * @throws {Error} The signal's reason if it aborts (nothing is taken then).
   *
   * @example A round that needs 8 of the clients, and waits 5 s more for the rest
   * ```ts ignore
   * const round = { min: 8, grace: 5_000, timeout: 60_000 };
   * const { received, failed, quorum } = await server.gatherSettled(round);
   * for (const [id, error] of failed) console.warn(`client ${id} dropped: ${error.message}`);
   * if (!quorum) throw new Error(`Only ${received.size} answers`);
   * ```
   */
  async gatherSettled(options?: GatherOptions): Promise<GatherResult> {
    return await this.#gather("gatherSettled", false, options);
  }

  /**
   * Yields clients' messages in order of arrival, `{ id, value }`, taking
   * `count` (default 1) from each of `ids` (default all). Use it to fold
   * uploads into a running aggregate without holding all of them. It is an
   * async generator, so `ReadableStream.from(server.uploads())` gives a web stream.
   * Late replies are dropped as in `gather`.
   *
   * With `min`, `min` clients delivering all their `count` are enough: a
   * client that fails is skipped while that can still happen; after the
   * `min`-th client delivered, the iteration goes on for `grace` ms and ends;
   * at the deadline it ends normally if `min` clients delivered.
   *
   * @param options The clients (default: all), how many from each, the
   * quorum, cancellation and time limit (for the whole iteration).
   * @returns An async generator of uploads.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice, or `min` or `grace` is not a number.
   * @throws {RangeError} If an id is out of range, `count` is not a positive integer,
   * `min` is not from 1 to the number of clients asked (or comes with `count: Infinity`),
   * or `grace` is negative or not finite.
   * @throws {Deno.errors.Busy} If another call is receiving from one of the clients.
   * @throws {PeerDisconnectedError} If a listed client is gone before giving its
   * `count` (with `count: Infinity` its stream just ends; with `min`: once the quorum
   * cannot be reached, the first failure is thrown).
   * @throws {TimeoutError} If time ran out (with `min`: before the quorum); `clientIds`
   * lists the clients still owing.
   *
   * @example Federated averaging: fold each upload, then recycle its memory
   * ```ts
   * import assert from "node:assert/strict";
   * import { connect, listen } from "@fedcomm/fedcomm";
   *
   * await using server = listen({ clients: 2 });
   * const clients = await Promise.all([0, 1].map(() => connect({ port: server.port })));
   * await server.ready();
   * for (const client of clients) await client.send(new Float32Array(1 << 16).fill(client.id + 1));
   * const sum = new Float32Array(1 << 16);
   * for await (const { value } of server.uploads({ timeout: 10_000 })) {
   *   (value as Float32Array).forEach((w, i) => sum[i] += w);
   *   assert.ok(server.recycle(value) >= 4 * (1 << 16)); // its frame body, for the next
   * }
   * assert.equal(sum[0], 3);
   * for (const client of clients) await client.close();
   * ```
   */
  async *uploads(options?: UploadsOptions): AsyncGenerator<Upload> {
    uploadsCount(options); // checked first, before the cohort and the ids
    const ids = this.#members.targets(options?.ids, "uploads");
    yield* uploadsFrom(this.#connections, ids, options, this.#onLate);
  }

  /**
   * Gives a received value's memory back for later messages of the same size
   * (a round loop then allocates nothing per upload; at most 1 GiB is kept).
   * Use nothing of the value afterwards, and send nothing more from it.
   *
   * @param value A value this server received (anything else is left alone).
   * @returns The bytes taken back.
   */
  recycle(value: unknown): number {
    return this.#pool.recycle(value);
  }

  /**
   * Stops accepting, writes what is queued (waiting at most 5 s for a client
   * that stopped reading), closes every connection and releases the port.
   * Calls still waiting reject with `PeerDisconnectedError`.
   *
   * @returns Resolves when everything is closed.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#members.close();
      await this.#admission.close();
      await Promise.all([...this.#connections.values()].map((c) => c.close()));
    })();
    return this.#closed;
  }

  /** Closes the server: `await using server = listen(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
