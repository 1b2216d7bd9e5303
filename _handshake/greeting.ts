/**
 * A connection during its handshake: the owner of a new {@linkcode Link}
 * until it is handed to a session (a new one, or the one it resumes).
 *
 * Only handshake messages (`c1 03`), pings and pongs are read; a plain frame
 * is kept as a {@linkcode PlainFrame} (a version 1 peer's hello, or a plain
 * reject). Frames are checked against the handshake limit, and reading
 * pauses after each handshake message until the handshake asks for the next
 * one or hands the link over: a large frame right behind the last one is
 * then checked by the session, against the session's limit.
 *
 * @module
 */

import { CONTROL, HANDSHAKE, invalidControlFrame } from "../_wire/control.ts";
import { decodeBounded } from "../_codec/decoder.ts";
import { Link, type LinkOwner, type ReadHooks } from "../_link/link.ts";
import { Peer } from "../_link/peer_errors.ts";
import { CLOSE_FLUSH_MS } from "../_session/session.ts";
import { own } from "../_session/slab.ts";
import { type Deadline, within } from "../_util/wait.ts";

/**
 * A plain (non-control) frame received during the handshake: a version 1
 * peer's hello, answered with a plain reject so that it can show the reason.
 */
export class PlainFrame {
  /** The decoded value. */
  readonly value: unknown;

  /**
   * Wraps a value.
   *
   * @param value The decoded value.
   */
  constructor(value: unknown) {
    this.value = value;
  }
}

/** Limits and timers of a {@linkcode Greeting}. */
export interface GreetingOptions {
  /** The largest frame body accepted during the handshake. */
  handshakeFrameBytes: number;
  /** Milliseconds without a write before the session pings (kept for the session's link). */
  heartbeatMs: number;
  /** Declare the peer dead after this many ms without a byte from it (0: never). */
  idleTimeout: number;
  /** Whether the other end is the server (this is a client's connection), for messages. */
  peerIsServer?: boolean;
}

/** See the module doc. */
export class Greeting implements LinkOwner {
  /** Bytes received so far, frame headers included. */
  bytesReceived = 0;
  /** The largest frame body accepted and sent during the handshake. */
  readonly maxFrameBytes: number;
  readonly #link: Link;
  readonly #peer: Peer;
  /** Handshake messages read and not yet taken (reading pauses after each: at most one). */
  readonly #messages: unknown[] = [];
  #waiter: PromiseWithResolvers<unknown> | undefined;
  #error: Error | undefined;
  /** Reading waits on this after a handshake message, until the next is asked for. */
  #paused: PromiseWithResolvers<void> | undefined;
  #released = false;
  #closing = false;

  /**
   * Starts reading from `conn`.
   *
   * @param conn The socket; this object owns it until {@linkcode Greeting.release}.
   * @param options Limits and timers.
   */
  constructor(conn: Deno.Conn, options: GreetingOptions) {
    this.maxFrameBytes = options.handshakeFrameBytes;
    this.#peer = new Peer(options.peerIsServer ?? false);
    this.#link = new Link(conn, this, {
      maxFrameBytes: options.handshakeFrameBytes,
      heartbeatMs: options.heartbeatMs,
      idleTimeout: options.idleTimeout,
    });
  }

  /**
   * Waits for the next handshake message, letting reading go on until it comes.
   *
   * @param deadline The handshake's deadline.
   * @returns The decoded map (or a {@linkcode PlainFrame}).
   * @throws {Error} Why the connection failed, or the deadline's error.
   */
  next(deadline: Deadline): Promise<unknown> {
    // A message that waits is taken with reading still paused behind it: the
    // handshake works on it, and the frame behind may be the session's.
    if (this.#messages.length > 0) return Promise.resolve(this.#messages.shift());
    if (this.#error !== undefined) return Promise.reject(this.#error);
    this.#resumeReading();
    this.#waiter ??= Promise.withResolvers();
    return within(this.#waiter.promise, deadline);
  }

  /**
   * Writes a frame and waits until the socket took it.
   *
   * @param frame The whole frame.
   * @returns Resolves when written.
   * @throws {PeerDisconnectedError} If the connection is gone.
   */
  async send(frame: Uint8Array): Promise<void> {
    if (this.#released) throw new TypeError("Greeting.send(): the link was released");
    if (this.#error !== undefined) throw this.#error;
    const queue = this.#link.queue;
    await queue.written(queue.push([frame]));
  }

  /**
   * Hands the link over: the caller makes it its own (`link.owner`) at once,
   * in the same tick; reading goes on for it.
   *
   * @returns The link, with the bytes it read past the handshake.
   * @throws {Error} Why the connection failed, if it did.
   */
  release(): Link {
    if (this.#error !== undefined) throw this.#error;
    this.#released = true;
    this.#resumeReading();
    return this.#link;
  }

  /**
   * Writes what is queued (at most 5 s), closes the socket and waits for
   * reading to stop. Never throws.
   *
   * @returns Resolves when closed.
   */
  async close(): Promise<void> {
    if (this.#released) return;
    if (this.#error === undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const pause = new Promise<void>((resolve) => timer = setTimeout(resolve, CLOSE_FLUSH_MS));
      await Promise.race([this.#link.queue.flush().catch(() => {}), pause]);
      clearTimeout(timer);
      this.#closing = true;
      this.#fail(this.#peer.disconnected(true));
    }
    await this.#link.loop;
  }

  #resumeReading(): void {
    this.#paused?.resolve();
    this.#paused = undefined;
  }

  #push(value: unknown): void {
    this.#paused = Promise.withResolvers();
    if (this.#waiter === undefined) this.#messages.push(value);
    else {
      this.#waiter.resolve(value);
      this.#waiter = undefined;
    }
  }

  #fail(error: Error): void {
    if (this.#released || this.#error !== undefined) return;
    this.#error = error;
    this.#waiter?.reject(error);
    this.#waiter = undefined;
    this.#link.drop(error);
    this.#resumeReading();
  }

  /**
   * The read side of the handshake: bytes are counted; frames are small,
   * read whole into memory of their own, outside any receive budget; no
   * long messages before the welcome.
   */
  readonly reading: ReadHooks = {
    heard: (link, n) => {
      this.bytesReceived += n;
      link.keepalive.heard();
    },
    bodyAllowance: (_link, _filled, total) => Promise.resolve(total),
    bodyTarget: () => undefined,
    allocate: (length) => new Uint8Array(length),
  };

  /**
   * A frame arrived: a handshake message, a ping or pong, or a plain frame.
   *
   * @param link The link.
   * @param body The body.
   * @throws {ProtocolError} For any other control frame, or bytes that are not MessagePack.
   */
  linkFrame(link: Link, body: Uint8Array): void {
    if (body.byteLength === 0) return; // heartbeat
    // A body is a view into the read buffer, which the next read overwrites.
    const kept = (bytes: Uint8Array) => link.reader.isBuffered(body) ? own(bytes) : bytes;
    if (body[0] !== CONTROL) {
      this.#push(new PlainFrame(decodeBounded(kept(body))));
      return;
    }
    if (body[1] === HANDSHAKE) this.#push(decodeBounded(kept(body.subarray(2))));
    else if (!link.keepaliveFrame(body)) throw invalidControlFrame(body);
  }

  /**
   * Reading waits while a handshake message waits for the handshake.
   *
   * @returns What to wait for, or `undefined`.
   */
  linkPause(): Promise<void> | undefined {
    return this.#released ? undefined : this.#paused?.promise;
  }

  /**
   * The link failed: so does the handshake.
   *
   * @param _link The link.
   * @param error What the reader threw, or `null` (the peer ended the stream).
   */
  linkFailed(_link: Link, error: unknown): void {
    this.#fail(
      error === null
        ? this.#peer.disconnected(this.#closing)
        : this.#peer.describe(error, this.#closing),
    );
  }

  /** No pings during the handshake: the peer is still to prove who it is. */
  linkIdle(): void {}

  /**
   * The peer was silent for the idle timeout.
   *
   * @param _link The link.
   * @param ms The idle timeout.
   */
  linkSilent(_link: Link, ms: number): void {
    this.#fail(this.#peer.silent(ms));
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
}
