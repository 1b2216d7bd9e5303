/**
 * The server's members: the clients' sessions by id, with their names and
 * metadata; who may join or resume; the join, disconnect, resume, leave and
 * late events; the per-client statistics.
 *
 * Ids are given in order of arrival and never reused. A fixed cohort
 * (`listen({ clients: N })`) waits for N members; a member gone for good
 * frees its place, which the next new client takes (with a new id). An open
 * one (`open: true`) lets clients join at any time, up to N at once. With
 * per-client secrets (`auth.clients`), a name keeps its id across sessions.
 *
 * @module
 */

import { timingSafeEqual } from "../_handshake/auth.ts";
import type { Session } from "../_session/session.ts";
import { type Hello, type Refusal, TOKEN_BYTES } from "../_handshake/messages.ts";
import { Notifier, startDeadline } from "../_util/wait.ts";
import { FedcommError, PeerDisconnectedError } from "../errors.ts";
import { formatAddress, type Logger } from "../events.ts";
import { Member, MemberEvents } from "./member_events.ts";
import type { ClientStats, WaitOptions } from "../types.ts";

/** How the members are admitted. */
export interface MembersOptions {
  /** How many members: exactly (fixed), or at most at once (open). */
  capacity: number;
  /** Whether clients may join at any time (default false). */
  open: boolean;
  /** Milliseconds a dropped session waits for its resume (0: none). */
  grace: number;
  /** Whether each client proves its own name (per-client secrets): then a name keeps its id. */
  namedSecrets: boolean;
}

/** A resume the members accepted: the session to continue. */
export interface Resumable {
  /** The session. */
  readonly session: Session;
  /** Its id. */
  readonly id: number;
}

/** The clients of one server; see the module doc. */
export class Members {
  /** The sessions by client id (gone ones stay until their place is taken). */
  readonly connections: Map<number, Session> = new Map();
  /** Notified whenever a client joined or left. */
  readonly changed: Notifier = new Notifier();
  readonly #members = new Map<number, Member>();
  /** Authenticated names and their ids. */
  readonly #ids = new Map<string, number>();
  readonly #capacity: number;
  readonly #open: boolean;
  readonly #grace: number;
  readonly #namedSecrets: boolean;
  #nextId = 0;
  /** Traffic of members whose place was taken, so the server's totals only go up. */
  #bytesSentForgotten = 0;
  #bytesReceivedForgotten = 0;
  /** The members' events. */
  readonly events: MemberEvents;
  #closed = false;

  /**
   * Creates the member list of a server.
   *
   * @param options Capacity, membership and resume.
   * @param events Where the events are dispatched (the server).
   * @param logger Diagnostics.
   */
  constructor(options: MembersOptions, events: EventTarget, logger: Logger | undefined) {
    this.#capacity = options.capacity;
    this.#open = options.open;
    this.#grace = options.grace;
    this.#namedSecrets = options.namedSecrets;
    this.events = new MemberEvents(events, logger, options.grace, {
      before: (member) => {
        const session = member.connection;
        if (this.#open && session.inbox.size === 0) this.#forget(session.clientId);
      },
      changed: () => this.changed.notify(),
    });
  }

  /** How long a dropped session waits for a resume, in ms. */
  get grace(): number {
    return this.#grace;
  }

  /** How many members are connected or resuming. */
  get present(): number {
    let n = 0;
    for (const c of this.connections.values()) if (c.state !== "gone") n++;
    return n;
  }

  /** How many ids were given so far. */
  get started(): number {
    return this.#nextId;
  }

  /** No client may join from now on (the server is closing). */
  close(): void {
    this.#closed = true;
  }

  /**
   * Gives a client that completed its handshake an id, or says why not.
   *
   * @param hello What it said of itself.
   * @param open Builds its session (with the welcome), once it has an id.
   * @returns Its id and session, or the refusal to send.
   */
  join(
    hello: Hello,
    open: (id: number, token: Uint8Array | undefined) => Session,
  ): { id: number; session: Session } | Refusal {
    if (this.#closed) return { reason: "closed", message: "Server closing: no clients accepted" };
    let id: number | undefined;
    // Only a name proven with its own secret is an identity (with one secret
    // for the cohort, any client could claim any name).
    const named = this.#namedSecrets && hello.authenticated && hello.name !== undefined;
    if (named) {
      id = this.#ids.get(hello.name);
      const before = id === undefined ? undefined : this.#members.get(id);
      if (before?.connection.state === "connected") {
        return {
          reason: "duplicate",
          message: `Duplicate client: "${hello.name}" is already connected`,
        };
      }
      // Its earlier session, waiting for a resume, gives way to the new one.
      before?.connection.end(
        new PeerDisconnectedError(`Client "${id}" replaced: it started a new session`, {
          clientId: id,
        }),
      );
    }
    // `present` walks the members: only when there could be no place left.
    if (
      id === undefined && this.connections.size >= this.#capacity && this.present >= this.#capacity
    ) {
      return {
        reason: "full",
        message: this.#open
          ? `Server full: ${this.#capacity} clients are connected`
          : `Server full: all ${this.#capacity} clients have joined`,
      };
    }
    if (id === undefined) {
      id = this.#nextId++;
      if (named) this.#ids.set(hello.name!, id);
      this.#makeRoom();
    }
    const token = this.#grace > 0 ? crypto.getRandomValues(new Uint8Array(TOKEN_BYTES)) : undefined;
    const connection = open(id, token);
    this.connections.set(id, connection);
    this.#members.set(
      id,
      new Member({
        connection,
        name: hello.name,
        props: hello.props,
        authenticated: hello.authenticated,
        token,
      }, this.events),
    );
    return { id, session: connection };
  }

  /** Takes the place of the oldest member gone for good, if the cohort is full of places. */
  #makeRoom(): void {
    if (this.connections.size < this.#capacity) return;
    for (const [id, c] of this.connections) {
      if (c.state === "gone") {
        this.#forget(id);
        return;
      }
    }
  }

  #forget(id: number): void {
    const c = this.connections.get(id);
    if (c !== undefined) {
      this.#bytesSentForgotten += c.bytesSent;
      this.#bytesReceivedForgotten += c.bytesReceived;
    }
    this.connections.delete(id);
    this.#members.delete(id);
  }

  /** Bytes sent to every member the server had, including those forgotten. */
  get bytesSent(): number {
    let sum = this.#bytesSentForgotten;
    for (const c of this.connections.values()) sum += c.bytesSent;
    return sum;
  }

  /** Bytes received from every member the server had, including those forgotten. */
  get bytesReceived(): number {
    let sum = this.#bytesReceivedForgotten;
    for (const c of this.connections.values()) sum += c.bytesReceived;
    return sum;
  }

  /**
   * Checks a resume request: the session to continue, or the refusal.
   *
   * @param hello Its hello, with `resume`.
   * @returns The session, or why not.
   */
  resume(hello: Hello): Resumable | Refusal {
    const { id, token, received } = hello.resume!;
    if (this.#closed) return { reason: "closed", message: "Server closing: no clients accepted" };
    const member = this.#members.get(id);
    if (member === undefined || member.token === undefined || member.connection.state === "gone") {
      return { reason: "resume", message: `Resume refused: no session "${id}"` };
    }
    if (!timingSafeEqual(member.token, token)) {
      return { reason: "resume", message: `Resume refused: wrong token for client "${id}"` };
    }
    if (member.authenticated && (!hello.authenticated || hello.name !== member.name)) {
      return {
        reason: "resume",
        message: `Resume refused: client "${id}" authenticated as another name`,
      };
    }
    const problem = member.connection.cannotResume(received);
    if (problem !== undefined) {
      // Still connected: the old connection may be dead and not yet known
      // to be (idleTimeout); the client tries again.
      if (member.connection.state === "connected") {
        return { reason: "live", message: `Resume refused: client "${id}" is still connected` };
      }
      // The client proved the session is its own, and the refusal tells it the
      // session is over (PROTOCOL.md §6.3): end it here too, so that nothing
      // waits for it any more (a wrong token or name leaves it to its owner).
      const message = `Resume refused: client "${id}": ${problem}`;
      member.connection.end(
        new PeerDisconnectedError(`${message}: its session is over`, { clientId: id }),
      );
      return { reason: "resume", message };
    }
    return { session: member.connection, id };
  }

  /**
   * A client got its welcome: report its drops, resumes and leaving from now
   * on, tell listeners it joined.
   *
   * @param session Its session.
   */
  welcomed(session: Session): void {
    this.events.joined(this.#members.get(session.clientId)!);
    this.changed.notify();
    // Bytes that came in the same read as the hello (a second hello, a bad
    // control frame) may have ended the session before these listeners were
    // set: it leaves now, as it would have a moment later.
    const ended = session.ended;
    if (session.state === "gone" && ended !== undefined) session.listener?.sessionEnded?.(ended);
  }

  /**
   * A client resumed its session.
   *
   * @param id Its id.
   */
  resumed(id: number): void {
    this.events.resumed(this.#members.get(id)!);
  }

  /** Makes progress events from now on (someone listens to them). */
  reportProgress(): void {
    this.events.reportProgress(this.connections.values());
  }

  /**
   * Validates the ids a call addresses. By default: in a fixed cohort every
   * member (also those resuming or gone and not yet replaced); in an open
   * one, the members connected or resuming now.
   *
   * @param ids The ids given, or `undefined` for the default.
   * @param what The call, for messages.
   * @returns The ids.
   * @throws {FedcommError} If a fixed cohort has not filled yet.
   * @throws {TypeError} If an id is not an integer or is listed twice.
   * @throws {RangeError} If an id is not a member's.
   */
  targets(ids: Iterable<number> | undefined, what: string): readonly number[] {
    if (!this.#open && this.#nextId < this.#capacity) {
      throw new FedcommError(
        `Server not ready: ${this.#nextId} of ${this.#capacity} clients joined; await server.ready() first`,
      );
    }
    if (ids !== undefined) return checkIds(ids, what, (id) => this.connections.has(id));
    const all: number[] = [];
    for (const [id, c] of this.connections) {
      if (!this.#open) all.push(id);
      else if (c.state !== "gone") all.push(id);
      else if (c.inbox.size === 0) this.#forget(id);
    }
    return all;
  }

  /**
   * Splits the argument of `send()` into validated ids and their values.
   *
   * @param messages Values by client id, as a `Map` or an object.
   * @returns The ids and the values, in the same order.
   * @throws {TypeError} If it is not a Map or an object, or an id is invalid.
   * @throws {RangeError} If an id is not a member's.
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
   * The ids a fixed cohort still waits for.
   *
   * @returns From the number joined up to the capacity.
   */
  missing(): number[] {
    const ids: number[] = [];
    for (let id = this.#nextId; id < this.#capacity; id++) ids.push(id);
    return ids;
  }

  /**
   * Waits until `joined()` reaches `count` (`server.ready()`).
   *
   * @param count How many.
   * @param joined How many joined now.
   * @param options Cancellation and time limit.
   * @returns Resolves once they joined.
   * @throws {TimeoutError} If they did not in time; `clientIds` lists the ids not yet taken.
   */
  async untilJoined(count: number, joined: () => number, options?: WaitOptions): Promise<void> {
    using deadline = startDeadline(options, () => ({
      what: "Waiting for clients",
      detail: `${joined()} of ${count} joined`,
      clientIds: this.missing(),
    }));
    while (joined() < count) await this.changed.changed(deadline);
  }

  /**
   * Each member's statistics, in order of id.
   *
   * @returns One entry per member.
   */
  stats(): ClientStats[] {
    return [...this.#members.keys()].sort((a, b) => a - b).map((id) => this.statsOf(id)!);
  }

  /**
   * One member's statistics.
   *
   * @param id The member's id.
   * @returns Its statistics, or `undefined` if no member has that id.
   */
  statsOf(id: number): ClientStats | undefined {
    const m = this.#members.get(id);
    if (m === undefined) return undefined;
    const c = m.connection;
    return {
      id,
      name: m.name,
      props: m.props,
      authenticated: m.authenticated,
      address: formatAddress(c.remoteAddr),
      state: c.state,
      error: c.ended,
      bytesSent: c.bytesSent,
      bytesReceived: c.bytesReceived,
      messagesSent: c.messagesSent,
      messagesReceived: c.messagesReceived,
      silentMs: c.silentFor,
      rttMs: c.rtt,
      queued: c.inbox.size,
      unacknowledged: c.outbox.unacked,
      resumes: c.resumes,
      lateReplies: c.late.total,
    };
  }
}

/**
 * Validates a list of client ids.
 *
 * @param ids The ids given.
 * @param what The call, for messages.
 * @param known Whether an id is a member's.
 * @returns The ids as an array.
 * @throws {TypeError} If it is not an iterable of integers, or lists one twice.
 * @throws {RangeError} If an id is not a member's.
 */
export function checkIds(
  ids: Iterable<number>,
  what: string,
  known: (id: number) => boolean,
): number[] {
  if (typeof ids !== "object" || ids === null || typeof ids[Symbol.iterator] !== "function") {
    throw new TypeError(`Invalid ids for ${what}: expected an iterable of client ids`);
  }
  const list = [...ids];
  const seen = new Set<number>();
  for (const id of list) {
    if (typeof id !== "number" || !Number.isInteger(id)) {
      throw new TypeError(`Invalid client id for ${what}: "${String(id)}" is not an integer`);
    }
    if (!known(id)) {
      throw new RangeError(`Invalid client id for ${what}: "${id}" is not a member`);
    }
    if (seen.has(id)) throw new TypeError(`Invalid ids for ${what}: "${id}" is listed twice`);
    seen.add(id);
  }
  return list;
}
