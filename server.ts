/**
 * The coordinator: waits for N clients, gives each an id, then broadcasts,
 * scatters and gathers.
 *
 * A message from `broadcast` to the socket: {@linkcode Server.broadcast}
 * encodes the value once (`encodeFrame`, `_encode_frame.ts`), pushes the same
 * chunks onto every target client's write queue (`_write_queue.ts`), whose
 * pump writes them to the socket with `conn.write`. A message from a client:
 * its connection's reader (`_connection.ts`) decodes it into the client's
 * inbox (`_inbox.ts`); `gather`/`uploads` take it from there.
 *
 * @module
 */

import { Admission } from "./_admission.ts";
import { ByteBudget, DEFAULT_RECEIVE_BUFFER_BYTES } from "./_budget.ts";
import type { Connection } from "./_connection.ts";
import { encodeFrame } from "./_encode_frame.ts";
import { checkMaxFrameBytes } from "./_frame.ts";
import { gatherFrom, uploadsFrom } from "./_gather.ts";
import { Members } from "./_members.ts";
import type {
  BroadcastOptions,
  ClientStats,
  GatherOptions,
  GatherResult,
  ListenOptions,
  Upload,
  UploadsOptions,
} from "./_server_types.ts";
import { startDeadline, type WaitOptions, within } from "./_wait.ts";
import { type Logger, RefuseEvent, type ServerEventMap } from "./events.ts";

export type {
  AuthOptions,
  BroadcastOptions,
  ClientStats,
  GatherOptions,
  GatherResult,
  ListenOptions,
  TargetOptions,
  TlsOptions,
  Upload,
  UploadsOptions,
} from "./_server_types.ts";

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
 * A coordinator serving a fixed number of clients. Create it with
 * {@linkcode listen}. It is an `EventTarget` of the events in
 * {@linkcode ServerEventMap}: `join`, `leave`, `refuse` and `progress`.
 */
export class Server extends EventTarget implements AsyncDisposable {
  readonly #clients: number;
  readonly #maxFrameBytes: number;
  readonly #members: Members;
  /** The connections by client id (the members'). */
  readonly #connections: Connection[];
  readonly #logger: Logger | undefined;
  readonly #admission: Admission;
  readonly #budget: ByteBudget;
  #closed: Promise<void> | undefined;

  /**
   * Prefer {@linkcode listen}.
   *
   * @param options See {@linkcode ListenOptions}.
   */
  constructor(options: ListenOptions) {
    super();
    const { clients } = options;
    if (!Number.isSafeInteger(clients) || clients < 1) {
      throw new RangeError(`Invalid clients: "${clients}" is not a positive integer`);
    }
    this.#clients = clients;
    this.#maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
    this.#budget = new ByteBudget(
      options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES,
      clients,
    );
    this.#logger = options.logger;
    this.#members = new Members(clients, this, this.#logger);
    this.#connections = this.#members.connections;
    this.#admission = new Admission(options, {
      budget: this.#budget,
      members: this.#members,
      maxFrameBytes: this.#maxFrameBytes,
      refused: (reason, message, address, name) =>
        this.dispatchEvent(new RefuseEvent({ reason, message, address, name })),
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

  /** How many clients the server serves. */
  get clients(): number {
    return this.#clients;
  }

  /** How many clients have joined so far. */
  get joined(): number {
    return this.#connections.length;
  }

  /** The ids of the clients that joined and are still connected. */
  get connected(): number[] {
    return this.#connections.filter((c) => c.ended === undefined).map((c) => c.clientId!);
  }

  /** Bytes received from all clients, frame headers included. */
  get bytesReceived(): number {
    return this.#connections.reduce((sum, c) => sum + c.bytesReceived, 0);
  }

  /** Bytes sent to all clients, frame headers included. */
  get bytesSent(): number {
    return this.#connections.reduce((sum, c) => sum + c.queue.bytesSent, 0);
  }

  /**
   * Registers an event listener; see {@linkcode ServerEventMap} for the events.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener<K extends keyof ServerEventMap>(
    type: K,
    listener: (this: Server, event: ServerEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /**
   * Registers a listener for any event type, as `EventTarget` does.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (type === "progress") this.#members.reportProgress();
    super.addEventListener(type, listener, options);
  }

  /**
   * Each joined client: address, state, traffic, last heard from, round-trip time.
   *
   * @returns One entry per client that joined, by id.
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
   * ```
   */
  stats(): ClientStats[] {
    return this.#members.stats();
  }

  /**
   * Waits until all clients have joined.
   *
   * @param options Cancellation and time limit.
   * @returns Resolves when `clients` clients have completed the handshake.
   * @throws {TimeoutError} If they did not in time; `clientIds` lists the ids not yet taken.
   */
  async ready(options?: WaitOptions): Promise<void> {
    using deadline = startDeadline(options, () => ({
      what: "Waiting for clients",
      detail: `${this.joined} of ${this.#clients} joined`,
      clientIds: this.#members.missing(),
    }));
    while (this.joined < this.#clients) await this.#members.joined.changed(deadline);
  }

  /**
   * Sends the same value to every client (or to `options.ids`). The value is
   * encoded once, and its large binaries are written to each socket straight
   * from your memory: do not change them until this resolves.
   *
   * @param value The value.
   * @param options The target ids, cancellation and time limit.
   * @returns Resolves when every socket has taken the message.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice, or the value cannot be encoded.
   * @throws {RangeError} If an id is out of range.
   * @throws {FrameTooLargeError} If the value encodes to more than `maxFrameBytes`.
   * @throws {PeerDisconnectedError} If a target client is gone (the others still get it).
   * @throws {TimeoutError} If the writes did not finish in time.
   */
  async broadcast(value: unknown, options?: BroadcastOptions): Promise<void> {
    const ids = this.#members.targets(options?.ids, "broadcast");
    const frame = encodeFrame(value, this.#maxFrameBytes);
    await this.#write(ids, () => frame, "Broadcast", options);
  }

  /**
   * Sends a different value to each named client (scatter). Every value is
   * encoded before anything is sent, so a value that cannot be encoded sends nothing.
   *
   * @param messages Values by client id, as a `Map` or an object.
   * @param options Cancellation and time limit.
   * @returns Resolves when every socket has taken its message.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer, or a value cannot be encoded.
   * @throws {RangeError} If an id is out of range.
   * @throws {FrameTooLargeError} If a value encodes to more than `maxFrameBytes`.
   * @throws {PeerDisconnectedError} If a target client is gone (the others still get theirs).
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
    const frames = values.map((value) => encodeFrame(value, this.#maxFrameBytes));
    await this.#write(ids, (i) => frames[i], "Send", options);
  }

  /**
   * Queues a frame for each id, then waits for the sockets of those that
   * lend memory or are congested; reports the first failure.
   */
  async #write(
    ids: readonly number[],
    frameOf: (index: number) => { chunks: Uint8Array[]; borrowed: boolean },
    what: string,
    options: WaitOptions | undefined,
  ): Promise<void> {
    const waits: Promise<void>[] = [];
    const unwritten = new Set<number>();
    const failures: unknown[] = [];
    for (let i = 0; i < ids.length; i++) {
      const connection = this.#connections[ids[i]];
      const { queue } = connection;
      const { chunks, borrowed } = frameOf(i);
      try {
        const mark = connection.push(chunks, this.#members.sendProgress(ids[i]));
        if (!borrowed && !queue.congested) continue;
        const id = ids[i];
        unwritten.add(id);
        waits.push(
          queue.written(mark).then(() => void unwritten.delete(id), (e) => void failures.push(e)),
        );
      } catch (error) {
        failures.push(error);
      }
    }
    if (waits.length > 0) {
      using deadline = startDeadline(options, () => ({
        what,
        detail: `writing to clients [${[...unwritten].join(", ")}]`,
        clientIds: [...unwritten],
      }));
      await within(Promise.all(waits), deadline);
    }
    if (failures.length > 0) throw failures[0];
  }

  /**
   * Receives one message from every client (or from `options.ids`): the
   * seed's `recv_all` and `recv(index)`. Messages that arrived earlier were
   * queued per client, in order; a gather that fails or times out puts back
   * what it took, so it loses nothing.
   *
   * @param options The clients (default: all), cancellation and time limit.
   * @returns The values by client id, in the order of the ids.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice.
   * @throws {RangeError} If an id is out of range.
   * @throws {Deno.errors.Busy} If another call is receiving from one of the clients.
   * @throws {PeerDisconnectedError} As soon as a listed client is gone with nothing queued.
   * @throws {ProtocolError} If a listed client sent a malformed frame.
   * @throws {FrameTooLargeError} If a listed client announced a frame over `maxFrameBytes`.
   * @throws {TimeoutError} If time ran out; `clientIds` lists the clients not heard from.
   */
  async gather(options?: GatherOptions): Promise<Map<number, unknown>> {
    const ids = this.#members.targets(options?.ids, "gather");
    const { received } = await gatherFrom(this.#connections, ids, "gather", true, options);
    return received;
  }

  /**
   * Like {@linkcode Server.gather}, but a client that disconnects, breaks the
   * protocol or does not answer in time does not fail the call: it is listed
   * in `failed` with its error, and the answers of the others are returned.
   * For rounds that tolerate stragglers and dropouts.
   *
   * @param options The clients (default: all), cancellation and time limit:
   * at the limit, the clients still silent are listed in `failed` with a `TimeoutError`.
   * @returns The answers by client id (in the order of the ids) and the clients that gave none.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice.
   * @throws {RangeError} If an id is out of range.
   * @throws {Deno.errors.Busy} If another call is receiving from one of the clients.
   * @throws {Error} The signal's reason if it aborts (nothing is taken then).
   *
   * @example
   * ```ts ignore
   * const { received, failed } = await server.gatherSettled({ timeout: 60_000 });
   * for (const [id, error] of failed) console.warn(`client ${id} dropped: ${error.message}`);
   * ```
   */
  async gatherSettled(options?: GatherOptions): Promise<GatherResult> {
    const ids = this.#members.targets(options?.ids, "gatherSettled");
    return await gatherFrom(this.#connections, ids, "gatherSettled", false, options);
  }

  /**
   * Yields clients' messages in order of arrival, `{ id, value }`, taking
   * `count` (default 1) from each of `ids` (default all). Use it to fold
   * uploads into a running aggregate without holding all of them. It is an
   * async generator, so `ReadableStream.from(server.uploads())` gives a web stream.
   *
   * @param options The clients (default: all), how many from each,
   * cancellation and time limit (for the whole iteration).
   * @returns An async generator of uploads.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice.
   * @throws {RangeError} If an id is out of range or `count` is not a positive integer.
   * @throws {Deno.errors.Busy} If another call is receiving from one of the clients.
   * @throws {PeerDisconnectedError} If a listed client is gone before giving its
   * `count` (with `count: Infinity` its stream just ends).
   * @throws {TimeoutError} If time ran out; `clientIds` lists the clients still owing.
   *
   * @example Federated averaging as a web stream
   * ```ts
   * import assert from "node:assert/strict";
   * import { connect, listen, type Upload } from "@fedcomm/fedcomm";
   *
   * await using server = listen({ clients: 2 });
   * const clients = await Promise.all([0, 1].map(() => connect({ port: server.port })));
   * await server.ready();
   * for (const client of clients) await client.send(new Float32Array([client.id + 1, 1]));
   *
   * const sum = new Float32Array(2);
   * await ReadableStream.from(server.uploads({ timeout: 10_000 })).pipeTo(
   *   new WritableStream<Upload>({
   *     write({ value }) {
   *       (value as Float32Array).forEach((w, i) => sum[i] += w);
   *     },
   *   }),
   * );
   * assert.deepStrictEqual(sum, new Float32Array([3, 2]));
   * for (const client of clients) await client.close();
   * ```
   */
  async *uploads(options?: UploadsOptions): AsyncGenerator<Upload> {
    const count = options?.count ?? 1;
    if (!(count === Infinity || Number.isSafeInteger(count) && count > 0)) {
      throw new RangeError(`Invalid count: "${count}" is not a positive integer or Infinity`);
    }
    yield* uploadsFrom(
      this.#connections,
      this.#members.targets(options?.ids, "uploads"),
      count,
      options,
    );
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
      await Promise.all(this.#connections.map((c) => c.close()));
    })();
    return this.#closed;
  }

  /** Closes the server: `await using server = listen(...)`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
