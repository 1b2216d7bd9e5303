/**
 * A `Deno.Conn` without a socket ({@linkcode FakeConn}) and the small helpers
 * the unit tests of the handshake and the session share: frames built by
 * hand, a greeting or a session over a fake socket, waiting a turn at a time.
 * Not published.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Greeting, type GreetingOptions } from "../_handshake/greeting.ts";
import type { Inbox } from "../_session/inbox.ts";
import { Session } from "../_session/session.ts";
import type { SessionOptions } from "../_session/session_options.ts";
import { NO_DEADLINE } from "../_util/wait.ts";
import { encode } from "../codec.ts";
import { concat } from "./test_util.ts";

/** 1,024 bytes. */
export const KiB = 1024;
/** 1,048,576 bytes. */
export const MiB = 1024 * 1024;

/**
 * A `Deno.Conn` without a socket: `read` hands out the chunks fed to it, one
 * chunk (or what fits of it) per call, and waits when there are none; `end()`
 * is the peer closing its side. Writes are recorded and can be paused.
 */
export class FakeConn {
  /** Every write, copied, in order. */
  readonly writes: Uint8Array[] = [];
  /** The peer's address. */
  readonly remoteAddr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 4321 };
  /** This end's address. */
  readonly localAddr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 1234 };
  /** Bytes handed to the reader so far. */
  bytesRead = 0;
  /** Whether `close()` was called. */
  closed = false;
  /** The last `setNoDelay` argument. */
  noDelay: boolean | undefined;
  #chunks: Uint8Array[] = [];
  #eof = false;
  #pendingRead:
    | { p: Uint8Array; resolve: (n: number | null) => void; reject: (e: Error) => void }
    | undefined;
  #writesPaused = false;
  #waitingWrites: (() => void)[] = [];

  /** This object as the `Deno.Conn` it stands for. */
  get conn(): Deno.Conn {
    return this as unknown as Deno.Conn;
  }

  /** Queues bytes for the reader, one chunk per read at most. */
  feed(...chunks: Uint8Array[]): void {
    this.#chunks.push(...chunks.map((c) => c.slice()));
    this.#serve();
  }

  /** The peer closes its side: reads return `null` once the fed bytes are read. */
  end(): void {
    this.#eof = true;
    this.#serve();
  }

  /** Bytes fed but not read yet. */
  get unread(): number {
    return this.#chunks.reduce((n, c) => n + c.byteLength, 0);
  }

  /** Reads what was fed into `p`; waits while there is nothing. */
  read(p: Uint8Array): Promise<number | null> {
    if (this.closed) return Promise.reject(new Deno.errors.BadResource("Bad resource ID"));
    assert.equal(this.#pendingRead, undefined, "one read at a time");
    const { promise, resolve, reject } = Promise.withResolvers<number | null>();
    this.#pendingRead = { p, resolve, reject };
    this.#serve();
    return promise;
  }

  #serve(): void {
    const pending = this.#pendingRead;
    if (pending === undefined) return;
    const chunk = this.#chunks[0];
    if (chunk !== undefined) {
      const n = Math.min(chunk.byteLength, pending.p.byteLength);
      pending.p.set(chunk.subarray(0, n));
      if (n === chunk.byteLength) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(n);
      this.bytesRead += n;
      this.#pendingRead = undefined;
      pending.resolve(n);
    } else if (this.#eof) {
      this.#pendingRead = undefined;
      pending.resolve(null);
    }
  }

  /** Records `p` (waiting while writes are paused). */
  async write(p: Uint8Array): Promise<number> {
    if (this.closed) throw new Deno.errors.BadResource("Bad resource ID");
    if (this.#writesPaused) await new Promise<void>((resolve) => this.#waitingWrites.push(resolve));
    if (this.closed) throw new Deno.errors.BadResource("Bad resource ID");
    this.writes.push(p.slice());
    return p.byteLength;
  }

  /** Makes writes wait until {@linkcode FakeConn.resumeWrites}. */
  pauseWrites(): void {
    this.#writesPaused = true;
  }

  /** Lets the waiting writes and the next ones through. */
  resumeWrites(): void {
    this.#writesPaused = false;
    for (const wake of this.#waitingWrites.splice(0)) wake();
  }

  /** Every byte written, in order. */
  get written(): Uint8Array {
    return concat(this.writes);
  }

  /** Closes the socket: a waiting read fails, as a real one does. */
  close(): void {
    if (this.closed) throw new Deno.errors.BadResource("Bad resource ID");
    this.closed = true;
    const pending = this.#pendingRead;
    this.#pendingRead = undefined;
    pending?.reject(new Deno.errors.BadResource("Bad resource ID"));
  }

  /** Records the setting. */
  setNoDelay(noDelay = true): void {
    this.noDelay = noDelay;
  }

  /** Does nothing. */
  setKeepAlive(): void {}
  /** Does nothing. */
  ref(): void {}
  /** Does nothing. */
  unref(): void {}
}

/**
 * A greeting over a fake socket, without heartbeat or liveness timers
 * (handshakeFrameBytes 64 KiB unless given).
 *
 * @param options Options over the defaults.
 * @returns The socket and the greeting.
 */
export function fakeGreeting(
  options: Partial<GreetingOptions> = {},
): { fake: FakeConn; greeting: Greeting } {
  const fake = new FakeConn();
  const greeting = new Greeting(fake.conn, {
    handshakeFrameBytes: 64 * KiB,
    heartbeatMs: 0,
    idleTimeout: 0,
    ...options,
  });
  return { fake, greeting };
}

/**
 * A session over a fake socket, built as the server and client do (a
 * greeting released at once), without heartbeat or liveness timers: client
 * 1 and maxFrameBytes 512 MiB unless given.
 *
 * @param options Options over the defaults.
 * @returns The socket and the session.
 */
export function fakeSession(
  options: Partial<SessionOptions> = {},
): { fake: FakeConn; session: Session } {
  const { fake, greeting } = fakeGreeting({ peerIsServer: options.peerIsServer });
  const session = new Session(greeting.release(), {
    clientId: 1,
    maxFrameBytes: 512 * MiB,
    ...options,
  });
  return { fake, session };
}

/**
 * One frame: the 4-byte big-endian length, then the body.
 *
 * @param body The body.
 * @returns The frame.
 */
export function frame(body: Uint8Array | number[]): Uint8Array {
  const bytes = body instanceof Uint8Array ? body : new Uint8Array(body);
  const out = new Uint8Array(4 + bytes.byteLength);
  new DataView(out.buffer).setUint32(0, bytes.byteLength);
  out.set(bytes, 4);
  return out;
}

/**
 * The frame of one MessagePack value.
 *
 * @param value The value.
 * @returns The frame.
 */
export function valueFrame(value: unknown): Uint8Array {
  return frame(encode(value));
}

/**
 * A handshake control frame (`c1 03` and a map, PROTOCOL.md §3.2).
 *
 * @param message The map.
 * @returns The frame.
 */
export function handshakeControlFrame(message: Record<string, unknown>): Uint8Array {
  return frame([0xc1, 0x03, ...encode(message)]);
}

/**
 * Bytes 0, 1, 2, … (mod 251) from `seed`, so that misplaced bytes show.
 *
 * @param length How many.
 * @param seed The first byte.
 * @returns The bytes.
 */
export function pattern(length: number, seed = 0): Uint8Array {
  const out = new Uint8Array(length);
  const period = Math.min(251, length);
  for (let i = 0; i < period; i++) out[i] = (i + seed) % 251;
  // The pattern repeats every 251 bytes: copy what is there, doubling.
  for (let filled = period; filled < length; filled *= 2) {
    out.copyWithin(filled, 0, Math.min(filled, length - filled));
  }
  return out;
}

/**
 * A frame whose body is exactly `bodyBytes` long: a MessagePack bin of the right size.
 *
 * @param bodyBytes The body's length (at least 2).
 * @param seed The pattern's first byte.
 * @returns The frame and the bin's bytes (the decoded value).
 */
export function binFrame(bodyBytes: number, seed = 0): { frame: Uint8Array; value: Uint8Array } {
  const head = bodyBytes - 2 < 256 ? 2 : bodyBytes - 3 < 65_536 ? 3 : 5;
  const value = pattern(bodyBytes - head, seed);
  const body = encode(value);
  assert.equal(body.byteLength, bodyBytes);
  return { frame: frame(body), value };
}

/**
 * Cuts `bytes` into chunks of `size` (views, the last one shorter).
 *
 * @param bytes The bytes.
 * @param size The chunk size.
 * @returns The chunks.
 */
export function split(bytes: Uint8Array, size: number): Uint8Array[] {
  const chunks = [];
  for (let i = 0; i < bytes.byteLength; i += size) chunks.push(bytes.subarray(i, i + size));
  return chunks;
}

/**
 * Lets every pending promise callback run (one macrotask).
 *
 * @returns Resolves after a `setTimeout(0)`.
 */
export function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/**
 * Waits, a turn of the event loop at a time (at most 2,000), until `condition` holds.
 *
 * @param condition What to wait for.
 * @param what Its name, for the error.
 * @returns Resolves once it holds.
 * @throws {Error} If it still does not hold.
 */
export async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (condition()) return;
    await tick();
  }
  throw new Error(`Still waiting for ${what}`);
}

/**
 * Waits for and takes the next message, as a receive does.
 *
 * @param session The session (anything with an inbox).
 * @returns The value.
 */
export function next(session: { readonly inbox: Inbox }): Promise<unknown> {
  return session.inbox.next(NO_DEADLINE);
}

/**
 * Takes every waiting value.
 *
 * @param session The session (anything with an inbox).
 * @returns The values, in order.
 */
export function takeAll(session: { readonly inbox: Inbox }): unknown[] {
  const values = [];
  for (let a = session.inbox.take(); a !== undefined; a = session.inbox.take()) {
    values.push(a.value);
  }
  return values;
}
