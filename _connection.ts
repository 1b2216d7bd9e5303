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

import type { ByteBudget, Reservation } from "./_budget.ts";
import { encodeFrame } from "./_encode_frame.ts";
import { HEADER_BYTES } from "./_frame.ts";
import { FrameReader } from "./_frame_reader.ts";
import { Inbox } from "./_inbox.ts";
import { startDeadline, type WaitOptions } from "./_wait.ts";
import { WriteQueue } from "./_write_queue.ts";
import { decode } from "./codec.ts";
import { FrameTooLargeError, PeerDisconnectedError } from "./errors.ts";

/** Options for a {@linkcode Connection}. */
export interface ConnectionOptions {
  /** The largest frame body accepted and sent (validated; default 512 MiB). */
  maxFrameBytes?: number;
  /** The largest frame accepted until {@linkcode Connection.open} (default: maxFrameBytes). */
  handshakeFrameBytes?: number;
  /** Send a heartbeat after this many idle ms (default 15,000; 0 disables). */
  heartbeatMs?: number;
  /** A budget shared with other connections for large received frames not yet taken. */
  budget?: ByteBudget;
  /** Whether the other end is the server (this is a client's connection), for messages. */
  peerIsServer?: boolean;
}

/** Small received bodies share slabs of this size. */
const SLAB_BYTES = 64 * 1024;
/** The largest body copied into a slab; larger ones get their own buffer. */
const SLAB_MAX_BODY = 4 * 1024;
/** How long `close()` waits for queued writes to go out before closing anyway. */
const CLOSE_FLUSH_MS = 5_000;
/** The default heartbeat interval: below the idle cut-offs of load balancers and NATs. */
export const DEFAULT_HEARTBEAT_MS = 15_000;
const HEARTBEAT_FRAME = new Uint8Array(HEADER_BYTES);

/** The slab small received bodies are copied into, shared by all connections, and its fill. */
let slab = new Uint8Array(SLAB_BYTES);
let slabPos = 0;

/**
 * Copies a small body out of a read buffer. Bodies up to 4 KiB share 64 KiB
 * slabs with every connection of the process (8-byte aligned, so tensors
 * stay aligned views), which saves an allocation per small message; larger
 * ones get their own buffer.
 */
function own(body: Uint8Array): Uint8Array {
  const n = body.byteLength;
  if (n > SLAB_MAX_BODY) return body.slice();
  if (slabPos + n > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES);
    slabPos = 0;
  }
  const owned = slab.subarray(slabPos, slabPos + n);
  owned.set(body);
  slabPos += (n + 7) & ~7;
  return owned;
}

/** A framed MessagePack connection over a `Deno.Conn`. */
export class Connection {
  /** The client id, once known: errors name it. */
  clientId: number | undefined;
  /** Bytes received so far, frame headers included. */
  bytesReceived = 0;
  /** The messages received, waiting to be taken. */
  readonly inbox: Inbox = new Inbox();
  /** The frames to send. */
  readonly queue: WriteQueue;

  readonly #conn: Deno.Conn;
  readonly #reader: FrameReader;
  readonly #maxFrameBytes: number;
  /** The largest body sent: `maxFrameBytes`, or less if the peer accepts less. */
  #sendMaxFrameBytes: number;
  readonly #budget: ByteBudget | undefined;
  readonly #peerIsServer: boolean;
  /** Whether large frames draw on the budget (not while a gather reads this client). */
  #metered = true;
  /** Ends a wait for the budget, when the connection closes or is unmetered. */
  #budgetWait: AbortController | undefined;
  /** What the frame being read holds of the budget. */
  #reservation: Reservation | undefined;
  /** Whether frames are still checked against the handshake limit (until `open`). */
  #handshaking: boolean;
  /** A handshake message was read: reading waits for `open` before the next frame. */
  #awaitingOpen = false;
  readonly #readLoop: Promise<void>;
  #closing = false;

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
    this.#budget = options?.budget;
    this.#peerIsServer = options?.peerIsServer ?? false;
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
    } catch {
      // Not a TCP connection (a Unix socket): there is no Nagle to turn off.
    }
    this.#reader = new FrameReader(conn, {
      maxFrameBytes: Math.min(options?.handshakeFrameBytes ?? Infinity, this.#maxFrameBytes),
      onBytes: (n) => void (this.bytesReceived += n),
      beforeLargeBody: this.#budget === undefined ? undefined : (n) => this.#reserve(n),
    });
    this.queue = new WriteQueue(conn, {
      describeError: (cause) => this.#disconnected(cause),
      idleMs: options?.heartbeatMs ?? DEFAULT_HEARTBEAT_MS,
      onIdle: () => {
        if (this.queue.error === undefined) this.queue.push([HEARTBEAT_FRAME]);
      },
    });
    this.#readLoop = this.#read();
  }

  /**
   * Whether large frames are read within the receive budget (the default).
   * A gather, which holds every answer until it returns, turns it off while
   * it waits on this connection; that also ends a wait for the budget.
   */
  get metered(): boolean {
    return this.#metered;
  }

  set metered(value: boolean) {
    this.#metered = value;
    if (!value) this.#budgetWait?.abort();
  }

  /**
   * Reserves `bytes` of the receive budget at once, for a message put back in the inbox.
   *
   * @param bytes The bytes it held when it arrived.
   * @returns The reservation, or `undefined` for none.
   */
  reserveAgain(bytes: number): Reservation | undefined {
    return bytes > 0 ? this.#budget?.force(bytes) : undefined;
  }

  /** Reserves a large body's bytes of the receive budget before it is read. */
  async #reserve(bytes: number): Promise<void> {
    if (!this.#metered) return;
    const wait = new AbortController();
    this.#budgetWait = wait;
    try {
      this.#reservation = await this.#budget!.reserve(bytes, wait.signal);
    } finally {
      this.#budgetWait = undefined;
    }
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
    this.#awaitingOpen = false;
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
   * Waits for and takes the next message.
   *
   * @param options Cancellation and time limit.
   * @returns The value.
   * @throws {PeerDisconnectedError} If the peer left with nothing left to read.
   * @throws {TimeoutError} If the time limit passed.
   * @throws {Deno.errors.Busy} If another receive waits on this connection.
   */
  async next(options?: WaitOptions): Promise<unknown> {
    using deadline = startDeadline(options, () => ({
      what: "Receive",
      detail: `waiting for ${this.#peer()}`,
      clientIds: this.clientId === undefined ? [] : [this.clientId],
    }));
    return await this.inbox.next(deadline);
  }

  /**
   * Encodes and queues one value; waits for the socket only if the value
   * lends memory (large binaries) or the queue is congested.
   *
   * @param value The value.
   * @returns Resolves when queued or written, as above.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {FrameTooLargeError} If it encodes to more than the send limit.
   * @throws {PeerDisconnectedError} If the connection is gone.
   */
  async send(value: unknown): Promise<void> {
    const { chunks, borrowed } = encodeFrame(value, this.#sendMaxFrameBytes, true);
    const mark = this.queue.push(chunks);
    if (borrowed || this.queue.congested) await this.queue.written(mark);
  }

  /** Whether reading must pause: the inbox is full, or a handshake message awaits `open`. */
  readonly #mustWait = (full: boolean): boolean => !this.#closing && (full || this.#awaitingOpen);

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
        if (this.inbox.full || this.#awaitingOpen) await this.inbox.space(this.#mustWait);
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
    const reservation = this.#reservation;
    this.#reservation = undefined;
    if (body.byteLength === 0) return true; // heartbeat
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
    this.inbox.push(value, body.byteLength, reservation);
    if (this.#handshaking) this.#awaitingOpen = true;
    return true;
  }

  /** Who is at the other end, for messages: `client "3"`, `server` or `peer`. */
  #peer(): string {
    if (this.#peerIsServer) return "server";
    return this.clientId === undefined ? "peer" : `client "${this.clientId}"`;
  }

  #disconnected(cause?: unknown): PeerDisconnectedError {
    const who = this.#peer();
    return new PeerDisconnectedError(
      this.#closing
        ? "Connection closed: close() was called"
        : `${who[0].toUpperCase()}${who.slice(1)} disconnected`,
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
    this.#reservation?.release();
    this.#reservation = undefined;
    this.inbox.end(reason);
    this.queue.fail(reason);
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
      this.#budgetWait?.abort();
      this.queue.stopTimer();
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
