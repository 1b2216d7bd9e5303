/**
 * The read side of a session: what it does with each frame its link reads.
 * An application message is decoded into the {@linkcode Inbox} (a reply to
 * an earlier message than the last one sent is late: dropped and counted),
 * counted for the next ack, and reported as progress; a control frame is a
 * ping, a pong, an ack or the peer's close. Large bodies draw on the
 * receive budget while they are read. A long message (PROTOCOL.md §8.8)
 * is an {@linkcode Assembly} from its header to its last part: its large
 * parts are read straight into their arrays, within one budget share.
 *
 * @module
 */

import type { Acks } from "./acks.ts";
import type { Inbox, LateReplies } from "./inbox.ts";
import type { Meter, Reservation } from "./budget.ts";
import type { Outbox } from "./outbox.ts";
import type { SessionListener } from "./session_listener.ts";
import { own } from "./slab.ts";
import { Assembly } from "./assembly.ts";
import type { BufferPool } from "./pool.ts";
import type { Link, ReadHooks } from "../_link/link.ts";
import {
  ACK,
  ACK_BODY_BYTES,
  ackCount,
  CLOSE,
  CONTROL,
  HANDSHAKE,
  invalidControlFrame,
  LONG,
  LONG_PREFIX_BYTES,
  PART,
  PING,
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
  /** Hears of replies late on arrival (`lateReply`). */
  readonly listener: SessionListener | undefined;
  /** The peer sent its close frame (`c1 06`). */
  peerClosed(): void;
}

/** Limits of a {@linkcode Receiver}. */
export interface ReceiverOptions {
  /** Whether the other end is the server (which sends no replies). */
  peerIsServer: boolean;
  /** The largest long message accepted (0: none). */
  maxMessageBytes: number;
  /** Recycled memory for large bodies and long messages' references. */
  pool: BufferPool;
}

/** See the module doc. */
export class Receiver implements ReadHooks {
  readonly #host: ReceiverHost;
  readonly #acks: Acks;
  /** Whether the other end is the server (which sends no replies). */
  readonly #peerIsServer: boolean;
  /** The body being received (large frames): its size and the bytes read of it. */
  #bodyTotal = 0;
  #bodyDone = 0;
  readonly #maxMessageBytes: number;
  readonly #pool: BufferPool;
  /** The long message under way, from its header to its last part. */
  #long: Assembly | undefined;
  /** Data bytes of the part being read into place (0: none). */
  #inPlace = 0;

  /**
   * @param host The session.
   * @param acks The session's acknowledgements.
   * @param options Who the peer is, and the long message limit.
   */
  constructor(host: ReceiverHost, acks: Acks, options: ReceiverOptions) {
    this.#host = host;
    this.#acks = acks;
    this.#peerIsServer = options.peerIsServer;
    this.#maxMessageBytes = options.maxMessageBytes;
    this.#pool = options.pool;
  }

  /**
   * The memory of a large body: recycled, or fresh.
   *
   * @param length The body's size.
   * @returns The memory.
   */
  allocate(length: number): Uint8Array {
    return this.#pool.take(length);
  }

  /** The link dropped: the body under way is abandoned, and any partial long message. */
  abort(): void {
    this.#host.meter.abort();
    this.#bodyTotal = 0;
    this.#long?.discard();
    this.#long = undefined;
    this.#inPlace = 0;
  }

  /**
   * Before a large body is allocated: inside a long message, the place of
   * its data in the current reference (the frame reader reads it there).
   *
   * @param total The body's size.
   * @returns The memory for all but its first 8 bytes, or `undefined` outside a long message.
   * @throws {ProtocolError} If the part is larger than its reference has left.
   */
  bodyTarget(total: number): Uint8Array | undefined {
    if (this.#long === undefined) return undefined;
    const target = this.#long.target(total - LONG_PREFIX_BYTES);
    this.#inPlace = target.byteLength;
    return target;
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

  /** Progress of the long message under way: its reference bytes. */
  #longProgress(long: Assembly): void {
    this.#host.onReceiveProgress?.(long.filled, long.referenceBytes);
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
    const long = this.#long;
    if (long !== undefined && this.#inPlace > 0) {
      // A part read into place: the whole message reserves once, at its first large part.
      if (!start || long.reservation !== undefined) return Promise.resolve(total);
      const allowed = meter.allowance(0, long.referenceBytes - long.filled, true)
        .then(() => total);
      return meter.waiting ? link.keepalive.during(allowed) : allowed;
    }
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
    if (this.#long !== undefined && this.#inLong(body)) return;
    const host = this.#host;
    const reservation = host.meter.complete();
    const total = this.#bodyTotal;
    this.#bodyTotal = 0;
    if (body.byteLength === 0) return; // heartbeat
    let replying = 0;
    if (body[0] === CONTROL) {
      if (body[1] === LONG && body.byteLength > LONG_PREFIX_BYTES) {
        reservation?.release();
        return this.#header(link, body);
      }
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
    this.#deliver(value, body.byteLength, reservation, replying);
  }

  /** Counts a received message, and queues it (or drops it as late). */
  #deliver(value: unknown, size: number, reservation: Reservation | undefined, replying: number) {
    const host = this.#host;
    this.#acks.received++;
    const latest = host.outbox.sent;
    const listener = host.listener;
    if (replying > 0 && replying < latest && listener?.lateReply !== undefined) {
      // Another message was sent since the one it answers: no call may take it.
      reservation?.release();
      host.late.count(latest);
      listener.lateReply(replying, value, latest);
    } else host.inbox.push(value, size, reservation, replying);
    this.#acks.count(size);
  }

  /** A long message's header: the message starts, or is complete if it has no references. */
  #header(link: Link, body: Uint8Array): void {
    const { clientId } = this.#host;
    if (this.#maxMessageBytes === 0) {
      throw new ProtocolError("Unexpected long message: this side did not ask for them", {
        clientId,
      });
    }
    const request = replyTo(body);
    if (request !== 0) this.#checkReply(body);
    // The skeleton's small binaries are views into the body: its own memory.
    if (link.reader.isBuffered(body)) body = own(body);
    const allocate = (length: number) => this.#pool.takeExact(length);
    const long = new Assembly(body, request, this.#maxMessageBytes, clientId, allocate);
    this.#long = long;
    this.#longProgress(long);
    if (long.complete) this.#finish(long);
  }

  /**
   * A frame inside a long message: a part (true), a control frame that may
   * come between parts (false: handled as usual), or a protocol error.
   */
  #inLong(body: Uint8Array): boolean {
    const long = this.#long!;
    const inPlace = this.#inPlace;
    this.#inPlace = 0;
    if (body.byteLength >= LONG_PREFIX_BYTES && body[0] === CONTROL && body[1] === PART) {
      for (let i = 2; i < LONG_PREFIX_BYTES; i++) {
        if (body[i] !== 0) {
          throw new ProtocolError("Invalid long message: a part whose prefix is not zero", {
            clientId: this.#host.clientId,
          });
        }
      }
      if (inPlace > 0) {
        long.reservation ??= this.#host.meter.complete();
        long.part(inPlace);
      } else long.part(body.subarray(LONG_PREFIX_BYTES));
      this.#longProgress(long);
      if (long.complete) this.#finish(long);
      return true;
    }
    if (inPlace > 0) throw long.interrupted("a large frame that is no part");
    if (body.byteLength === 0) return false;
    if (body[0] !== CONTROL) throw long.interrupted("a plain frame");
    const kind = body[1];
    if (kind === REPLY || kind === LONG) {
      throw long.interrupted(kind === REPLY ? "a reply" : "another long message");
    }
    return false;
  }

  /** The last part arrived: the message is received. */
  #finish(long: Assembly): void {
    this.#long = undefined;
    const reservation = long.reservation;
    long.reservation = undefined;
    this.#deliver(long.value, long.size, reservation, long.request);
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
    if (kind === PART) {
      throw new ProtocolError("Invalid long message: a part with no header", {
        clientId: this.#host.clientId,
      });
    }
    const size = body.byteLength;
    const clientId = this.#host.clientId;
    // A peer waiting for acks asks with a ping: the ack goes before the pong (§8.3).
    if (kind === PING) this.#acks.flush();
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
