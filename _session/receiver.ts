/**
 * The read side of a session: what it does with each frame its link reads.
 * An application message is decoded into the {@linkcode Inbox} (a reply to
 * an earlier message than the last one sent is late: dropped and counted),
 * counted for the next ack, and reported as progress; a control frame is a
 * ping, a pong, an ack or the peer's close. Large bodies draw on the
 * receive budget while they are read.
 *
 * @module
 */

import type { Acks } from "./acks.ts";
import type { Inbox, LateReplies } from "./inbox.ts";
import type { Meter } from "./budget.ts";
import type { Outbox } from "./outbox.ts";
import { own } from "./slab.ts";
import type { Link } from "../_link/link.ts";
import {
  ACK,
  ACK_BODY_BYTES,
  ackCount,
  CLOSE,
  CONTROL,
  HANDSHAKE,
  invalidControlFrame,
  REPLY,
  REPLY_PREFIX_BYTES,
  replyTo,
} from "../_wire/control.ts";
import { decodeBounded } from "../_codec/decoder.ts";
import { ProtocolError } from "../errors.ts";

/** What the receiver needs of its session. */
export interface ReceiverHost {
  /** The client's id, for errors. */
  readonly clientId: number;
  /** Bytes received so far: the receiver adds what arrives. */
  bytesReceived: number;
  /** The messages received, waiting to be taken. */
  readonly inbox: Inbox;
  /** The messages sent (acks and replies refer to them). */
  readonly outbox: Outbox;
  /** The session's use of the receive budget. */
  readonly meter: Meter;
  /** Late replies dropped. */
  readonly late: LateReplies;
  /** Called as the body of a received frame arrives. */
  readonly onReceiveProgress: ((done: number, total: number) => void) | undefined;
  /** Called for a reply that is late on arrival. */
  readonly onLateReply: ((replyTo: number, value: unknown, latest: number) => void) | undefined;
  /** The peer sent its close frame (`c1 06`). */
  peerClosed(): void;
}

/** See the module doc. */
export class Receiver {
  readonly #host: ReceiverHost;
  readonly #acks: Acks;
  /** Whether the other end is the server (which sends no replies). */
  readonly #peerIsServer: boolean;
  /** The body being received (large frames): its size and the bytes read of it. */
  #bodyTotal = 0;
  #bodyDone = 0;

  /**
   * @param host The session.
   * @param acks The session's acknowledgements.
   * @param peerIsServer Whether the other end is the server.
   */
  constructor(host: ReceiverHost, acks: Acks, peerIsServer: boolean) {
    this.#host = host;
    this.#acks = acks;
    this.#peerIsServer = peerIsServer;
  }

  /** The link dropped: the body under way is abandoned. */
  abort(): void {
    this.#host.meter.abort();
    this.#bodyTotal = 0;
  }

  /**
   * Counts received bytes: liveness, totals and progress.
   *
   * @param link The link they arrived on.
   * @param n How many.
   */
  heard(link: Link, n: number): void {
    this.#host.bytesReceived += n;
    link.keepalive.heard();
    if (this.#bodyTotal > 0) {
      this.#bodyDone = Math.min(this.#bodyTotal, this.#bodyDone + n);
      this.#host.onReceiveProgress?.(this.#bodyDone, this.#bodyTotal);
    }
  }

  /**
   * Before each read into a large body: its progress total, and its share of the budget.
   *
   * @param link The link reading.
   * @param filled Bytes of the body read so far.
   * @param total The body's size.
   * @param start Whether this is the body's first call.
   * @returns The offset up to which reading may go.
   */
  bodyAllowance(link: Link, filled: number, total: number, start: boolean): Promise<number> {
    const { meter } = this.#host;
    if (start) {
      this.#bodyTotal = total;
      this.#bodyDone = filled;
      this.#host.onReceiveProgress?.(filled, total);
    }
    const allowed = meter.allowance(filled, total, start);
    // Reading waits for the budget: the peer's silence proves nothing meanwhile.
    return meter.waiting ? link.keepalive.during(allowed) : allowed;
  }

  /**
   * Decodes a frame body into the inbox, or handles a control frame.
   *
   * @param link The link it arrived on.
   * @param body The body.
   * @throws {ProtocolError} If it breaks the protocol.
   */
  frame(link: Link, body: Uint8Array): void {
    const host = this.#host;
    const reservation = host.meter.complete();
    const total = this.#bodyTotal;
    this.#bodyTotal = 0;
    if (body.byteLength === 0) return; // heartbeat
    let replying = 0;
    if (body[0] === CONTROL) {
      if (body.byteLength < REPLY_PREFIX_BYTES || body[1] !== REPLY) {
        reservation?.release();
        this.#control(link, body);
        return;
      }
      replying = this.#checkReply(body);
    }
    if (total === 0) host.onReceiveProgress?.(body.byteLength, body.byteLength);
    // A small body is a view into the read buffer, which the next read
    // overwrites: move it to memory of its own before decoding views into it.
    if (link.reader.isBuffered(body)) body = own(body);
    let value: unknown;
    try {
      value = decodeBounded(replying > 0 ? body.subarray(REPLY_PREFIX_BYTES) : body, {
        clientId: host.clientId,
      });
    } catch (error) {
      reservation?.release();
      throw error;
    }
    this.#acks.received++;
    const latest = host.outbox.sent;
    if (replying > 0 && replying < latest && host.onLateReply !== undefined) {
      // Another message was sent since the one it answers: no call may take it.
      reservation?.release();
      host.late.count(latest);
      host.onLateReply(replying, value, latest);
    } else host.inbox.push(value, body.byteLength, reservation, replying);
    this.#acks.count(body.byteLength);
  }

  /** Validates a reply's message number: only a server reads replies, to messages it sent. */
  #checkReply(body: Uint8Array): number {
    const to = replyTo(body);
    const { clientId, outbox } = this.#host;
    if (this.#peerIsServer) {
      throw new ProtocolError("Unexpected reply: a server sends no replies", { clientId });
    }
    if (to < 1 || to > outbox.sent) {
      throw new ProtocolError(
        `Invalid reply: to message "${to}", but ${outbox.sent} were sent`,
        { clientId },
      );
    }
    return to;
  }

  /** Handles a control frame: pings, pongs, acks, close. */
  #control(link: Link, body: Uint8Array): void {
    const kind = body[1];
    const size = body.byteLength;
    const clientId = this.#host.clientId;
    if (link.keepaliveFrame(body)) return;
    if (kind === ACK && size === ACK_BODY_BYTES) {
      this.#host.outbox.ack(ackCount(body), clientId);
    } else if (kind === CLOSE && size === 2) {
      this.#host.peerClosed();
    } else if (kind === HANDSHAKE) {
      throw new ProtocolError("Unexpected handshake message: the handshake is over", { clientId });
    } else {
      throw invalidControlFrame(body, clientId);
    }
  }
}
