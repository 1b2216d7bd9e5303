/**
 * The send side of a session and its one send policy: a message is
 * numbered and kept in the {@linkcode Outbox} until the peer acknowledges
 * it, queued on the current link (with any ack due in front, one socket
 * write for both), and the sender waits only where it must:
 *
 * - while the outbox is full (`retainBytes` unacknowledged), for room, if
 *   the peer is connected. A server's session whose peer is away does not
 *   wait (a dead site must not stall a round): it holds the message, until
 *   twice `retainBytes` are unacknowledged; a message that finds that much
 *   ends the session instead (memory stays bounded). A connection that
 *   drops in the middle of one large model, while the next message waits
 *   for room behind it, so costs the site nothing: it resumes and gets both;
 * - after queuing, for the peer's acknowledgement if the message lends the
 *   caller's memory (large binaries are kept by reference), or for the
 *   socket if more than 1 MiB waits unwritten (backpressure);
 * - never for a peer that is away: the message waits in the outbox for the
 *   resume, in memory of its own if it lent the caller's.
 *
 * `Server.broadcast`/`send` and `Client.send`/`reply` all go through
 * {@linkcode Sender.post}.
 *
 * @module
 */

import { ACK_BYTES, ACK_MESSAGES, type Acks } from "./acks.ts";
import type { Links } from "./links.ts";
import { Outbox } from "./outbox.ts";
import type { Link } from "../_link/link.ts";
import { replyPrefix, setReplyPrefix } from "../_wire/control.ts";
import { type EncodedFrame, encodeFrame, type LongOptions } from "../_codec/encode_frame.ts";
import { type Deadline, NO_DEADLINE, within } from "../_util/wait.ts";
import {
  FrameTooLargeError,
  MessageTooLargeError,
  PeerDisconnectedError,
  SendTimeoutError,
} from "../errors.ts";

/**
 * The reply prefix, rewritten for each reply of every session of the
 * process: the encoder copies it into the frame at once.
 */
const prefixScratch = replyPrefix(1);

/** Copies of lent frames made so far, shared by the sessions of one broadcast. */
export type Copies = WeakMap<readonly Uint8Array[], readonly Uint8Array[]>;

/** A progress callback: bytes done, and the total. */
type Progress = (done: number, total: number) => void;

/** How a caller tells errors: before its message was queued (`false`), or after. */
type Wrap = (error: unknown, queued: boolean) => unknown;

/** What the sender needs of its session. */
export interface SenderHost {
  /** The client's id, for errors. */
  readonly clientId: number;
  /** Whether the session is over. */
  readonly over: boolean;
  /** Ends the session. */
  end(reason: Error): void;
}

/** Limits of a {@linkcode Sender}. */
export interface SenderOptions {
  /** Bytes of unacknowledged messages at which sending waits. */
  retainBytes: number;
  /** The largest frame body sent. */
  sendMaxFrameBytes: number;
  /** End the session, rather than wait, when the outbox is full while the peer is away. */
  endWhenFullAway: boolean;
  /** The largest long message sent: the smaller of both sides' limits (0: none). */
  sendMaxMessageBytes: number;
}

/** See the module doc. */
export class Sender {
  /** The messages sent, until acknowledged. */
  readonly outbox: Outbox;
  readonly #links: Links;
  readonly #acks: Acks;
  readonly #host: SenderHost;
  readonly #sendMaxFrameBytes: number;
  readonly #endWhenFullAway: boolean;
  readonly #long: LongOptions;
  /** The write-queue mark of the last message pushed on the current link. */
  #lastMark = 0;
  /** The ack count at which {@linkcode Sender.askAcks} last asked (one ping per wait). */
  #askedAt = -1;

  /**
   * @param links The session's links.
   * @param acks The session's acknowledgements (one may ride in front of a message).
   * @param host The session.
   * @param options The limits.
   */
  constructor(links: Links, acks: Acks, host: SenderHost, options: SenderOptions) {
    this.#links = links;
    this.#acks = acks;
    this.#host = host;
    this.outbox = new Outbox(options.retainBytes);
    this.#sendMaxFrameBytes = options.sendMaxFrameBytes;
    this.#endWhenFullAway = options.endWhenFullAway;
    this.#long = { maxMessageBytes: options.sendMaxMessageBytes };
  }

  /**
   * Sends one message under the send policy (see the module doc) and
   * returns what the caller waits for. Encoding waits for room too: a
   * transient encoding is valid only until the next one. Nothing is
   * allocated for a message that needs no wait.
   *
   * @param encode Encodes the message (called once, when there is room).
   * @param deadline The caller's deadline.
   * @param progress Called as its bytes are written (on its first connection).
   * @param copies Copies of lent frames made so far (one per frame for a broadcast).
   * @returns The wait, or `undefined` if there is none.
   * @throws {Error} The encoder's error, or the session's if it is over.
   */
  post(
    encode: () => EncodedFrame,
    deadline: Deadline,
    progress?: Progress,
    copies?: Copies,
  ): Promise<void> | undefined {
    if (this.outbox.full) return this.#postWhenRoom(encode, deadline, progress, copies);
    return this.#queue(this.#fits(encode()), progress, false, deadline, copies);
  }

  /**
   * Checks a frame encoded for many peers (a broadcast) against this peer:
   * a long message only to a peer that takes long messages that large.
   */
  #fits(frame: EncodedFrame): EncodedFrame {
    const size = frame.longBytes;
    if (size === undefined) return frame;
    const clientId = this.#host.clientId;
    const max = this.#long.maxMessageBytes;
    if (max === 0) {
      throw new FrameTooLargeError(frame.frameBytes!, this.#sendMaxFrameBytes, { clientId });
    }
    if (size > max) throw new MessageTooLargeError(size, max, { clientId });
    return frame;
  }

  /**
   * Encodes and sends one value (the client's `send` and `reply`): as
   * {@linkcode Sender.post}, with the reply prefix, the encoder's scratch
   * memory and `SendTimeoutError`s.
   *
   * @param value The value.
   * @param progress Called as its bytes are written: done and total.
   * @param to The number of the peer's message it answers (a reply), or 0.
   * @param deadline The caller's deadline.
   * @returns Resolves when queued or acknowledged, as the policy says.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {FrameTooLargeError} If it encodes to more than the send limit.
   * @throws {PeerDisconnectedError} If the session is over.
   * @throws {SendTimeoutError} If the deadline fired: before the value was queued, or after.
   */
  async send(
    value: unknown,
    progress?: Progress,
    to = 0,
    deadline: Deadline = NO_DEADLINE,
  ): Promise<void> {
    if (this.outbox.full) {
      const encode = () => this.#encode(value, to);
      const client = { transient: true, wrap: SendTimeoutError.from };
      return await this.#postWhenRoom(encode, deadline, progress, undefined, client);
    }
    const wait = this.#queue(this.#encode(value, to), progress, true, deadline, undefined);
    if (wait !== undefined) {
      await wait.catch((error) => Promise.reject(SendTimeoutError.from(error, true)));
    }
  }

  /** A value as a whole frame, into the encoder's scratch memory (a reply: with its prefix). */
  #encode(value: unknown, to: number): EncodedFrame {
    const prefix = to > 0 ? setReplyPrefix(prefixScratch, to) : undefined;
    return encodeFrame(value, this.#sendMaxFrameBytes, true, prefix, this.#long);
  }

  /** Numbers, retains and queues an encoded frame; returns what the sender waits for. */
  #queue(
    frame: EncodedFrame,
    progress: Progress | undefined,
    transient: boolean,
    deadline: Deadline,
    copies: Copies | undefined,
  ): Promise<void> | undefined {
    return this.#settled(
      this.#push(frame.chunks, progress, transient),
      frame.borrowed,
      deadline,
      copies,
    );
  }

  /**
   * {@linkcode Sender.post}, or `send` (`client`: transient encodings and
   * `SendTimeoutError`s), when the outbox is full: waits for room first.
   */
  async #postWhenRoom(
    encode: () => EncodedFrame,
    deadline: Deadline,
    progress: Progress | undefined,
    copies: Copies | undefined,
    client?: { transient: boolean; wrap: Wrap },
  ): Promise<void> {
    const wrap = client?.wrap;
    try {
      // Checked again after each wake: concurrent senders take turns.
      while (this.outbox.full && !this.#host.over) {
        const away = this.#links.current === undefined;
        if (away && this.#endWhenFullAway) {
          if (this.outbox.bytes >= 2 * this.outbox.limit) return this.#fellBehind();
          break; // held for the resume, without waiting
        }
        await (away ? this.outbox.room(deadline) : this.#room(deadline));
      }
    } catch (error) {
      throw wrap === undefined ? error : wrap(error, false);
    }
    const frame = this.#fits(encode());
    const wait = this.#queue(frame, progress, client?.transient ?? false, deadline, copies);
    if (wait !== undefined) {
      await (wrap === undefined ? wait : wait.catch((error) => Promise.reject(wrap(error, true))));
    }
  }

  /** While connected: waits until the peer acknowledged enough, or its link dropped. */
  async #room(deadline: Deadline): Promise<void> {
    this.#askSmall();
    await Promise.race([this.outbox.room(deadline), this.#links.dropped]);
  }

  /**
   * Asks the peer for the acks it owes (PROTOCOL.md §8.3), for a caller
   * about to wait for them: a ping, whose pong comes after the ack. Once per
   * ack count (one wait, one ping), and only while messages are unacknowledged.
   */
  askAcks(): void {
    const link = this.#links.current;
    const acked = this.outbox.acked;
    if (link === undefined || this.outbox.unacked === 0 || this.#askedAt === acked) return;
    this.#askedAt = acked;
    link.ping();
  }

  /**
   * Asks for acks when the outbox is full of less than the peer acknowledges
   * at once (1 MiB, 1,024 messages: a `retainBytes` below 1 MiB); above that
   * the ack is on its way without being asked for.
   */
  #askSmall(): void {
    if (this.outbox.bytes < ACK_BYTES && this.outbox.unacked < ACK_MESSAGES) this.askAcks();
  }

  /** Ends the session of a peer away with twice `retainBytes` of unacknowledged messages. */
  #fellBehind(): void {
    const id = this.#host.clientId;
    this.#host.end(
      new PeerDisconnectedError(
        `Client "${id}" fell behind while away: ${this.outbox.bytes} bytes of unacknowledged ` +
          `messages reached twice retainBytes (${this.outbox.limit}); its session is over`,
        { clientId: id },
      ),
    );
  }

  /** Numbers, retains and queues one message; a pending ack goes in front. */
  #push(chunks: readonly Uint8Array[], progress: Progress | undefined, transient: boolean): number {
    const seq = this.outbox.add(chunks, transient);
    const link = this.#links.current;
    if (link !== undefined && link.queue.error === undefined) {
      const ack = this.#acks.due ? this.#acks.take() : undefined;
      // Progress counts body bytes, as on the receiving side (the header is 4 bytes).
      const head = 4 + (ack?.byteLength ?? 0);
      const report = progress &&
        ((done: number, total: number) => progress(Math.max(0, done - head), total - head));
      // A frame not in scratch memory stays unchanged until acknowledged: written from place.
      this.#lastMark = ack === undefined
        ? link.queue.push(chunks, report, !transient)
        : link.queue.push([ack, ...chunks], report);
    }
    return seq;
  }

  /** What a sender waits for after pushing message `seq` (see the module doc). */
  #settled(
    seq: number,
    borrowed: boolean,
    deadline: Deadline,
    copies: Copies | undefined,
  ): Promise<void> | undefined {
    const link = this.#links.current;
    if (link === undefined) {
      if (this.#host.over) return this.outbox.delivered(seq, deadline); // throws the end reason
      if (borrowed) this.outbox.keep(seq, copies ?? new WeakMap());
      return undefined;
    }
    let wait: Promise<unknown>;
    if (borrowed) wait = this.outbox.delivered(seq, deadline); // acknowledged at once (§8.3)
    else if (this.outbox.full) {
      this.#askSmall();
      wait = this.outbox.delivered(seq, deadline);
    } else if (link.queue.congested) wait = within(link.queue.written(this.#lastMark), deadline);
    else return undefined;
    return Promise.race([wait, this.#links.dropped]).then(
      () => this.#away(link, seq, borrowed, copies),
      (error) => {
        // A write that failed because the link dropped: the message waits for the resume.
        if (link.done && this.#links.current !== link && !this.#host.over) {
          return this.#away(link, seq, borrowed, copies);
        }
        throw error;
      },
    );
  }

  /** After a wait in `#settled`: if `link` dropped meanwhile, keeps the message for the resume. */
  #away(link: Link, seq: number, borrowed: boolean, copies: Copies | undefined): void {
    if (this.#links.current === link || seq <= this.outbox.acked) return;
    if (this.#host.over) throw this.outbox.error;
    if (borrowed) this.outbox.keep(seq, copies ?? new WeakMap());
  }
}
