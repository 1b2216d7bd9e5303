/**
 * One framed MessagePack connection: what the server keeps per client and
 * the client keeps for its server. It puts together the three parts, each in
 * its own file: the socket reader (`FrameReader`, `_frame_reader.ts`), the
 * {@linkcode Inbox} (`_inbox.ts`) and the {@linkcode WriteQueue}
 * (`_write_queue.ts`).
 *
 * Reading runs on its own as soon as the connection exists, so a peer's
 * messages are decoded while the caller is busy and a disconnect is seen at
 * once. A received message follows this path: `conn.read` into the read
 * buffer → `FrameReader` cuts the frame → {@linkcode Connection} decodes it
 * → the inbox, until taken. A sent one: `encodeFrame` → the write queue →
 * `conn.write`.
 *
 * @module
 */

import { type ByteBudget, Meter } from "./_budget.ts";
import {
  CONTROL,
  controlFrame,
  HANDSHAKE,
  PING,
  PING_BODY_BYTES,
  PlainFrame,
  PONG,
} from "./_control.ts";
import { encodeFrame } from "./_encode_frame.ts";
import { FrameReader } from "./_frame_reader.ts";
import { Inbox } from "./_inbox.ts";
import type { Deadline } from "./_wait.ts";
import { WriteQueue } from "./_write_queue.ts";
import { Keepalive } from "./_keepalive.ts";
import { own } from "./_slab.ts";
import { decode } from "./codec.ts";
import { FrameTooLargeError, PeerDisconnectedError, ProtocolError } from "./errors.ts";

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
}

/** How long `close()` waits for queued writes to go out before closing anyway. */
const CLOSE_FLUSH_MS = 5_000;
/** The default heartbeat interval: below the idle cut-offs of load balancers and NATs. */
export const DEFAULT_HEARTBEAT_MS = 15_000;
/** The default time without a byte from the peer after which it is declared dead. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

/** A framed MessagePack connection over a `Deno.Conn`. */
export class Connection {
  /** The client id, once known: errors name it. */
  clientId: number | undefined;
  /** Bytes received so far, frame headers included. */
  bytesReceived = 0;
  /** Application messages received so far. */
  messagesReceived = 0;
  /** Application messages queued for sending so far. */
  messagesSent = 0;
  /** Called as the body of a received frame arrives: bytes done and its total. */
  onReceiveProgress: ((done: number, total: number) => void) | undefined;
  /** Called once when the connection ends (not after `close()`), with why. */
  onEnd: ((error: Error) => void) | undefined;
  /** The messages received, waiting to be taken. */
  readonly inbox: Inbox = new Inbox();
  /** The frames to send. */
  readonly queue: WriteQueue;

  readonly #conn: Deno.Conn;
  readonly #reader: FrameReader;
  readonly #maxFrameBytes: number;
  /** The largest body sent: `maxFrameBytes`, or less if the peer accepts less. */
  #sendMaxFrameBytes: number;
  /** Its use of the receive budget (given once admitted; a gather turns metering off). */
  readonly meter: Meter = new Meter();
  readonly #peerIsServer: boolean;
  /** Whether frames are still checked against the handshake limit (until `open`). */
  #handshaking: boolean;
  /** A handshake message was read: reading waits for the next ask or `open` (the right limit). */
  #handshakePause = false;
  readonly #readLoop: Promise<void>;
  #closing = false;
  readonly #keepalive: Keepalive;
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
    this.#conn = conn;
    this.#maxFrameBytes = options?.maxFrameBytes ?? 512 * 1024 * 1024;
    this.#sendMaxFrameBytes = this.#maxFrameBytes;
    this.#handshaking = options?.handshakeFrameBytes !== undefined;
    this.meter.budget = options?.budget;
    this.#peerIsServer = options?.peerIsServer ?? false;
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
    } catch {
      // A Deno.TlsConn accepted by a server has no setNoDelay (a client sets
      // it on the TCP connection before starting TLS); frames still leave in
      // one write each, header and body together.
    }
    this.#reader = new FrameReader(conn, {
      maxFrameBytes: Math.min(options?.handshakeFrameBytes ?? Infinity, this.#maxFrameBytes),
      onBytes: (n) => this.#heard(n),
      bodyAllowance: (filled, total, start) => this.#bodyAllowance(filled, total, start),
    });
    this.queue = new WriteQueue(conn, {
      describeError: (cause) => this.#disconnected(cause),
      idleMs: options?.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      onIdle: () => this.ping(),
    });
    const idleTimeout = options?.idleTimeout ?? DEFAULT_IDLE_TIMEOUT_MS;
    this.#keepalive = new Keepalive(idleTimeout, () =>
      this.#end(
        new PeerDisconnectedError(`${this.#Peer()} silent for ${idleTimeout} ms: declared dead`, {
          clientId: this.clientId,
        }),
      ));
    this.#readLoop = this.#read();
  }

  /** Counts received bytes: liveness, totals and progress. */
  #heard(n: number): void {
    this.bytesReceived += n;
    this.#keepalive.heard();
    if (this.#bodyTotal > 0) {
      this.#bodyDone = Math.min(this.#bodyTotal, this.#bodyDone + n);
      this.onReceiveProgress?.(this.#bodyDone, this.#bodyTotal);
    }
  }

  /** Milliseconds since the last byte from the peer. */
  get silentFor(): number {
    return this.#keepalive.silentFor;
  }

  /** The last ping's round trip in ms, or `undefined` before the first pong. */
  get rtt(): number | undefined {
    return this.#keepalive.rtt;
  }

  /** The peer's address. */
  get remoteAddr(): Deno.Addr {
    return this.#conn.remoteAddr;
  }

  /** Sends a ping (after the handshake); the latest ping's pong sets {@linkcode Connection.rtt}. */
  ping(): void {
    if (this.#handshaking || this.queue.error !== undefined) return;
    this.queue.push([controlFrame(PING, this.#keepalive.nextPing())]);
  }

  /**
   * Queues one frame of an application message.
   *
   * @param chunks The frame, header included.
   * @param progress Called as its bytes are written.
   * @returns Its mark, for `queue.written`.
   * @throws {Error} The connection's error if it is gone.
   */
  push(chunks: readonly Uint8Array[], progress?: (done: number, total: number) => void): number {
    // Progress counts body bytes, as on the receiving side (the header is 4 bytes).
    const report = progress &&
      ((done: number, total: number) => progress(Math.max(0, done - 4), total - 4));
    const mark = this.queue.push(chunks, report);
    this.messagesSent++;
    return mark;
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

  /** Before each read into a large body: its progress total, and its share of the budget. */
  #bodyAllowance(filled: number, total: number, start: boolean): Promise<number> {
    if (start) {
      this.#bodyTotal = total;
      this.#bodyDone = filled;
      this.onReceiveProgress?.(filled, total);
    }
    const allowed = this.meter.allowance(filled, total, start);
    // Reading waits for the budget: the peer's silence proves nothing meanwhile.
    return this.meter.waiting ? this.#keepalive.during(allowed) : allowed;
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
    this.#reader.clientId = clientId;
    this.#reader.maxFrameBytes = this.#maxFrameBytes;
    if (peerMaxFrameBytes !== undefined) {
      this.#sendMaxFrameBytes = Math.min(this.#maxFrameBytes, peerMaxFrameBytes);
    }
    this.#handshaking = false;
    this.#handshakePause = false;
    this.inbox.wakeReader();
  }

  /** The largest frame body this connection accepts. */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  /** The largest frame body this connection sends: its own limit or the peer's, if smaller. */
  get sendMaxFrameBytes(): number {
    return this.#sendMaxFrameBytes;
  }

  /** Why reading ended (the peer left, broke the protocol, or we closed), or `undefined`. */
  get ended(): Error | undefined {
    return this.inbox.ended;
  }

  /**
   * Encodes and queues one value; waits for the socket only if the value
   * lends memory (large binaries) or the queue is congested.
   *
   * @param value The value.
   * @param progress Called as its bytes are written: done and total.
   * @returns Resolves when queued or written, as above.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {FrameTooLargeError} If it encodes to more than the send limit.
   * @throws {PeerDisconnectedError} If the connection is gone.
   */
  async send(value: unknown, progress?: (done: number, total: number) => void): Promise<void> {
    const { chunks, borrowed } = encodeFrame(value, this.#sendMaxFrameBytes, true);
    const mark = this.push(chunks, progress);
    if (borrowed || this.queue.congested) await this.queue.written(mark);
  }

  /** Whether reading must pause: the inbox is full, or a handshake message awaits `open`. */
  readonly #mustWait = (full: boolean): boolean =>
    !this.#closing && (full || this.#handshaking && this.#handshakePause);

  async #read(): Promise<void> {
    try {
      while (!this.#closing) {
        // Frames already buffered are decoded without waiting; small bodies
        // are views into the read buffer, so decoding copies their binaries.
        // Bodies are handled in #deliver so that no suspended frame of this
        // loop keeps a 500 MB body alive after its message was taken.
        const buffered = this.#reader.readBuffered();
        if (buffered !== undefined) this.#deliver(buffered);
        else if (!this.#deliver(await this.#reader.readView())) return;
        if (this.#mustWait(this.inbox.full)) {
          await this.#keepalive.during(this.inbox.space(this.#mustWait));
        }
      }
      this.#end(this.#disconnected());
    } catch (error) {
      this.#end(this.#closing ? this.#disconnected() : this.#describe(error));
    }
  }

  /**
   * Decodes a body into the inbox.
   *
   * @returns `false` at the end of the stream.
   */
  #deliver(body: Uint8Array | null): boolean {
    if (body === null) {
      this.#end(this.#disconnected());
      return false;
    }
    const reservation = this.meter.complete();
    const total = this.#bodyTotal;
    this.#bodyTotal = 0;
    if (body.byteLength === 0) return true; // heartbeat
    if (body[0] === CONTROL) {
      reservation?.release();
      this.#control(body);
      return true;
    }
    if (!this.#handshaking && total === 0) {
      this.onReceiveProgress?.(body.byteLength, body.byteLength);
    }
    // A small body is a view into the read buffer, which the next read
    // overwrites: move it to memory of its own before decoding views into it.
    if (this.#reader.isBuffered(body)) body = own(body);
    let value: unknown;
    try {
      value = decode(body, { clientId: this.clientId });
    } catch (error) {
      reservation?.release();
      throw error;
    }
    if (this.#handshaking) {
      // A version 1 peer's hello: the handshake answers it in a form it reads.
      reservation?.release();
      this.#handshakePause = true;
      this.inbox.push(new PlainFrame(value), body.byteLength);
      return true;
    }
    this.messagesReceived++;
    this.inbox.push(value, body.byteLength, reservation);
    return true;
  }

  /** Handles a control frame: answers pings, times pongs, queues handshake messages. */
  #control(body: Uint8Array): void {
    const kind = body[1];
    if ((kind === PING || kind === PONG) && body.byteLength === PING_BODY_BYTES) {
      if (kind === PING) {
        if (this.queue.error === undefined) this.queue.push([controlFrame(PONG, body.subarray(2))]);
      } else {
        this.#keepalive.pong(body.subarray(2));
      }
      return;
    }
    if (kind === HANDSHAKE) {
      if (!this.#handshaking) {
        throw new ProtocolError("Unexpected handshake message: the handshake is over", {
          clientId: this.clientId,
        });
      }
      const payload = this.#reader.isBuffered(body) ? own(body.subarray(2)) : body.subarray(2);
      this.#handshakePause = true;
      this.inbox.push(decode(payload, { clientId: this.clientId }), body.byteLength);
      return;
    }
    throw new ProtocolError(
      body.byteLength < 2
        ? "Invalid control frame: no kind byte"
        : `Invalid control frame: kind "${kind}" with ${body.byteLength} body bytes`,
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
    if (
      error instanceof FrameTooLargeError ||
      error instanceof Error && error.name === "ProtocolError"
    ) {
      (error as { clientId?: number }).clientId ??= this.clientId;
      error.message = `${error.message}: from ${this.#peer()}`;
      return error;
    }
    return this.#disconnected(error);
  }

  #end(reason: Error): void {
    this.meter.abort();
    const first = this.inbox.ended === undefined;
    this.inbox.end(reason);
    this.queue.fail(reason);
    this.#keepalive.stop();
    if (first) this.onEnd?.(reason);
    if (this.#closing) return;
    // A failed or ended connection is closed at once (PROTOCOL.md §9.1): the
    // peer sees it end and the socket is not held; what was received stays in
    // the inbox.
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }

  /**
   * Writes what is queued (waiting at most 5 s for a peer that stopped
   * reading), then closes the socket and waits for reading to stop.
   *
   * @returns Resolves when the connection is fully closed.
   */
  async close(): Promise<void> {
    if (!this.#closing) {
      // Give what is queued a bounded time to go out: a peer that stopped
      // reading must not make close() hang.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.queue.flush().catch(() => {}),
        new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_FLUSH_MS)),
      ]);
      clearTimeout(timer);
      this.#closing = true;
      this.meter.abort();
      this.queue.stopTimer();
      this.#keepalive.stop();
      this.inbox.wakeReader();
      try {
        this.#conn.close();
      } catch {
        // Already closed: a failed connection closes its socket itself.
      }
    }
    await this.#readLoop;
  }
}
