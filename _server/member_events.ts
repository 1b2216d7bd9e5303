/**
 * What the server tells about its members: the `join`, `disconnect`,
 * `resume`, `leave`, `late` and `progress` events, and the log lines that
 * go with them. Progress events are made only once someone listens.
 *
 * @module
 */

import type { Session } from "../_session/session.ts";
import type { SessionListener } from "../_session/session_listener.ts";
import type { Arrival } from "../_session/inbox.ts";
import {
  ClientEvent,
  type ClientEventType,
  formatAddress,
  LateReplyEvent,
  type Logger,
  TransferEvent,
} from "../events.ts";
import type { Props } from "../types.ts";

/** What a member is made of. */
export interface MemberFields {
  readonly connection: Session;
  readonly name: string | undefined;
  readonly props: Props;
  readonly authenticated: boolean;
  readonly token: Uint8Array | undefined;
}

/** What the member list does when a member leaves. */
export interface LeaveHooks {
  /** Before the `leave` event (it may forget the member). */
  before(member: Member): void;
  /** After it (waiters on the member count look again). */
  changed(): void;
}

/**
 * What the server knows of one member besides its session. From its
 * welcome on, it is its session's listener: its drops, late replies and
 * end go to the server's {@linkcode MemberEvents}.
 */
export class Member implements SessionListener {
  readonly connection: Session;
  readonly name: string | undefined;
  readonly props: Props;
  readonly authenticated: boolean;
  readonly token: Uint8Array | undefined;
  readonly #events: MemberEvents;

  /**
   * @param fields Its session and what it said of itself.
   * @param events The server's member events.
   */
  constructor(fields: MemberFields, events: MemberEvents) {
    this.connection = fields.connection;
    this.name = fields.name;
    this.props = fields.props;
    this.authenticated = fields.authenticated;
    this.token = fields.token;
    this.#events = events;
  }

  /** Its connection dropped: the `disconnect` event. */
  sessionDropped(error: Error): void {
    this.#events.dropped(this, error);
  }

  /** Its session ended: the `leave` event. */
  sessionEnded(error: Error): void {
    this.#events.left(this, error);
  }

  /** A reply late on arrival: the `late` event. */
  lateReply(replyTo: number, value: unknown, latest: number): void {
    this.#events.late(this.connection.clientId, { replyTo, value }, latest);
  }
}

/** See the module doc. */
export class MemberEvents {
  readonly #events: EventTarget;
  readonly #logger: Logger | undefined;
  readonly #grace: number;
  readonly #leave: LeaveHooks;
  /** Whether anyone listens to progress events (then they are made). */
  #progress = false;

  /**
   * @param events Where the events are dispatched (the server).
   * @param logger Diagnostics.
   * @param grace How long a dropped session waits for its resume, for the log.
   * @param leave What the member list does when a member leaves.
   */
  constructor(events: EventTarget, logger: Logger | undefined, grace: number, leave: LeaveHooks) {
    this.#events = events;
    this.#logger = logger;
    this.#grace = grace;
    this.#leave = leave;
  }

  /**
   * A member got its welcome: reports its drops, late replies and leaving
   * from now on (it becomes its session's listener), and that it joined.
   *
   * @param member The member.
   */
  joined(member: Member): void {
    const session = member.connection;
    if (this.#progress) this.#watchProgress(session);
    session.listener = member;
    this.#logger?.info?.("Client joined", {
      id: session.clientId,
      name: member.name,
      address: formatAddress(session.remoteAddr),
    });
    this.#dispatch("join", member);
  }

  /**
   * A member's connection dropped; its session waits for a resume.
   *
   * @param member The member.
   * @param error Why it dropped.
   */
  dropped(member: Member, error: Error): void {
    this.#logger?.warn?.("Client disconnected: waiting for its resume", {
      id: member.connection.clientId,
      name: member.name,
      error: error.message,
      graceMs: this.#grace,
    });
    this.#dispatch("disconnect", member, error);
  }

  /**
   * A member's session ended.
   *
   * @param member The member.
   * @param error Why.
   */
  left(member: Member, error: Error): void {
    const id = member.connection.clientId;
    this.#logger?.info?.("Client left", { id, name: member.name, error: error.message });
    this.#leave.before(member);
    this.#dispatch("leave", member, error);
    this.#leave.changed();
  }

  /**
   * A member resumed its session.
   *
   * @param member The member.
   */
  resumed(member: Member): void {
    this.#logger?.info?.("Client resumed", {
      id: member.connection.clientId,
      name: member.name,
      address: formatAddress(member.connection.remoteAddr),
    });
    this.#dispatch("resume", member);
  }

  #dispatch(type: ClientEventType, member: Member, error?: Error): void {
    const { connection, name, props } = member;
    this.#events.dispatchEvent(
      new ClientEvent(type, {
        clientId: connection.clientId,
        name,
        props,
        address: connection.remoteAddr,
        error,
      }),
    );
  }

  /**
   * A late reply was dropped (and counted by its session): log it, hand it to `late` listeners.
   *
   * @param clientId The client.
   * @param arrival The reply.
   * @param latest The latest message number sent to that client.
   */
  late(clientId: number, arrival: Pick<Arrival, "replyTo" | "value">, latest: number): void {
    this.#logger?.debug?.("Late reply dropped", { id: clientId, replyTo: arrival.replyTo, latest });
    this.#events.dispatchEvent(
      new LateReplyEvent({ clientId, replyTo: arrival.replyTo, latest, value: arrival.value }),
    );
  }

  /**
   * Makes progress events from now on (someone listens to them).
   *
   * @param sessions The members' sessions so far.
   */
  reportProgress(sessions: Iterable<Session>): void {
    if (this.#progress) return;
    this.#progress = true;
    for (const session of sessions) this.#watchProgress(session);
  }

  #watchProgress(session: Session): void {
    const clientId = session.clientId;
    session.onReceiveProgress = (loaded, total) =>
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
}
