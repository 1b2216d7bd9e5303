/**
 * One session with a peer, from its welcome on: what the server keeps per
 * client and the client keeps for its server. It is built from a link whose
 * handshake is done (`_handshake/greeting.ts`), and outlives its links: when
 * one drops, it waits `grace` ms for the peer to resume on a new one
 * ({@linkcode Session.resume}), and nothing sent is lost, since every
 * application message stays in the {@linkcode Outbox} until acknowledged.
 * ARCHITECTURE.md follows a message through it.
 *
 * @module
 */

import { Meter } from "./budget.ts";
import { BufferPool } from "./pool.ts";
import type { SessionOptions } from "./session_options.ts";
import type { SessionListener } from "./session_listener.ts";
import { CLOSE, controlFrame } from "../_wire/control.ts";
import { Acks } from "./acks.ts";
import { Inbox, LateReplies } from "./inbox.ts";
import { Links } from "./links.ts";
import type { Link, LinkOwner, ReadHooks } from "../_link/link.ts";
import { isDrop, Peer } from "../_link/peer_errors.ts";
import { DEFAULT_RETAIN_BYTES, type Outbox } from "./outbox.ts";
import { Sender } from "./sender.ts";
import { NO_DEADLINE } from "../_util/wait.ts";
import { Receiver } from "./receiver.ts";
import { PeerDisconnectedError } from "../errors.ts";

/** What a session is doing: connected, waiting for the peer to resume, or over. */
export type SessionState = "connected" | "resuming" | "gone";

/** How long `close()` waits for acknowledgements, then for queued writes, before closing anyway. */
export const CLOSE_FLUSH_MS = 5_000;
/** The body of a close frame. */
const CLOSE_FRAME = controlFrame(CLOSE, new Uint8Array(0));

/** See the module doc. */
export class Session implements LinkOwner {
  /** Bytes received so far, frame headers included. */
  bytesReceived: number;
  /** How many times the session resumed on a new connection. */
  resumes = 0;
  /** Late replies dropped: on arrival here, or when a receiving call met them first. */
  readonly late: LateReplies = new LateReplies();
  /** Called as the body of a received frame arrives: bytes done and its total. */
  onReceiveProgress: ((done: number, total: number) => void) | undefined;
  /** Hears of the session's drops, late replies and end. */
  listener: SessionListener | undefined;
  /** The messages received, waiting to be taken. */
  readonly inbox: Inbox = new Inbox();
  /** Its use of the receive budget (a gather turns metering off). */
  readonly meter: Meter = new Meter();
  /** The send side: every message goes out through {@linkcode Sender.post}. */
  readonly sender: Sender;

  readonly #links = new Links();
  readonly #peer: Peer;
  readonly #maxFrameBytes: number;
  readonly #acks: Acks = new Acks(this.#links);
  #closing = false;
  #over = false;
  /** The session ended by a close frame from the peer or by close(). */
  #clean = false;
  /** Milliseconds a dropped session waits for a resume (0: it ends at the drop). */
  #grace = 0;
  #graceTimer: ReturnType<typeof setTimeout> | undefined;
  /** Since when, and why, the peer is away. */
  #away: { readonly since: number; readonly reason: Error } | undefined;
  readonly #receiver: Receiver;
  readonly #pool: BufferPool;

  /**
   * Takes over a link whose handshake is done.
   *
   * @param link The link, released by its handshake.
   * @param options The id, limits and the shared receive budget.
   */
  constructor(link: Link, options: SessionOptions) {
    this.#peer = new Peer(options.peerIsServer ?? false, options.clientId);
    this.#maxFrameBytes = options.maxFrameBytes;
    this.sender = new Sender(this.#links, this.#acks, this, {
      retainBytes: options.retainBytes ?? DEFAULT_RETAIN_BYTES,
      sendMaxFrameBytes: Math.min(
        options.maxFrameBytes,
        options.peerMaxFrameBytes ?? options.maxFrameBytes,
      ),
      endWhenFullAway: options.fullWhileAway === "end",
      sendMaxMessageBytes: Math.min(
        options.maxMessageBytes ?? 0,
        options.peerMaxMessageBytes ?? 0,
      ),
    });
    this.#pool = options.pool ?? new BufferPool();
    this.#receiver = new Receiver(this, this.#acks, {
      peerIsServer: options.peerIsServer ?? false,
      maxMessageBytes: options.maxMessageBytes ?? 0,
      pool: this.#pool,
    });
    this.meter.budget = options.budget;
    this.bytesReceived = options.bytesReceived ?? 0;
    this.#links.attach(link, this, options.clientId, this.#maxFrameBytes, options.first);
  }

  /** The id of the client at the other end (or of this client). */
  get clientId(): number {
    return this.#peer.clientId!;
  }

  /** The messages sent, until acknowledged. */
  get outbox(): Outbox {
    return this.sender.outbox;
  }

  /** Application messages received so far (also the count acknowledged to the peer). */
  get messagesReceived(): number {
    return this.#acks.received;
  }

  /** Application messages sent so far: the number of the latest. */
  get messagesSent(): number {
    return this.outbox.sent;
  }

  /** Whether the session is over. */
  get over(): boolean {
    return this.#over;
  }

  /** Whether the session is connected, waiting for a resume, or over. */
  get state(): SessionState {
    return this.#over ? "gone" : this.#links.current === undefined ? "resuming" : "connected";
  }

  /**
   * While the session waits for the peer to resume: since when (a
   * `performance.now()` time) and why its connection dropped.
   */
  get away(): { readonly since: number; readonly reason: Error } | undefined {
    return this.#over || this.#links.current !== undefined ? undefined : this.#away;
  }

  /** Milliseconds since the last byte from the peer. */
  get silentFor(): number {
    const link = this.#links.current;
    if (link !== undefined) return link.keepalive.silentFor;
    return performance.now() - (this.#away?.since ?? 0);
  }

  /** The last ping's round trip in ms, or `undefined` before the first pong. */
  get rtt(): number | undefined {
    return this.#links.rtt;
  }

  /** The peer's address (the last one, while resuming). */
  get remoteAddr(): Deno.Addr {
    return this.#links.remoteAddr;
  }

  /** Bytes the sockets have taken so far, frame headers included. */
  get bytesSent(): number {
    return this.#links.bytesSent;
  }

  /** The largest frame body this session accepts. */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
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
   * Waits until the socket took the frame given as `first` (the welcome).
   *
   * @returns Resolves when written.
   * @throws {PeerDisconnectedError} If its link failed before it was written.
   */
  firstWritten(): Promise<void> {
    return this.#links.firstWritten();
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
   * Whether a link that completed a resume handshake can take over: the
   * reason it cannot, or `undefined`.
   *
   * @param peerReceived How many of our messages the peer says it received.
   * @returns Why not, or `undefined`.
   */
  cannotResume(peerReceived: number): string | undefined {
    const { acked, sent } = this.outbox;
    if (this.#over || this.#closing) return "the session is over";
    if (this.#links.current !== undefined) return "the session is still connected";
    if (!Number.isSafeInteger(peerReceived) || peerReceived < acked) {
      return `it says it received "${peerReceived}" messages, but acknowledged ${acked}`;
    }
    if (peerReceived > sent) {
      return `it says it received "${peerReceived}" messages, but ${sent} were sent`;
    }
    return undefined;
  }

  /**
   * Resumes the session on `link` (check {@linkcode Session.cannotResume}
   * first): writes `first` (the server's welcome), then every message the
   * peer has not received, in order.
   *
   * @param link The link, released by its resume handshake.
   * @param peerReceived How many of our messages the peer received.
   * @param first A frame to write before them.
   */
  resume(link: Link, peerReceived: number, first?: Uint8Array): void {
    clearTimeout(this.#graceTimer);
    this.#graceTimer = undefined;
    this.resumes++;
    this.#links.attach(link, this, this.clientId, this.#maxFrameBytes, first);
    for (const frame of this.outbox.resend(peerReceived, this.clientId)) link.queue.push(frame);
    // The peer learnt from the handshake what we received: that is acknowledged.
    this.#acks.told();
  }

  /** The read side: the {@linkcode Receiver} (liveness, budget, long messages, memory). */
  get reading(): ReadHooks {
    return this.#receiver;
  }

  /**
   * Gives a received value's large buffers back for later bodies ({@linkcode BufferPool.recycle}).
   *
   * @param value The value.
   * @returns The bytes taken back.
   */
  recycle(value: unknown): number {
    return this.#pool.recycle(value);
  }

  /**
   * A frame body arrived ({@linkcode Receiver.frame}).
   *
   * @param link The link it arrived on.
   * @param body The body.
   * @throws {ProtocolError} If it breaks the protocol.
   */
  linkFrame(link: Link, body: Uint8Array): void {
    this.#receiver.frame(link, body);
  }

  /** The peer sent its close frame: the session is over, cleanly. */
  peerClosed(): void {
    this.#clean = true;
    const reason = `${this.#peer.Label} closed the session`;
    this.#end(new PeerDisconnectedError(reason, { clientId: this.clientId }));
  }

  /**
   * Whether reading must wait: the inbox is full.
   *
   * @returns What to wait for, or `undefined`.
   */
  linkPause(): Promise<void> | undefined {
    return this.inbox.full && !this.#closing ? this.inbox.space(this.#mustWait) : undefined;
  }

  readonly #mustWait = (full: boolean): boolean => full && !this.#closing;

  /**
   * Nothing was written for a while: a ping, whose pong sets {@linkcode Session.rtt}.
   *
   * @param link The idle link.
   */
  linkIdle(link: Link): void {
    link.ping();
  }

  /**
   * The peer was silent for `ms`: its connection is declared dead.
   *
   * @param link The silent link.
   * @param ms The idle timeout.
   */
  linkSilent(link: Link, ms: number): void {
    this.#linkFailed(link, this.#peer.silent(ms));
  }

  /**
   * Names a write failure: the peer is gone.
   *
   * @param cause The I/O error.
   * @returns The error queued frames get.
   */
  linkWriteError(cause: unknown): Error {
    return this.#peer.disconnected(this.#closing, cause);
  }

  /**
   * A link failed, or its peer ended the stream (`null`).
   *
   * @param link The link.
   * @param error What the reader threw, or `null`.
   */
  linkFailed(link: Link, error: unknown): void {
    this.#linkFailed(
      link,
      error === null
        ? this.#peer.disconnected(this.#closing)
        : this.#peer.describe(error, this.#closing),
    );
  }

  /** The current link failed: the session waits for a resume, or ends. */
  #linkFailed(link: Link, reason: Error): void {
    if (link !== this.#links.current || link.done) return;
    this.#receiver.abort();
    this.#links.drop(link, reason, true);
    if (this.#grace <= 0 || this.#closing || !isDrop(reason)) {
      this.#end(reason);
      return;
    }
    this.#away = { since: performance.now(), reason };
    this.#graceTimer = setTimeout(() => {
      this.#graceTimer = undefined;
      this.#end(
        new PeerDisconnectedError(
          `${this.#peer.Label} did not resume within ${this.#grace} ms`,
          { clientId: this.clientId, cause: reason },
        ),
      );
    }, this.#grace);
    this.listener?.sessionDropped(reason);
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
    this.#graceTimer = undefined;
    this.#acks.stop();
    this.meter.abort();
    this.inbox.end(reason);
    this.outbox.fail(reason);
    const link = this.#links.current;
    if (link !== undefined) this.#links.drop(link, reason, false);
    if (!this.#closing) this.listener?.sessionEnded?.(reason);
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
      if (this.#links.current !== undefined) {
        this.sender.askAcks();
        await Promise.race([
          this.outbox.delivered(this.outbox.sent, NO_DEADLINE).catch(() => {}),
          pause,
          this.#links.dropped,
        ]);
      }
      const link = this.#links.current;
      if (link !== undefined && link.queue.error === undefined) {
        this.#acks.flush(); // what arrived meanwhile, so the peer need not keep it
        link.queue.push([CLOSE_FRAME]);
        await Promise.race([link.queue.flush().catch(() => {}), pause]);
      }
      clearTimeout(timer);
      this.#closing = true;
      this.#clean = true;
      this.inbox.wakeReader();
      // Reading stops first (also a read waiting for the budget); then
      // waiting calls are told, as close() returns.
      this.meter.abort();
      const current = this.#links.current;
      if (current !== undefined) this.#links.drop(current, this.#peer.disconnected(true), false);
      await this.#links.stopped();
      this.#end(this.#peer.disconnected(true));
    }
    await this.#links.stopped();
  }
}
