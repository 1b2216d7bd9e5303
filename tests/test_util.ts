/**
 * Helpers shared by the tests (not published).
 *
 * @module
 */

import { type Client, connect } from "../client.ts";
import { decode, encode } from "../codec.ts";
import { listen, type Server } from "../server.ts";
import { FrameReader } from "../framing.ts";
import { type ListenOptions } from "../types.ts";

/**
 * Concatenates byte chunks into one array.
 *
 * @param chunks The chunks, in order.
 * @returns Their bytes, contiguous.
 */
export function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.byteLength, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** Waits (polling, bounded) until `condition` holds. */
export async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`Gave up waiting: ${what}`);
}

/** A peer that speaks the wire format by hand. */
export class RawPeer implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  readonly reader: FrameReader;
  readonly writer: WritableStreamDefaultWriter<Uint8Array>;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.reader = new FrameReader(conn.readable);
    this.writer = conn.writable.getWriter();
  }

  static async connect(port: number): Promise<RawPeer> {
    return new RawPeer(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes raw bytes. */
  write(bytes: Uint8Array | number[]): Promise<void> {
    return this.writer.write(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
  }

  /** Writes one value in a frame. */
  send(value: unknown): Promise<void> {
    return this.writeFrame(encode(value));
  }

  /** Writes one body in a frame. */
  writeFrame(body: Uint8Array): Promise<void> {
    const frame = new Uint8Array(4 + body.byteLength);
    new DataView(frame.buffer).setUint32(0, body.byteLength);
    frame.set(body, 4);
    return this.write(frame);
  }

  /** Writes a handshake message: a control frame `c1 03` + the map. */
  sendHandshake(message: Record<string, unknown>): Promise<void> {
    return this.writeFrame(new Uint8Array([0xc1, 0x03, ...encode(message)]));
  }

  /**
   * Reads the next value (a handshake message's map for a `c1 03` control
   * frame), answering pings on the way; `null` when the server closed.
   */
  async recv(): Promise<unknown> {
    while (true) {
      const body = await this.reader.read();
      if (body === null) return null;
      if (body[0] !== 0xc1) return decode(body);
      if (body[1] === 0x03) return decode(body.subarray(2));
      if (body[1] === 0x01) {
        await this.writeFrame(new Uint8Array([0xc1, 0x02, ...body.subarray(2)]));
      }
    }
  }

  /** Says hello (with `fields`) and returns the answer: the welcome, or a reject. */
  async handshake(fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    await this.sendHandshake({ fedcomm: 3, type: "hello", ...fields });
    return await this.recv() as Record<string, unknown>;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.reader.cancel();
    try {
      this.conn.close();
    } catch {
      // Closed already when its readable ended.
    }
  }
}

/**
 * What a promise rejected with, or `undefined` if it resolved: for asserting
 * on an error's type and fields together.
 */
export function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(() => undefined, (error) => error);
}

/** A server with `n` clients connected one after another, so client i has id i. */
export async function cluster(
  n: number,
  options?: Omit<ListenOptions, "clients">,
): Promise<{ server: Server; clients: Client[] } & AsyncDisposable> {
  const server = listen({ clients: n, ...options });
  const clients: Client[] = [];
  try {
    for (let i = 0; i < n; i++) clients.push(await connect({ port: server.port }));
    await server.ready();
  } catch (error) {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
    throw error;
  }
  return {
    server,
    clients,
    async [Symbol.asyncDispose]() {
      await Promise.all(clients.map((c) => c.close()));
      await server.close();
    },
  };
}
