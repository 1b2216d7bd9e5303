/**
 * What a server and a client report as they work: typed events (servers and
 * clients are `EventTarget`s) and a logger hook. Nothing is printed unless
 * you pass a logger (`listen({ logger: console })`).
 *
 * | event | on | when |
 * | --- | --- | --- |
 * | `"join"` ({@linkcode ClientEvent}) | server | a client completed its handshake and got its id (a new session) |
 * | `"disconnect"` ({@linkcode ClientEvent}) | server, client | the connection dropped (`error` says why); the session waits for a resume |
 * | `"resume"` ({@linkcode ClientEvent}) | server, client | the session resumed on a new connection, nothing lost |
 * | `"leave"` ({@linkcode ClientEvent}) | server | a client is gone for good (`error` says why) |
 * | `"late"` ({@linkcode LateReplyEvent}) | server | a reply to an earlier message arrived after the server sent a newer one: not an answer |
 * | `"refuse"` ({@linkcode RefuseEvent}) | server | a connection was turned away in its handshake (never carries a secret) |
 * | `"progress"` ({@linkcode TransferEvent}) | server, client | bytes of a message moved: `loaded` of `total` |
 *
 * Progress is reported per message as its bytes go: a large message many
 * times, ending with `loaded === total` (the frame body size, known from
 * its header when receiving); a small one once. Events are only made while
 * someone listens, so they cost nothing otherwise.
 *
 * @example Progress of a 4 MiB upload, seen by both sides
 * ```ts
 * import assert from "node:assert/strict";
 * import { connect, listen, type TransferEvent } from "@fedcomm/fedcomm";
 *
 * await using server = listen({ clients: 1 });
 * await using client = await connect({ port: server.port });
 * await server.ready();
 * const sent: number[] = [];
 * const received: number[] = [];
 * client.addEventListener("progress", (e: TransferEvent) => sent.push(e.loaded));
 * server.addEventListener("progress", (e: TransferEvent) => {
 *   if (e.direction === "receive") received.push(e.loaded);
 * });
 * await client.send(new Uint8Array(4 * 1024 * 1024));
 * await server.gather({ timeout: 10_000 });
 * assert.equal(sent.at(-1), received.at(-1)); // both end at the frame body's size
 * assert.ok(received.length > 1);
 * ```
 *
 * @module
 */

/** Which way a message moves, seen from the side reporting. */
export type Direction = "send" | "receive";

/** Options of a {@linkcode TransferEvent}. */
export interface TransferEventInit extends EventInit {
  /** The client concerned (on a client: its own id). */
  clientId: number;
  /** Which way. */
  direction: Direction;
  /** Bytes of the message moved so far. */
  loaded: number;
  /** Bytes of the message in all (the frame body size, header excluded on receive). */
  total: number;
}

/** Bytes of one message moved so far: the `"progress"` event. */
export class TransferEvent extends Event {
  /** The client concerned (on a client: its own id). */
  readonly clientId: number;
  /** Which way. */
  readonly direction: Direction;
  /** Bytes moved so far. */
  readonly loaded: number;
  /** Bytes in all. */
  readonly total: number;

  /**
   * Creates the event.
   *
   * @param init Who, which way, how far.
   */
  constructor(init: TransferEventInit) {
    super("progress", init);
    this.clientId = init.clientId;
    this.direction = init.direction;
    this.loaded = init.loaded;
    this.total = init.total;
  }
}

/** Options of a {@linkcode ClientEvent}. */
export interface ClientEventInit extends EventInit {
  /** The client's id. */
  clientId: number;
  /** Its name from its hello, if any. */
  name?: string;
  /** Its address. */
  address?: Deno.Addr;
  /** Why it left or dropped (for `"leave"` and `"disconnect"`). */
  error?: Error;
  /** The metadata from its hello. */
  props?: Readonly<Record<string, string | number | boolean | null>>;
}

/** The kinds of {@linkcode ClientEvent}. */
export type ClientEventType = "join" | "disconnect" | "resume" | "leave";

/** A client joined, dropped, resumed or left: see {@linkcode ClientEventType}. */
export class ClientEvent extends Event {
  /** The client's id. */
  readonly clientId: number;
  /** Its name from its hello, if any. */
  readonly name: string | undefined;
  /** Its address. */
  readonly address: Deno.Addr | undefined;
  /** Why it left or dropped (for `"leave"` and `"disconnect"`). */
  readonly error: Error | undefined;
  /** The metadata from its hello. */
  readonly props: Readonly<Record<string, string | number | boolean | null>>;

  /**
   * Creates the event.
   *
   * @param type `"join"`, `"disconnect"`, `"resume"` or `"leave"`.
   * @param init The client.
   */
  constructor(type: ClientEventType, init: ClientEventInit) {
    super(type, init);
    this.clientId = init.clientId;
    this.name = init.name;
    this.address = init.address;
    this.error = init.error;
    this.props = init.props ?? {};
  }
}

/** Options of a {@linkcode LateReplyEvent}. */
export interface LateReplyEventInit extends EventInit {
  /** The client that replied. */
  clientId: number;
  /** The number of the server's message it answers. */
  replyTo: number;
  /** The number of the latest message the server had sent that client. */
  latest: number;
  /** The reply's value (yours to keep: the server dropped it). */
  value: unknown;
}

/**
 * A reply that answers an earlier message than the latest one the server
 * sent that client (a straggler's answer to a past round): the `"late"`
 * event. It is not an answer to any gather; listen to this event to get it.
 */
export class LateReplyEvent extends Event {
  /** The client that replied. */
  readonly clientId: number;
  /** The number of the server's message it answers. */
  readonly replyTo: number;
  /** The number of the latest message the server had sent that client. */
  readonly latest: number;
  /** The reply's value. */
  readonly value: unknown;

  /**
   * Creates the event.
   *
   * @param init Who, what it answered, and the value.
   */
  constructor(init: LateReplyEventInit) {
    super("late", init);
    this.clientId = init.clientId;
    this.replyTo = init.replyTo;
    this.latest = init.latest;
    this.value = init.value;
  }
}

/** Options of a {@linkcode RefuseEvent}. */
export interface RefuseEventInit extends EventInit {
  /**
   * The reason sent in the reject, or `"busy"`/`"timeout"`/`"error"` when none
   * could be sent, or `"tls"` when the peer's TLS did not match the server's
   * (a TLS handshake that failed, or TLS spoken to a plain server).
   */
  reason: string;
  /** The explanation. */
  message: string;
  /** The peer's address. */
  address?: Deno.Addr;
  /** The name the peer gave, if any. */
  name?: string;
}

/** A connection was turned away during its handshake: the `"refuse"` event. */
export class RefuseEvent extends Event {
  /** The reason. */
  readonly reason: string;
  /** The explanation. */
  readonly message: string;
  /** The peer's address. */
  readonly address: Deno.Addr | undefined;
  /** The name the peer gave, if any. */
  readonly name: string | undefined;

  /**
   * Creates the event.
   *
   * @param init Why and who.
   */
  constructor(init: RefuseEventInit) {
    super("refuse", init);
    this.reason = init.reason;
    this.message = init.message;
    this.address = init.address;
    this.name = init.name;
  }
}

/** The events of a server, by type. */
export interface ServerEventMap {
  /** A client joined (a new session). */
  join: ClientEvent;
  /** A client's connection dropped; its session waits for a resume. */
  disconnect: ClientEvent;
  /** A client's session resumed on a new connection. */
  resume: ClientEvent;
  /** A client is gone for good. */
  leave: ClientEvent;
  /** A reply to an earlier message arrived: not an answer, dropped. */
  late: LateReplyEvent;
  /** A connection was turned away in its handshake. */
  refuse: RefuseEvent;
  /** Bytes of a message moved. */
  progress: TransferEvent;
}

/** The events of a client, by type. */
export interface ClientEventMap {
  /** Bytes of a message moved. */
  progress: TransferEvent;
  /** The connection to the server dropped; the client is reconnecting. */
  disconnect: ClientEvent;
  /** The session resumed on a new connection, nothing lost. */
  resume: ClientEvent;
}

/**
 * An `EventTarget` whose `addEventListener` knows the event types of `M`
 * (the base class of `Server` and `Client`).
 * Before a listener is added it calls `listening(type)`, so that a subclass
 * makes the events nobody listens to only once someone does.
 *
 * @typeParam M The event map: type name to event class.
 */
export class FedcommEventTarget<M extends object> extends EventTarget {
  /**
   * Registers an event listener; see the event map `M` for the events.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener<K extends keyof M & string>(
    type: K,
    listener: (this: this, event: M[K]) => void,
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
    listener: EventListenerOrEventListenerObject | null | ((event: never) => void),
    options?: boolean | AddEventListenerOptions,
  ): void {
    this.listening(type);
    super.addEventListener(type, listener as EventListenerOrEventListenerObject | null, options);
  }

  /**
   * Called before a listener of `type` is added (by default, nothing).
   *
   * @param _type The event type.
   */
  protected listening(_type: string): void {}
}

/**
 * Where diagnostics go: any of the four methods, each with a message and
 * fields (`console` fits). Unset methods are skipped.
 */
export interface Logger {
  /** Fine detail: every connection accepted, every ping. */
  debug?(message: string, fields?: Record<string, unknown>): void;
  /** Joins, leaves. */
  info?(message: string, fields?: Record<string, unknown>): void;
  /** Refused handshakes, protocol errors, dead peers. */
  warn?(message: string, fields?: Record<string, unknown>): void;
  /** Failures of the server itself, such as accept errors. */
  error?(message: string, fields?: Record<string, unknown>): void;
}

/** Formats an address for logs: `127.0.0.1:4000`. */
export function formatAddress(addr: Deno.Addr | undefined): string {
  if (addr === undefined) return "unknown";
  return "hostname" in addr ? `${addr.hostname}:${addr.port}` : addr.transport;
}
