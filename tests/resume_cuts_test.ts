/**
 * Cut-point enumeration for resume (issue 14): for every place the fault
 * proxy can cut a connection (inside a frame header, inside a frame body,
 * between two frames, inside the handshake of the resume) and each
 * direction, over authentication, a Deno client and a Python client each
 * exchange a fixed script of messages with a Deno server while the link is
 * cut once, and every message must arrive exactly once, in order, intact,
 * with the session resumed under the same id.
 *
 * The script (numbers are per direction, `dN` server → client, `uN` client →
 * server; each `d` message tells the client what to send after it):
 *
 * ```
 * d1 small                       → u1 small
 * d2 small broadcast ("round 1") → u2 reply to d2
 *        (quiet: every message acknowledged; a `down` cut is armed here)
 * d3 2 MiB broadcast             → 300 ms pause, u3 2 MiB, u4 small
 *        (an `up` cut is armed once d3 is acknowledged, in the pause)
 *        ... the cut: in d3 (down) or in u3 (up) ...
 * d4 small broadcast ("round 2") → u5 reply to d4 (taken before d5 is sent: no late reply)
 * d5 2 MiB send                  → u6 small
 * d6 small, the end
 * ```
 *
 * Each cut is armed while its direction is quiet, so it lands on the frame
 * it aims at: a `header` cut inside the header of d3 or u3, a `body` cut
 * inside its body, a `boundary` cut right after it (delivered whole, its
 * acknowledgement lost: the resume must not send it again). A `handshake`
 * case cuts d3's or u3's body, and then the resume's own handshake in the
 * same direction (the resume's hello up, its challenge down); the client
 * must try again and resume on a third connection.
 *
 * What `bench/_fault_proxy.ts` cannot aim at with authentication on: the
 * `auth` frame and the `welcome` of a resume (its `handshake` cut lands in
 * the first frame of the direction only). Those two cut points are covered
 * here by {@linkcode HandshakeCutter}, a small proxy of this file that cuts
 * a given handshake frame of a given connection.
 *
 * Needs `/usr/bin/python3` with `msgpack` and `numpy` for the Python cases
 * (skipped without them). `RESUME_CUTS_VERBOSE=1` prints where each cut landed.
 */

import assert from "node:assert/strict";
import { type CutKind, type Direction, type Fault, FaultProxy } from "../bench/_fault_proxy.ts";
import { type Client, connect } from "../client.ts";
import { decode } from "../codec.ts";
import { PeerDisconnectedError } from "../errors.ts";
import type { ClientEvent, LateReplyEvent, TransferEvent } from "../events.ts";
import { listen, type Server } from "../server.ts";

const PYTHON = "/usr/bin/python3";
const PYTHON_DIR = decodeURIComponent(new URL("../python/", import.meta.url).pathname);
const PYTHON_CLIENT = decodeURIComponent(
  new URL("../python/tests/_resume_cuts_client.py", import.meta.url).pathname,
);
const SECRET = "resume cuts: a shared secret of 32+ bytes";
/** Words of each large message: 2 MiB. */
const WORDS = 512 * 1024;
/** Messages each way in the script. */
const MESSAGES = 6;
const VERBOSE = (() => {
  try {
    return Deno.env.get("RESUME_CUTS_VERBOSE") === "1";
  } catch {
    return false;
  }
})();

function pythonReady(): boolean {
  try {
    return new Deno.Command(PYTHON, {
      args: ["-c", "import msgpack, numpy"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}
const noPython = !pythonReady();

// --- the script -------------------------------------------------------------

/** What the client does after taking a message. */
type Action = { sleep: number } | { send: number; big?: boolean } | { reply: number };

interface Down {
  dir: "down";
  seq: number;
  text: string;
  then: Action[];
  big?: Uint32Array;
  end?: boolean;
}

interface Up {
  dir: "up";
  seq: number;
  text: string;
  x: number;
  big?: Uint32Array;
  reply_to?: number;
}

/** `WORDS` words, word i being i + salt: a lost, repeated or shifted chunk shows. */
function pattern(salt: number): Uint32Array {
  const words = new Uint32Array(WORDS);
  for (let i = 0; i < WORDS; i++) words[i] = i + salt;
  return words;
}

function assertPattern(value: unknown, salt: number, what: string): void {
  assert.ok(value instanceof Uint32Array, `${what}: a Uint32Array, not ${String(value)}`);
  assert.equal(value.length, WORDS, `${what}: length`);
  for (let i = 0; i < WORDS; i++) {
    if (value[i] !== ((i + salt) >>> 0)) assert.fail(`${what}: word ${i} is ${value[i]}`);
  }
}

function down(seq: number, then: Action[], extra: Partial<Down> = {}): Down {
  return { dir: "down", seq, text: `d${seq}`, then, ...extra };
}

function upValue(seq: number, big = false, replyTo?: number): Up {
  const value: Up = { dir: "up", seq, text: `u${seq}`, x: seq * 1.5 };
  if (big) value.big = pattern(2000 + seq);
  if (replyTo !== undefined) value.reply_to = replyTo;
  return value;
}

/** What a client reports when its script is done. */
interface Summary {
  id: number;
  received: number[];
  messagesReceived: number;
  messagesSent: number;
  resumes: number;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Rejects after `ms` with an error naming `what`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Polls `condition` every 5 ms for at most `ms`. */
async function waitFor(
  condition: () => boolean,
  what: string,
  ms = 10_000,
  signal?: AbortSignal,
): Promise<void> {
  const end = performance.now() + ms;
  while (!condition()) {
    if (signal?.aborted) throw new Error(`Stopped waiting for ${what}`);
    if (performance.now() > end) throw new Error(`Gave up after ${ms} ms waiting for ${what}`);
    await delay(5);
  }
}

// --- the clients ------------------------------------------------------------

/** The Deno client's side of the script (the same as `_resume_cuts_client.py`). */
async function denoClient(
  port: number,
  name: string,
  connected: (client: Client) => void,
): Promise<Summary> {
  const client = await connect({ port, name, secret: SECRET, timeout: 10_000 });
  connected(client);
  try {
    const received: number[] = [];
    while (true) {
      const message = await client.recv({ timeout: 30_000 }) as Down;
      assert.equal(message.dir, "down");
      assert.equal(message.seq, received.length + 1, `got d${message.seq} after ${received}`);
      if (message.big !== undefined) {
        assertPattern(message.big, 1000 + message.seq, `d${message.seq}`);
      }
      assert.equal(message.text, `d${message.seq}`);
      received.push(message.seq);
      for (const action of message.then) {
        if ("sleep" in action) await delay(action.sleep);
        else if ("reply" in action) {
          await client.reply(upValue(action.reply, false, client.lastReceived));
        } else await client.send(upValue(action.send, action.big));
      }
      if (message.end) break;
    }
    await client.flush({ timeout: 20_000 });
    const extra = await client.recv({ timeout: 300 }).then((v) => v, (e) => e);
    assert.equal((extra as Error)?.name, "TimeoutError", `a message after the end: ${extra}`);
    return {
      id: client.id,
      received,
      messagesReceived: client.messagesReceived,
      messagesSent: client.messagesSent,
      resumes: client.resumes,
    };
  } finally {
    await client.close();
  }
}

/** A client of either language, running its side of the script. */
interface RunningClient {
  done: Promise<Summary>;
  /** Ends the client if it is still running (Python: SIGKILL); never throws. */
  kill(): Promise<void>;
}

function startClient(lang: "deno" | "python", port: number): RunningClient {
  if (lang === "deno") {
    let client: Client | undefined;
    const done = denoClient(port, "deno-site", (c) => client = c);
    done.catch(() => {});
    return { done, kill: async () => await client?.close().catch(() => {}) };
  }
  const child = new Deno.Command(PYTHON, {
    args: [PYTHON_CLIENT, PYTHON_DIR, String(port), SECRET, "python-site", String(WORDS)],
    env: { PYTHONDONTWRITEBYTECODE: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  const done = output.then(({ code, stdout, stderr }) => {
    const err = new TextDecoder().decode(stderr);
    if (code !== 0) throw new Error(`python exited with ${code}:\n${err}`);
    return JSON.parse(new TextDecoder().decode(stdout)) as Summary;
  });
  done.catch(() => {});
  return {
    done,
    kill: async () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has exited.
      }
      await output.catch(() => {});
    },
  };
}

// --- a cutter for the handshake frames the fault proxy cannot aim at ---------

/**
 * A proxy on 127.0.0.1 that forwards every connection whole, except that on
 * connection `connection` it cuts the `frame`-th frame (0-based) of
 * `direction` after `header` bytes of its header (1 to 3), or, with `header`
 * 4, inside its body (half of it forwarded); and it can drop a connection on
 * request. (`bench/_fault_proxy.ts` aims a handshake cut at the first frame
 * of a direction only.)
 */
class HandshakeCutter implements AsyncDisposable {
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #target: number;
  readonly #plan: { connection: number; direction: Direction; frame: number; header: number };
  readonly #pairs: { client: Deno.Conn; server?: Deno.Conn; closed: boolean; mute?: boolean }[] =
    [];
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

  #close(pair: { client: Deno.Conn; server?: Deno.Conn; closed: boolean }): void {
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
        const pair: { client: Deno.Conn; server?: Deno.Conn; closed: boolean } = {
          client,
          closed: false,
        };
        const index = this.#pairs.push(pair) - 1;
        this.#tasks.push(this.#serve(pair, index));
      }
    } catch {
      // Closed.
    }
  }

  async #serve(
    pair: { client: Deno.Conn; server?: Deno.Conn; closed: boolean },
    index: number,
  ): Promise<void> {
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

  async #pump(
    pair: { client: Deno.Conn; server?: Deno.Conn; closed: boolean; mute?: boolean },
    index: number,
    direction: Direction,
  ): Promise<void> {
    // `deliver` mode: where this direction stands in its frames.
    const track = index === 0 && this.deliver === direction;
    const head = new Uint8Array(4);
    let headSeen = 0;
    let bodyLeft = -1;
    let bodyLength = 0;
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
        let end = chunk.byteLength;
        if (track) {
          for (let i = 0; i < chunk.byteLength;) {
            if (bodyLeft < 0) {
              head[headSeen++] = chunk[i++];
              if (headSeen === 4) {
                bodyLength = bodyLeft = new DataView(head.buffer).getUint32(0);
                headSeen = 0;
              }
            } else {
              const n = Math.min(bodyLeft, chunk.byteLength - i);
              i += n;
              bodyLeft -= n;
            }
            if (bodyLeft === 0) {
              bodyLeft = -1;
              if (bodyLength >= 1024 * 1024) {
                end = i;
                break;
              }
            }
          }
        }
        let written = 0;
        while (written < end) written += await to.write(chunk.subarray(written, end));
        if (end < chunk.byteLength || (track && bodyLeft < 0 && bodyLength >= 1024 * 1024)) {
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

// --- one case -----------------------------------------------------------------

/** Where the case cuts: a fault proxy kind, or a handshake frame of the resume. */
type CaseKind =
  | Exclude<CutKind, "random">
  | `${HandshakeFrame} ${"header" | "body"}`
  | "delivered";

/** The frames of a resume's handshake, with authentication, and their index in their direction. */
const HANDSHAKE_FRAMES = { hello: 0, auth: 1, challenge: 0, welcome: 1 } as const;
type HandshakeFrame = keyof typeof HANDSHAKE_FRAMES;

/** What the server saw, for the assertions. */
interface ServerLog {
  ups: { value: Up; late: boolean; replyTo?: number }[];
  events: string[];
  resumedIds: number[];
}

function watch(server: Server): ServerLog {
  const log: ServerLog = { ups: [], events: [], resumedIds: [] };
  for (const type of ["join", "disconnect", "resume", "leave"] as const) {
    server.addEventListener(type, (e: ClientEvent) => {
      log.events.push(type);
      if (type === "resume") log.resumedIds.push(e.clientId);
    });
  }
  server.addEventListener("late", (e: LateReplyEvent) => {
    log.ups.push({ value: e.value as Up, late: true, replyTo: e.replyTo });
  });
  return log;
}

/** Takes the client's messages as they come (late replies arrive through the `late` event). */
async function collect(server: Server, log: ServerLog): Promise<void> {
  while (log.ups.length < MESSAGES) {
    const answers = await server.gather({ timeout: 30_000 });
    log.ups.push({ value: answers.get(0) as Up, late: false });
  }
}

function checkUps(log: ServerLog): void {
  assert.deepStrictEqual(
    log.ups.map((u) => u.value.seq),
    [1, 2, 3, 4, 5, 6],
    "the server got each of the client's messages once, in order",
  );
  const bigs = [3];
  for (const { value, late, replyTo } of log.ups) {
    const what = `u${value.seq}`;
    assert.equal(value.dir, "up", what);
    assert.equal(value.text, what);
    assert.equal(value.x, value.seq * 1.5, what);
    if (bigs.includes(value.seq)) assertPattern(value.big, 2000 + value.seq, what);
    else assert.equal(value.big, undefined, what);
    const answers = ({ 2: 2, 5: 4 } as Record<number, number>)[value.seq];
    assert.equal(value.reply_to, answers, `${what} answers d${answers}`);
    assert.ok(!late, `${what} was taken as a late reply to d${replyTo}`);
  }
}

/** Runs the script over a cut of `kind` in `direction`, with a client in `lang`. */
async function runCase(
  kind: CaseKind,
  direction: Direction,
  lang: "deno" | "python",
  seed: number,
): Promise<void> {
  await using server = listen({
    hostname: "127.0.0.1",
    port: 0,
    clients: 1,
    auth: { secret: SECRET },
    resumeTimeout: 30_000,
  });
  const log = watch(server);
  const [frameName, at] = kind.split(" ") as [HandshakeFrame, "header" | "body" | undefined];
  const delivered = kind === "delivered";
  const custom = at !== undefined || delivered;
  // auth: the resume's 2nd frame up (hello, auth); welcome: its 2nd down (challenge, welcome).
  await using cutter = custom
    ? new HandshakeCutter(server.port, {
      connection: delivered ? -1 : 1,
      direction,
      frame: HANDSHAKE_FRAMES[frameName],
      header: at === "header" ? 1 + (seed % 3) : 4,
    })
    : undefined;
  if (delivered) cutter!.deliver = direction;
  await using proxy = custom ? undefined : new FaultProxy({ targetPort: server.port, seed });
  const client = startClient(lang, (cutter ?? proxy)!.port);
  const stop = new AbortController();
  /** Waits for `promise`, failing at once (with the client's error) if the client ends first. */
  const alive = <T>(promise: Promise<T>): Promise<T> =>
    Promise.race([
      promise,
      client.done.then(() => {
        throw new Error("the client ended its script early");
      }),
    ]);
  try {
    await within(
      Promise.race([server.ready({ timeout: 20_000 }), client.done]),
      20_000,
      "the client to join",
    );
    await server.ready({ timeout: 1 });
    if (proxy !== undefined) {
      await waitFor(() => proxy.live()[0]?.handshaking === false, "the welcome to be forwarded");
    }
    const collecting = collect(server, log);
    collecting.catch(() => {});

    // Phase A, then quiet.
    await server.send({ 0: down(1, [{ send: 1 }]) });
    await server.broadcast(down(2, [{ reply: 2 }]));
    await alive(waitFor(
      () => server.stats()[0].messagesReceived >= 2 && server.stats()[0].unacknowledged === 0,
      "u1, u2 and the acks of d1, d2",
      10_000,
      stop.signal,
    ));
    await delay(60); // the acks of u1 and u2 go out within 10 ms

    // Phase B: d3, and the cut in d3 (down) or u3 (up).
    const d3 = down(3, [{ sleep: 300 }, { send: 3, big: true }, { send: 4 }], {
      big: pattern(1003),
    });
    let cut: Promise<unknown>;
    const arm = (): Promise<unknown> => {
      if (delivered) return cutter!.delivered.promise;
      if (proxy === undefined) {
        // The session's connection is dropped in the middle of d3 or u3 (as the
        // proxy's body cut would), the resume's handshake frame is cut by the cutter.
        // (The drop lands wherever the bytes are when the server reports d3 or u3 moving.)
        const dropping = new Promise<void>((resolve) => {
          const wanted = direction === "down" ? "send" : "receive";
          let dropped = false;
          server.addEventListener("progress", (e: TransferEvent) => {
            if (dropped || e.direction !== wanted || e.total < 1024 * 1024) return;
            dropped = true;
            cutter!.drop(0);
            resolve();
          });
        });
        return Promise.all([dropping, cutter!.cut.promise]).then(([, frame]) => frame);
      }
      if (kind === "handshake") {
        const inHandshake = proxy.cut({ kind: "handshake", direction });
        const session = proxy.cut({
          kind: "body",
          direction,
          connection: 0,
          minBodyBytes: 1024 * 1024,
        });
        return Promise.all([session, inHandshake]);
      }
      return proxy.cut({
        kind: kind as CutKind,
        direction,
        connection: 0,
        minBodyBytes: kind === "body" ? 1024 * 1024 : undefined,
      });
    };
    if (direction === "down") {
      cut = arm();
      const sending = server.broadcast(d3, { timeout: 30_000 });
      sending.catch(() => {});
      await alive(within(cut, 20_000, "the cut"));
      await alive(sending);
    } else {
      await alive(server.broadcast(d3, { timeout: 30_000 })); // acknowledged: up is quiet
      cut = arm();
      await alive(within(cut, 20_000, "the cut"));
    }
    const fault = await cut;

    // Phase C: more each way, sent while the session may still be resuming.
    await alive(server.broadcast(down(4, [{ reply: 5 }]), { timeout: 30_000 }));
    // u5 must be taken as the answer to d4 (not late): nothing more is sent before it is.
    await alive(waitFor(() => log.ups.length >= 5, "u5, the reply to d4", 30_000, stop.signal));
    await server.send({ 0: down(5, [{ send: 6 }], { big: pattern(1005) }) }, { timeout: 30_000 });
    await server.send({ 0: down(6, [], { end: true }) }, { timeout: 30_000 });

    const summary = await within(client.done, 40_000, "the client to finish its script");
    await within(collecting, 10_000, "the server to take the client's messages");

    // Where the cut landed.
    if (VERBOSE) {
      console.log(`${kind} ${direction} (${lang}):`, JSON.stringify(proxy?.faults ?? fault));
    }
    if (proxy !== undefined) {
      const faults = proxy.faults.map((f: Fault) => `${f.kind} ${f.direction}`);
      const session = kind === "handshake" ? "body" : kind;
      assert.deepStrictEqual(
        faults,
        kind === "handshake"
          ? [`cut-${session} ${direction}`, `cut-handshake ${direction}`]
          : [`cut-${session} ${direction}`],
        "the cuts landed where aimed",
      );
    } else if (!delivered) {
      const frame = fault as Record<string, unknown>;
      assert.equal(frame.type, frameName, `the cutter cut the resume's ${frameName}`);
    }

    // Exactly once, both ways.
    assert.deepStrictEqual(summary.received, [1, 2, 3, 4, 5, 6], "the client's messages");
    assert.equal(summary.messagesReceived, MESSAGES, "the client received nothing twice");
    assert.equal(summary.messagesSent, MESSAGES);
    checkUps(log);
    const [stats] = server.stats();
    assert.equal(server.stats().length, 1, "one session: no new client");
    assert.equal(summary.id, 0);
    assert.equal(stats.id, 0);
    assert.equal(stats.messagesReceived, MESSAGES, "the server received nothing twice");
    assert.equal(stats.messagesSent, MESSAGES);
    // A cut welcome: the server had resumed the session on that connection (the
    // client never knew), then saw it drop, then resumed it again.
    const serverResumes = frameName === "welcome" ? 2 : 1;
    assert.equal(stats.resumes, serverResumes, "the server's resumes");
    assert.equal(summary.resumes, 1, "the client resumed once");
    assert.deepStrictEqual(
      log.resumedIds,
      Array(serverResumes).fill(0),
      "the resume events name the same id",
    );
    // The client closed its session: nothing more comes, no duplicate waits in the inbox.
    const after = await server.gather({ timeout: 5_000 }).then((v) => v, (e) => e);
    assert.ok(after instanceof PeerDisconnectedError, `nothing after the end: ${String(after)}`);
    assert.deepStrictEqual(log.events, [
      "join",
      ...Array(serverResumes).fill(["disconnect", "resume"]).flat(),
      "leave",
    ]);
  } finally {
    stop.abort();
    await delay(10); // the polls of waitFor() see it and end
    await client.kill();
    await client.done.catch(() => {});
  }
}

// --- the matrix ---------------------------------------------------------------

const KINDS: CaseKind[] = ["header", "body", "boundary", "handshake", "delivered"];
const CUSTOM: [CaseKind, Direction][] = (["header", "body"] as const).flatMap((at) => [
  [`hello ${at}`, "up"],
  [`auth ${at}`, "up"],
  [`challenge ${at}`, "down"],
  [`welcome ${at}`, "down"],
]);
const CASES: [CaseKind, Direction][] = [
  ...KINDS.flatMap((kind) =>
    (["down", "up"] as const).map((d): [CaseKind, Direction] => [kind, d])
  ),
  ...CUSTOM,
];

let seed = 101;
for (const lang of ["deno", "python"] as const) {
  for (const [kind, direction] of CASES) {
    const caseSeed = seed++;
    const where = kind === "delivered"
      ? "boundary, its ack lost,"
      : kind.includes(" ")
      ? `the resume's ${kind}`
      : kind;
    Deno.test({
      name:
        `resume() delivers exactly once when the link is cut in ${where} ${direction} (${lang})`,
      ignore: lang === "python" && noPython,
      sanitizeOps: true,
      sanitizeResources: true,
      fn: () => runCase(kind, direction, lang, caseSeed),
    });
  }
}
