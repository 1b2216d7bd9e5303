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

import { ByteBudget, DEFAULT_RECEIVE_BUFFER_BYTES } from "./_budget.ts";
import { type Connection, DEFAULT_HEARTBEAT_MS } from "./_connection.ts";
import { encodeFrame } from "./_encode_frame.ts";
import { checkMaxFrameBytes, type FrameOptions } from "./_frame.ts";
import { Admission } from "./_admission.ts";
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, type Refusal } from "./_handshake.ts";
import { checkIds, gatherFrom, uploadsFrom } from "./_gather.ts";
import { Notifier, startDeadline, type WaitOptions, within } from "./_wait.ts";
import { FedcommError } from "./errors.ts";

/** Options for {@linkcode listen}. */
export interface ListenOptions extends FrameOptions {
  /** How many clients to wait for; they get ids `0 … clients − 1` in order of arrival. */
  clients: number;
  /** The address to listen on (default `"127.0.0.1"`; `"0.0.0.0"` for every interface). */
  hostname?: string;
  /** The TCP port (default 0: the system picks a free one; read it from `server.port`). */
  port?: number;
  /** Milliseconds a connecting client has to say hello (default 10,000). */
  handshakeTimeout?: number;
  /** Send a heartbeat frame on a connection idle this many ms (default 15,000; 0: never). */
  heartbeatMs?: number;
  /**
   * How many bytes of large received messages may wait in memory, not yet
   * taken by `uploads()` or a later receive, across all clients (default
   * 128 MiB). Past it, further large uploads wait in the kernel and TCP slows
   * their senders; one message larger than this is still admitted on its own.
   * A `gather()` reads its clients without this limit, since it returns all
   * their answers at once anyway.
   */
  receiveBufferBytes?: number;
}

/** One client's message, as {@linkcode Server.uploads} yields it. */
export interface Upload {
  /** The client's id. */
  readonly id: number;
  /** The decoded value. */
  readonly value: unknown;
}

/** What {@linkcode Server.gatherSettled} returns. */
export interface GatherResult {
  /** The answers, by client id, in the order of the ids asked for. */
  readonly received: Map<number, unknown>;
  /**
   * The clients that gave no answer, with why: `PeerDisconnectedError`,
   * `ProtocolError`, a `FrameTooLargeError` or `TimeoutError`.
   */
  readonly failed: Map<number, Error>;
}

/** Which clients a call addresses, and how long it may wait. */
export interface TargetOptions extends WaitOptions {
  /** The clients (default: all), each at most once. */
  ids?: Iterable<number>;
}

/** Options for {@linkcode Server.broadcast}. */
export type BroadcastOptions = TargetOptions;

/** Options for {@linkcode Server.gather} and {@linkcode Server.gatherSettled}. */
export type GatherOptions = TargetOptions;

/** Options for {@linkcode Server.uploads}. */
export interface UploadsOptions extends TargetOptions {
  /**
   * How many messages to take from each client (default 1: one round).
   * `Infinity` streams until the clients disconnect, which then ends the
   * iteration instead of failing it.
   */
  count?: number;
}

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

/** A coordinator serving a fixed number of clients. Create it with {@linkcode listen}. */
export class Server implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #clients: number;
  readonly #maxFrameBytes: number;
  readonly #connections: Connection[] = [];
  readonly #joined = new Notifier();
  readonly #admission: Admission;
  readonly #budget: ByteBudget;
  /** `[0, 1, …, clients − 1]`, shared by the calls that default to all clients (never mutated). */
  readonly #allIds: readonly number[];
  #closed: Promise<void> | undefined;

  /**
   * Prefer {@linkcode listen}.
   *
   * @param options See {@linkcode ListenOptions}.
   */
  constructor(options: ListenOptions) {
    const { clients } = options;
    if (!Number.isSafeInteger(clients) || clients < 1) {
      throw new RangeError(`Invalid clients: "${clients}" is not a positive integer`);
    }
    this.#clients = clients;
    this.#allIds = Object.freeze(range(0, clients));
    this.#maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
    this.#budget = new ByteBudget(options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES);
    this.#listener = Deno.listen({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
    });
    this.#admission = new Admission(this.#listener, {
      maxFrameBytes: this.#maxFrameBytes,
      heartbeatMs: options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      handshakeTimeout: options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      budget: this.#budget,
      clients: this.#clients,
      join: (connection) => this.#join(connection),
      joined: () => this.#joined.notify(),
    });
  }

  /** The address the server listens on. */
  get hostname(): string {
    return this.#listener.addr.hostname;
  }

  /** The TCP port the server listens on. */
  get port(): number {
    return this.#listener.addr.port;
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

  /** Gives a client that completed its handshake an id, or says why not. */
  #join(connection: Connection): number | Refusal {
    if (this.#closed !== undefined) {
      return { reason: "closed", message: "Server closing: no clients accepted" };
    }
    if (this.#connections.length >= this.#clients) {
      return { reason: "full", message: `Server full: all ${this.#clients} clients have joined` };
    }
    this.#connections.push(connection);
    return this.#connections.length - 1;
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
      clientIds: range(this.joined, this.#clients),
    }));
    while (this.joined < this.#clients) await this.#joined.changed(deadline);
  }

  /** Validates ids against the joined clients; defaults to all. */
  #ids(ids: Iterable<number> | undefined, what: string): readonly number[] {
    if (this.joined < this.#clients) {
      throw new FedcommError(
        `Server not ready: ${this.joined} of ${this.#clients} clients joined; await server.ready() first`,
      );
    }
    return ids === undefined ? this.#allIds : checkIds(ids, this.#clients, what);
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
    const ids = this.#ids(options?.ids, "broadcast");
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
    if (typeof messages !== "object" || messages === null) {
      throw new TypeError("Invalid messages for send: expected a Map or an object of id → value");
    }
    const entries = messages instanceof Map
      ? [...messages]
      : Object.entries(messages).map(([key, value]) => [
        /^(0|[1-9]\d*)$/.test(key) ? Number(key) : key,
        value,
      ]);
    const ids = this.#ids(entries.map(([id]) => id as number), "send");
    const frames = entries.map(([, value]) => encodeFrame(value, this.#maxFrameBytes));
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
      const { queue } = this.#connections[ids[i]];
      const { chunks, borrowed } = frameOf(i);
      try {
        const mark = queue.push(chunks);
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
    const ids = this.#ids(options?.ids, "gather");
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
    const ids = this.#ids(options?.ids, "gatherSettled");
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
    yield* uploadsFrom(this.#connections, this.#ids(options?.ids, "uploads"), count, options);
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

function range(from: number, to: number): number[] {
  const ids: number[] = [];
  for (let id = from; id < to; id++) ids.push(id);
  return ids;
}
