/**
 * What the server tells about its members: the `join`, `disconnect`,
 * `resume`, `leave`, `late` and `progress` events, and the log lines that
 * go with them. Progress events are made only once someone listens.
 *
 * @module
 */

import type { Session } from "../_session/session.ts";
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

/** What the server knows of one member besides its session. */
export interface Member {
  readonly connection: Session;
  readonly name: string | undefined;
  readonly props: Props;
  readonly authenticated: boolean;
  readonly token: Uint8Array | undefined;
}

/** See the module doc. */
export class MemberEvents {
  readonly #events: EventTarget;
  readonly #logger: Logger | undefined;
  readonly #grace: number;
  /** Whether anyone listens to progress events (then they are made). */
  #progress = false;

  /**
   * @param events Where the events are dispatched (the server).
   * @param logger Diagnostics.
   * @param grace How long a dropped session waits for its resume, for the log.
   */
  constructor(events: EventTarget, logger: Logger | undefined, grace: number) {
    this.#events = events;
    this.#logger = logger;
    this.#grace = grace;
  }

  /**
   * A member got its welcome: reports its drops, late replies and leaving
   * from now on, and that it joined.
   *
   * @param member The member.
   * @param left Called when its session ended: before the `leave` event,
   * and (`changed`) after it.
   */
  joined(member: Member, left: { before(): void; changed(): void }): void {
    const session = member.connection;
    const id = session.clientId;
    if (this.#progress) this.#watchProgress(session);
    session.onDrop = (error) => {
      this.#logger?.warn?.("Client disconnected: waiting for its resume", {
        id,
        name: member.name,
        error: error.message,
        graceMs: this.#grace,
      });
      this.#dispatch("disconnect", member, error);
    };
    session.onLateReply = (replyTo, value, latest) => this.late(id, { replyTo, value }, latest);
    session.onEnd = (error) => {
      this.#logger?.info?.("Client left", { id, name: member.name, error: error.message });
      left.before();
      this.#dispatch("leave", member, error);
      left.changed();
    };
    this.#logger?.info?.("Client joined", {
      id,
      name: member.name,
      address: formatAddress(session.remoteAddr),
    });
    this.#dispatch("join", member);
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
