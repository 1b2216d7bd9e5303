/**
 * A TCP proxy on 127.0.0.1 that injects faults into fedcomm connections, for
 * the soak (`bench/soak.ts`): clients connect to the proxy, the proxy
 * connects to the server and forwards both directions, and on request it
 *
 * - **cuts** a connection at a byte offset chosen by a seeded PRNG: it
 *   forwards the bytes up to the offset in one direction, then closes both
 *   sockets. It follows the 4-byte big-endian length headers of both
 *   directions, so it can aim a cut (inside a header, inside a body, between
 *   two frames, inside the handshake) and classify where each cut really
 *   landed;
 * - **stalls** a connection: stops forwarding in one or both directions for
 *   a while (reading nothing either, so TCP pushes back on the sender), then
 *   goes on; longer than the peers' idle timeout, so dead-peer detection
 *   fires;
 * - **shapes** a link (`_link_shape.ts`), per connection or per client name
 *   and per direction: added one-way latency, seeded jitter (bytes never
 *   reordered), bandwidth (a token bucket), with at most `queueBytes` held
 *   per direction before it stops reading, so TCP pushes back. Set it with
 *   {@linkcode FaultProxyOptions.shape} (for every connection, or by a
 *   function of the client's name, asked again once its hello names it) or
 *   {@linkcode FaultProxy.setShape} (a live connection). A stall stops the
 *   reading; the bytes already in the delay line still arrive. A cut
 *   delivers the bytes before it (after their delay), then closes.
 *
 * Faults are counted by kind ({@linkcode FaultKind}). A connection is in its
 * handshake until the server's `welcome` (or `reject`, a `c1 03` control
 * frame) has been forwarded whole; a cut before that is a `cut-handshake`,
 * wherever it lands.
 *
 * ```ts ignore
 * await using proxy = new FaultProxy({ targetPort: server.port, seed: 7 });
 * const client = await connect({ port: proxy.port });
 * await proxy.cut({ kind: "body", direction: "down" });
 * ```
 *
 * @module
 */

import { decode } from "../codec.ts";
import { type Random, seededRandom } from "../examples/random.ts";
import { checkLinkShapes, LinkShaper, type LinkShapes } from "./_link_shape.ts";

export type { LinkShape, LinkShapes } from "./_link_shape.ts";

/** Where a requested cut should land. */
export type CutKind =
  /** Inside the next frame header (after 1 to 3 of its 4 bytes). */
  | "header"
  /** Inside the next frame body (its header forwarded, not all of its body). */
  | "body"
  /** Between two frames (after at least one more byte). */
  | "boundary"
  /** Inside the handshake of the next connection accepted. */
  | "handshake"
  /** Anywhere within the next `randomWindow` bytes. */
  | "random";

/** A direction: `up` is client → server, `down` server → client. */
export type Direction = "up" | "down";

/** What the proxy did, counted by {@linkcode FaultProxy.counts}. */
export type FaultKind =
  | "cut-handshake"
  | "cut-header"
  | "cut-body"
  | "cut-boundary"
  | "stall-up"
  | "stall-down"
  | "stall-both";

/** Every {@linkcode FaultKind}, in the order reports list them. */
export const FAULT_KINDS: readonly FaultKind[] = [
  "cut-handshake",
  "cut-header",
  "cut-body",
  "cut-boundary",
  "stall-up",
  "stall-down",
  "stall-both",
];

/** One fault the proxy injected. */
export interface Fault {
  /** Where it landed (cuts) or which directions stopped (stalls). */
  readonly kind: FaultKind;
  /** The proxied connection's number (0, 1, … in order of arrival). */
  readonly connection: number;
  /** The client's name from its hello, if it gave one. */
  readonly name: string | undefined;
  /** The direction cut, or stalled (`both` for a stall of both). */
  readonly direction: Direction | "both";
  /**
   * Cuts: how many bytes of that direction were forwarded in all (the cut
   * offset); stalls: how long forwarding stopped, in ms.
   */
  readonly offset: number;
  /** Cuts: the index of the frame the cut landed in or after (0-based, that direction). */
  readonly frame: number;
}

/** Options for {@linkcode FaultProxy}. */
export interface FaultProxyOptions {
  /** The server's port. */
  targetPort: number;
  /** The server's address (default `"127.0.0.1"`). */
  targetHostname?: string;
  /** The proxy's port on 127.0.0.1 (default 0: a free one, see {@linkcode FaultProxy.port}). */
  port?: number;
  /** The PRNG seed that picks connections, directions and offsets (default 1). */
  seed?: number;
  /** How far ahead a `random` cut may land, in bytes (default 1 MiB). */
  randomWindow?: number;
  /**
   * How to shape each connection's link (default: not at all). Either the
   * shapes of every connection, or a function asked at each connection's
   * accept (`name` undefined) and again once its hello names the client; its
   * answer (`undefined`: unshaped) applies to the bytes read from then on.
   * The hello is read before it is forwarded, so a shape by name covers the
   * whole connection. A function that throws or answers a malformed shape
   * closes that connection, and {@linkcode FaultProxy.stop} rejects with the
   * error.
   */
  shape?: LinkShapes | ((client: ShapedClient) => LinkShapes | undefined);
}

/** What {@linkcode FaultProxyOptions.shape} is told about a connection. */
export interface ShapedClient {
  /** The proxied connection's number. */
  readonly connection: number;
  /** The client's name from its hello; `undefined` until the hello is read. */
  readonly name: string | undefined;
}

/** Options for {@linkcode FaultProxy.cut}. */
export interface CutOptions {
  /** Where to cut. */
  kind: CutKind;
  /** Which direction to cut in (default: picked by the PRNG). */
  direction?: Direction;
  /**
   * Which live connection (default: one picked by the PRNG among those past
   * their handshake and with no cut pending). Ignored for `handshake` cuts,
   * which apply to the next connection accepted.
   */
  connection?: number;
  /**
   * `body` cuts: aim only at a body of at least this many bytes (default 0:
   * the next body), so that a cut armed before a large message lands inside
   * it whatever small frames (acks, pings) go first.
   */
  minBodyBytes?: number;
}

/** Options for {@linkcode FaultProxy.stall}. */
export interface StallOptions {
  /** How long to stop forwarding, in ms. */
  ms: number;
  /** Which directions to stop (default `both`). */
  direction?: Direction | "both";
  /** Which live connection (default: one picked by the PRNG among those past their handshake). */
  connection?: number;
}

/** One live proxied connection, as {@linkcode FaultProxy.live} lists it. */
export interface ProxiedConnection {
  /** Its number. */
  readonly connection: number;
  /** The client's name from its hello, if any. */
  readonly name: string | undefined;
  /** Whether the server's welcome has not been forwarded yet. */
  readonly handshaking: boolean;
  /** Bytes forwarded client → server. */
  readonly up: number;
  /** Bytes forwarded server → client. */
  readonly down: number;
  /** Bytes held by the up link's shaper now (read, not yet written). */
  readonly queuedUp: number;
  /** Bytes held by the down link's shaper now. */
  readonly queuedDown: number;
  /** The most bytes the up link's shaper held at once. */
  readonly peakQueuedUp: number;
  /** The most bytes the down link's shaper held at once. */
  readonly peakQueuedDown: number;
}

const HEADER_BYTES = 4;
const CONTROL = 0xc1;
const HANDSHAKE = 0x03;
/** Handshake bodies larger than this are not decoded (the library's own limit). */
const HANDSHAKE_BODY_BYTES = 64 * 1024;
const READ_BUFFER_BYTES = 64 * 1024;

/** Where a byte stream stands relative to its frames. */
type Position = "boundary" | "header" | "body";

/**
 * Follows the frames of one direction: how many bytes went by, and whether
 * the stream is between frames, inside a header or inside a body. Bodies of
 * handshake frames are kept whole while `capture` is set, for `onFrame`.
 */
class FrameTracker {
  /** Bytes fed so far. */
  offset = 0;
  /** Frames completed so far. */
  frames = 0;
  /** Whether to keep handshake bodies for `onFrame`. */
  capture = true;
  readonly #head = new Uint8Array(HEADER_BYTES);
  #headSeen = 0;
  #length = -1;
  #bodySeen = 0;
  #body: Uint8Array | undefined;
  readonly #onFrame: (body: Uint8Array) => void;

  constructor(onFrame: (body: Uint8Array) => void) {
    this.#onFrame = onFrame;
  }

  get position(): Position {
    if (this.#length >= 0) return "body";
    return this.#headSeen > 0 ? "header" : "boundary";
  }

  /** The body length of the frame being read (when `position` is `body`). */
  get length(): number {
    return this.#length;
  }

  /** Body bytes of the current frame seen so far. */
  get bodySeen(): number {
    return this.#bodySeen;
  }

  /** Bytes until the current header or body is complete (never 0). */
  untilTransition(): number {
    return this.#length >= 0 ? this.#length - this.#bodySeen : HEADER_BYTES - this.#headSeen;
  }

  /** Takes bytes that do not go past the next transition. */
  feed(bytes: Uint8Array): void {
    this.offset += bytes.byteLength;
    if (this.#length < 0) {
      this.#head.set(bytes, this.#headSeen);
      this.#headSeen += bytes.byteLength;
      if (this.#headSeen < HEADER_BYTES) return;
      this.#length = new DataView(this.#head.buffer).getUint32(0);
      this.#bodySeen = 0;
      this.#body = this.capture && this.#length >= 2 && this.#length <= HANDSHAKE_BODY_BYTES
        ? new Uint8Array(this.#length)
        : undefined;
      if (this.#length === 0) this.#complete();
      return;
    }
    this.#body?.set(bytes, this.#bodySeen);
    this.#bodySeen += bytes.byteLength;
    if (this.#bodySeen === this.#length) this.#complete();
  }

  #complete(): void {
    const body = this.#body;
    this.#headSeen = 0;
    this.#length = -1;
    this.#bodySeen = 0;
    this.#body = undefined;
    this.frames++;
    if (body !== undefined && body[0] === CONTROL && body[1] === HANDSHAKE) this.#onFrame(body);
  }
}

/** A cut waiting for its connection to reach its offset. */
interface PendingCut {
  readonly kind: CutKind;
  readonly direction: Direction;
  /** Handshake cuts: inside the first frame's header (else inside its body). */
  readonly inHeader: boolean;
  /** Body cuts: the smallest body to aim at. */
  readonly minBodyBytes: number;
  /** The direction's offset when the cut was armed. */
  armedAt: number;
  /** The offset to cut at, once chosen. */
  target: number | undefined;
  readonly resolve: (fault: Fault | undefined) => void;
}

/** One client connection and its server connection. */
class Pair {
  readonly id: number;
  readonly client: Deno.TcpConn;
  server: Deno.TcpConn | undefined;
  name: string | undefined;
  handshaking = true;
  closed = false;
  cut: PendingCut | undefined;
  readonly stalls: Record<Direction, Promise<void> | undefined> = {
    up: undefined,
    down: undefined,
  };
  readonly trackers: Record<Direction, FrameTracker>;
  readonly shapers: Record<Direction, LinkShaper>;
  readonly #closing: Promise<void>;
  readonly #signalClosed: () => void;
  readonly #stallEnds = new Set<() => void>();
  readonly #onName: (pair: Pair) => void;

  constructor(id: number, client: Deno.TcpConn, seed: number, onName: (pair: Pair) => void) {
    this.id = id;
    this.client = client;
    this.#onName = onName;
    this.shapers = {
      up: new LinkShaper((bytes) => writeAll(this.server!, bytes), { seed: seed * 2 + 1 }),
      down: new LinkShaper((bytes) => writeAll(this.client, bytes), { seed: seed * 2 + 2 }),
    };
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#closing = promise;
    this.#signalClosed = resolve;
    this.trackers = {
      up: new FrameTracker((body) => this.#onHandshake("up", body)),
      down: new FrameTracker((body) => this.#onHandshake("down", body)),
    };
  }

  #onHandshake(direction: Direction, body: Uint8Array): void {
    let message: unknown;
    try {
      message = decode(body.subarray(2));
    } catch {
      return;
    }
    if (typeof message !== "object" || message === null) return;
    const { type, name } = message as { type?: unknown; name?: unknown };
    if (direction === "up" && type === "hello" && typeof name === "string") {
      this.name = name;
      this.#onName(this);
    }
    if (direction === "down" && (type === "welcome" || type === "reject")) {
      this.handshaking = false;
      this.trackers.up.capture = false;
      this.trackers.down.capture = false;
    }
  }

  /** Shapes both directions from now on (`undefined`: unshaped). */
  setShape(shapes: LinkShapes | undefined): void {
    this.shapers.up.shape = shapes?.up ?? {};
    this.shapers.down.shape = shapes?.down ?? {};
  }

  /** Stops forwarding in `direction` for `ms` (or until the pair closes). */
  stall(direction: Direction, ms: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    const end = () => {
      clearTimeout(timer);
      this.#stallEnds.delete(end);
      if (this.stalls[direction] === promise) this.stalls[direction] = undefined;
      resolve();
    };
    const timer = setTimeout(end, ms);
    this.#stallEnds.add(end);
    this.stalls[direction] = promise;
    return promise;
  }

  /** Waits while `direction` is stalled. */
  async gate(direction: Direction): Promise<void> {
    while (this.stalls[direction] !== undefined && !this.closed) await this.stalls[direction];
  }

  /** Resolves when the pair is closed. */
  get closing(): Promise<void> {
    return this.#closing;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const conn of [this.client, this.server]) {
      try {
        conn?.close();
      } catch {
        // Already closed.
      }
    }
    for (const end of [...this.#stallEnds]) end();
    this.shapers.up.close();
    this.shapers.down.close();
    this.cut?.resolve(undefined);
    this.cut = undefined;
    this.#signalClosed();
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.byteLength) written += await conn.write(bytes.subarray(written));
}

/**
 * The fault-injecting proxy. Listening starts in the constructor; `stop()`
 * (or leaving an `await using` scope) closes the listener and every socket,
 * ends every stall and resolves every pending cut with `undefined`.
 */
export class FaultProxy implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #targetHostname: string;
  readonly #targetPort: number;
  readonly #random: Random;
  readonly #randomWindow: number;
  readonly #pairs = new Map<number, Pair>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #handshakeCuts: PendingCut[] = [];
  readonly #counts: Record<FaultKind, number>;
  readonly #faults: Fault[] = [];
  readonly #accepting: Promise<void>;
  readonly #seed: number;
  readonly #shape: FaultProxyOptions["shape"];
  #shapeError: unknown = undefined;
  #accepted = 0;
  #stopped: Promise<void> | undefined;

  /**
   * Starts listening on 127.0.0.1.
   *
   * @param options The server's address, the proxy's port, the seed, the links' shapes.
   * @throws {TypeError} When `shape` is neither a function nor well-formed shapes.
   * @throws {RangeError} When a field of `shape` is out of range.
   */
  constructor(options: FaultProxyOptions) {
    const { shape } = options;
    if (shape !== undefined && typeof shape !== "function") checkLinkShapes(shape, "shape");
    this.#shape = shape;
    this.#targetHostname = options.targetHostname ?? "127.0.0.1";
    this.#targetPort = options.targetPort;
    this.#seed = options.seed ?? 1;
    this.#random = seededRandom(this.#seed);
    this.#randomWindow = options.randomWindow ?? 1 << 20;
    this.#counts = Object.fromEntries(FAULT_KINDS.map((kind) => [kind, 0])) as Record<
      FaultKind,
      number
    >;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: options.port ?? 0 });
    this.#accepting = this.#accept();
  }

  /** The port the proxy listens on. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.#accepted;
  }

  /** Connections open now. */
  get connections(): number {
    return this.#pairs.size;
  }

  /** Faults injected so far, by kind (a copy). */
  get counts(): Record<FaultKind, number> {
    return { ...this.#counts };
  }

  /** Every fault injected so far, in order (a copy). */
  get faults(): Fault[] {
    return [...this.#faults];
  }

  /** The live connections. */
  live(): ProxiedConnection[] {
    return [...this.#pairs.values()].map((pair) => ({
      connection: pair.id,
      name: pair.name,
      handshaking: pair.handshaking,
      up: pair.trackers.up.offset,
      down: pair.trackers.down.offset,
      queuedUp: pair.shapers.up.queued,
      queuedDown: pair.shapers.down.queued,
      peakQueuedUp: pair.shapers.up.peakQueued,
      peakQueuedDown: pair.shapers.down.peakQueued,
    }));
  }

  /**
   * Shapes a live connection's link from now on, replacing its shapes (bytes
   * already queued keep their times; none are reordered).
   *
   * @param connection The connection's number.
   * @param shapes The shapes of both directions (`{}`: unshaped).
   * @returns Whether there was such a live connection.
   * @throws {TypeError} When the shapes are malformed.
   * @throws {RangeError} When a field is out of range.
   */
  setShape(connection: number, shapes: LinkShapes): boolean {
    checkLinkShapes(shapes);
    const pair = this.#pairs.get(connection);
    if (pair === undefined || pair.closed) return false;
    pair.setShape(shapes);
    return true;
  }

  /**
   * Arms a cut. A `handshake` cut waits for the next connection accepted;
   * the others apply to a live connection past its handshake.
   *
   * @param options Where to cut, in which direction, on which connection.
   * @returns The fault once the cut happened, or `undefined` if there was no
   * such connection, or it closed (or the proxy stopped) before the cut.
   */
  cut(options: CutOptions): Promise<Fault | undefined> {
    const { promise, resolve } = Promise.withResolvers<Fault | undefined>();
    const direction = options.direction ?? (this.#random() < 0.5 ? "up" : "down");
    const cut: PendingCut = {
      kind: options.kind,
      direction,
      inHeader: this.#random() < 1 / 3,
      minBodyBytes: options.minBodyBytes ?? 0,
      armedAt: 0,
      target: undefined,
      resolve,
    };
    if (this.#stopped !== undefined) {
      resolve(undefined);
    } else if (options.kind === "handshake") {
      this.#handshakeCuts.push(cut);
    } else {
      const pair = this.#pick(options.connection, (p) => p.cut === undefined);
      if (pair === undefined || pair.cut !== undefined) {
        resolve(undefined);
      } else {
        cut.armedAt = pair.trackers[direction].offset;
        pair.cut = cut;
      }
    }
    return promise;
  }

  /**
   * Stops forwarding on a live connection past its handshake, in one or both
   * directions, for `ms`; the fault is counted when the stall starts.
   *
   * @param options How long, which directions, which connection.
   * @returns The fault once the stall is over (or the connection closed), or
   * `undefined` if there was no such connection.
   */
  async stall(options: StallOptions): Promise<Fault | undefined> {
    if (this.#stopped !== undefined) return undefined;
    const pair = this.#pick(options.connection, () => true);
    if (pair === undefined) return undefined;
    const direction = options.direction ?? "both";
    const fault: Fault = {
      kind: `stall-${direction}`,
      connection: pair.id,
      name: pair.name,
      direction,
      offset: options.ms,
      frame: -1,
    };
    this.#record(fault);
    const directions: Direction[] = direction === "both" ? ["up", "down"] : [direction];
    await Promise.all(directions.map((d) => pair.stall(d, options.ms)));
    return fault;
  }

  /** Closes the listener and every connection; waits for every task to end. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      for (const cut of this.#handshakeCuts.splice(0)) cut.resolve(undefined);
      for (const pair of this.#pairs.values()) pair.close();
      await this.#accepting;
      while (this.#tasks.size > 0) await Promise.all(this.#tasks);
      if (this.#shapeError !== undefined) throw this.#shapeError;
    })();
    return this.#stopped;
  }

  /** Same as {@linkcode FaultProxy.stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }

  #pick(connection: number | undefined, accept: (pair: Pair) => boolean): Pair | undefined {
    if (connection !== undefined) return this.#pairs.get(connection);
    const candidates = [...this.#pairs.values()].filter((p) =>
      !p.handshaking && !p.closed && accept(p)
    );
    if (candidates.length === 0) return undefined;
    return candidates[Math.floor(this.#random() * candidates.length)];
  }

  /** Asks `options.shape` for the pair's shapes; a failure closes the pair. */
  #applyShape(pair: Pair): void {
    const shape = this.#shape;
    if (shape === undefined) return;
    try {
      const shapes = typeof shape === "function"
        ? shape({ connection: pair.id, name: pair.name })
        : shape;
      if (shapes !== undefined) checkLinkShapes(shapes, "shape()");
      pair.setShape(shapes);
    } catch (error) {
      this.#shapeError ??= error;
      pair.close();
    }
  }

  #record(fault: Fault): void {
    this.#counts[fault.kind]++;
    this.#faults.push(fault);
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        if (this.#stopped !== undefined) {
          conn.close();
          break;
        }
        const id = this.#accepted++;
        const pair = new Pair(id, conn, this.#seed * 65_537 + id, (p) => this.#applyShape(p));
        this.#applyShape(pair);
        const cut = this.#handshakeCuts.shift();
        if (cut !== undefined) pair.cut = cut;
        this.#pairs.set(pair.id, pair);
        this.#track(this.#serve(pair));
      }
    } catch {
      // The listener was closed.
    }
  }

  async #serve(pair: Pair): Promise<void> {
    try {
      pair.server = await Deno.connect({
        hostname: this.#targetHostname,
        port: this.#targetPort,
      });
      if (pair.closed) pair.server.close();
      else {
        pair.client.setNoDelay(true);
        pair.server.setNoDelay(true);
        await Promise.all([this.#pump(pair, "up"), this.#pump(pair, "down")]);
      }
    } catch {
      // The server is gone: the client's connection is closed below.
    } finally {
      pair.close();
      this.#pairs.delete(pair.id);
    }
  }

  async #pump(pair: Pair, direction: Direction): Promise<void> {
    const from = direction === "up" ? pair.client : pair.server!;
    const shaper = pair.shapers[direction];
    const buffer = new Uint8Array(READ_BUFFER_BYTES);
    try {
      while (!pair.closed) {
        const n = await from.read(buffer);
        if (n === null) {
          // What is still in the delay line arrives before the close.
          await shaper.drain();
          break;
        }
        await pair.gate(direction);
        if (pair.closed) break;
        const { forward, fault } = this.#scan(pair, direction, buffer.subarray(0, n));
        // The shaper writes to the other socket (at once when the link is unshaped).
        if (forward.byteLength > 0 && !pair.closed) await shaper.push(forward);
        if (fault !== undefined) {
          const cut = pair.cut!;
          pair.cut = undefined;
          this.#record(fault);
          await shaper.drain();
          pair.close();
          cut.resolve(fault);
          break;
        }
      }
    } catch {
      // A socket failed or was closed: the pair ends.
    } finally {
      pair.close();
    }
  }

  /**
   * Feeds a chunk through the direction's tracker, transition by transition,
   * choosing the pending cut's target on the way; stops at the target.
   */
  #scan(
    pair: Pair,
    direction: Direction,
    chunk: Uint8Array,
  ): { forward: Uint8Array; fault: Fault | undefined } {
    const tracker = pair.trackers[direction];
    let i = 0;
    while (true) {
      const cut = pair.cut?.direction === direction ? pair.cut : undefined;
      if (cut !== undefined) {
        if (cut.target === undefined) this.#aim(cut, tracker);
        if (cut.target === tracker.offset) {
          return { forward: chunk.subarray(0, i), fault: this.#classify(pair, direction) };
        }
      }
      if (i === chunk.byteLength) return { forward: chunk, fault: undefined };
      let n = Math.min(tracker.untilTransition(), chunk.byteLength - i);
      if (cut?.target !== undefined) n = Math.min(n, cut.target - tracker.offset);
      tracker.feed(chunk.subarray(i, i + n));
      i += n;
    }
  }

  /** Chooses the cut's target offset if the tracker stands where the cut may aim from. */
  #aim(cut: PendingCut, tracker: FrameTracker): void {
    const { offset, position } = tracker;
    const random = this.#random;
    switch (cut.kind) {
      case "random":
        cut.target = offset + Math.floor(random() * this.#randomWindow);
        break;
      case "boundary":
        if (position === "boundary" && offset > cut.armedAt) cut.target = offset;
        break;
      case "header":
        if (position === "boundary") cut.target = offset + 1 + Math.floor(random() * 3);
        break;
      case "body":
        if (position === "body" && tracker.bodySeen === 0 && tracker.length >= cut.minBodyBytes) {
          const { length } = tracker;
          cut.target = offset + (length >= 2 ? 1 + Math.floor(random() * (length - 1)) : 0);
        }
        break;
      case "handshake":
        if (cut.inHeader && position === "boundary") {
          cut.target = offset + Math.floor(random() * HEADER_BYTES);
        } else if (!cut.inHeader && position === "body" && tracker.bodySeen === 0) {
          cut.target = offset + Math.floor(random() * tracker.length);
        }
        break;
    }
  }

  #classify(pair: Pair, direction: Direction): Fault {
    const tracker = pair.trackers[direction];
    const kind: FaultKind = pair.handshaking ? "cut-handshake" : `cut-${tracker.position}`;
    return {
      kind,
      connection: pair.id,
      name: pair.name,
      direction,
      offset: tracker.offset,
      frame: tracker.frames,
    };
  }
}
