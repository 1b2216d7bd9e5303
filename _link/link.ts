/**
 * One socket: the `Deno.Conn`, its {@linkcode FrameReader}
 * (`frame_reader.ts`), its {@linkcode WriteQueue} (`write_queue.ts`), its
 * {@linkcode Keepalive} and its read loop. The loop hands every frame body to
 * the link's owner: first the handshake (`_handshake/greeting.ts`), then the
 * session (`_session/session.ts`), which a resume hands a new link to,
 * read loop, buffered bytes and all.
 *
 * @module
 */

import { controlFrame, PING, PING_BODY_BYTES, PONG } from "../_wire/control.ts";
import { FrameReader, type FrameReaderOptions } from "./frame_reader.ts";
import { Keepalive, type SilenceListener } from "./keepalive.ts";
import { WriteQueue, type WriteQueueOptions } from "./write_queue.ts";

/** What a link reports to, and asks of, the session it serves. */
export interface LinkOwner {
  /** What the link's reader asks before and after it reads: the owner's read side. */
  readonly reading: ReadHooks;
  /** A frame body arrived (it may throw: the link then fails). */
  linkFrame(link: Link, body: Uint8Array): void;
  /** Whether reading must wait, and for what (a full inbox, a handshake step). */
  linkPause(): Promise<void> | undefined;
  /** The link failed (`null`: the peer ended the stream between frames). */
  linkFailed(link: Link, error: unknown): void;
  /** Nothing was written for the heartbeat interval. */
  linkIdle(link: Link): void;
  /** No byte arrived for the idle timeout. */
  linkSilent(link: Link, ms: number): void;
  /** Turns a write failure into the error queued frames get. */
  linkWriteError(cause: unknown): Error;
}

/** Limits and timers of a {@linkcode Link}. */
export interface LinkOptions {
  /** The largest frame body accepted for now. */
  maxFrameBytes: number;
  /** Milliseconds without a write before `linkIdle` (0: never). */
  heartbeatMs: number;
  /** Milliseconds without a byte before `linkSilent` (0: never). */
  idleTimeout: number;
}

/** What a link's {@linkcode FrameReader} asks of its owner. */
export interface ReadHooks {
  /** Bytes arrived (liveness, totals, progress). */
  heard(link: Link, n: number): void;
  /** Before each read into a large body: the offset up to which reading may go. */
  bodyAllowance(link: Link, filled: number, total: number, start: boolean): Promise<number>;
  /** Before a large body is allocated: memory to read it into instead (a long message's part). */
  bodyTarget(total: number): Uint8Array | undefined;
  /** The memory of a large body (fresh, or recycled). */
  allocate(length: number): Uint8Array;
}

/** See the module doc. */
export class Link {
  /** The socket. */
  readonly conn: Deno.Conn;
  /** Cuts frames out of what the socket delivers. */
  readonly reader: FrameReader;
  /** The frames to write. */
  readonly queue: WriteQueue;
  /** Pings and the verdict on a silent peer. */
  readonly keepalive: Keepalive;
  /** The session served: changes once, when a resume hands the link over. */
  owner: LinkOwner;
  /** Dropped: the loop stops without telling anyone. */
  done = false;
  #stopped = false;
  /** Made by the first wait for {@linkcode Link.loop}: an idle link holds no promise of its own. */
  #loopDone: PromiseWithResolvers<void> | undefined;

  /**
   * Starts reading from `conn`.
   *
   * @param conn The socket; the link owns it from now on.
   * @param owner The session it serves.
   * @param options Limits and timers.
   */
  constructor(conn: Deno.Conn, owner: LinkOwner, options: LinkOptions) {
    this.conn = conn;
    this.owner = owner;
    try {
      (conn as Deno.TcpConn).setNoDelay(true);
    } catch {
      // A Deno.TlsConn accepted by a server has no setNoDelay (a client sets
      // it on the TCP connection before starting TLS); frames still leave in
      // one write each, header and body together.
    }
    const hooks = new LinkHooks(this, options);
    this.reader = new FrameReader(conn, hooks);
    this.queue = new WriteQueue(conn, hooks);
    this.keepalive = new Keepalive(options.idleTimeout, hooks);
    this.#next();
  }

  /** The read loop; settles once it stopped (after {@linkcode Link.drop}, or a failure). */
  get loop(): Promise<void> {
    // The same promise every time (a session's table of stopping loops deletes it by identity).
    if (this.#loopDone === undefined) {
      this.#loopDone = Promise.withResolvers();
      if (this.#stopped) this.#loopDone.resolve();
    }
    return this.#loopDone.promise;
  }

  /** Sends a ping; the latest ping's pong sets the keepalive's `rtt`. */
  ping(): void {
    if (this.done || this.queue.error !== undefined) return;
    this.queue.push([controlFrame(PING, this.keepalive.nextPing())]);
  }

  /**
   * Answers a ping with its pong, or gives a pong to the keepalive: what
   * every owner does with them, in the handshake and in the session.
   *
   * @param body A control frame's body (`c1` and its kind).
   * @returns Whether it was a ping or a pong.
   */
  keepaliveFrame(body: Uint8Array): boolean {
    const kind = body[1];
    if ((kind !== PING && kind !== PONG) || body.byteLength !== PING_BODY_BYTES) return false;
    if (kind === PONG) this.keepalive.pong(body.subarray(2));
    else if (this.queue.error === undefined) {
      this.queue.push([controlFrame(PONG, body.subarray(2))]);
    }
    return true;
  }

  /**
   * The read loop, driven by the socket's promises instead of an async
   * function: a connection idle in a read holds one pending `conn.read` and
   * the link's own callbacks, not a chain of suspended frames (at 10,000
   * connections that chain was most of an idle connection's heap). Hands
   * over every frame already buffered, then starts the next read.
   */
  #next(): void {
    try {
      while (!this.done) {
        const body = this.reader.readBuffered();
        if (body === undefined) {
          const space = this.reader.readSpace();
          if (space === undefined) {
            this.reader.readView().then((large) => this.#onBody(large), this.#onError);
          } else this.conn.read(space).then(this.#onRead, this.#onError);
          return;
        }
        if (!this.#take(body)) return;
      }
      this.#stop();
    } catch (error) {
      this.#onError(error);
    }
  }

  /** Hands one body over; `false` when reading waits (the owner's pause) or stopped. */
  #take(body: Uint8Array): boolean {
    this.owner.linkFrame(this, body);
    if (this.done) return true;
    const pause = this.owner.linkPause();
    if (pause === undefined) return true;
    this.keepalive.during(pause).then(() => this.#next(), this.#onError);
    return false;
  }

  /** A small read returned: its bytes join the read buffer. */
  readonly #onRead = (n: number | null): void => {
    if (this.done) return this.#stop();
    try {
      if (n !== null) this.owner.reading.heard(this, n);
      if (!this.reader.readDone(n)) return this.#ended();
    } catch (error) {
      return this.#onError(error);
    }
    this.#next();
  };

  /** A large body was read (by the reader's own loop), or the peer ended between frames. */
  #onBody(body: Uint8Array | null): void {
    if (this.done) return this.#stop();
    try {
      if (body === null) return this.#ended();
      if (!this.#take(body)) return;
    } catch (error) {
      return this.#onError(error);
    }
    this.#next();
  }

  /** The peer ended the stream between frames. */
  #ended(): void {
    this.#stop();
    this.owner.linkFailed(this, null);
  }

  readonly #onError = (error: unknown): void => {
    this.#stop();
    if (!this.done) this.owner.linkFailed(this, error);
  };

  /** The loop stopped: {@linkcode Link.loop} settles. */
  #stop(): void {
    this.#stopped = true;
    this.#loopDone?.resolve();
  }

  /**
   * Stops the link: closes the socket; queued frames fail with `reason`.
   *
   * @param reason Why.
   */
  drop(reason: Error): void {
    this.done = true;
    this.queue.fail(reason);
    this.keepalive.stop();
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }
}

/**
 * What a link's reader, queue and keepalive call, as methods of one object
 * per link: each goes to the link's owner of the moment (a closure per hook
 * cost 56 B each, eight per connection).
 */
class LinkHooks implements FrameReaderOptions, WriteQueueOptions, SilenceListener {
  readonly #link: Link;
  readonly #idleTimeout: number;
  readonly maxFrameBytes: number;
  readonly idleMs: number;

  constructor(link: Link, options: LinkOptions) {
    this.#link = link;
    this.#idleTimeout = options.idleTimeout;
    this.maxFrameBytes = options.maxFrameBytes;
    this.idleMs = options.heartbeatMs;
  }

  onBytes(n: number): void {
    this.#link.owner.reading.heard(this.#link, n);
  }

  bodyAllowance(filled: number, total: number, start: boolean): Promise<number> {
    return this.#link.owner.reading.bodyAllowance(this.#link, filled, total, start);
  }

  bodyTarget(total: number): Uint8Array | undefined {
    return this.#link.owner.reading.bodyTarget(total);
  }

  allocate(length: number): Uint8Array {
    return this.#link.owner.reading.allocate(length);
  }

  describeError(cause: unknown): Error {
    return this.#link.owner.linkWriteError(cause);
  }

  onIdle(): void {
    this.#link.owner.linkIdle(this.#link);
  }

  onSilent(): void {
    this.#link.owner.linkSilent(this.#link, this.#idleTimeout);
  }
}
