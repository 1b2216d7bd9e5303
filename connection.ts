/**
 * One framed MessagePack connection: the machinery the server keeps per
 * client and the client keeps for its server.
 *
 * Reading runs on its own as soon as the connection exists, so a peer's
 * messages are decoded while the caller is busy and a disconnect is seen at
 * once. Messages wait in an inbox, in order, until taken; when the inbox
 * holds 64 MiB or 65,536 messages, reading pauses and TCP pushes back on the
 * peer. Writing goes through a queue: small frames are coalesced into one
 * socket write, large tensors are written from the caller's memory.
 *
 * @module
 */

import { decode, encodeChunks, type EncodedChunks } from "./codec.ts";
import { startDeadline, type WaitOptions, within } from "./deadline.ts";
import { PeerDisconnectedError, TimeoutError } from "./errors.ts";
import type { ByteBudget } from "./budget.ts";
import { FrameReader, HEADER_BYTES, maxFrameBytesOf, writeFrameHeader } from "./framing.ts";

/** A message in an inbox: the decoded value and its global arrival number. */
export interface Arrival {
  /** The decoded value. */
  readonly value: unknown;
  /** Increases across all connections of the process, in order of arrival. */
  readonly seq: number;
  /** The size of the frame body it came in. */
  readonly bytes: number;
  /** Bytes it holds of the receive budget (0 for frames read through the read buffer). */
  readonly reserved: number;
}

/** Options for a {@linkcode Connection}. */
export interface ConnectionOptions {
  /** The largest frame body accepted and sent (default 512 MiB). */
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
const INBOX_MAX_BYTES = 64 * 1024 * 1024;
const INBOX_MAX_MESSAGES = 65_536;
/** Bytes that may wait in the write queue before `send` waits for the socket. */
const HIGH_WATER_BYTES = 1024 * 1024;
/** Chunks smaller than this are copied when queued; larger ones are written from place. */
const COPY_BYTES = 64 * 1024;
/** Small frames queued together are copied into batches of this size, one write each. */
const BATCH_BYTES = 16 * 1024;
/** The first batch of a connection: a server may hold thousands of idle ones. */
const BATCH_MIN_BYTES = 4 * 1024;
const HEARTBEAT_FRAME = new Uint8Array(HEADER_BYTES);

let nextSeq = 0;
/** The abort reason that lets a frame waiting for the receive budget be read without it. */
const UNMETERED = Symbol("unmetered");
/** The slab small received bodies are copied into, shared by all connections, and its fill. */
let slab = new Uint8Array(SLAB_BYTES);
let slabPos = 0;

/**
 * Encodes a value as a whole frame (header included) for {@linkcode Connection.write}.
 *
 * @param value The value.
 * @param maxFrameBytes The largest body allowed.
 * @param transient Whether the last chunk may be the encoder's scratch memory
 * (for a caller that writes it at once, see `EncodeChunksOptions.transient`).
 * @returns The frame's chunks.
 * @throws {RangeError} If the body exceeds `maxFrameBytes`.
 */
export function encodeFrame(
  value: unknown,
  maxFrameBytes: number,
  transient = false,
): EncodedChunks {
  const encoded = encodeChunks(value, { reserve: HEADER_BYTES, transient });
  if (encoded.byteLength > maxFrameBytes) {
    throw new RangeError(
      `Frame too large: ${encoded.byteLength} bytes exceeds maxFrameBytes ${maxFrameBytes}`,
    );
  }
  writeFrameHeader(encoded.chunks[0], encoded.byteLength);
  return encoded;
}

interface WriteWaiter {
  until: number;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** A framed MessagePack connection over a `Deno.Conn`. */
export class Connection {
  /** The client id, once known: errors name it. */
  clientId: number | undefined;
  /** Bytes received so far, frame headers included. */
  bytesReceived = 0;
  /** Bytes written to the socket so far, frame headers included. */
  bytesSent = 0;

  readonly #conn: Deno.Conn;
  readonly #reader: FrameReader;
  readonly #maxFrameBytes: number;
  /** The largest body sent: `maxFrameBytes`, or less if the peer accepts less. */
  #sendMaxFrameBytes: number;
  readonly #budget: ByteBudget | undefined;
  readonly #peerIsServer: boolean;
  /** Budget reserved for the frame being read. */
  #reserving = 0;
  #unmetered = false;
  /** Ends the current wait for the budget, when a gather starts waiting on this connection. */
  #skipBudget: AbortController | undefined;
  readonly #inbox: Arrival[] = [];
  #inboxHead = 0;
  #inboxBytes = 0;
  /** Wakes the read loop paused by {@linkcode Connection.#pause}. */
  #resume: (() => void) | undefined;
  /** Whether frames are still checked against the handshake limit (until `open`). */
  #handshaking: boolean;
  /** A handshake message was read: reading waits for `open` before the next frame. */
  #awaitingOpen = false;
  #ended: Error | undefined;
  /** The one consumer waiting on this connection (callers never read one client twice at once). */
  #listener: (() => void) | undefined;
  readonly #readLoop: Promise<void>;
  /** Chunks waiting to be written: sealed batches of small frames, and large chunks. */
  #pending: Uint8Array[] = [];
  /** The batch small frames are being copied into, and how full it is. */
  #tail: Uint8Array | undefined;
  #tailFill = 0;
  /** Batches handed to the pump, and one written batch kept for reuse. */
  readonly #batches = new Set<ArrayBufferLike>();
  #spare: Uint8Array | undefined;
  /** The size of new batches: small until a batch overflows (thousands of idle connections). */
  #batchSize = BATCH_MIN_BYTES;
  #queued = 0;
  #written = 0;
  #writing: Promise<void> | undefined;
  #writeError: Error | undefined;
  #waiters: WriteWaiter[] = [];
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #lastWrite = 0;
  #closing = false;
  readonly #closeSignal = new AbortController();

  /**
   * Starts reading from `conn`.
   *
   * @param conn The TCP connection; this object owns it from now on.
   * @param options Limits, heartbeat and the shared receive budget.
   */
  constructor(conn: Deno.Conn, options?: ConnectionOptions) {
    this.#conn = conn;
    this.#maxFrameBytes = maxFrameBytesOf(options);
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
      reserve: (bytes) => this.#reserve(bytes),
    });
    this.#readLoop = this.#read();
    const heartbeatMs = options?.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
    if (heartbeatMs > 0) {
      const timer = setInterval(() => {
        if (this.#writing === undefined && performance.now() - this.#lastWrite >= heartbeatMs) {
          this.write([HEARTBEAT_FRAME], false)?.catch(() => {});
        }
      }, heartbeatMs);
      Deno.unrefTimer(timer);
      this.#heartbeat = timer;
    }
  }

  /**
   * Whether large frames are read without the receive budget: set while a
   * gather, which holds every answer until it returns, waits on this
   * connection. Setting it also ends a wait for the budget already under way.
   */
  get unmetered(): boolean {
    return this.#unmetered;
  }

  set unmetered(value: boolean) {
    this.#unmetered = value;
    if (value) this.#skipBudget?.abort(UNMETERED);
  }

  /** Reserves a large body's bytes of the receive budget (see FrameReaderOptions.reserve). */
  #reserve(bytes: number): Promise<void> | undefined {
    if (this.#budget === undefined || this.#unmetered) return undefined;
    const skip = new AbortController();
    const granted = this.#budget.acquire(
      bytes,
      AbortSignal.any([this.#closeSignal.signal, skip.signal]),
    );
    if (granted === undefined) {
      this.#reserving = bytes;
      return undefined;
    }
    // Until granted nothing is reserved, so a close while waiting releases nothing.
    this.#skipBudget = skip;
    return granted.then(
      () => {
        this.#skipBudget = undefined;
        this.#reserving = bytes;
      },
      (reason) => {
        this.#skipBudget = undefined;
        if (reason !== UNMETERED) throw reason;
      },
    );
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
    this.#reader.maxFrameBytes = this.#maxFrameBytes;
    if (peerMaxFrameBytes !== undefined) {
      this.#sendMaxFrameBytes = Math.min(this.#maxFrameBytes, peerMaxFrameBytes);
    }
    this.#handshaking = false;
    this.#awaitingOpen = false;
    this.#wake();
  }

  /** The largest frame body this connection accepts (and sends, unless the peer accepts less). */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  /** Why reading ended (the peer left, broke the protocol, or we closed), or `undefined`. */
  get ended(): Error | undefined {
    return this.#ended;
  }

  /** Whether a message is waiting in the inbox. */
  get hasMessage(): boolean {
    return this.#inboxHead < this.#inbox.length;
  }

  /** The next message without taking it, or `undefined`. */
  peek(): Arrival | undefined {
    return this.#inbox[this.#inboxHead];
  }

  /**
   * Takes the next message.
   *
   * @returns The message; call only when {@linkcode Connection.hasMessage}.
   */
  take(): Arrival {
    const arrival = this.#inbox[this.#inboxHead];
    this.#inbox[this.#inboxHead++] = undefined as unknown as Arrival;
    if (this.#inboxHead > 1024 && this.#inboxHead * 2 > this.#inbox.length) {
      this.#inbox.splice(0, this.#inboxHead);
      this.#inboxHead = 0;
    }
    this.#inboxBytes -= arrival.bytes;
    if (arrival.reserved > 0) this.#budget?.release(arrival.reserved);
    this.#wake();
    return arrival;
  }

  /**
   * Puts back a message taken by {@linkcode Connection.take}, at the front,
   * for a receive that failed after taking it.
   *
   * @param arrival The message, as taken.
   */
  putBack(arrival: Arrival): void {
    if (this.#inboxHead > 0) this.#inbox[--this.#inboxHead] = arrival;
    else this.#inbox.unshift(arrival);
    this.#inboxBytes += arrival.bytes;
    if (arrival.reserved > 0) this.#budget?.force(arrival.reserved);
  }

  /**
   * Registers the function called on every arrival and when reading ends.
   * There is one such listener at a time.
   *
   * @param listener The function.
   * @returns A function that unregisters it.
   */
  listen(listener: () => void): () => void {
    if (this.#listener !== undefined) {
      throw new Deno.errors.Busy("Concurrent receive: this connection is already being read from");
    }
    this.#listener = listener;
    return () => {
      if (this.#listener === listener) this.#listener = undefined;
    };
  }

  /**
   * Waits for and takes the next message.
   *
   * @param options Cancellation and time limit.
   * @returns The value.
   * @throws {PeerDisconnectedError} If the peer left with nothing left to read.
   * @throws {TimeoutError} If the time limit passed.
   */
  async next(options?: WaitOptions): Promise<unknown> {
    if (this.hasMessage) return this.take().value;
    if (this.#ended !== undefined) throw this.#ended;
    using deadline = startDeadline(
      options,
      () =>
        new TimeoutError(`Receive timed out after ${options?.timeout} ms`, {
          clientIds: this.clientId === undefined ? [] : [this.clientId],
        }),
    );
    while (true) {
      const { promise, resolve } = Promise.withResolvers<void>();
      const stop = this.listen(resolve);
      try {
        await within(promise, deadline);
      } finally {
        stop();
      }
      if (this.hasMessage) return this.take().value;
      if (this.#ended !== undefined) throw this.#ended;
    }
  }

  #notify(): void {
    this.#listener?.();
  }

  async #read(): Promise<void> {
    try {
      while (!this.#closing) {
        // Frames already buffered are decoded without waiting; small bodies
        // are views into the read buffer, so decoding copies their binaries.
        // Bodies are handled in #deliver so that no suspended frame of this
        // loop keeps a 500 MB body alive after its message was taken.
        const buffered = this.#reader.readBuffered();
        if (buffered !== undefined) {
          if (this.#deliver(buffered)) await this.#pause();
          continue;
        }
        const wait = this.#deliver(await this.#reader.readView());
        if (wait === undefined) return;
        if (wait) await this.#pause();
      }
      this.#end(this.#disconnected());
    } catch (error) {
      this.#end(this.#closing ? this.#disconnected() : this.#describe(error));
    }
  }

  /**
   * Decodes a body into the inbox.
   *
   * @returns Whether the inbox is now full, or `undefined` at the end of the stream.
   */
  #deliver(body: Uint8Array | null): boolean | undefined {
    if (body === null) {
      this.#end(this.#disconnected());
      return undefined;
    }
    const reserved = this.#reserving;
    this.#reserving = 0;
    if (body.byteLength === 0) return false; // heartbeat
    // A small body is a view into the read buffer, which the next read
    // overwrites: move it to memory of its own before decoding views into it.
    if (this.#reader.isBuffered(body)) body = this.#own(body);
    let value: unknown;
    try {
      value = decode(body, { clientId: this.clientId });
    } catch (error) {
      if (reserved > 0) this.#budget?.release(reserved);
      throw error;
    }
    this.#inbox.push({ value, seq: nextSeq++, bytes: body.byteLength, reserved });
    this.#inboxBytes += body.byteLength;
    if (this.#handshaking) this.#awaitingOpen = true;
    this.#notify();
    return this.#mustPause();
  }

  /**
   * Copies a small body out of the read buffer. Bodies up to 4 KiB share
   * 64 KiB slabs with every connection of the process (8-byte aligned, so
   * tensors stay aligned views), which saves an allocation per small
   * message; larger ones get their own buffer.
   */
  #own(body: Uint8Array): Uint8Array {
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

  /** Whether reading must wait: the inbox is full, or a handshake message awaits `open`. */
  #mustPause(): boolean {
    if (this.#closing) return false;
    const queued = this.#inbox.length - this.#inboxHead;
    return this.#awaitingOpen || this.#inboxBytes >= INBOX_MAX_BYTES ||
      queued >= INBOX_MAX_MESSAGES;
  }

  /** Waits until reading may go on (a message was taken, `open` or `close` was called). */
  async #pause(): Promise<void> {
    while (this.#mustPause()) await new Promise<void>((resolve) => this.#resume = resolve);
  }

  #wake(): void {
    const resume = this.#resume;
    this.#resume = undefined;
    resume?.();
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
    if (error instanceof RangeError) {
      return new RangeError(`${error.message}: from ${this.#peer()}`, { cause: error });
    }
    if (error instanceof Error && error.name === "ProtocolError") {
      const who = this.#peer();
      (error as { clientId?: number }).clientId ??= this.clientId;
      error.message = `${error.message}: from ${who}`;
      return error;
    }
    return this.#disconnected(error);
  }

  #end(reason: Error): void {
    if (this.#reserving > 0) this.#budget?.release(this.#reserving);
    this.#reserving = 0;
    if (this.#ended === undefined) this.#ended = reason;
    this.#notify();
    if (this.#closing) return;
    this.#shutdown();
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
   * Queues a frame's chunks for writing.
   *
   * @param chunks The frame, header included.
   * @param borrowed Whether a chunk is the caller's memory: then the promise
   * waits until the socket has taken it, so the caller may reuse the memory.
   * @returns `undefined` when queued while the queue is below its high-water
   * mark and nothing is borrowed (nothing to wait for); otherwise a promise
   * that resolves once the socket has taken the frame.
   * @throws {PeerDisconnectedError} If the connection is gone (as a rejected promise).
   */
  write(chunks: readonly Uint8Array[], borrowed: boolean): Promise<void> | undefined {
    if (this.#writeError !== undefined) return Promise.reject(this.#writeError);
    if (this.#closing) return Promise.reject(this.#disconnected());
    // Reading ended (the peer left or broke the protocol): the socket is closed.
    if (this.#ended !== undefined) return Promise.reject(this.#ended);
    for (const chunk of chunks) {
      const n = chunk.byteLength;
      // Copied now, so the caller may reuse its memory (or the encoder its scratch).
      if (n * 2 <= BATCH_BYTES) {
        if (this.#tail === undefined || this.#tailFill + n > this.#tail.byteLength) {
          // A full batch means heavy traffic: use full-size batches from now on.
          if (this.#tail !== undefined || n > this.#batchSize) this.#batchSize = BATCH_BYTES;
          this.#seal();
          const spare = this.#spare;
          this.#spare = undefined;
          this.#tail = spare?.byteLength === this.#batchSize
            ? spare
            : new Uint8Array(this.#batchSize);
        }
        this.#tail.set(chunk, this.#tailFill);
        this.#tailFill += n;
      } else if (n < COPY_BYTES) {
        this.#seal();
        this.#pending.push(chunk.slice());
      } else {
        // Written from place. Its head tops up the batch so that a frame
        // header queued before it goes out in the same write.
        let rest = chunk;
        if (this.#tail !== undefined && this.#tailFill > 0) {
          const head = this.#tail.byteLength - this.#tailFill;
          this.#tail.set(chunk.subarray(0, head), this.#tailFill);
          this.#tailFill += head;
          rest = chunk.subarray(head);
        }
        this.#seal();
        this.#pending.push(rest);
      }
      this.#queued += n;
    }
    this.#writing ??= this.#pump();
    if (!borrowed && this.#queued - this.#written <= HIGH_WATER_BYTES) return undefined;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#waiters.push({ until: this.#queued, resolve, reject });
    return promise;
  }

  /** Moves the filled part of the tail batch to the pending list. */
  #seal(): void {
    if (this.#tail === undefined) return;
    if (this.#tailFill > 0) {
      this.#pending.push(this.#tail.subarray(0, this.#tailFill));
      this.#batches.add(this.#tail.buffer);
    } else {
      this.#spare = this.#tail;
    }
    this.#tail = undefined;
    this.#tailFill = 0;
  }

  /**
   * Encodes and writes one value.
   *
   * @param value The value.
   * @returns See {@linkcode Connection.write}; a promise that rejects (never a throw) on the errors below.
   * @throws {TypeError} If the value has no MessagePack form.
   * @throws {RangeError} If it encodes to more than `maxFrameBytes` or the peer's limit.
   */
  send(value: unknown): Promise<void> | undefined {
    let encoded: EncodedChunks;
    try {
      encoded = encodeFrame(value, this.#sendMaxFrameBytes, true);
    } catch (error) {
      return Promise.reject(error);
    }
    const { chunks, borrowed, transient } = encoded;
    const last = chunks.length - 1;
    // The encoder's scratch is reused by the next encode: never queue it by reference.
    if (transient && chunks[last].byteLength >= COPY_BYTES) chunks[last] = chunks[last].slice();
    return this.write(chunks, borrowed);
  }

  /**
   * Waits until everything queued has been written.
   *
   * @returns Resolves when the queue is empty.
   * @throws {PeerDisconnectedError} If writing failed.
   */
  async flush(): Promise<void> {
    while (this.#writing !== undefined) await this.#writing;
    if (this.#writeError !== undefined) throw this.#writeError;
  }

  async #pump(): Promise<void> {
    try {
      // The first write starts at once; frames queued while it is under way
      // are coalesced into the next.
      while (true) {
        this.#seal();
        if (this.#pending.length === 0) break;
        const chunks = this.#pending;
        this.#pending = [];
        for (const chunk of chunks) {
          await this.#writeChunk(chunk);
          if (this.#batches.delete(chunk.buffer)) this.#spare = new Uint8Array(chunk.buffer);
        }
      }
    } catch (error) {
      this.#writeError = this.#disconnected(error);
      for (const waiter of this.#waiters) waiter.reject(this.#writeError);
      this.#waiters = [];
      this.#pending = [];
      this.#tail = undefined;
    } finally {
      this.#writing = undefined;
    }
  }

  async #writeChunk(chunk: Uint8Array): Promise<void> {
    for (let off = 0; off < chunk.byteLength;) {
      const n = await this.#conn.write(chunk.subarray(off));
      off += n;
      this.bytesSent += n; // counted as it goes, for progress bars on large writes
    }
    this.#written += chunk.byteLength;
    this.#lastWrite = performance.now();
    let done = 0;
    while (done < this.#waiters.length && this.#waiters[done].until <= this.#written) {
      this.#waiters[done++].resolve();
    }
    if (done > 0) this.#waiters.splice(0, done);
  }

  #shutdown(): void {
    if (this.#heartbeat !== undefined) clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  /**
   * Writes what is queued (waiting at most 5 s for a peer that stopped reading), then
   * closes the socket and waits for reading to stop.
   *
   * @returns Resolves when the connection is fully closed.
   */
  async close(): Promise<void> {
    if (!this.#closing) {
      // Give what is queued a bounded time to go out: a peer that stopped
      // reading must not make close() hang.
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.flush().catch(() => {}),
        new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_FLUSH_MS)),
      ]);
      clearTimeout(timer);
      this.#closing = true;
      this.#closeSignal.abort();
      this.#wake();
      this.#shutdown();
      try {
        this.#conn.close();
      } catch {
        // Already closed: a failed connection closes its socket itself.
      }
    }
    await this.#readLoop;
  }
}
