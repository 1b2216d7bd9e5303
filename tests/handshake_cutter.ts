/**
 * {@linkcode HandshakeCutter}: a proxy for `resume_cuts_test.ts` that cuts
 * one handshake frame of one connection, the cut points that
 * `bench/_fault_proxy.ts` cannot aim at with authentication on (the `auth`
 * frame and the `welcome` of a resume), or lets a large frame through whole
 * and loses its acknowledgement. Not published.
 *
 * @module
 */

import type { Direction } from "../bench/_fault_proxy.ts";
import { decode } from "../codec.ts";

/** One proxied connection: the accepted socket and the one to the target. */
type Pair = { client: Deno.Conn; server?: Deno.Conn; closed: boolean; mute?: boolean };

/** A frame of 1 MiB or more: what `deliver` mode lets through whole, and then stops. */
const LARGE_FRAME_BYTES = 1024 * 1024;

/**
 * A proxy on 127.0.0.1 that forwards every connection whole, except that on
 * connection `connection` it cuts the `frame`-th frame (0-based) of
 * `direction` after `header` bytes of its header (1 to 3), or, with `header`
 * 4, inside its body (half of it forwarded); and it can drop a connection on
 * request. (`bench/_fault_proxy.ts` aims a handshake cut at the first frame
 * of a direction only.)
 */
export class HandshakeCutter implements AsyncDisposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #target: number;
  readonly #plan: { connection: number; direction: Direction; frame: number; header: number };
  readonly #pairs: Pair[] = [];
  /**
   * `deliver` mode: on connection 0, once a frame of 1 MiB or more has gone
   * through whole in this direction, forward nothing more either way (so the
   * receiver reads it and its acknowledgement is lost), and drop the
   * connection 150 ms later. The resume must not send that message again.
   */
  deliver: Direction | undefined;
  /** Resolves once `deliver` dropped the connection. */
  delivered = Promise.withResolvers<void>();
  readonly #tasks: Promise<void>[] = [];
  /** The cut frame's handshake map, once cut (decoded from what the cutter saw whole). */
  cutFrame: Record<string, unknown> | undefined;
  /** Whether the planned cut happened. */
  cut = Promise.withResolvers<Record<string, unknown>>();
  readonly #accepting: Promise<void>;

  constructor(
    target: number,
    plan: { connection: number; direction: Direction; frame: number; header: number },
  ) {
    this.#target = target;
    this.#plan = plan;
    this.#accepting = this.#accept();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  get accepted(): number {
    return this.#pairs.length;
  }

  /** Closes both sockets of a connection (an abrupt drop, wherever the bytes are). */
  drop(connection: number): void {
    const pair = this.#pairs[connection];
    if (pair === undefined) throw new Error(`no connection ${connection}`);
    this.#close(pair);
  }

  #close(pair: Pair): void {
    if (pair.closed) return;
    pair.closed = true;
    for (const conn of [pair.client, pair.server]) {
      try {
        conn?.close();
      } catch {
        // Closed already.
      }
    }
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) {
        const pair: Pair = { client, closed: false };
        const index = this.#pairs.push(pair) - 1;
        this.#tasks.push(this.#serve(pair, index));
      }
    } catch {
      // Closed.
    }
  }

  async #serve(pair: Pair, index: number): Promise<void> {
    try {
      pair.server = await Deno.connect({ hostname: "127.0.0.1", port: this.#target });
      if (pair.closed) return;
      await Promise.all((["up", "down"] as const).map((d) => this.#pump(pair, index, d)));
    } catch {
      // A socket failed.
    } finally {
      this.#close(pair);
    }
  }

  async #pump(pair: Pair, index: number, direction: Direction): Promise<void> {
    // `deliver` mode: where this direction stands in its frames.
    const frames = index === 0 && this.deliver === direction ? new FrameTracker() : undefined;
    const from = direction === "up" ? pair.client : pair.server!;
    const to = direction === "up" ? pair.server! : pair.client;
    const aim = this.#plan.connection === index && this.#plan.direction === direction;
    const buffer = new Uint8Array(64 * 1024);
    // The bytes of this direction so far, while aiming (handshake frames are small).
    let seen = new Uint8Array(0);
    try {
      while (!pair.closed) {
        const n = await from.read(buffer);
        if (n === null) break;
        let chunk = buffer.subarray(0, n);
        if (aim && this.cutFrame === undefined) {
          const start = seen.byteLength;
          const all = new Uint8Array(start + n);
          all.set(seen);
          all.set(chunk, start);
          seen = all;
          const at = this.#cutOffset(seen);
          if (at !== undefined && at <= seen.byteLength) {
            chunk = chunk.subarray(0, Math.max(0, at - start));
            if (chunk.byteLength > 0) await to.write(chunk);
            this.#close(pair);
            this.cut.resolve(this.cutFrame!);
            return;
          }
        }
        if (pair.mute) continue; // swallowed: the acknowledgement of the delivered frame too
        const end = frames?.forward(chunk) ?? chunk.byteLength;
        let written = 0;
        while (written < end) written += await to.write(chunk.subarray(written, end));
        if (end < chunk.byteLength || frames?.largeDone) {
          pair.mute = true;
          setTimeout(() => {
            this.#close(pair);
            this.delivered.resolve();
          }, 150);
        }
      }
    } catch {
      // Closed.
    } finally {
      this.#close(pair);
    }
  }

  /** Where to cut in the direction's first bytes `seen`, once the target frame is seen whole. */
  #cutOffset(seen: Uint8Array): number | undefined {
    const view = new DataView(seen.buffer, seen.byteOffset, seen.byteLength);
    let offset = 0;
    for (let frame = 0;; frame++) {
      if (offset + 4 > seen.byteLength) return undefined;
      const length = view.getUint32(offset);
      if (offset + 4 + length > seen.byteLength) return undefined;
      if (frame === this.#plan.frame) {
        const body = seen.subarray(offset + 4, offset + 4 + length);
        this.cutFrame = body[0] === 0xc1 && body[1] === 0x03
          ? decode(body.subarray(2)) as Record<string, unknown>
          : { type: "not a handshake frame" };
        const { header } = this.#plan;
        return header < 4 ? offset + header : offset + 4 + Math.floor(length / 2);
      }
      offset += 4 + length;
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Closed.
    }
    await this.#accepting;
    for (const pair of this.#pairs) this.#close(pair);
    await Promise.all(this.#tasks);
    this.cut.resolve({ type: "no cut" });
  }
}

/** Where a byte stream stands in its frames (`deliver` mode), fed a chunk at a time. */
class FrameTracker {
  readonly #head = new Uint8Array(4);
  #headSeen = 0;
  /** Bytes of the current body still to come, or -1 between frames. */
  #bodyLeft = -1;
  #bodyLength = 0;

  /**
   * Reads a chunk's frame boundaries.
   *
   * @param chunk The next bytes of the stream.
   * @returns How many of them to forward: all, or those up to the end of the
   * first large frame they complete.
   */
  forward(chunk: Uint8Array): number {
    for (let i = 0; i < chunk.byteLength;) {
      if (this.#bodyLeft < 0) {
        this.#head[this.#headSeen++] = chunk[i++];
        if (this.#headSeen === 4) {
          this.#bodyLength = this.#bodyLeft = new DataView(this.#head.buffer).getUint32(0);
          this.#headSeen = 0;
        }
      } else {
        const n = Math.min(this.#bodyLeft, chunk.byteLength - i);
        i += n;
        this.#bodyLeft -= n;
      }
      if (this.#bodyLeft === 0) {
        this.#bodyLeft = -1;
        if (this.#bodyLength >= LARGE_FRAME_BYTES) return i;
      }
    }
    return chunk.byteLength;
  }

  /** Whether the stream is between frames and the last one read was large. */
  get largeDone(): boolean {
    return this.#bodyLeft < 0 && this.#bodyLength >= LARGE_FRAME_BYTES;
  }
}
