/**
 * The server's members: the clients that joined, by id, with their
 * connections and names; who may join; the join and leave events; the
 * per-client statistics.
 *
 * @module
 */

import type { Connection } from "./_connection.ts";
import { checkIds } from "./_gather.ts";
import type { Hello, Refusal } from "./_handshake.ts";
import type { ClientStats } from "./_server_types.ts";
import { Notifier } from "./_wait.ts";
import { FedcommError } from "./errors.ts";
import { ClientEvent, formatAddress, type Logger, TransferEvent } from "./events.ts";

/** The clients of one server; see the module doc. */
export class Members {
  /** The connections by client id. */
  readonly connections: Connection[] = [];
  /** Notified whenever a client joined. */
  readonly joined: Notifier = new Notifier();
  readonly #names: (string | undefined)[] = [];
  readonly #capacity: number;
  /** `[0, 1, …, capacity − 1]`, shared by the calls that default to all clients (never mutated). */
  readonly #all: readonly number[];
  readonly #events: EventTarget;
  readonly #logger: Logger | undefined;
  #closed = false;
  /** Whether anyone listens to progress events (then they are made). */
  #progress = false;

  /**
   * Creates the member list of a server.
   *
   * @param capacity How many clients may join.
   * @param events Where join and leave events are dispatched (the server).
   * @param logger Diagnostics.
   */
  constructor(capacity: number, events: EventTarget, logger: Logger | undefined) {
    this.#capacity = capacity;
    this.#all = Object.freeze(Array.from({ length: capacity }, (_, id) => id));
    this.#events = events;
    this.#logger = logger;
  }

  /** How many clients joined so far. */
  get size(): number {
    return this.connections.length;
  }

  /** No client may join from now on (the server is closing). */
  close(): void {
    this.#closed = true;
  }

  /**
   * Gives a client that completed its handshake an id, or says why not.
   *
   * @param connection Its connection.
   * @param hello What it said of itself.
   * @returns Its id, or the refusal to send.
   */
  join(connection: Connection, hello: Hello): number | Refusal {
    if (this.#closed) return { reason: "closed", message: "Server closing: no clients accepted" };
    if (this.connections.length >= this.#capacity) {
      return { reason: "full", message: `Server full: all ${this.#capacity} clients have joined` };
    }
    this.connections.push(connection);
    this.#names.push(hello.name);
    return this.connections.length - 1;
  }

  /**
   * A client got its welcome: report its leaving from now on, tell listeners it joined.
   *
   * @param connection Its connection.
   * @param hello What it said of itself.
   */
  welcomed(connection: Connection, hello: Hello): void {
    const clientId = connection.clientId!;
    const { name } = hello;
    const address = connection.remoteAddr;
    if (this.#progress) this.#watchProgress(connection);
    connection.onEnd = (error) => {
      this.#logger?.info?.("Client left", { id: clientId, name, error: error.message });
      this.#events.dispatchEvent(new ClientEvent("leave", { clientId, name, address, error }));
    };
    this.#logger?.info?.("Client joined", { id: clientId, name, address: formatAddress(address) });
    this.#events.dispatchEvent(new ClientEvent("join", { clientId, name, address }));
    this.joined.notify();
  }

  /** Makes progress events from now on (someone listens to them). */
  reportProgress(): void {
    if (this.#progress) return;
    this.#progress = true;
    for (const connection of this.connections) this.#watchProgress(connection);
  }

  #watchProgress(connection: Connection): void {
    const clientId = connection.clientId!;
    connection.onReceiveProgress = (loaded, total) =>
      this.#events.dispatchEvent(
        new TransferEvent({ clientId, direction: "receive", loaded, total }),
      );
  }

  /**
   * The progress callback for a message sent to a client, if progress is reported.
   *
   * @param clientId The client.
   * @returns The callback for the write queue, or `undefined`.
   */
  sendProgress(clientId: number): ((loaded: number, total: number) => void) | undefined {
    if (!this.#progress) return undefined;
    return (loaded, total) =>
      this.#events.dispatchEvent(new TransferEvent({ clientId, direction: "send", loaded, total }));
  }

  /**
   * Validates the ids a call addresses; defaults to all.
   *
   * @param ids The ids given, or `undefined` for all.
   * @param what The call, for messages.
   * @returns The ids.
   * @throws {FedcommError} If not every client has joined yet.
   * @throws {TypeError} If an id is not an integer or is listed twice.
   * @throws {RangeError} If an id is out of range.
   */
  targets(ids: Iterable<number> | undefined, what: string): readonly number[] {
    const joined = this.connections.length;
    if (joined < this.#capacity) {
      throw new FedcommError(
        `Server not ready: ${joined} of ${this.#capacity} clients joined; await server.ready() first`,
      );
    }
    return ids === undefined ? this.#all : checkIds(ids, this.#capacity, what);
  }

  /**
   * Splits the argument of `send()` into validated ids and their values.
   *
   * @param messages Values by client id, as a `Map` or an object.
   * @returns The ids and the values, in the same order.
   * @throws {TypeError} If it is not a Map or an object, or an id is invalid.
   * @throws {RangeError} If an id is out of range.
   */
  scatter(
    messages: ReadonlyMap<number, unknown> | Readonly<Record<number, unknown>>,
  ): [readonly number[], unknown[]] {
    if (typeof messages !== "object" || messages === null) {
      throw new TypeError("Invalid messages for send: expected a Map or an object of id → value");
    }
    const entries = messages instanceof Map
      ? [...messages]
      : Object.entries(messages).map(([key, value]) => [
        /^(0|[1-9]\d*)$/.test(key) ? Number(key) : key,
        value,
      ]);
    return [this.targets(entries.map(([id]) => id as number), "send"), entries.map((e) => e[1])];
  }

  /**
   * The ids not taken yet.
   *
   * @returns From the number joined up to the capacity.
   */
  missing(): number[] {
    return this.#all.slice(this.connections.length);
  }

  /**
   * Each joined client's statistics, by id.
   *
   * @returns One entry per client.
   */
  stats(): ClientStats[] {
    return this.connections.map((c, id) => ({
      id,
      name: this.#names[id],
      address: formatAddress(c.remoteAddr),
      state: c.ended === undefined ? "connected" : "disconnected",
      error: c.ended,
      bytesSent: c.queue.bytesSent,
      bytesReceived: c.bytesReceived,
      messagesSent: c.messagesSent,
      messagesReceived: c.messagesReceived,
      silentMs: c.silentFor,
      rttMs: c.rtt,
      queued: c.inbox.size,
    }));
  }
}
