/**
 * The peer the protocol vector tests play against the library, over TCP on
 * localhost: it writes vectors and records every byte the library writes
 * ({@linkcode Raw}, {@linkcode RawServer}), and fixes the random bytes of the
 * wire ({@linkcode withRandom}). Not published.
 *
 * @module
 */

import assert from "node:assert/strict";
import { concat } from "./test_util.ts";
import { frameOf } from "./protocol_vectors.ts";

/** Where the library and the peer listen. */
export const HOST = "127.0.0.1";
const WAIT_MS = 5_000;

/** The frames a scenario made the library write, by case name. */
export type Captured = Record<string, Uint8Array>;

/** Runs the library against the peer and returns the frames the library wrote. */
export type Scenario = () => Promise<Captured>;

/** Which cases each scenario writes. */
export type Writes = readonly (readonly [readonly string[], Scenario])[];

/** `promise`, or an error after 5 s (the caller's `finally` then closes the socket). */
export async function soon<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Still waiting for ${what}`)), WAIT_MS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** One TCP connection of the peer: writes vectors, reads the library's frames byte for byte. */
export class Raw {
  readonly #conn: Deno.Conn;
  #pending: Uint8Array = new Uint8Array(0);
  #closed = false;

  /** The peer's side of `conn`. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  /** Dials the library's server. */
  static async connect(port: number): Promise<Raw> {
    return new Raw(await Deno.connect({ hostname: HOST, port }));
  }

  /** Writes frames: case names (their vector bytes) or whole frames. */
  async send(...frames: (string | Uint8Array)[]): Promise<void> {
    const bytes = concat(frames.map((f) => typeof f === "string" ? frameOf(f) : f));
    for (let at = 0; at < bytes.byteLength;) at += await this.#conn.write(bytes.subarray(at));
  }

  /** Reads more bytes; `false` at the end of the stream. */
  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(64 * 1024);
    const n = await soon(this.#conn.read(chunk), "bytes from the library");
    if (n === null) return false;
    this.#pending = concat([this.#pending, chunk.subarray(0, n)]);
    return true;
  }

  /** The next whole frame the library wrote, header included. */
  async frame(): Promise<Uint8Array> {
    while (true) {
      const pending = this.#pending;
      if (pending.byteLength >= 4) {
        const end = 4 + new DataView(pending.buffer, pending.byteOffset).getUint32(0);
        if (pending.byteLength >= end) {
          this.#pending = pending.slice(end);
          return pending.slice(0, end);
        }
      }
      if (!await this.#fill()) {
        throw new Error(`The library closed the connection (${pending.byteLength} bytes left)`);
      }
    }
  }

  /** Asserts that the library closed the connection with nothing more written. */
  async eof(): Promise<void> {
    while (await this.#fill()) {
      // Reads until the end.
    }
    assert.equal(this.#pending.byteLength, 0, "nothing after the last frame");
  }

  /** Closes the connection (once). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }
}

/** A listening socket for the server side of the peer, which `connect()` dials. */
export class RawServer {
  readonly #listener = Deno.listen({ hostname: HOST, port: 0 });
  readonly #accepted: Raw[] = [];

  /** The port to dial. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** The next connection of the library's client. */
  async accept(): Promise<Raw> {
    const raw = new Raw(await soon(this.#listener.accept(), "a connection"));
    this.#accepted.push(raw);
    return raw;
  }

  /** Closes every connection accepted, and the listener. */
  close(): void {
    for (const raw of this.#accepted) raw.close();
    this.#listener.close();
  }
}

/** Runs `run` with a new {@linkcode RawServer}, closed after. */
export async function withPeer<T>(run: (peer: RawServer) => Promise<T>): Promise<T> {
  const peer = new RawServer();
  try {
    return await run(peer);
  } finally {
    peer.close();
  }
}

/** Runs `run` with `crypto.getRandomValues` giving these bytes, in order. */
export async function withRandom<T>(fills: Uint8Array[], run: () => Promise<T>): Promise<T> {
  const queue = [...fills];
  Object.defineProperty(crypto, "getRandomValues", {
    configurable: true,
    writable: true,
    value: <V extends ArrayBufferView | null>(array: V): V => {
      const next = queue.shift();
      assert.ok(next !== undefined && array !== null, "an unexpected call for random bytes");
      assert.equal(array.byteLength, next.byteLength, "random bytes of the vector's size");
      new Uint8Array(array.buffer, array.byteOffset, array.byteLength).set(next);
      return array;
    },
  });
  try {
    const result = await run();
    assert.equal(queue.length, 0, "every fixed random value was used");
    return result;
  } finally {
    Reflect.deleteProperty(crypto, "getRandomValues");
  }
}
