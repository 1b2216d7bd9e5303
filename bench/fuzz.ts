/**
 * A fuzzer against a live fedcomm server: `deno run -A bench/fuzz.ts
 * --seconds 300 [--seed N] [--concurrency 32]` (`fuzz_server_test.ts` runs
 * the same for ~15 s).
 *
 * Many short TCP connections to a server in this process, on 127.0.0.1,
 * each running one generated case: random bytes; mutated handshake frames;
 * control frames (pings, pongs, unknown kinds, a hello after the welcome);
 * application frames whose MessagePack is mutated (bit flips, truncation,
 * length inflation, interesting bytes, deep nesting); oversized headers;
 * slow partial frames and frames dripped a byte at a time. Every case comes
 * from a seeded PRNG (`--seed`), one stream per connection index, so a
 * failing case can be replayed from its index.
 *
 * What is checked: the server never crashes (an uncaught error ends the
 * run); it ends every connection within a bound after the fuzzer's last
 * byte (`handshakeTimeout` or `idleTimeout` plus slack, else a "hang"); it
 * only answers with documented frames (handshake messages `welcome`,
 * `challenge`, `reject`, a plain v1 `reject`, pings and pongs); its `refuse`
 * reasons and `leave` errors are documented ones; and a legitimate
 * broadcast + gather round passes at the end of every epoch.
 *
 * The run is split into epochs of a few seconds, each with a fresh server
 * (every other one requiring authentication), because a round needs every
 * client slot taken: at the end of an epoch the free slots are filled with
 * plain handshakes, then the two legitimate clients (ids 0 and 1) do their
 * round. RSS is `Deno.memoryUsage().rss` of this process (server, fuzzer and
 * all), sampled every 50 ms.
 *
 * @module
 */

import { type Client, connect } from "../client.ts";
import { decode, encode } from "../codec.ts";
import type { ClientEvent, RefuseEvent } from "../events.ts";
import { FrameReader } from "../framing.ts";
import { listen, type Server } from "../server.ts";
import { NdArray } from "../tensor.ts";
import { type AuthKey, importSecret, prove, secretBytes } from "../_handshake/auth.ts";

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  /** How long to fuzz, in seconds. */
  seconds: number;
  /** The PRNG seed (default 1). */
  seed?: number;
  /** Connections at once (default 24). */
  concurrency?: number;
  /** Seconds per epoch (one server each; default 5). */
  epochSeconds?: number;
  /** Progress lines go here (default: nowhere). */
  log?: (line: string) => void;
}

/** What a run found. */
export interface FuzzReport {
  seed: number;
  seconds: number;
  /** Connections tried. */
  connections: number;
  /** Connections by case. */
  cases: Record<string, number>;
  /** Connections by what the server did. */
  outcomes: Record<string, number>;
  /** Refuse events by reason. */
  refusals: Record<string, number>;
  /** Leave events by error name. */
  leaves: Record<string, number>;
  /** Connections the server did not end within the bound. */
  hangs: string[];
  /** Frames or events outside the documented ones. */
  unexpected: string[];
  /** The slowest end of a connection after the fuzzer's last byte, ms. */
  maxEndMs: number;
  /** RSS of this process before and at the peak (bytes). */
  idleRss: number;
  peakRss: number;
  /** The legitimate round of each epoch. */
  rounds: { epoch: number; ok: boolean; ms: number; error?: string; auth: boolean }[];
}

const SECRET = "fuzz-secret-0123456789abcdef0123";
const HANDSHAKE_TIMEOUT = 1_000;
const IDLE_TIMEOUT = 1_500;
/** The server must end a connection within this long after the fuzzer's last byte. */
export const END_BOUND_MS = IDLE_TIMEOUT + 2_500;
const MAX_FRAME_BYTES = 1024 * 1024;
const SLOTS = 400;

const REFUSE_REASONS = new Set([
  "version",
  "full",
  "malformed",
  "closed",
  "auth",
  "busy",
  "resume",
  "live",
  "duplicate",
  "timeout",
  "error",
]);
const LEAVE_ERRORS = new Set(["ProtocolError", "PeerDisconnectedError", "FrameTooLargeError"]);

// ---------------------------------------------------------------------------
// The PRNG

/** A small seeded PRNG (mulberry32). */
export class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** One of the items. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }
}

/** The PRNG of connection `index` of a run seeded with `seed`. */
export function rngFor(seed: number, index: number): Rng {
  return new Rng(Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b));
}

// ---------------------------------------------------------------------------
// What a case sends

/** One step of a case. */
type Step =
  | { write: Uint8Array }
  | { sleep: number }
  /** Waits (bounded) for the server's answer to the hello: continues only after a welcome. */
  | { awaitWelcome: true }
  /** Waits for a challenge and answers it with a proof (right or wrong). */
  | { auth: "right" | "wrong" | "mutated" };

/** A generated case: a name and its steps. */
interface Case {
  name: string;
  steps: Step[];
}

function frame(body: Uint8Array, length = body.byteLength): Uint8Array {
  const out = new Uint8Array(4 + body.byteLength);
  new DataView(out.buffer).setUint32(0, length >>> 0);
  out.set(body, 4);
  return out;
}

function handshake(message: Record<string, unknown>): Uint8Array {
  return frame(new Uint8Array([0xc1, 0x03, ...encode(message)]));
}

function hello(rng: Rng, auth: boolean): Record<string, unknown> {
  const message: Record<string, unknown> = { fedcomm: 3, type: "hello" };
  if (rng.chance(0.3)) message.name = `site-${rng.int(1000)}`;
  if (auth) message.nonce = rng.bytes(32);
  return message;
}

/** Valid application values to mutate. */
function corpus(rng: Rng): unknown {
  switch (rng.int(12)) {
    case 0:
      return { round: rng.int(100), weights: new Float32Array(1 + rng.int(64)).fill(0.5) };
    case 1:
      return [1, -1, 300, -70000, 2 ** 40, -(2 ** 40), 1.5, null, true, false, "text"];
    case 2:
      return { a: { b: { c: [1, { d: "deep" }] } }, e: new Uint8Array(rng.int(200)) };
    case 3:
      return new NdArray(new Float64Array(6).fill(1.25), [2, 3]);
    case 4:
      return new BigInt64Array([1n, -(2n ** 62n), 2n ** 62n]);
    case 5:
      return new Date(1_700_000_000_000 + rng.int(1e9));
    case 6:
      return "ünïcødé ✓ " + "x".repeat(rng.int(100));
    case 7:
      return Object.fromEntries(Array.from({ length: 20 + rng.int(40) }, (_, i) => [`k${i}`, i]));
    case 8:
      return new Uint8Array(70_000 + rng.int(100_000)); // a large bin (read straight into memory)
    case 9:
      return { update: new Int16Array(32), meta: { loss: 0.25, steps: 10, ok: true } };
    case 10:
      return [[[[[[[[["nest"]]]]]]]]];
    default:
      return rng.int(2) === 0 ? 2n ** 63n + 5n : -(2n ** 63n);
  }
}

const INTERESTING = [
  0xc1,
  0xdc,
  0xdd,
  0xde,
  0xdf,
  0xdb,
  0xc6,
  0xc9,
  0xd4,
  0xd8,
  0xff,
  0x00,
  0x7f,
  0x80,
  0x9f,
  0x8f,
  0xbf,
];
/** Heads followed by a length field of this many bytes. */
const LENGTH_FIELD: Record<number, number> = {
  0xc4: 1,
  0xc5: 2,
  0xc6: 4,
  0xc7: 1,
  0xc8: 2,
  0xc9: 4,
  0xd9: 1,
  0xda: 2,
  0xdb: 4,
  0xdc: 2,
  0xdd: 4,
  0xde: 2,
  0xdf: 4,
};

/** Mutates MessagePack bytes: bit flips, bytes, truncation, insertion, length inflation. */
export function mutate(rng: Rng, input: Uint8Array): Uint8Array {
  let b = input.slice();
  const n = 1 + rng.int(4);
  for (let k = 0; k < n && b.byteLength > 0; k++) {
    const i = rng.int(b.byteLength);
    switch (rng.int(7)) {
      case 0:
        b[i] ^= 1 << rng.int(8);
        break;
      case 1:
        b[i] = rng.int(256);
        break;
      case 2:
        b = b.slice(0, rng.int(b.byteLength));
        break;
      case 3: {
        const extra = rng.bytes(1 + rng.int(16));
        const out = new Uint8Array(b.byteLength + extra.byteLength);
        out.set(b.subarray(0, i));
        out.set(extra, i);
        out.set(b.subarray(i), i + extra.byteLength);
        b = out;
        break;
      }
      case 4: {
        // Length inflation: the first length-carrying head from i on claims much more.
        for (let j = i; j < b.byteLength; j++) {
          const size = LENGTH_FIELD[b[j]];
          if (size !== undefined && j + size < b.byteLength) {
            for (let s = 1; s <= size; s++) b[j + s] = rng.chance(0.5) ? 0xff : 0x7f;
            break;
          }
          if ((b[j] & 0xf0) === 0x90 || (b[j] & 0xf0) === 0x80) {
            b[j] |= 0x0f;
            break;
          }
        }
        break;
      }
      case 5:
        b[i] = rng.pick(INTERESTING);
        break;
      default: {
        // Duplicate a slice.
        const from = rng.int(b.byteLength);
        const slice = b.slice(from, from + 1 + rng.int(32));
        const out = new Uint8Array(b.byteLength + slice.byteLength);
        out.set(b.subarray(0, i));
        out.set(slice, i);
        out.set(b.subarray(i), i + slice.byteLength);
        b = out;
      }
    }
  }
  return b;
}

/** A deeply nested value's bytes: arrays and maps, `depth` levels. */
function nested(rng: Rng, depth: number): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < depth; i++) {
    if (rng.chance(0.7)) out.push(0x91);
    else out.push(0x81, 0xa1, 0x6b); // {k: …}
  }
  out.push(rng.chance(0.5) ? 0xc0 : 0x01);
  return new Uint8Array(out);
}

/** The steps that join: hello, and the challenge if the server authenticates. */
function join(rng: Rng, auth: boolean): Step[] {
  const steps: Step[] = [{ write: handshake(hello(rng, auth)) }];
  if (auth) steps.push({ auth: "right" });
  steps.push({ awaitWelcome: true });
  return steps;
}

/**
 * Generates connection `index`'s case.
 *
 * @param rng Its PRNG.
 * @param auth Whether the server authenticates.
 * @returns The case.
 */
export function generate(rng: Rng, auth: boolean): Case {
  switch (rng.int(12)) {
    case 0: {
      const steps: Step[] = [];
      if (rng.chance(0.5)) steps.push({ write: frame(new Uint8Array(0), rng.int(70_000)) });
      steps.push({ write: rng.bytes(1 + rng.int(4096)) });
      return { name: "random bytes", steps };
    }
    case 1: {
      const body = new Uint8Array([0xc1, 0x03, ...encode(hello(rng, auth))]);
      const mutated = rng.chance(0.8) ? frame(mutate(rng, body)) : mutate(rng, frame(body));
      return { name: "mutated hello", steps: [{ write: mutated }, { awaitWelcome: true }] };
    }
    case 2:
    case 3: {
      const steps = join(rng, auth);
      for (let k = 1 + rng.int(4); k > 0; k--) {
        const body = encode(corpus(rng));
        steps.push({
          write: rng.chance(0.8)
            ? frame(mutate(rng, body))
            : rng.chance(0.5)
            ? frame(body)
            : mutate(rng, frame(body)),
        });
      }
      return { name: "mutated application frames", steps };
    }
    case 4: {
      const steps = join(rng, auth);
      const controls = [
        [0xc1],
        [0xc1, 0x01],
        [0xc1, 0x01, ...rng.bytes(8)],
        [0xc1, 0x01, ...rng.bytes(rng.int(20))],
        [0xc1, 0x02, ...rng.bytes(8)],
        [0xc1, 0x03],
        [0xc1, 0x03, ...encode({ fedcomm: 3, type: "hello" })],
        [0xc1, 0x03, ...encode({ fedcomm: 3, type: "auth", proof: rng.bytes(32) })],
        [0xc1, rng.int(256), ...rng.bytes(rng.int(16))],
        [],
      ];
      for (let k = 1 + rng.int(4); k > 0; k--) {
        steps.push({ write: frame(new Uint8Array(rng.pick(controls))) });
      }
      return { name: "control frames", steps };
    }
    case 5: {
      // Oversized headers: before the hello (over 64 KiB) or after the welcome (over maxFrameBytes).
      const before = rng.chance(0.5);
      const limit = before ? 64 * 1024 : MAX_FRAME_BYTES;
      const length = rng.chance(0.5) ? limit + 1 + rng.int(1000) : 0xffffffff - rng.int(1000);
      const steps = before ? [] : join(rng, auth);
      steps.push({ write: frame(rng.bytes(rng.int(64)), length) });
      return { name: "oversized header", steps };
    }
    case 6: {
      // A slow partial frame: announced, then a few pieces with pauses, then a stall or a close.
      const before = rng.chance(0.3);
      const steps = before ? [] : join(rng, auth);
      const length = 10 + rng.int(before ? 60_000 : 300_000);
      const body = before
        ? new Uint8Array([0xc1, 0x03, ...rng.bytes(length - 2)])
        : new Uint8Array([0xc6, ...rng.bytes(length - 1)]);
      const bytes = frame(body);
      const sent = rng.int(bytes.byteLength - 1);
      for (let at = 0; at < sent;) {
        const piece = 1 + rng.int(Math.max(1, Math.min(sent - at, 20_000)));
        steps.push({ write: bytes.slice(at, at + piece) }, { sleep: 20 + rng.int(200) });
        at += piece;
      }
      return { name: "slow partial frame", steps };
    }
    case 7: {
      // A valid frame dripped a byte or a few at a time.
      const steps = rng.chance(0.3) ? [] : join(rng, auth);
      const bytes = steps.length === 0
        ? handshake(hello(rng, false))
        : frame(encode({ drip: rng.int(1000), v: [1, 2, 3] }));
      for (let at = 0; at < bytes.byteLength;) {
        const piece = 1 + rng.int(3);
        steps.push({ write: bytes.slice(at, at + piece) }, { sleep: rng.int(5) });
        at += piece;
      }
      return { name: "dripped frame", steps };
    }
    case 8: {
      const steps = join(rng, auth);
      const depth = rng.pick([50, 99, 100, 101, 150, 1000, 100_000]);
      let body = nested(rng, depth);
      if (rng.chance(0.3)) body = mutate(rng, body);
      steps.push({ write: frame(body) });
      // Length inflation with nothing behind it.
      if (rng.chance(0.5)) {
        steps.push({
          write: frame(
            new Uint8Array(
              rng.pick([
                [0xdd, 0xff, 0xff, 0xff, 0xff],
                [0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0],
                [0xdb, 0x7f, 0xff, 0xff, 0xff, 0x61],
                [0xc6, 0xff, 0xff, 0xff, 0xf0],
                [0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01],
                [0xdc, 0xff, 0xff, ...new Array(100).fill(0xc0)],
              ]),
            ),
          ),
        });
      }
      return { name: "nesting and length inflation", steps };
    }
    case 9: {
      // Odd hellos: version 1 (plain), wrong versions, bad fields.
      const options: Uint8Array[] = [
        frame(encode({ fedcomm: 1, type: "hello" })),
        handshake({ fedcomm: rng.pick([0, 1, 3, -1, 2.5, "2", null]), type: "hello" }),
        handshake({ fedcomm: 3, type: rng.pick(["welcome", "auth", "HELLO", ""]) }),
        handshake({ fedcomm: 3, type: "hello", name: "n".repeat(129 + rng.int(1000)) }),
        handshake({ fedcomm: 3, type: "hello", name: rng.pick([42, "", true, [1]]) }),
        handshake({ fedcomm: 3, type: "hello", nonce: rng.bytes(rng.pick([0, 16, 31, 33])) }),
        frame(encode(["hello"])),
        frame(new Uint8Array([0xc1, 0x03, 0xc1])),
      ];
      return { name: "odd hello", steps: [{ write: rng.pick(options) }, { awaitWelcome: true }] };
    }
    case 10: {
      if (!auth) {
        const steps: Step[] = [];
        for (let k = rng.int(20); k > 0; k--) steps.push({ write: frame(new Uint8Array(0)) });
        steps.push(...join(rng, false), { write: frame(encode({ ok: 1 })) });
        return { name: "heartbeats, then a session", steps };
      }
      const steps: Step[] = [{ write: handshake(hello(rng, true)) }];
      if (rng.chance(0.8)) steps.push({ auth: rng.chance(0.5) ? "wrong" : "mutated" });
      steps.push({ awaitWelcome: true });
      return { name: "bad auth", steps };
    }
    default: {
      // A valid session, to keep the server busy with real messages too.
      const steps = join(rng, auth);
      for (let k = 1 + rng.int(3); k > 0; k--) steps.push({ write: frame(encode(corpus(rng))) });
      return { name: "valid session", steps };
    }
  }
}

// ---------------------------------------------------------------------------
// Running a case

/** Reads what the server sends until it ends the connection. */
class Watcher {
  readonly frames: string[] = [];
  readonly unexpected: string[] = [];
  /** The first handshake answer's `type` (and reason), if any. */
  answer: string | undefined;
  challenge: Uint8Array | undefined;
  endedAt: number | undefined;
  readonly done: Promise<void>;
  readonly #changed = new Set<() => void>();

  constructor(conn: Deno.Conn) {
    const reader = new FrameReader(conn, { maxFrameBytes: 1024 * 1024 });
    this.done = (async () => {
      try {
        while (true) {
          const body = await reader.read();
          if (body === null) break;
          this.#frame(body);
        }
      } catch {
        // A reset, or a truncated frame as the server closed: ended either way.
      }
      this.endedAt = performance.now();
      this.#wake();
    })();
  }

  #wake(): void {
    for (const wake of this.#changed) wake();
  }

  #frame(body: Uint8Array): void {
    try {
      if (body.byteLength === 0) {
        this.unexpected.push("heartbeat from the server");
      } else if (body[0] !== 0xc1) {
        const value = decode(body) as Record<string, unknown>;
        if (value?.type === "reject") this.answer ??= `plain reject ${value.reason}`;
        else this.unexpected.push(`plain frame ${JSON.stringify(value).slice(0, 80)}`);
      } else if ((body[1] === 0x01 || body[1] === 0x02) && body.byteLength === 10) {
        // A ping, or the pong of one of ours.
      } else if (body[1] === 0x04 && body.byteLength === 10) {
        // An acknowledgement of the messages we sent.
      } else if (body[1] === 0x06 && body.byteLength === 2) {
        // The server closed the session.
      } else if (body[1] === 0x03) {
        const value = decode(body.subarray(2)) as Record<string, unknown>;
        if (value?.fedcomm !== 3) this.unexpected.push(`handshake of version ${value?.fedcomm}`);
        if (value?.type === "challenge") this.challenge = value.nonce as Uint8Array;
        else if (value?.type === "welcome" || value?.type === "reject") {
          this.answer ??= value.type === "reject" ? `reject ${value.reason}` : "welcome";
        } else this.unexpected.push(`handshake ${JSON.stringify(value).slice(0, 80)}`);
      } else {
        this.unexpected.push(`control frame ${Array.from(body.subarray(0, 12))}`);
      }
    } catch (error) {
      this.unexpected.push(`undecodable frame from the server: ${error}`);
    }
    this.#wake();
  }

  /** Waits until `ready()` holds or the connection ends, at most `ms`. */
  async wait(ready: () => boolean, ms: number): Promise<void> {
    const deadline = performance.now() + ms;
    while (!ready() && this.endedAt === undefined) {
      const left = deadline - performance.now();
      if (left <= 0) return;
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, left);
      this.#changed.add(resolve);
      await promise;
      clearTimeout(timer);
      this.#changed.delete(resolve);
    }
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.byteLength;) off += await conn.write(bytes.subarray(off));
}

/** The fuzz secret's key and a wrong one. */
function keys(): [AuthKey, AuthKey] {
  const key = (secret: string) => importSecret(secretBytes(secret, "secret"));
  return [key(SECRET), key("not the fuzz secret, 32 bytes...")];
}

/** Runs one case; returns its outcome and how long the server took to end it. */
async function runCase(
  port: number,
  fuzzCase: Case,
): Promise<{ outcome: string; endMs: number; unexpected: string[]; hang: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const watcher = new Watcher(conn);
  let nonce: Uint8Array | undefined;
  let writeFailed = false;
  try {
    for (const step of fuzzCase.steps) {
      if (watcher.endedAt !== undefined) break;
      if ("write" in step) {
        const hello = step.write;
        // Remember the client nonce of a hello we send, for the proof.
        if (hello.byteLength > 6 && hello[4] === 0xc1 && hello[5] === 0x03) {
          try {
            const value = decode(hello.subarray(6)) as Record<string, unknown>;
            if (value?.nonce instanceof Uint8Array) nonce = value.nonce;
          } catch {
            // A mutated hello.
          }
        }
        await writeAll(conn, step.write);
      } else if ("sleep" in step) {
        await new Promise((resolve) => setTimeout(resolve, step.sleep));
      } else if ("awaitWelcome" in step) {
        await watcher.wait(() => watcher.answer !== undefined, HANDSHAKE_TIMEOUT + 1_000);
        if (watcher.answer !== "welcome") break;
      } else {
        await watcher.wait(() => watcher.challenge !== undefined, HANDSHAKE_TIMEOUT + 1_000);
        if (watcher.challenge === undefined || nonce === undefined) break;
        const [right, wrong] = keys();
        let proof = prove(
          step.auth === "wrong" ? wrong : right,
          "client",
          nonce,
          watcher.challenge,
          "",
        );
        if (step.auth === "mutated") proof = proof.slice(0, proof.byteLength - 1);
        await writeAll(conn, handshake({ fedcomm: 3, type: "auth", proof }));
      }
    }
  } catch {
    writeFailed = true; // the server closed the connection under our writes
  }
  const lastByte = performance.now();
  await watcher.wait(() => false, END_BOUND_MS);
  const hang = watcher.endedAt === undefined;
  try {
    conn.close();
  } catch {
    // Closed.
  }
  await watcher.done;
  const endMs = (watcher.endedAt ?? performance.now()) - lastByte;
  const outcome = hang
    ? "HANG"
    : watcher.answer === undefined
    ? (writeFailed ? "closed while we wrote" : "closed without a reply")
    : watcher.answer === "welcome"
    ? "welcome, then closed"
    : `${watcher.answer}`;
  return { outcome, endMs: hang ? 0 : endMs, unexpected: watcher.unexpected, hang };
}

// ---------------------------------------------------------------------------
// Epochs

interface Epoch {
  index: number;
  server: Server;
  auth: boolean;
  clients: Client[];
  inflight: Set<Promise<void>>;
}

function bump(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

/**
 * Fuzzes live servers for `options.seconds`.
 *
 * @param options Duration, seed, concurrency.
 * @returns What happened.
 */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const seed = options.seed ?? 1;
  const concurrency = options.concurrency ?? 24;
  const epochMs = (options.epochSeconds ?? 5) * 1_000;
  const log = options.log ?? (() => {});
  const report: FuzzReport = {
    seed,
    seconds: options.seconds,
    connections: 0,
    cases: {},
    outcomes: {},
    refusals: {},
    leaves: {},
    hangs: [],
    unexpected: [],
    maxEndMs: 0,
    idleRss: Deno.memoryUsage().rss,
    peakRss: 0,
    rounds: [],
  };
  report.peakRss = report.idleRss;
  const sampler = setInterval(() => {
    report.peakRss = Math.max(report.peakRss, Deno.memoryUsage().rss);
  }, 50);

  const startEpoch = async (index: number): Promise<Epoch> => {
    const auth = index % 2 === 1;
    const server = listen({
      clients: 2 + SLOTS,
      maxFrameBytes: MAX_FRAME_BYTES,
      handshakeTimeout: HANDSHAKE_TIMEOUT,
      idleTimeout: IDLE_TIMEOUT,
      heartbeatMs: 400,
      maxPendingHandshakes: 24,
      auth: auth ? { secret: SECRET } : undefined,
    });
    server.addEventListener("refuse", (e: RefuseEvent) => {
      bump(report.refusals, e.reason);
      if (!REFUSE_REASONS.has(e.reason)) report.unexpected.push(`refuse reason ${e.reason}`);
    });
    server.addEventListener("leave", (e: ClientEvent) => {
      const name = e.error?.name ?? "none";
      bump(report.leaves, name);
      if (!LEAVE_ERRORS.has(name)) report.unexpected.push(`leave error ${name}: ${e.error}`);
    });
    const clients: Client[] = [];
    for (let i = 0; i < 2; i++) {
      clients.push(
        await connect({ port: server.port, secret: auth ? SECRET : undefined, heartbeatMs: 400 }),
      );
    }
    return { index, server, auth, clients, inflight: new Set() };
  };

  const finishEpoch = async (epoch: Epoch): Promise<void> => {
    await Promise.all(epoch.inflight);
    const { server, clients, auth } = epoch;
    // Fill the free slots so that a round may run (it needs every client joined).
    const free = server.clients - server.joined;
    const fill = async (n: number) => {
      for (let i = 0; i < n; i++) {
        try {
          const c = await connect({ port: server.port, secret: auth ? SECRET : undefined });
          await c.close();
        } catch (error) {
          if ((error as { reason?: string }).reason !== "full") throw error;
          return;
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, (_, k) => fill(Math.ceil((free - k) / 8))));
    const t0 = performance.now();
    let ok = false;
    let error: string | undefined;
    try {
      await server.ready({ timeout: 10_000 });
      const value = { round: epoch.index, weights: new Float32Array([0.5, 0.25]) };
      await server.broadcast(value, { ids: [0, 1], timeout: 10_000 });
      for (const c of clients) {
        const got = await c.recv({ timeout: 10_000 }) as typeof value;
        await c.send({ from: c.id, round: got.round });
      }
      const answers = await server.gather({ ids: [0, 1], timeout: 10_000 });
      ok = [0, 1].every((id) =>
        JSON.stringify(answers.get(id)) === JSON.stringify({ from: id, round: epoch.index })
      );
      if (!ok) error = `wrong answers ${JSON.stringify([...answers])}`;
    } catch (e) {
      error = String(e);
    }
    report.rounds.push({ epoch: epoch.index, ok, ms: performance.now() - t0, error, auth });
    log(`epoch ${epoch.index}${auth ? " (auth)" : ""}: round ${ok ? "ok" : `FAILED: ${error}`}`);
    for (const c of clients) await c.close();
    await server.close();
  };

  const end = performance.now() + options.seconds * 1_000;
  let current = await startEpoch(0);
  let stop = false;
  let index = 0;
  const worker = async () => {
    while (!stop) {
      const epoch = current;
      const i = index++;
      const rng = rngFor(seed, i);
      const fuzzCase = generate(rng, epoch.auth);
      const run = (async () => {
        const r = await runCase(epoch.server.port, fuzzCase);
        report.connections++;
        bump(report.cases, fuzzCase.name);
        bump(report.outcomes, r.outcome);
        report.maxEndMs = Math.max(report.maxEndMs, r.endMs);
        if (r.hang) {
          report.hangs.push(`#${i} (seed ${seed}, epoch ${epoch.index}): ${fuzzCase.name}`);
        }
        for (const u of r.unexpected) {
          report.unexpected.push(`#${i} (seed ${seed}): ${fuzzCase.name}: ${u}`);
        }
      })();
      epoch.inflight.add(run);
      await run;
    }
  };
  const workers = Array.from({ length: concurrency }, worker);
  const finishing: Promise<void>[] = [];
  let nextEpoch = performance.now() + epochMs;
  while (performance.now() < end) {
    await new Promise((resolve) =>
      setTimeout(resolve, Math.max(0, Math.min(end, nextEpoch) - performance.now()))
    );
    if (performance.now() < end - 1_000) {
      const old = current;
      current = await startEpoch(old.index + 1);
      finishing.push(finishEpoch(old));
      nextEpoch = performance.now() + epochMs;
      log(`${report.connections} connections so far`);
    }
  }
  stop = true;
  await Promise.all(workers);
  finishing.push(finishEpoch(current));
  await Promise.all(finishing);
  clearInterval(sampler);
  report.peakRss = Math.max(report.peakRss, Deno.memoryUsage().rss);
  return report;
}

/**
 * Formats a report for people.
 *
 * @param r The report.
 * @returns Lines of text.
 */
export function summary(r: FuzzReport): string {
  const mb = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
  const sorted = (o: Record<string, number>) =>
    Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) =>
      `  ${v.toString().padStart(6)}  ${k}`
    )
      .join("\n");
  return [
    `seed ${r.seed}, ${r.seconds} s: ${r.connections} connections, ${r.rounds.length} epochs`,
    `outcomes:\n${sorted(r.outcomes)}`,
    `cases:\n${sorted(r.cases)}`,
    `refuse events by reason:\n${sorted(r.refusals)}`,
    `leave events by error:\n${sorted(r.leaves)}`,
    `slowest end after the last byte: ${r.maxEndMs.toFixed(0)} ms (bound ${END_BOUND_MS} ms)`,
    `RSS of this process: ${mb(r.idleRss)} → peak ${mb(r.peakRss)}`,
    `rounds: ${r.rounds.filter((x) => x.ok).length} of ${r.rounds.length} ok`,
    `hangs: ${r.hangs.length}${r.hangs.length ? "\n  " + r.hangs.slice(0, 20).join("\n  ") : ""}`,
    `unexpected: ${r.unexpected.length}${
      r.unexpected.length ? "\n  " + r.unexpected.slice(0, 20).join("\n  ") : ""
    }`,
  ].join("\n");
}

if (import.meta.main) {
  const arg = (name: string, fallback: number) => {
    const i = Deno.args.indexOf(`--${name}`);
    const eq = Deno.args.find((a) => a.startsWith(`--${name}=`));
    const value = eq !== undefined ? eq.split("=")[1] : i >= 0 ? Deno.args[i + 1] : undefined;
    return value === undefined ? fallback : Number(value);
  };
  const report = await runFuzz({
    seconds: arg("seconds", 60),
    seed: arg("seed", Date.now() % 1_000_000),
    concurrency: arg("concurrency", 24),
    epochSeconds: arg("epoch", 10),
    log: (line) => console.error(line),
  });
  console.log(summary(report));
  if (report.hangs.length > 0 || report.unexpected.length > 0 || report.rounds.some((x) => !x.ok)) {
    Deno.exit(1);
  }
}
