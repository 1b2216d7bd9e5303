/**
 * The coordinator: waits for N clients, gives each an id, then broadcasts,
 * scatters and gathers.
 *
 * @module
 */

import { ByteBudget, DEFAULT_RECEIVE_BUFFER_BYTES } from "./budget.ts";
import { type Arrival, Connection, DEFAULT_HEARTBEAT_MS, encodeFrame } from "./connection.ts";
import { type Deadline, startDeadline, type WaitOptions, within } from "./deadline.ts";
import { PeerDisconnectedError, TimeoutError } from "./errors.ts";
import { type FrameOptions, maxFrameBytesOf } from "./framing.ts";
import {
  awaitHello,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  HANDSHAKE_FRAME_BYTES,
  reject,
  welcome,
} from "./handshake.ts";

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
   * `ProtocolError`, a `RangeError` (an oversized frame) or `TimeoutError`.
   */
  readonly failed: Map<number, Error>;
}

/** Options for {@linkcode Server.uploads}. */
export interface UploadsOptions extends WaitOptions {
  /**
   * How many messages to take from each client (default 1: one round).
   * `Infinity` streams until the clients disconnect, which then ends the
   * iteration instead of failing it.
   */
  count?: number;
}

/** Options for {@linkcode Server.broadcast}. */
export interface BroadcastOptions extends WaitOptions {
  /** The clients to send to (default: all). */
  ids?: Iterable<number>;
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
 * const updates = await server.gather();
 * console.log(updates.get(1)); // { update: Float32Array(2) [ 1.5, 1.5 ] }
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
  readonly #handshakeTimeout: number;
  readonly #heartbeatMs: number;
  readonly #connections: Connection[] = [];
  readonly #handshaking = new Set<Promise<void>>();
  readonly #busy = new Set<number>();
  readonly #joinListeners = new Set<() => void>();
  /** The call watching each client id (at most one: ids are locked), told of arrivals and ends. */
  readonly #watchers: (((id: number) => void) | undefined)[] = [];
  readonly #accepting: Promise<void>;
  readonly #abort = new AbortController();
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
    this.#maxFrameBytes = maxFrameBytesOf(options);
    this.#handshakeTimeout = options.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    this.#heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.#budget = new ByteBudget(options.receiveBufferBytes ?? DEFAULT_RECEIVE_BUFFER_BYTES);
    this.#listener = Deno.listen({
      hostname: options.hostname ?? "127.0.0.1",
      port: options.port ?? 0,
    });
    this.#accepting = this.#accept();
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
    return this.#connections.reduce((sum, c) => sum + c.bytesSent, 0);
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return; // the listener was closed
      }
      const handshake = this.#admit(conn).finally(() => this.#handshaking.delete(handshake));
      this.#handshaking.add(handshake);
    }
  }

  async #admit(conn: Deno.TcpConn): Promise<void> {
    const connection = new Connection(conn, {
      maxFrameBytes: this.#maxFrameBytes,
      handshakeFrameBytes: HANDSHAKE_FRAME_BYTES,
      heartbeatMs: this.#heartbeatMs,
      budget: this.#budget,
    });
    try {
      const refusal = await awaitHello(connection, this.#handshakeTimeout, this.#abort.signal);
      if (refusal !== undefined) return await reject(connection, refusal.reason, refusal.message);
      if (this.#closed !== undefined) {
        return await reject(connection, "closed", "Server closing: no clients accepted");
      }
      if (this.#connections.length >= this.#clients) {
        return await reject(
          connection,
          "full",
          `Server full: all ${this.#clients} clients have joined`,
        );
      }
      const id = this.#connections.length;
      this.#connections.push(connection);
      await welcome(connection, id, this.#clients);
      // From now on the connection reports to whichever call watches this id.
      connection.listen(() => this.#watchers[id]?.(id));
      for (const listener of this.#joinListeners) listener();
    } catch {
      // The peer timed out, left, or sent garbage before it had an id: drop it.
      if (!this.#connections.includes(connection)) await connection.close();
    }
  }

  /**
   * Waits until all clients have joined.
   *
   * @param options Cancellation and time limit.
   * @returns Resolves when `clients` clients have completed the handshake.
   * @throws {TimeoutError} If they did not in time; `clientIds` lists the ids not yet taken.
   */
  async ready(options?: WaitOptions): Promise<void> {
    if (this.joined >= this.#clients) return;
    using deadline = startDeadline(options, () => {
      const missing = range(this.joined, this.#clients);
      return new TimeoutError(
        `Waiting for clients timed out after ${options?.timeout} ms: ` +
          `${this.joined} of ${this.#clients} joined`,
        { clientIds: missing },
      );
    });
    while (this.joined < this.#clients) {
      const { promise, resolve } = Promise.withResolvers<void>();
      this.#joinListeners.add(resolve);
      try {
        await within(promise, deadline);
      } finally {
        this.#joinListeners.delete(resolve);
      }
    }
  }

  /** Validates ids against the joined clients; defaults to all. */
  #ids(ids: Iterable<number> | undefined, what: string): readonly number[] {
    if (this.joined < this.#clients) {
      throw new Error(
        `Server not ready: ${this.joined} of ${this.#clients} clients joined; await server.ready() first`,
      );
    }
    if (ids === undefined) return this.#allIds;
    if (typeof ids !== "object" || typeof ids[Symbol.iterator] !== "function") {
      throw new TypeError(`Invalid ids for ${what}: expected an iterable of client ids`);
    }
    const list = [...ids];
    const seen = new Set<number>();
    for (const id of list) {
      if (typeof id !== "number" || !Number.isInteger(id)) {
        throw new TypeError(`Invalid client id for ${what}: "${String(id)}" is not an integer`);
      }
      if (id < 0 || id >= this.#clients) {
        throw new RangeError(
          `Invalid client id for ${what}: "${id}" is not from 0 to ${this.#clients - 1}`,
        );
      }
      if (seen.has(id)) throw new TypeError(`Invalid ids for ${what}: "${id}" is listed twice`);
      seen.add(id);
    }
    return list;
  }

  /**
   * Sends the same value to every client (or to `options.ids`). The value is
   * encoded once, and its large binaries are written to each socket straight
   * from your memory: do not change them until this resolves.
   *
   * @param value The value.
   * @param options The target ids, cancellation and time limit.
   * @returns Resolves when every socket has taken the message.
   * @throws {PeerDisconnectedError} If a target client is gone (the others still get it).
   * @throws {TimeoutError} If the writes did not finish in time.
   */
  async broadcast(value: unknown, options?: BroadcastOptions): Promise<void> {
    const ids = this.#ids(options?.ids, "broadcast");
    const { chunks, borrowed } = encodeFrame(value, this.#maxFrameBytes);
    await this.#deliver(ids.map((id) => [id, this.#connections[id].write(chunks, borrowed)]), {
      what: "Broadcast",
      ...options,
    });
  }

  /**
   * Sends a different value to each named client (scatter). Every value is
   * encoded before anything is sent, so a value that cannot be encoded sends nothing.
   *
   * @param messages Values by client id, as a `Map` or an object.
   * @param options Cancellation and time limit.
   * @returns Resolves when every socket has taken its message.
   * @throws {TypeError} If an id is invalid or a value cannot be encoded.
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
    await this.#deliver(
      ids.map((id, i) => [id, this.#connections[id].write(frames[i].chunks, frames[i].borrowed)]),
      { what: "Send", ...options },
    );
  }

  /** Awaits per-client writes; reports the first failure or the ids still unwritten. */
  async #deliver(
    queued: [number, Promise<void> | undefined][],
    options: WaitOptions & { what: string },
  ): Promise<void> {
    // Small frames are queued at once (no promise): only the others are awaited.
    const writes = queued.filter((entry): entry is [number, Promise<void>] =>
      entry[1] !== undefined
    );
    if (writes.length === 0) return;
    const unwritten = new Set(writes.map(([id]) => id));
    const failures: unknown[] = [];
    const all = Promise.all(
      writes.map(([id, write]) =>
        write.then(() => unwritten.delete(id), (error) => failures.push(error))
      ),
    );
    using deadline = startDeadline(
      options,
      () =>
        new TimeoutError(
          `${options.what} timed out after ${options.timeout} ms: ` +
            `writing to clients [${[...unwritten].join(", ")}]`,
          { clientIds: [...unwritten] },
        ),
    );
    await within(all, deadline);
    if (failures.length > 0) throw failures[0];
  }

  /** Lets the given clients' large frames be read without the receive budget, until disposed. */
  #unmeter(ids: readonly number[]): Disposable {
    for (const id of ids) this.#connections[id].unmetered = true;
    return { [Symbol.dispose]: () => ids.forEach((id) => this.#connections[id].unmetered = false) };
  }

  /** Marks ids as being received from, so two calls never split one client's messages. */
  #lock(ids: readonly number[], what: string): Disposable {
    for (const id of ids) {
      if (this.#busy.has(id)) {
        throw new Deno.errors.Busy(
          `Client "${id}" is already being received from: ${what} must wait`,
        );
      }
    }
    for (const id of ids) this.#busy.add(id);
    return { [Symbol.dispose]: () => ids.forEach((id) => this.#busy.delete(id)) };
  }

  /**
   * Receives one message from every client (or from `ids`): the seed's
   * `recv_all` and `recv(index)`. Messages that arrived earlier were queued
   * per client, in order; a gather that fails or times out puts back what it
   * took, so it loses nothing.
   *
   * @param ids The clients to gather from (default: all).
   * @param options Cancellation and time limit.
   * @returns The values by client id, in the order of `ids`.
   * @throws {PeerDisconnectedError} As soon as a listed client is gone with nothing queued.
   * @throws {ProtocolError} If a listed client sent a malformed frame.
   * @throws {TimeoutError} If time ran out; `clientIds` lists the clients not heard from.
   */
  async gather(ids?: Iterable<number>, options?: WaitOptions): Promise<Map<number, unknown>> {
    const { received } = await this.#gather(ids, options, "gather", true);
    return received;
  }

  /**
   * Like {@linkcode Server.gather}, but a client that disconnects, breaks the
   * protocol or does not answer in time does not fail the call: it is listed
   * in `failed` with its error, and the answers of the others are returned.
   * For rounds that tolerate stragglers and dropouts.
   *
   * @param ids The clients to gather from (default: all).
   * @param options Cancellation and time limit: at the limit, the clients still
   * silent are listed in `failed` with a `TimeoutError`.
   * @returns The answers by client id (in the order of `ids`) and the clients that gave none.
   * @throws {Error} Only the signal's reason if it aborts (nothing is taken then).
   *
   * @example
   * ```ts ignore
   * const { received, failed } = await server.gatherSettled(undefined, { timeout: 60_000 });
   * for (const [id, error] of failed) console.warn(`client ${id} dropped: ${error.message}`);
   * ```
   */
  gatherSettled(ids?: Iterable<number>, options?: WaitOptions): Promise<GatherResult> {
    return this.#gather(ids, options, "gatherSettled", false);
  }

  /**
   * Collects one message per client. With `strict`, the first client that
   * fails or the timeout fails the call and puts back what was taken;
   * otherwise failures are recorded and the call settles.
   */
  async #gather(
    ids: Iterable<number> | undefined,
    options: WaitOptions | undefined,
    what: string,
    strict: boolean,
  ): Promise<GatherResult> {
    const list = this.#ids(ids, what);
    using _lock = this.#lock(list, what);
    // A gather holds every answer until it returns, so throttling its reads
    // with the receive budget would slow it without saving memory.
    using _unmetered = this.#unmeter(list);
    const pending = new Set(list);
    // Messages are taken as they arrive (freeing the receive budget for the
    // others) and put back at the front of their queues if the gather fails.
    const taken = new Map<number, Arrival>();
    const failed = new Map<number, Error>();
    const collect = (id: number): void => {
      const connection = this.#connections[id];
      if (!pending.has(id)) return;
      if (connection.hasMessage) {
        taken.set(id, connection.take());
        pending.delete(id);
      } else if (connection.ended !== undefined) {
        if (strict) throw connection.ended;
        failed.set(id, connection.ended);
        pending.delete(id);
      }
    };
    const timedOut = () =>
      new TimeoutError(
        `${what[0].toUpperCase()}${what.slice(1)} timed out after ${options?.timeout} ms: ` +
          `waiting for clients [${[...pending].join(", ")}]`,
        { clientIds: [...pending] },
      );
    try {
      using watch = this.#watch(list, timedOut, options);
      for (const id of list) collect(id);
      while (pending.size > 0) {
        for (const id of await watch.wait()) collect(id);
      }
    } catch (error) {
      if (strict || !(error instanceof TimeoutError)) {
        for (const [id, arrival] of taken) this.#connections[id].putBack(arrival);
        throw error;
      }
      for (const id of pending) failed.set(id, error);
    }
    const received = new Map<number, unknown>();
    for (const id of list) {
      const arrival = taken.get(id);
      if (arrival !== undefined) received.set(id, arrival.value);
    }
    return { received, failed };
  }

  /** Watches the given clients' connections; `wait()` returns the ids that changed since the last call. */
  #watch(
    ids: readonly number[],
    onTimeout: () => Error,
    options: WaitOptions | undefined,
  ): { wait(): Promise<number[]> } & Disposable {
    const deadline: Deadline = startDeadline(options, onTimeout);
    let changed: number[] = [];
    let wake: (() => void) | undefined;
    const watcher = (id: number): void => {
      changed.push(id);
      wake?.();
    };
    for (const id of ids) this.#watchers[id] = watcher;
    return {
      async wait(): Promise<number[]> {
        if (changed.length === 0) {
          const { promise, resolve } = Promise.withResolvers<void>();
          wake = resolve;
          await within(promise, deadline);
          wake = undefined;
        }
        const ids = changed;
        changed = [];
        return ids;
      },
      [Symbol.dispose]: () => {
        for (const id of ids) this.#watchers[id] = undefined;
        deadline[Symbol.dispose]();
      },
    };
  }

  /**
   * Yields clients' messages in order of arrival, `{ id, value }`, taking
   * `count` (default 1) from each of `ids` (default all). Use it to fold
   * uploads into a running aggregate without holding all of them.
   *
   * @param ids The clients to receive from (default: all).
   * @param options How many per client, cancellation and time limit (for the whole iteration).
   * @returns An async iterator of uploads.
   * @throws {PeerDisconnectedError} If a listed client is gone before giving its
   * `count` (with `count: Infinity` its stream just ends).
   * @throws {TimeoutError} If time ran out; `clientIds` lists the clients still owing.
   *
   * @example Federated averaging without holding N models
   * ```ts ignore
   * const sum = new Float32Array(size);
   * for await (const { value } of server.uploads()) {
   *   const { weights } = value as { weights: Float32Array };
   *   for (let i = 0; i < size; i++) sum[i] += weights[i];
   * }
   * ```
   */
  async *uploads(ids?: Iterable<number>, options?: UploadsOptions): AsyncGenerator<Upload> {
    const count = options?.count ?? 1;
    if (!(count === Infinity || Number.isSafeInteger(count) && count > 0)) {
      throw new RangeError(`Invalid count: "${count}" is not a positive integer or Infinity`);
    }
    const list = this.#ids(ids, "uploads");
    using _lock = this.#lock(list, "uploads");
    const owed = new Map(list.map((id) => [id, count]));
    using watch = this.#watch(list, () =>
      new TimeoutError(
        `Uploads timed out after ${options?.timeout} ms: waiting for clients [${
          [...owed.keys()].join(", ")
        }]`,
        { clientIds: [...owed.keys()] },
      ), options);
    // Clients with a queued message, ordered by the arrival of their oldest one.
    const ready = new ArrivalHeap();
    const consider = (id: number): void => {
      if (!owed.has(id) || ready.has(id)) return;
      const connection = this.#connections[id];
      const head = connection.peek();
      if (head !== undefined) ready.push(id, head.seq);
      else if (connection.ended !== undefined) {
        if (count !== Infinity) throw connection.ended;
        owed.delete(id);
      }
    };
    for (const id of list) consider(id);
    while (owed.size > 0) {
      const id = ready.pop();
      if (id === undefined) {
        for (const changed of await watch.wait()) consider(changed);
        continue;
      }
      const left = owed.get(id)! - 1;
      if (left === 0) owed.delete(id);
      else owed.set(id, left);
      yield { id, value: this.#connections[id].take().value };
      consider(id); // its next message, or its disconnect, after the value is delivered
    }
  }

  /**
   * Stops accepting, writes what is queued (waiting at most 5 s for a client
   * that stopped reading), closes every connection and releases the port. Calls still waiting reject with `PeerDisconnectedError`.
   *
   * @returns Resolves when everything is closed.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#abort.abort(new PeerDisconnectedError("Server closing"));
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      await this.#accepting;
      await Promise.all([...this.#handshaking]);
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

/** A binary min-heap of client ids keyed by the arrival number of their oldest queued message. */
class ArrivalHeap {
  #ids: number[] = [];
  #keys: number[] = [];
  #members = new Set<number>();

  has(id: number): boolean {
    return this.#members.has(id);
  }

  push(id: number, key: number): void {
    this.#members.add(id);
    let i = this.#ids.length;
    this.#ids.push(id);
    this.#keys.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.#keys[parent] <= key) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  pop(): number | undefined {
    if (this.#ids.length === 0) return undefined;
    const top = this.#ids[0];
    this.#members.delete(top);
    const lastId = this.#ids.pop()!;
    const lastKey = this.#keys.pop()!;
    if (this.#ids.length > 0) {
      this.#ids[0] = lastId;
      this.#keys[0] = lastKey;
      let i = 0;
      while (true) {
        const left = 2 * i + 1;
        const right = left + 1;
        let smallest = i;
        if (left < this.#keys.length && this.#keys[left] < this.#keys[smallest]) smallest = left;
        if (right < this.#keys.length && this.#keys[right] < this.#keys[smallest]) smallest = right;
        if (smallest === i) break;
        this.#swap(i, smallest);
        i = smallest;
      }
    }
    return top;
  }

  #swap(a: number, b: number): void {
    [this.#ids[a], this.#ids[b]] = [this.#ids[b], this.#ids[a]];
    [this.#keys[a], this.#keys[b]] = [this.#keys[b], this.#keys[a]];
  }
}
