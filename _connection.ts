/**
 * One session with a peer: what the server keeps per client and the client
 * keeps for its server. A session outlives its TCP connections: when one
 * drops, the session waits for the peer to resume on a new one (PROTOCOL.md
 * §7.2), and nothing sent is lost, since every application message is kept
 * in the {@linkcode Outbox} until the peer acknowledges it.
 *
 * A session is made of the {@linkcode Inbox} (`_inbox.ts`: what was received,
 * until taken), the {@linkcode Outbox} (`_outbox.ts`: what was sent, until
 * acknowledged) and its current {@linkcode Link} (`_link.ts`: the socket,
 * its reader, write queue and keepalive). A link's read loop runs on its own,
 * so a peer's messages are decoded while the caller is busy and a drop is
 * seen at once; a resume hands a new link to the session.
 *
 * A received message: `conn.read` into the read buffer → `FrameReader` cuts
 * the frame → {@linkcode Connection} decodes it → the inbox, until taken. A
 * sent one: `encodeFrame` → the outbox (numbered, retained) → the link's
 * write queue → `conn.write`.
 *
 * @module
 */

import { type ByteBudget, Meter } from "./_budget.ts";
import {
  ACK,
  ACK_BODY_BYTES,
  ackCount,
  ackFrame,
  CLOSE,
  CONTROL,
  controlFrame,
  HANDSHAKE,
  PING,
  PING_BODY_BYTES,
  PlainFrame,
  PONG,
  REPLY,
  REPLY_PREFIX_BYTES,
  replyPrefix,
  replyTo,
  setAckCount,
  setReplyPrefix,
} from "./_control.ts";
import { encodeFrame } from "./_encode_frame.ts";
import { Inbox, LateReplies } from "./_inbox.ts";
import { Link, type LinkOwner } from "./_link.ts";
import { DEFAULT_RETAIN_BYTES, Outbox } from "./_outbox.ts";
import { type Deadline, NO_DEADLINE, within } from "./_wait.ts";
import { own } from "./_slab.ts";
import { decode } from "./codec.ts";
import {
  FrameTooLargeError,
  PeerDisconnectedError,
  ProtocolError,
  SendTimeoutError,
  TruncatedFrameError,
} from "./errors.ts";

/** Options for a {@linkcode Connection}. */
export interface ConnectionOptions {
  /** The largest frame body accepted and sent (validated; default 512 MiB). */
  maxFrameBytes?: number;
  /** The largest frame accepted until {@linkcode Connection.open} (default: maxFrameBytes). */
  handshakeFrameBytes?: number;
  /** Send a ping after this many ms without writing (default 15,000; 0 disables). */
  heartbeatMs?: number;
  /** Declare the peer dead after this many ms without a byte from it (default 60,000; 0: never). */
  idleTimeout?: number;
  /** A budget shared with other connections for large received frames not yet taken. */
  budget?: ByteBudget;
  /** Whether the other end is the server (this is a client's connection), for messages. */
  peerIsServer?: boolean;
  /** Bytes of unacknowledged messages at which sending waits (default 64 MiB). */
  retainBytes?: number;
}

/** What a session is doing: connected, waiting for the peer to resume, or over. */
export type SessionState = "connected" | "resuming" | "gone";

/** How long `close()` waits for acknowledgements, then for queued writes, before closing anyway. */
const CLOSE_FLUSH_MS = 5_000;
/** The default heartbeat interval: below the idle cut-offs of load balancers and NATs. */
export const DEFAULT_HEARTBEAT_MS = 15_000;
/** The default time without a byte from the peer after which it is declared dead. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/** An ack goes out at once after a message body at least this large. */
const ACK_NOW_BYTES = 64 * 1024;
/** … or when this many bytes … */
const ACK_BYTES = 1024 * 1024;
/** … or this many messages are unacknowledged; otherwise within ACK_DELAY_MS. */
const ACK_MESSAGES = 1024;
const ACK_DELAY_MS = 10;
/** The body of a close frame. */
const CLOSE_FRAME = controlFrame(CLOSE, new Uint8Array(0));

/**
 * Whether an error means the connection dropped (the peer vanished, the
 * network cut it, even inside a frame), which a resume mends, rather than a
 * peer breaking the protocol.
 *
 * @param error The error.
 * @returns Whether it is a drop.
 */
export function isDrop(error: unknown): boolean {
  return error instanceof PeerDisconnectedError || error instanceof TruncatedFrameError;
}

/** A framed MessagePack session over one `Deno.Conn` at a time. */
export class Connection implements LinkOwner {
  /** The client id, once known: errors name it. */
  clientId: number | undefined;
  /** Bytes received so far, frame headers included. */
  bytesReceived = 0;
  /** Application messages received so far (also the count acknowledged to the peer). */
  messagesReceived = 0;
  /** How many times the session resumed on a new connection. */
  resumes = 0;
  /** Late replies dropped: on arrival here, or when a receiving call met them first. */
  readonly late: LateReplies = new LateReplies();
  /** Called as the body of a received frame arrives: bytes done and its total. */
  onReceiveProgress: ((done: number, total: number) => void) | undefined;
  /** Called once when the session ends (not after `close()`), with why. */
  onEnd: ((error: Error) => void) | undefined;
  /** Called when the connection drops and the session waits for a resume. */
  onDrop: ((error: Error) => void) | undefined;
  /**
   * Called for a reply that is late on arrival (it answers message `replyTo`,
   * and message `latest` was sent since): it is acknowledged and counted as
   * received, but never queued.
   */
  onLateReply: ((replyTo: number, value: unknown, latest: number) => void) | undefined;
  /** The messages received, waiting to be taken. */
  readonly inbox: Inbox = new Inbox();
  /** The messages sent, until acknowledged. */
  readonly outbox: Outbox;
  /** Its use of the receive budget (given once admitted; a gather turns metering off). */
  readonly meter: Meter = new Meter();

  #link: Link | undefined;
  readonly #maxFrameBytes: number;
  readonly #heartbeatMs: number;
  readonly #idleTimeout: number;
  /** The largest body sent: `maxFrameBytes`, or less if the peer accepts less. */
  #sendMaxFrameBytes: number;
  readonly #peerIsServer: boolean;
  /** Whether frames are still checked against the handshake limit (until `open`). */
  #handshaking: boolean;
  /** A handshake message was read: reading waits for the next ask or `open` (the right limit). */
  #handshakePause = false;
  /** The link went to another session (a resume): this handshake object is spent. */
  #handedOver = false;
  #closing = false;
  #over = false;
  /** The session ended by a close frame from the peer or by close(). */
  #clean = false;
  /** Milliseconds a dropped session waits for a resume (0: it ends at the drop). */
  #grace = 0;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  #droppedAt = 0;
  /** Why the last connection dropped. */
  #dropReason: Error | undefined;
  #lastAddr: Deno.Addr;
  #lastRtt: number | undefined;
  /** Bytes written by the links that are gone. */
  #bytesSentBefore = 0;
  /** Resolved when the current link drops (close() stops waiting for acknowledgements then). */
  #linkDropped = Promise.withResolvers<void>();
  /** Read loops of dropped links, until they stop. */
  readonly #stopping = new Set<Promise<void>>();
  /** The count of the peer's messages last acknowledged, and what came since. */
  #ackSent = 0;
  #unackedBytes = 0;
  /** The write-queue mark of the last message pushed on the current link. */
  #lastMark = 0;
  /** The ack frame, rewritten for each ack (the write queue copies small frames at once). */
  readonly #ackBuffer = ackFrame(0);
  /** The reply prefix, rewritten for each reply (the encoder copies it at once). */
  readonly #prefix = replyPrefix(1);
  /** The body being received (large frames): its size and the bytes read of it. */
  #bodyTotal = 0;
  #bodyDone = 0;

  /**
   * Starts reading from `conn`.
   *
   * @param conn The connection; this object owns it from now on.
   * @param options Limits, heartbeat and the shared receive budget.
   */
  constructor(conn: Deno.Conn, options?: ConnectionOptions) {
    this.#maxFrameBytes = options?.maxFrameBytes ?? 512 * 1024 * 1024;
    this.#sendMaxFrameBytes = this.#maxFrameBytes;
    this.#handshaking = options?.handshakeFrameBytes !== undefined;
    this.#heartbeatMs = options?.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    this.#idleTimeout = options?.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.meter.budget = options?.budget;
    this.#peerIsServer = options?.peerIsServer ?? false;
    this.outbox = new Outbox(options?.retainBytes ?? DEFAULT_RETAIN_BYTES);
    this.#lastAddr = conn.remoteAddr;
    this.#link = this.#startLink(
      conn,
      options?.handshakeFrameBytes ?? this.#maxFrameBytes,
    );
  }

  #startLink(conn: Deno.Conn, maxFrameBytes: number): Link {
    return new Link(conn, this, {
      maxFrameBytes,
      heartbeatMs: this.#heartbeatMs,
      idleTimeout: this.#idleTimeout,
    });
  }

  /**
   * Counts received bytes: liveness, totals and progress.
   *
   * @param link The link they arrived on.
   * @param n How many.
   */
  linkHeard(link: Link, n: number): void {
    this.bytesReceived += n;
    link.keepalive.heard();
    if (this.#bodyTotal > 0) {
      this.#bodyDone = Math.min(this.#bodyTotal, this.#bodyDone + n);
      this.onReceiveProgress?.(this.#bodyDone, this.#bodyTotal);
    }
  }

  /** Whether the session is connected, waiting for a resume, or over. */
  get state(): SessionState {
    return this.#over ? "gone" : this.#link === undefined ? "resuming" : "connected";
  }

  /**
   * While the session waits for the peer to resume: since when (a
   * `performance.now()` time) and why its connection dropped.
   */
  get away(): { readonly since: number; readonly reason: Error } | undefined {
    if (this.#over || this.#link !== undefined || this.#dropReason === undefined) return undefined;
    return { since: this.#droppedAt, reason: this.#dropReason };
  }

  /** Milliseconds since the last byte from the peer. */
  get silentFor(): number {
    const link = this.#link;
    return link !== undefined ? link.keepalive.silentFor : performance.now() - this.#droppedAt;
  }

  /** The last ping's round trip in ms, or `undefined` before the first pong. */
  get rtt(): number | undefined {
    return this.#link?.keepalive.rtt ?? this.#lastRtt;
  }

  /** The peer's address (the last one, while resuming). */
  get remoteAddr(): Deno.Addr {
    return this.#lastAddr;
  }

  /** Bytes the sockets have taken so far, frame headers included. */
  get bytesSent(): number {
    return this.#bytesSentBefore + (this.#link?.queue.bytesSent ?? 0);
  }

  /** Application messages sent so far: the number of the latest. */
  get messagesSent(): number {
    return this.outbox.sent;
  }

  /**
   * Nothing was written for a while: a ping (after the handshake), whose
   * pong sets {@linkcode Connection.rtt}.
   *
   * @param link The idle link.
   */
  linkIdle(link: Link): void {
    if (!this.#handshaking) link.ping();
  }

  /**
   * The peer was silent for `ms`: its connection is declared dead.
   *
   * @param link The silent link.
   * @param ms The idle timeout.
   */
  linkSilent(link: Link, ms: number): void {
    this.#linkFailed(
      link,
      new PeerDisconnectedError(`${this.#Peer()} silent for ${ms} ms: declared dead`, {
        clientId: this.clientId,
      }),
    );
  }

  /**
   * Names a write failure: the peer is gone.
   *
   * @param cause The I/O error.
   * @returns The error queued frames get.
   */
  linkWriteError(cause: unknown): Error {
    return this.#disconnected(cause);
  }

  /**
   * Writes a control frame on the current connection (a handshake message)
   * and waits until the socket took it.
   *
   * @param frame The whole frame.
   * @returns Resolves when written.
   * @throws {PeerDisconnectedError} If the connection is gone.
   */
  async sendControl(frame: Uint8Array): Promise<void> {
    const link = this.#link;
    if (link === undefined) throw this.inbox.ended ?? this.#disconnected();
    await link.queue.written(link.queue.push([frame]));
  }

  /**
   * Numbers, retains and queues one application message.
   *
   * @param chunks The frame, header included.
   * @param progress Called as its bytes are written (on its first connection).
   * @param transient Whether small chunks are scratch memory (copied for retention).
   * @returns Its number, for {@linkcode Connection.delivered}.
   * @throws {Error} The session's error if it is over.
   */
  push(
    chunks: readonly Uint8Array[],
    progress?: (done: number, total: number) => void,
    transient = false,
  ): number {
    const seq = this.outbox.add(chunks, transient);
    const link = this.#link;
    if (link !== undefined && link.queue.error === undefined) {
      // A pending ack goes in front, in the same push: one socket write for both.
      const ack = this.messagesReceived > this.#ackSent ? this.#takeAck() : undefined;
      // Progress counts body bytes, as on the receiving side (the header is 4 bytes).
      const head = 4 + (ack?.byteLength ?? 0);
      const report = progress &&
        ((done: number, total: number) => progress(Math.max(0, done - head), total - head));
      this.#lastMark = link.queue.push(ack === undefined ? chunks : [ack, ...chunks], report);
    }
    return seq;
  }

  /**
   * Waits until the current socket took everything queued on it (not that
   * the peer acknowledged it: see {@linkcode Connection.delivered}).
   *
   * @returns Resolves when written, or at once while there is no connection.
   * @throws {PeerDisconnectedError} If writing failed.
   */
  async drained(): Promise<void> {
    await this.#link?.queue.flush();
  }

  /**
   * What a sender waits for after {@linkcode Connection.push}: the peer's
   * acknowledgement if the message lends memory (it is kept by reference)
   * or the outbox is full; the socket if more than 1 MiB waits unwritten
   * (as backpressure); else nothing. A peer that is away (the session waits
   * for its resume) is not waited for: the message waits in the outbox for
   * the resume, in memory of its own if it lent the caller's
   * ({@linkcode Outbox.keep}), so a dead peer never stalls the sender.
   *
   * @param seq The message's number.
   * @param borrowed Whether it lends the caller's memory.
   * @param deadline The caller's deadline.
   * @param copies Copies of lent frames made so far (one per frame for a broadcast).
   * @returns The wait, or `undefined` if there is none.
   */
  settled(
    seq: number,
    borrowed: boolean,
    deadline: Deadline,
    copies: WeakMap<readonly Uint8Array[], readonly Uint8Array[]> = new WeakMap(),
  ): Promise<void> | undefined {
    const link = this.#link;
    if (link === undefined) {
      if (this.#over) return this.outbox.delivered(seq, deadline); // throws the end reason
      if (borrowed) this.outbox.keep(seq, copies);
      return undefined;
    }
    let wait: Promise<unknown>;
    if (borrowed || this.outbox.full) wait = this.outbox.delivered(seq, deadline);
    else if (link.queue.congested) wait = within(link.queue.written(this.#lastMark), deadline);
    else return undefined;
    const dropped = this.#linkDropped.promise;
    return Promise.race([wait, dropped]).then(
      () => this.#away(link, seq, borrowed, copies),
      (error) => {
        // A write that failed because the link dropped: the message waits for the resume.
        if (link.done && this.#link !== link && !this.#over) {
          return this.#away(link, seq, borrowed, copies);
        }
        throw error;
      },
    );
  }

  /** After a wait in `settled`: if `link` dropped meanwhile, keeps the message for the resume. */
  #away(
    link: Link,
    seq: number,
    borrowed: boolean,
    copies: WeakMap<readonly Uint8Array[], readonly Uint8Array[]>,
  ): void {
    if (this.#link === link || seq <= this.outbox.acked) return;
    if (this.#over) throw this.outbox.error;
    if (borrowed) this.outbox.keep(seq, copies);
  }

  /**
   * Waits while the outbox is full and the peer connected: until it
   * acknowledged enough, or its connection dropped.
   *
   * @param deadline The caller's deadline.
   * @returns Resolves when there is room, or the peer is away.
   * @throws {Error} The session's end reason, or the deadline's error.
   */
  async room(deadline: Deadline): Promise<void> {
    if (this.#link === undefined) return;
    await Promise.race([this.outbox.room(deadline), this.#linkDropped.promise]);
  }

  /**
   * Waits until message `seq` was acknowledged by the peer.
   *
   * @param seq From {@linkcode Connection.push}.
   * @param deadline The caller's deadline.
   * @returns Resolves once acknowledged.
   * @throws {Error} The session's end reason, or the deadline's error.
   */
  delivered(seq: number, deadline: Deadline = NO_DEADLINE): Promise<void> {
    return this.outbox.delivered(seq, deadline);
  }

  /**
   * Waits for the next handshake message, letting reading go on until it comes.
   *
   * @param deadline The handshake's deadline.
   * @returns The decoded map (or a `PlainFrame`).
   * @throws {Error} The end reason, or the deadline's error.
   */
  nextHandshake(deadline: Deadline): Promise<unknown> {
    this.#handshakePause = false;
    this.inbox.wakeReader();
    return this.inbox.next(deadline);
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
  linkBodyAllowance(link: Link, filled: number, total: number, start: boolean): Promise<number> {
    if (start) {
      this.#bodyTotal = total;
      this.#bodyDone = filled;
      this.onReceiveProgress?.(filled, total);
    }
    const allowed = this.meter.allowance(filled, total, start);
    // Reading waits for the budget: the peer's silence proves nothing meanwhile.
    return this.meter.waiting ? link.keepalive.during(allowed) : allowed;
  }

  /**
   * Ends the handshake phase: names the client in errors from now on and
   * accepts frames up to `maxFrameBytes`. Reading pauses after the first
   * handshake message until this is called, so a large frame right behind it
   * is checked against the raised limit.
   *
   * @param clientId The id of the client at the other end (or of this client).
   * @param peerMaxFrameBytes The largest body the peer accepts, if it said:
   * larger values are refused when sending.
   */
  open(clientId: number, peerMaxFrameBytes?: number): void {
    this.clientId = clientId;
    const link = this.#link!;
    link.reader.clientId = clientId;
    link.reader.maxFrameBytes = this.#maxFrameBytes;
    if (peerMaxFrameBytes !== undefined) {
      this.#sendMaxFrameBytes = Math.min(this.#maxFrameBytes, peerMaxFrameBytes);
    }
    this.#handshaking = false;
    this.#handshakePause = false;
    this.inbox.wakeReader();
  }

  /**
   * Lets the session wait for a resume when its connection drops.
   *
   * @param grace Milliseconds to wait for the peer (0: a drop ends the session).
   */
  allowResume(grace: number): void {
    this.#grace = grace;
  }

  /**
   * Whether `fresh`, a connection that completed a resume handshake, can take
   * over: the reason it cannot, or `undefined`.
   *
   * @param peerReceived How many of our messages the peer says it received.
   * @returns Why not, or `undefined`.
   */
  cannotResume(peerReceived: number): string | undefined {
    if (this.#over || this.#closing) return "the session is over";
    if (this.#link !== undefined) return "the session is still connected";
    if (!Number.isSafeInteger(peerReceived) || peerReceived < this.outbox.acked) {
      return `it says it received "${peerReceived}" messages, but acknowledged ${this.outbox.acked}`;
    }
    if (peerReceived > this.outbox.sent) {
      return `it says it received "${peerReceived}" messages, but ${this.outbox.sent} were sent`;
    }
    return undefined;
  }

  /**
   * Resumes the session on `fresh`'s connection (which completed a resume
   * handshake; check {@linkcode Connection.cannotResume} first): writes
   * `first` (the server's welcome), then every message the peer has not
   * received, in order, and an ack of what we received.
   *
   * @param fresh The handshake's connection; it is spent afterwards.
   * @param peerReceived How many of our messages the peer received.
   * @param first A frame to write before them.
   */
  adopt(fresh: Connection, peerReceived: number, first?: Uint8Array): void {
    const link = fresh.#link!;
    fresh.#link = undefined;
    fresh.#handedOver = true;
    clearTimeout(this.#graceTimer);
    this.#graceTimer = undefined;
    link.owner = this;
    this.#link = link;
    this.#lastAddr = link.conn.remoteAddr;
    this.resumes++;
    link.reader.clientId = this.clientId;
    link.reader.maxFrameBytes = this.#maxFrameBytes;
    if (first !== undefined) link.queue.push([first]);
    for (const frame of this.outbox.resend(peerReceived, this.clientId)) link.queue.push(frame);
    // The peer learnt from the handshake what we received: that is acknowledged.
    this.#ackSent = this.messagesReceived;
    this.#unackedBytes = 0;
    // The spent handshake object's wait for `open` ends; reading goes on for this session.
    fresh.inbox.wakeReader();
  }

  /** The largest frame body this connection accepts. */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  /** The largest frame body this connection sends: its own limit or the peer's, if smaller. */
  get sendMaxFrameBytes(): number {
    return this.#sendMaxFrameBytes;
  }

  /** Whether the session ended by a close: the peer's (`c1 06`) or ours. */
  get closedCleanly(): boolean {
    return this.#clean;
  }

  /** Why the session ended (the peer left, broke the protocol, or we closed), or `undefined`. */
  get ended(): Error | undefined {
    return this.inbox.ended;
  }

  /**
   * Encodes and queues one value; waits for the peer's acknowledgement only
   * if the value lends memory (large binaries) or the connection is congested.
   *
   * @param value The value.
   * @param progress Called as its bytes are written: done and total.
   * @param to The number of the peer's message it answers (a reply), or 0.
   * @param deadline The caller's deadline.
   * @returns Resolves when queued or acknowledged, as above.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {FrameTooLargeError} If it encodes to more than the send limit.
   * @throws {PeerDisconnectedError} If the session is over.
   * @throws {SendTimeoutError} If the deadline fired: before the value was queued, or after.
   */
  async send(
    value: unknown,
    progress?: (done: number, total: number) => void,
    to = 0,
    deadline: Deadline = NO_DEADLINE,
  ): Promise<void> {
    // Checked again after each wake: concurrent senders take turns.
    try {
      while (this.outbox.full) await this.outbox.room(deadline);
    } catch (error) {
      throw SendTimeoutError.from(error, false);
    }
    const { chunks, borrowed } = encodeFrame(
      value,
      this.#sendMaxFrameBytes,
      true,
      to > 0 ? setReplyPrefix(this.#prefix, to) : undefined,
    );
    const seq = this.push(chunks, progress, true);
    const wait = this.settled(seq, borrowed, deadline);
    if (wait !== undefined) {
      await wait.catch((error) => Promise.reject(SendTimeoutError.from(error, true)));
    }
  }

  /** Whether reading must pause: the inbox is full, or a handshake message awaits `open`. */
  readonly #mustWait = (full: boolean): boolean =>
    !this.#closing && !this.#handedOver &&
    (full || this.#handshaking && this.#handshakePause);

  /**
   * Whether reading must wait: the inbox is full, or a handshake message
   * awaits `open` (the right limit for what follows).
   *
   * @returns What to wait for, or `undefined`.
   */
  linkPause(): Promise<void> | undefined {
    return this.#mustWait(this.inbox.full) ? this.inbox.space(this.#mustWait) : undefined;
  }

  /**
   * A link failed, or its peer ended the stream (`null`).
   *
   * @param link The link.
   * @param error What the reader threw, or `null`.
   */
  linkFailed(link: Link, error: unknown): void {
    this.#linkFailed(link, error === null ? this.#disconnected() : this.#describe(error));
  }

  /**
   * Decodes a frame body into the inbox, or handles a control frame.
   *
   * @param link The link it arrived on.
   * @param body The body.
   * @throws {ProtocolError} If it breaks the protocol.
   */
  linkFrame(link: Link, body: Uint8Array): void {
    const reservation = this.meter.complete();
    const total = this.#bodyTotal;
    this.#bodyTotal = 0;
    if (body.byteLength === 0) return; // heartbeat
    let replying = 0;
    if (body[0] === CONTROL) {
      if (body.byteLength < REPLY_PREFIX_BYTES || body[1] !== REPLY || this.#handshaking) {
        reservation?.release();
        this.#control(link, body);
        return;
      }
      replying = this.#checkReply(body);
    }
    if (!this.#handshaking && total === 0) {
      this.onReceiveProgress?.(body.byteLength, body.byteLength);
    }
    // A small body is a view into the read buffer, which the next read
    // overwrites: move it to memory of its own before decoding views into it.
    if (link.reader.isBuffered(body)) body = own(body);
    let value: unknown;
    try {
      value = decode(replying > 0 ? body.subarray(REPLY_PREFIX_BYTES) : body, {
        clientId: this.clientId,
      });
    } catch (error) {
      reservation?.release();
      throw error;
    }
    if (this.#handshaking) {
      // A version 1 peer's hello: the handshake answers it in a form it reads.
      reservation?.release();
      this.#handshakePause = true;
      this.inbox.push(new PlainFrame(value), body.byteLength);
      return;
    }
    this.messagesReceived++;
    const latest = this.outbox.sent;
    if (replying > 0 && replying < latest && this.onLateReply !== undefined) {
      // Another message was sent since the one it answers: no call may take it.
      reservation?.release();
      this.late.count(latest);
      this.onLateReply(replying, value, latest);
    } else this.inbox.push(value, body.byteLength, reservation, replying);
    this.#received(link, body.byteLength);
  }

  /** Validates a reply's message number: only a server reads replies, to messages it sent. */
  #checkReply(body: Uint8Array): number {
    const to = replyTo(body);
    if (this.#peerIsServer) {
      throw new ProtocolError("Unexpected reply: a server sends no replies", {
        clientId: this.clientId,
      });
    }
    if (to < 1 || to > this.outbox.sent) {
      throw new ProtocolError(
        `Invalid reply: to message "${to}", but ${this.outbox.sent} were sent`,
        { clientId: this.clientId },
      );
    }
    return to;
  }

  /** Counts a received application message and acknowledges it in time. */
  #received(link: Link, bytes: number): void {
    this.#unackedBytes += bytes;
    if (
      bytes >= ACK_NOW_BYTES || this.#unackedBytes >= ACK_BYTES ||
      this.messagesReceived - this.#ackSent >= ACK_MESSAGES
    ) {
      this.#ack(link);
    } else {
      // One timer for every connection of the process: most acks ride on a
      // frame sent before it fires, and a timer per message would cost more.
      Connection.#dueAcks.add(this);
      if (Connection.#ackTimer === undefined) {
        Connection.#ackTimer = setTimeout(Connection.#flushAcks, ACK_DELAY_MS);
        Deno.unrefTimer(Connection.#ackTimer);
      }
    }
  }

  /** Connections owing an ack, and the timer that sends them. */
  static readonly #dueAcks = new Set<Connection>();
  static #ackTimer: ReturnType<typeof setTimeout> | undefined;
  static #flushAcks = (): void => {
    Connection.#ackTimer = undefined;
    const due = [...Connection.#dueAcks];
    Connection.#dueAcks.clear();
    for (const connection of due) {
      const link = connection.#link;
      if (link !== undefined) connection.#ack(link);
    }
  };

  /** Acknowledges every message received so far. */
  #ack(link: Link): void {
    if (this.messagesReceived === this.#ackSent || link.queue.error !== undefined) {
      this.#takeAck();
      return;
    }
    link.queue.push([this.#takeAck()!]);
  }

  /** The ack of every message received so far, now counted as sent (`undefined` if none is due). */
  #takeAck(): Uint8Array | undefined {
    Connection.#dueAcks.delete(this);
    if (this.messagesReceived === this.#ackSent) return undefined;
    this.#ackSent = this.messagesReceived;
    this.#unackedBytes = 0;
    return setAckCount(this.#ackBuffer, this.#ackSent);
  }

  /** Handles a control frame: pings, pongs, acks, close, handshake messages. */
  #control(link: Link, body: Uint8Array): void {
    const kind = body[1];
    const size = body.byteLength;
    if ((kind === PING || kind === PONG) && size === PING_BODY_BYTES) {
      if (kind === PING) {
        if (link.queue.error === undefined) link.queue.push([controlFrame(PONG, body.subarray(2))]);
      } else {
        link.keepalive.pong(body.subarray(2));
      }
      return;
    }
    if (kind === HANDSHAKE) {
      if (!this.#handshaking) {
        throw new ProtocolError("Unexpected handshake message: the handshake is over", {
          clientId: this.clientId,
        });
      }
      const payload = link.reader.isBuffered(body) ? own(body.subarray(2)) : body.subarray(2);
      this.#handshakePause = true;
      this.inbox.push(decode(payload, { clientId: this.clientId }), body.byteLength);
      return;
    }
    if (!this.#handshaking && kind === ACK && size === ACK_BODY_BYTES) {
      this.outbox.ack(ackCount(body), this.clientId);
      return;
    }
    if (!this.#handshaking && kind === CLOSE && size === 2) {
      this.#clean = true;
      this.#end(
        new PeerDisconnectedError(`${this.#Peer()} closed the session`, {
          clientId: this.clientId,
        }),
      );
      return;
    }
    throw new ProtocolError(
      size < 2
        ? "Invalid control frame: no kind byte"
        : `Invalid control frame: kind "${kind}" with ${size} body bytes`,
      { clientId: this.clientId },
    );
  }

  /** Who is at the other end, for messages: `client "3"`, `server` or `peer`. */
  #peer(): string {
    if (this.#peerIsServer) return "server";
    return this.clientId === undefined ? "peer" : `client "${this.clientId}"`;
  }

  /** {@linkcode Connection.#peer}, capitalised to start a message. */
  #Peer(): string {
    const who = this.#peer();
    return `${who[0].toUpperCase()}${who.slice(1)}`;
  }

  #disconnected(cause?: unknown): PeerDisconnectedError {
    return new PeerDisconnectedError(
      this.#closing ? "Connection closed: close() was called" : `${this.#Peer()} disconnected`,
      { clientId: this.clientId, cause },
    );
  }

  /** Names the peer in an error from the reader; I/O errors mean the peer is gone. */
  #describe(error: unknown): Error {
    if (error instanceof FrameTooLargeError || error instanceof ProtocolError) {
      (error as { clientId?: number }).clientId ??= this.clientId;
      error.message = `${error.message}: from ${this.#peer()}`;
      return error;
    }
    return this.#disconnected(error);
  }

  /** Closes a link's socket and stops its parts; the session decides what comes next. */
  #dropLink(link: Link, reason: Error): void {
    this.#bytesSentBefore += link.queue.bytesSent;
    this.#lastRtt = link.keepalive.rtt ?? this.#lastRtt;
    link.drop(reason);
    this.#stopping.add(link.loop);
    link.loop.finally(() => this.#stopping.delete(link.loop));
  }

  /** The current link failed: the session waits for a resume, or ends. */
  #linkFailed(link: Link, reason: Error): void {
    if (link !== this.#link || link.done) return;
    this.#link = undefined;
    this.meter.abort();
    this.#bodyTotal = 0;
    this.#dropLink(link, reason);
    this.#linkDropped.resolve();
    this.#linkDropped = Promise.withResolvers<void>();
    const resumable = this.#grace > 0 && !this.#closing && !this.#handshaking && isDrop(reason);
    if (!resumable) {
      this.#end(reason);
      return;
    }
    this.#droppedAt = performance.now();
    this.#dropReason = reason;
    this.#graceTimer = setTimeout(() => {
      this.#graceTimer = undefined;
      this.#end(
        new PeerDisconnectedError(
          `${this.#Peer()} did not resume within ${this.#grace} ms`,
          { clientId: this.clientId, cause: reason },
        ),
      );
    }, this.#grace);
    this.onDrop?.(reason);
  }

  /**
   * Ends the session now (the client gave up resuming, say): waiting calls get `reason`.
   *
   * @param reason Why.
   */
  end(reason: Error): void {
    this.#end(reason);
  }

  #end(reason: Error): void {
    if (this.#over) return;
    this.#over = true;
    clearTimeout(this.#graceTimer);
    Connection.#dueAcks.delete(this);
    this.#graceTimer = undefined;
    this.meter.abort();
    this.inbox.end(reason);
    this.outbox.fail(reason);
    const link = this.#link;
    this.#link = undefined;
    if (link !== undefined) this.#dropLink(link, reason);
    if (!this.#closing) this.onEnd?.(reason);
  }

  /**
   * Ends the session: waits (at most 5 s) until the peer acknowledged every
   * message sent, tells it the session is over (`c1 06`), writes what is
   * queued, closes the socket and waits for reading to stop.
   *
   * @returns Resolves when the session is fully closed.
   */
  async close(): Promise<void> {
    if (!this.#closing && !this.#over) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const pause = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_FLUSH_MS));
      const opened = this.clientId !== undefined && !this.#handshaking;
      if (opened && this.#link !== undefined) {
        await Promise.race([
          this.outbox.delivered(this.outbox.sent, NO_DEADLINE).catch(() => {}),
          pause,
          this.#linkDropped.promise,
        ]);
      }
      const link = this.#link;
      if (link !== undefined && link.queue.error === undefined) {
        if (opened) {
          this.#ack(link); // what arrived meanwhile, so the peer need not keep it
          link.queue.push([CLOSE_FRAME]);
        }
        await Promise.race([link.queue.flush().catch(() => {}), pause]);
      }
      clearTimeout(timer);
      this.#closing = true;
      this.#clean = true;
      this.inbox.wakeReader();
      // Reading stops first (also a read waiting for the budget); then
      // waiting calls are told, as close() returns.
      this.meter.abort();
      if (link !== undefined) {
        this.#link = undefined;
        this.#dropLink(link, this.#disconnected());
      }
      await Promise.all([...this.#stopping]);
      this.#end(this.#disconnected());
    }
    await Promise.all([...this.#stopping]);
  }
}
