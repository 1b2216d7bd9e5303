/**
 * `deno run -A bench/hostile.ts`: runs each hostile input of the security
 * probe (SECURITY.md) against a fresh server **subprocess** and prints a
 * Markdown table: the input, what the server did, the server's RSS (idle →
 * peak), the time it took to handle the input, and whether a legitimate
 * broadcast + gather round passed afterwards.
 *
 * The same scenarios back `security_test.ts`, which asserts on the details
 * each one returns. This module also exports the harness both use:
 * {@linkcode ServerProcess} (a server in a child process, driven over a line
 * protocol on its stdin/stdout), {@linkcode ClientProcess} (a real client in
 * a child process, for `SIGSTOP`), {@linkcode RawPeer} (the wire format by
 * hand) and {@linkcode legitRound}.
 *
 * Peak RSS is the kernel's high-water mark of the server process
 * (`VmHWM` in `/proc/PID/status`, reset with `clear_refs` before each input),
 * which sees memory held even while the event loop is blocked; the server
 * also samples `Deno.memoryUsage().rss` every 5 ms and reports it, and the
 * larger of the two is shown.
 *
 * Options: `--only=KEYS` (comma-separated scenario keys, see `SCENARIOS`).
 *
 * Everything listens and connects on 127.0.0.1 only.
 *
 * @module
 */

import { importSecret, prove, secretBytes } from "../_handshake/auth.ts";
import { type Client, connect } from "../client.ts";
import type { ConnectOptions } from "../types.ts";
import { decode, encode } from "../codec.ts";
import { FrameReader } from "../framing.ts";

const REPO = new URL("../", import.meta.url).href;
/** The project's config, for its import map (the scripts are written to a temporary directory). */
const CONFIG = new URL("../deno.json", import.meta.url).pathname;
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// The server subprocess

/** The `listen()` options a server subprocess takes (JSON-serialisable). */
export interface ServerProcessOptions {
  clients: number;
  maxFrameBytes?: number;
  handshakeTimeout?: number;
  heartbeatMs?: number;
  idleTimeout?: number;
  receiveBufferBytes?: number;
  maxPendingHandshakes?: number;
  auth?: { secret: string };
}

const SERVER_SCRIPT = `
import { listen } from "${REPO}server.ts";

const options = JSON.parse(Deno.args[0]);
function replacer(_key, value) {
  if (typeof value === "bigint") return value.toString() + "n";
  if (value instanceof Error) {
    return { name: value.name, message: value.message, clientId: value.clientId, reason: value.reason };
  }
  if (ArrayBuffer.isView(value)) return { view: value.constructor.name, byteLength: value.byteLength };
  if (Array.isArray(value) && value.length > 10000) return { arrayLength: value.length };
  return value;
}
const out = (line) => console.log(JSON.stringify(line, replacer));
let peak = 0;
const sample = () => {
  const rss = Deno.memoryUsage().rss;
  if (rss > peak) peak = rss;
  return rss;
};
const sampler = setInterval(sample, 5);
const log = (level) => (message, fields) => out({ t: "log", level, message, fields });
const logger = { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") };
const server = listen({ ...options, logger });
server.addEventListener("join", (e) => out({ t: "join", id: e.clientId, name: e.name }));
server.addEventListener("leave", (e) => out({ t: "leave", id: e.clientId, error: e.error }));
// A peer declared dead drops its connection; its session then waits for a resume.
server.addEventListener("disconnect", (e) =>
  out({ t: "leave", id: e.clientId, error: e.error, resumable: true }));
server.addEventListener("refuse", (e) =>
  out({ t: "refuse", reason: e.reason, message: e.message, name: e.name }));
out({ t: "listening", port: server.port, pid: Deno.pid, rss: sample() });

async function handle(c) {
  const reply = (fields) => out({ t: "reply", seq: c.seq, ...fields });
  const t0 = performance.now();
  const ms = () => performance.now() - t0;
  try {
    switch (c.cmd) {
      case "mem": {
        const rss = sample();
        const { heapUsed, external } = Deno.memoryUsage();
        reply({ ok: true, rss, peak, heapUsed, external });
        if (c.reset) peak = rss;
        return;
      }
      case "stats":
        return reply({
          ok: true,
          joined: server.joined,
          connected: server.connected,
          clients: server.stats().map((s) => ({ id: s.id, state: s.state, error: s.error })),
        });
      case "round": {
        await server.broadcast(c.value, { ids: c.ids, timeout: c.timeout });
        const got = await server.gather({ ids: c.ids, timeout: c.timeout });
        return reply({ ok: true, ms: ms(), values: [...got] });
      }
      case "gather": {
        const got = await server.gather({ ids: c.ids, timeout: c.timeout });
        return reply({ ok: true, ms: ms(), values: [...got] });
      }
      case "uploads": {
        const got = [];
        for await (const { id, value } of server.uploads({ ids: c.ids, timeout: c.timeout })) {
          got.push({ id, bytes: value?.byteLength, at: ms() });
        }
        return reply({ ok: true, ms: ms(), got });
      }
      case "close":
        clearInterval(sampler);
        await server.close();
        reply({ ok: true, ms: ms() });
        Deno.exit(0);
        return;
      default:
        return reply({ ok: false, error: { name: "Error", message: "unknown command " + c.cmd } });
    }
  } catch (error) {
    reply({ ok: false, ms: ms(), error });
  }
}

let buffered = "";
for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
  buffered += chunk;
  let i;
  while ((i = buffered.indexOf("\\n")) >= 0) {
    const line = buffered.slice(0, i);
    buffered = buffered.slice(i + 1);
    if (line.trim() !== "") handle(JSON.parse(line));
  }
}
// stdin closed without a close command: the parent is gone.
clearInterval(sampler);
await server.close();
Deno.exit(0);
`;

const CLIENT_SCRIPT = `
import { connect } from "${REPO}client.ts";

const o = JSON.parse(Deno.args[0]);
const out = (line) => console.log(JSON.stringify(line));
const client = await connect({ port: o.port, heartbeatMs: o.heartbeatMs, idleTimeout: o.idleTimeout });
out({ t: "joined", id: client.id, pid: Deno.pid });
const WORKER = "self.onmessage = (e) => { const end = Date.now() + e.data; let x = 0; " +
  "while (Date.now() < end) x++; self.postMessage(x); };";
async function trainInWorker(ms) {
  const url = URL.createObjectURL(new Blob([WORKER], { type: "application/javascript" }));
  const worker = new Worker(url, { type: "module" });
  const done = new Promise((resolve) => worker.onmessage = resolve);
  worker.postMessage(ms);
  await done;
  worker.terminate();
  URL.revokeObjectURL(url);
}
const loop = (async () => {
  try {
    for await (const m of client) {
      const trainMs = m?.trainMs ?? 0;
      out({ t: "training", ms: trainMs, mainThread: m?.mainThread === true });
      if (trainMs > 0 && m.mainThread) {
        const end = Date.now() + trainMs;
        while (Date.now() < end) { /* busy: the event loop is blocked */ }
      } else if (trainMs > 0) {
        await trainInWorker(trainMs);
      }
      await client.send({ from: client.id, echo: m });
      out({ t: "answered" });
    }
    out({ t: "ended" });
  } catch (error) {
    out({ t: "error", name: error.name, message: error.message });
  }
})();
for await (const _ of Deno.stdin.readable) { /* idle until the parent closes stdin */ }
await client.close();
await loop;
`;

/** One JSON line from a server subprocess (an event, a log call, or a reply). */
// deno-lint-ignore no-explicit-any
export type Line = Record<string, any>;

/** Writes a script once per process into a temporary file. */
const scriptFiles = new Map<string, Promise<string>>();
function scriptFile(name: string, source: string): Promise<string> {
  let file = scriptFiles.get(name);
  if (file === undefined) {
    file = (async () => {
      const path = await Deno.makeTempFile({ prefix: `fedcomm_${name}_`, suffix: ".ts" });
      await Deno.writeTextFile(path, source);
      globalThis.addEventListener("unload", () => {
        try {
          Deno.removeSync(path);
        } catch {
          // Already gone.
        }
      });
      return path;
    })();
    scriptFiles.set(name, file);
  }
  return file;
}

/** Reads `/proc/PID/status` fields in bytes (Linux), or `undefined` elsewhere. */
function procStatus(pid: number, field: "VmRSS" | "VmHWM"): number | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** Counts the open descriptors of a process (Linux), or `undefined`. */
export function countFds(pid: number): number | undefined {
  try {
    let n = 0;
    for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
    return n;
  } catch {
    return undefined;
  }
}

/** Splits a byte stream into text lines. */
async function* textLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffered = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let i;
    while ((i = buffered.indexOf("\n")) >= 0) {
      yield buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
    }
  }
  if (buffered !== "") yield buffered;
}

/** Resolves after `ms`, with a timer that is always cleared. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Races `promise` against a timer; the timer is cleared either way. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Memory of the server process, in bytes. */
export interface Memory {
  /** RSS now (VmRSS, else the server's own sample). */
  rss: number;
  /** Peak RSS since the last reset: the larger of VmHWM and the server's 5 ms samples. */
  peak: number;
}

/** How a subprocess ended. */
export interface Ended {
  code: number;
  signal: string | null;
  stderr: string;
  /** Whether stderr shows a Rust panic of the runtime. */
  panicked: boolean;
}

/**
 * A fedcomm server in a child process (`deno run -A` of a temporary script),
 * optionally under a descriptor limit (`bash -c "ulimit -n N; exec deno …"`).
 * Its events, log calls and command replies come back as JSON lines.
 */
export class ServerProcess implements AsyncDisposable {
  readonly port: number;
  readonly pid: number;
  /** Every event and log line so far, in order. */
  readonly lines: Line[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly #replies = new Map<number, (line: Line) => void>();
  readonly #waiters = new Set<() => void>();
  readonly #stdoutDone: Promise<void>;
  readonly #stderrDone: Promise<void>;
  readonly #status: Promise<Deno.CommandStatus>;
  #stderr = "";
  #seq = 0;
  #exited = false;
  /** The highest VmHWM seen since the last reset (survives the process's death). */
  #hwm = 0;
  #ended: Promise<Ended> | undefined;

  private constructor(
    child: Deno.ChildProcess,
    first: { port: number; pid: number },
    init: { stdoutDone: Promise<void>; lines: Line[]; hook: (p: ServerProcess) => void },
  ) {
    this.#child = child;
    this.#stdin = child.stdin.getWriter();
    this.port = first.port;
    this.pid = first.pid;
    this.lines.push(...init.lines);
    this.#stdoutDone = init.stdoutDone;
    this.#stderrDone = (async () => {
      for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
        if (this.#stderr.length < 1_000_000) this.#stderr += text;
      }
    })();
    this.#status = child.status.then((status) => {
      this.#exited = true;
      for (const resolve of this.#replies.values()) {
        resolve({ ok: false, error: { name: "Exited", message: "server process exited" } });
      }
      this.#replies.clear();
      for (const wake of this.#waiters) wake();
      return status;
    });
    init.hook(this);
  }

  /**
   * Starts a server subprocess and waits until it listens.
   *
   * @param options The `listen()` options.
   * @param fdLimit Run it under `ulimit -n fdLimit`.
   * @returns The running server.
   */
  static async start(options: ServerProcessOptions, fdLimit?: number): Promise<ServerProcess> {
    const script = await scriptFile("server", SERVER_SCRIPT);
    const args = ["run", "-A", "--config", CONFIG, "--no-lock", script, JSON.stringify(options)];
    const command = fdLimit === undefined
      ? new Deno.Command(Deno.execPath(), {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      })
      : new Deno.Command("bash", {
        args: ["-c", `ulimit -n ${fdLimit} && exec "$0" "$@"`, Deno.execPath(), ...args],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      });
    const child = command.spawn();
    // Lines are routed to the instance once it exists; the first one is "listening".
    let instance: ServerProcess | undefined;
    const early: Line[] = [];
    const { promise: listening, resolve: onListening } = Promise.withResolvers<Line | null>();
    const stdoutDone = (async () => {
      for await (const text of textLines(child.stdout)) {
        let line: Line;
        try {
          line = JSON.parse(text);
        } catch {
          line = { t: "stdout", text };
        }
        if (line.t === "listening") onListening(line);
        if (instance === undefined) early.push(line);
        else instance.#route(line);
      }
      onListening(null);
    })();
    const first = await withTimeout(listening, 60_000, "the server subprocess to listen").catch(
      () => null,
    );
    if (first === null) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      const status = await child.status;
      let stderr = "";
      for await (const t of child.stderr.pipeThrough(new TextDecoderStream())) stderr += t;
      await child.stdin.close().catch(() => {});
      await stdoutDone;
      throw new Error(`Server subprocess did not start (code ${status.code}): ${stderr}`);
    }
    return new ServerProcess(child, first as { port: number; pid: number }, {
      stdoutDone,
      lines: early.filter((l) => l.t !== "listening"),
      hook: (p) => instance = p,
    });
  }

  #route(line: Line): void {
    if (line.t === "reply") {
      this.#replies.get(line.seq)?.(line);
      this.#replies.delete(line.seq);
      return;
    }
    this.lines.push(line);
    for (const wake of this.#waiters) wake();
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** What the server wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /**
   * Sends a command and waits for its reply.
   *
   * @param command The command: `mem`, `stats`, `round`, `gather`, `uploads`, `close`.
   * @param timeoutMs How long to wait for the reply.
   * @returns The reply line (`ok`, and `error` or the command's fields).
   */
  async request(command: Line, timeoutMs = 60_000): Promise<Line> {
    if (this.#exited) {
      return { ok: false, error: { name: "Exited", message: "server process exited" } };
    }
    const seq = ++this.#seq;
    const { promise, resolve } = Promise.withResolvers<Line>();
    this.#replies.set(seq, resolve);
    try {
      await this.#stdin.write(new TextEncoder().encode(JSON.stringify({ ...command, seq }) + "\n"));
      return await withTimeout(promise, timeoutMs, `reply to ${command.cmd}`);
    } catch (error) {
      this.#replies.delete(seq);
      return { ok: false, error: { name: "Error", message: String(error) } };
    }
  }

  /**
   * Waits for an event or log line matching `match` (including ones already seen).
   *
   * @param match The predicate.
   * @param timeoutMs How long to wait.
   * @returns The line, or `undefined` on timeout or exit.
   */
  async waitFor(match: (line: Line) => boolean, timeoutMs: number): Promise<Line | undefined> {
    const deadline = performance.now() + timeoutMs;
    let seen = 0;
    while (true) {
      for (; seen < this.lines.length; seen++) if (match(this.lines[seen])) return this.lines[seen];
      const left = deadline - performance.now();
      if (left <= 0 || this.#exited) return undefined;
      const { promise, resolve } = Promise.withResolvers<void>();
      const timer = setTimeout(resolve, left);
      this.#waiters.add(resolve);
      await promise;
      clearTimeout(timer);
      this.#waiters.delete(resolve);
    }
  }

  /**
   * Reads the kernel's peak RSS of the server now (call it periodically
   * where the process may die, so that the peak is known afterwards).
   *
   * @returns The peak RSS since the last reset, in bytes.
   */
  samplePeak(): number {
    this.#hwm = Math.max(this.#hwm, procStatus(this.pid, "VmHWM") ?? 0);
    return this.#hwm;
  }

  /**
   * The server's memory now and its peak since the last reset.
   *
   * @param reset Start a new peak from now on.
   * @returns RSS and peak RSS in bytes.
   */
  async memory(reset = false): Promise<Memory> {
    const reply = await this.request({ cmd: "mem", reset }, 30_000);
    const vmRss = procStatus(this.pid, "VmRSS");
    const vmHwm = this.samplePeak();
    if (reset) {
      this.#hwm = 0;
      try {
        Deno.writeTextFileSync(`/proc/${this.pid}/clear_refs`, "5"); // resets VmHWM
      } catch {
        // Not Linux, or not allowed: the server's own samples remain.
      }
    }
    const rss = vmRss ?? reply.rss ?? 0;
    return { rss, peak: Math.max(vmHwm ?? 0, reply.peak ?? 0, rss) };
  }

  /**
   * Closes the server (a `close` command), then ends the process (SIGKILL
   * if it does not exit within 10 s) and collects its output.
   *
   * @returns How it ended.
   */
  close(): Promise<Ended> {
    this.#ended ??= (async () => {
      if (!this.#exited) await this.request({ cmd: "close" }, 10_000);
      try {
        await this.#stdin.close();
      } catch {
        // The process is gone: its stdin is closed already.
      }
      const status = await withTimeout(this.#status, 10_000, "server exit").catch(() => {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // Exited meanwhile.
        }
        return this.#status;
      });
      await this.#stdoutDone;
      await this.#stderrDone;
      return {
        code: status.code,
        signal: status.signal,
        stderr: this.#stderr,
        panicked: /panicked|Deno has panicked/.test(this.#stderr),
      };
    })();
    return this.#ended;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close().then(() => {});
  }
}

/** Options of a {@linkcode ClientProcess}. */
export interface ClientProcessOptions {
  port: number;
  heartbeatMs?: number;
  idleTimeout?: number;
}

/**
 * A real `connect()` client in a child process: it answers every message
 * with `{from: id, echo: message}`, first "training" for `message.trainMs`
 * ms (in a Worker, or on its main thread with `mainThread: true`), and
 * idles until its stdin is closed.
 */
export class ClientProcess implements AsyncDisposable {
  readonly id: number;
  readonly pid: number;
  /** Its output lines so far (`joined`, `training`, `answered`, …). */
  readonly lines: Line[];
  readonly #child: Deno.ChildProcess;
  readonly #stdoutDone: Promise<void>;
  #ended: Promise<Deno.CommandStatus> | undefined;

  private constructor(
    child: Deno.ChildProcess,
    id: number,
    stdoutDone: Promise<void>,
    lines: Line[],
  ) {
    this.#child = child;
    this.lines = lines;
    this.id = id;
    this.pid = child.pid;
    this.#stdoutDone = stdoutDone;
  }

  /**
   * Starts a client process and waits until it joined.
   *
   * @param options The server's port and the client's liveness settings.
   * @returns The client process.
   */
  static async start(options: ClientProcessOptions): Promise<ClientProcess> {
    const script = await scriptFile("client", CLIENT_SCRIPT);
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", CONFIG, "--no-lock", script, JSON.stringify(options)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines: Line[] = [];
    const { promise: joined, resolve } = Promise.withResolvers<Line | null>();
    const stdoutDone = (async () => {
      for await (const text of textLines(child.stdout)) {
        const line = JSON.parse(text) as Line;
        lines.push(line);
        if (line.t === "joined") resolve(line);
      }
      resolve(null);
    })();
    const first = await withTimeout(joined, 60_000, "the client process to join").catch(() => null);
    if (first === null) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited.
      }
      await child.stdin.close().catch(() => {});
      await child.status;
      await stdoutDone;
      throw new Error("Client process did not join");
    }
    return new ClientProcess(child, first.id, stdoutDone, lines);
  }

  /**
   * Sends a signal to the process.
   *
   * @param signal The signal.
   */
  kill(signal: Deno.Signal): void {
    try {
      Deno.kill(this.pid, signal);
    } catch {
      // Exited already.
    }
  }

  /**
   * Ends the process: closes its stdin (it closes its client and exits);
   * a stopped one is killed (SIGKILL, then SIGCONT).
   *
   * @param stopped Whether it was stopped with SIGSTOP.
   * @returns Its exit status.
   */
  close(stopped = false): Promise<Deno.CommandStatus> {
    this.#ended ??= (async () => {
      if (stopped) {
        this.kill("SIGKILL");
        this.kill("SIGCONT");
      }
      await this.#child.stdin.close().catch(() => {});
      const status = await withTimeout(this.#child.status, 10_000, "client exit").catch(() => {
        this.kill("SIGKILL");
        return this.#child.status;
      });
      await this.#stdoutDone;
      return status;
    })();
    return this.#ended;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close().then(() => {});
  }
}

// ---------------------------------------------------------------------------
// Peers

/** A frame read by a {@linkcode RawPeer}. */
export type Frame =
  | { kind: "handshake"; value: Record<string, unknown> }
  | { kind: "ping" | "pong"; payload: Uint8Array }
  | { kind: "control"; body: Uint8Array }
  | { kind: "plain"; value: unknown }
  | { kind: "heartbeat" };

/** Writes all of `bytes` to a connection (`write` may take only part). */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.byteLength;) off += await conn.write(bytes.subarray(off));
}

/** A frame: the 4-byte big-endian length, then `body`. */
export function frameOf(body: Uint8Array): Uint8Array {
  const frame = new Uint8Array(4 + body.byteLength);
  new DataView(frame.buffer).setUint32(0, body.byteLength);
  frame.set(body, 4);
  return frame;
}

/** The frame of a handshake message: `c1 03` + the MessagePack map. */
export function handshakeFrameOf(message: Record<string, unknown>): Uint8Array {
  return frameOf(new Uint8Array([0xc1, 0x03, ...encode(message)]));
}

/** A peer that speaks the wire format by hand over a TCP connection to 127.0.0.1. */
export class RawPeer implements AsyncDisposable {
  readonly conn: Deno.TcpConn;
  readonly reader: FrameReader;
  #closed = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.reader = new FrameReader(conn, { maxFrameBytes: 64 * MiB });
  }

  /**
   * Connects.
   *
   * @param port The server's port.
   * @returns The peer.
   */
  static async connect(port: number): Promise<RawPeer> {
    return new RawPeer(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Writes raw bytes. */
  write(bytes: Uint8Array | number[]): Promise<void> {
    return writeAll(this.conn, bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
  }

  /** Writes one body in a frame. */
  writeFrame(body: Uint8Array): Promise<void> {
    return this.write(frameOf(body));
  }

  /** Writes one value in a frame. */
  send(value: unknown): Promise<void> {
    return this.writeFrame(encode(value));
  }

  /** Writes a handshake message. */
  sendHandshake(message: Record<string, unknown>): Promise<void> {
    return this.write(handshakeFrameOf(message));
  }

  /**
   * Reads the next frame: `null` when the server closed (EOF or reset). On
   * timeout the connection is closed and an error thrown.
   *
   * @param timeoutMs How long to wait.
   * @returns The frame, or `null` at the end.
   */
  async next(timeoutMs = 10_000): Promise<Frame | null> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.close();
    }, timeoutMs);
    let body: Uint8Array | null;
    try {
      body = await this.reader.read();
    } catch (error) {
      if (timedOut) throw new Error(`No frame within ${timeoutMs} ms`);
      if (
        error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.BadResource ||
        error instanceof Deno.errors.Interrupted || (error as Error).name === "ProtocolError"
      ) return null;
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (body === null) return null;
    return parseFrame(body);
  }

  /**
   * Reads up to the next frame that is not a ping, pong or heartbeat.
   *
   * @param timeoutMs How long to wait in all.
   * @param answerPings Answer the server's pings.
   * @returns The frame, or `null` when the server closed.
   */
  async recv(timeoutMs = 10_000, answerPings = true): Promise<Frame | null> {
    const deadline = performance.now() + timeoutMs;
    while (true) {
      const frame = await this.next(Math.max(1, deadline - performance.now()));
      if (frame === null) return null;
      if (frame.kind === "ping") {
        if (answerPings) await this.writeFrame(new Uint8Array([0xc1, 0x02, ...frame.payload]));
        continue;
      }
      if (frame.kind === "pong" || frame.kind === "heartbeat") continue;
      return frame;
    }
  }

  /**
   * Says hello and returns the answer's map (welcome or reject).
   *
   * @param hello Extra hello fields.
   * @returns The map.
   */
  async handshake(hello: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    await this.sendHandshake({ fedcomm: 3, type: "hello", ...hello });
    const frame = await this.recv();
    if (frame?.kind !== "handshake") throw new Error(`Expected a handshake, got ${frame?.kind}`);
    return frame.value;
  }

  /** Closes the connection (idempotent). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Closed already.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Classifies a frame body the server sent.
 *
 * @param body The body.
 * @returns The frame.
 */
export function parseFrame(body: Uint8Array): Frame {
  if (body.byteLength === 0) return { kind: "heartbeat" };
  if (body[0] !== 0xc1) return { kind: "plain", value: decode(body) };
  if (body[1] === 0x01 && body.byteLength === 10) return { kind: "ping", payload: body.slice(2) };
  if (body[1] === 0x02 && body.byteLength === 10) return { kind: "pong", payload: body.slice(2) };
  if (body[1] === 0x03) {
    return { kind: "handshake", value: decode(body.subarray(2)) as Record<string, unknown> };
  }
  return { kind: "control", body };
}

/** The outcome of a legitimate round. */
export interface RoundResult {
  ok: boolean;
  ms: number;
  error?: string;
}

/**
 * A legitimate round: the server broadcasts to `clients`, each answers
 * `{from: id, echo: message}`, the server gathers; every answer is checked.
 *
 * @param server The server process.
 * @param clients Real clients in this process (answered here) …
 * @param remote … and client processes (they answer by themselves).
 * @param value What to broadcast.
 * @param timeout The round's time limit.
 * @returns Whether it passed, and how long it took.
 */
export async function legitRound(
  server: ServerProcess,
  clients: readonly Client[],
  remote: readonly ClientProcess[] = [],
  value: Record<string, unknown> = { round: 1, weights: [0.5, 0.25] },
  timeout = 10_000,
): Promise<RoundResult> {
  const ids = [...clients.map((c) => c.id), ...remote.map((c) => c.id)];
  const t0 = performance.now();
  const abort = new AbortController();
  const reply = server.request({ cmd: "round", ids, value, timeout }, timeout + 10_000)
    .then((r) => {
      if (!r.ok) abort.abort(new Error("the server's round failed"));
      return r;
    });
  const answers = await Promise.allSettled(clients.map(async (client) => {
    const message = await client.recv({ timeout, signal: abort.signal });
    await client.send({ from: client.id, echo: message });
  }));
  const r = await reply;
  const ms = performance.now() - t0;
  if (!r.ok) return { ok: false, ms, error: `${r.error?.name}: ${r.error?.message}` };
  for (const a of answers) {
    if (a.status === "rejected") return { ok: false, ms, error: String(a.reason) };
  }
  const got = new Map<number, unknown>(r.values);
  for (const id of ids) {
    const answer = JSON.stringify(got.get(id));
    if (answer !== JSON.stringify({ from: id, echo: value })) {
      return { ok: false, ms, error: `client ${id} answered ${answer}` };
    }
  }
  return { ok: true, ms };
}

/** Connects real clients one after another (so their ids are in order). */
export async function connectClients(
  n: number,
  options: ConnectOptions,
): Promise<Client[]> {
  const clients: Client[] = [];
  for (let i = 0; i < n; i++) clients.push(await connect(options));
  return clients;
}

/** Closes clients, ignoring errors. */
export async function closeAll(
  things: readonly { close(): Promise<unknown> | void }[],
): Promise<void> {
  await Promise.all(things.map(async (t) => {
    try {
      await t.close();
    } catch {
      // Gone already.
    }
  }));
}

// ---------------------------------------------------------------------------
// The scenarios

/** What one hostile input did: a row of the table, and details for the tests. */
export interface Result {
  /** The hostile input. */
  input: string;
  /** What the server did, in a few words. */
  did: string;
  /** Server RSS before the input (bytes). */
  idleRss: number;
  /** Peak server RSS while handling it (bytes). */
  peakRss: number;
  /** Milliseconds to handle the input. */
  ms: number;
  /** The legitimate round after it. */
  round: RoundResult;
  /** Facts the tests assert on. */
  // deno-lint-ignore no-explicit-any
  details: Record<string, any>;
  /** How the server process ended. */
  ended?: Ended;
}

/** A server with `attackers` raw peers joined first (ids 0…), then `legit` real clients. */
async function setup(
  options: ServerProcessOptions,
  attackers: number,
  legit: number,
  fdLimit?: number,
  clientOptions: Partial<ConnectOptions> = {},
): Promise<{ server: ServerProcess; peers: RawPeer[]; clients: Client[] }> {
  const server = await ServerProcess.start(options, fdLimit);
  const peers: RawPeer[] = [];
  const clients: Client[] = [];
  try {
    for (let i = 0; i < attackers; i++) {
      const peer = await RawPeer.connect(server.port);
      peers.push(peer);
      const welcome = await peer.handshake();
      if (welcome.type !== "welcome" || welcome.id !== i) {
        throw new Error(`Attacker ${i} not welcomed: ${JSON.stringify(welcome)}`);
      }
    }
    clients.push(...await connectClients(legit, { port: server.port, ...clientOptions }));
    return { server, peers, clients };
  } catch (error) {
    for (const p of peers) p.close();
    await closeAll(clients);
    await server.close();
    throw error;
  }
}

async function teardown(
  server: ServerProcess,
  peers: readonly RawPeer[],
  clients: readonly Client[],
): Promise<Ended> {
  for (const p of peers) p.close();
  await closeAll(clients);
  return await server.close();
}

/** A short form of an error from a reply. */
// deno-lint-ignore no-explicit-any
function short(error: any): string {
  if (error === undefined) return "no error";
  return `${error.name}: ${String(error.message).slice(0, 140)}`;
}

/**
 * Nesting bomb: one frame of `0x91` × n then `0xc0` (an array in an array …
 * n deep) from a joined client.
 *
 * @param n The depth (30,000,000: 28.6 MiB).
 * @returns The result; details: `gather` (the reply to gathering from the
 * attacker), `leave` (its leave event).
 */
export async function nestingBomb(n = 30_000_000): Promise<Result> {
  const { server, peers, clients } = await setup(
    { clients: 3, maxFrameBytes: n + 1024 },
    1,
    2,
  );
  try {
    const idle = await server.memory(true);
    const body = new Uint8Array(n + 1).fill(0x91);
    body[n] = 0xc0;
    const t0 = performance.now();
    const gathered = server.request({ cmd: "gather", ids: [0], timeout: 60_000 }, 90_000);
    await peers[0].writeFrame(body).catch(() => {});
    const gather = await gathered;
    const ms = performance.now() - t0;
    const leave = await server.waitFor((l) => l.t === "leave" && l.id === 0, 10_000);
    const { peak } = await server.memory();
    const round = await legitRound(server, clients);
    const stats = await server.request({ cmd: "stats" });
    return {
      input: `Nesting bomb: \`0x91\` × ${n.toLocaleString("en")} + \`0xc0\` (${
        (n / MiB).toFixed(1)
      } MiB frame)`,
      did: gather.ok ? "decoded it (!)" : `failed only that client: ${short(gather.error)}`,
      idleRss: idle.rss,
      peakRss: peak,
      ms,
      round,
      details: { gather, leave, connected: stats.connected },
      ended: await teardown(server, peers, clients),
    };
  } catch (error) {
    await teardown(server, peers, clients);
    throw error;
  }
}

/** The body of a map of `keys` distinct short str keys (`"k0"` …), each to a fixint. */
export function manyKeyMap(keys: number): Uint8Array {
  const parts: number[] = [
    0xdf,
    keys >>> 24,
    (keys >>> 16) & 0xff,
    (keys >>> 8) & 0xff,
    keys & 0xff,
  ];
  const body = new Uint8Array(5 + keys * 10);
  body.set(parts);
  let pos = 5;
  for (let i = 0; i < keys; i++) {
    const key = `k${i}`;
    body[pos++] = 0xa0 | key.length;
    for (let j = 0; j < key.length; j++) body[pos++] = key.charCodeAt(j);
    body[pos++] = i & 0x7f;
  }
  return body.subarray(0, pos);
}

/**
 * One large frame from a joined client (id 0), while two other clients
 * (ids 1, 2) run small rounds back to back: how long the server takes to
 * handle it, and how long the others wait meanwhile.
 *
 * @param input The input's description, for the table.
 * @param body The frame body.
 * @returns The result; details: `gather` (the reply to gathering from the
 * attacker), `bodyBytes`, `baselineMs` (a round's latency before),
 * `maxRoundMs` and `rounds` (the small rounds run while the frame arrived and
 * was decoded).
 */
export async function stallProbe(input: string, body: Uint8Array): Promise<Result> {
  const { server, peers, clients } = await setup({ clients: 3 }, 1, 2);
  try {
    const baseline = await legitRound(server, clients, [], { small: 1 });
    const idle = await server.memory(true);
    const t0 = performance.now();
    let settled = false;
    const gathered = server.request({ cmd: "gather", ids: [0], timeout: 120_000 }, 150_000)
      .then((reply) => {
        settled = true;
        return { reply, ms: performance.now() - t0 };
      });
    const written = peers[0].writeFrame(body).catch(() => {});
    const latencies: number[] = [];
    const failures: string[] = [];
    // Small rounds back to back until the attacker's frame was handled, and one more.
    let after = 0;
    while (after < 2 && performance.now() - t0 < 120_000) {
      if (settled) after++;
      const r = await legitRound(server, clients, [], { small: latencies.length }, 120_000);
      latencies.push(r.ms);
      if (!r.ok) failures.push(r.error ?? "failed");
    }
    await written;
    const { reply: gather, ms } = await gathered;
    const { peak } = await server.memory();
    const round = await legitRound(server, clients);
    const maxRoundMs = Math.max(...latencies);
    return {
      input,
      did: (gather.ok
        ? `accepted it after ${ms.toFixed(0)} ms`
        : `refused it: ${short(gather.error)}`) +
        `; other clients' rounds waited up to ${maxRoundMs.toFixed(0)} ms`,
      idleRss: idle.rss,
      peakRss: peak,
      ms,
      round,
      details: {
        gather,
        bodyBytes: body.byteLength,
        baselineMs: baseline.ms,
        maxRoundMs,
        rounds: latencies.length,
        roundFailures: failures,
      },
      ended: await teardown(server, peers, clients),
    };
  } catch (error) {
    await teardown(server, peers, clients);
    throw error;
  }
}

/**
 * A map of a million distinct keys in one frame (~8.9 MB): see {@linkcode stallProbe}.
 *
 * @param keys How many keys.
 * @returns The result.
 */
export function millionKeyMap(keys = 1_000_000): Promise<Result> {
  const body = manyKeyMap(keys);
  return stallProbe(
    `Map of ${keys.toLocaleString("en")} distinct keys (${
      (body.byteLength / 1e6).toFixed(1)
    } MB frame)`,
    body,
  );
}

/** The body of an array32 of `n` nils: `n + 5` bytes, within the decoder's cost budget. */
export function nilArray(n: number): Uint8Array {
  const body = new Uint8Array(5 + n).fill(0xc0);
  body.set([0xdd, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
  return body;
}

/**
 * An array of `n` nils in one frame (n + 5 bytes): valid MessagePack that the
 * decoder's cost budget admits (1 unit per element, 2 per byte allowed). See
 * {@linkcode stallProbe}.
 *
 * @param n How many elements.
 * @returns The result.
 */
export function bigArray(n = 32 * 1024 * 1024): Promise<Result> {
  return stallProbe(
    `Array of ${n.toLocaleString("en")} nils (${((n + 5) / MiB).toFixed(0)} MiB frame, ` +
      "from an authenticated client)",
    nilArray(n),
  );
}

/** Reads the first frame of each connection for up to `ms`, leaving them open. */
async function firstFrames(
  conns: readonly Deno.Conn[],
  ms: number,
): Promise<
  { busy: number; otherReject: number; closed: number; open: number; reads: Promise<unknown>[] }
> {
  const results: (string | undefined)[] = conns.map(() => undefined);
  const reads = conns.map(async (conn, i) => {
    try {
      const body = await new FrameReader(conn, { maxFrameBytes: 64 * 1024 }).read();
      if (body === null) results[i] = "closed";
      else {
        const frame = parseFrame(body);
        results[i] = frame.kind === "handshake" && frame.value.type === "reject"
          ? (frame.value.reason === "busy" ? "busy" : "reject")
          : frame.kind;
      }
    } catch {
      results[i] ??= "closed";
    }
  });
  await sleep(ms);
  const count = (what: string | undefined) => results.filter((r) => r === what).length;
  return {
    busy: count("busy"),
    otherReject: count("reject"),
    closed: count("closed"),
    open: count(undefined),
    reads,
  };
}

/**
 * Descriptor exhaustion: the server runs under `ulimit -n fdLimit` with 2 of
 * its 3 clients joined; `silent` connections are opened (one after another,
 * or with `burst` 50 at a time) and say nothing; then they are closed and
 * the third client joins. (A round needs every client joined, so the two
 * cannot run one while the third slot is free: during the flood the check
 * is that the server process answers, and still lists both as connected.)
 *
 * @param options The limit, the number of silent connections, `maxPendingHandshakes`
 * and whether they come in a burst.
 * @returns The result; details: `busy`/`open`/`closed` counts of the silent
 * connections, `fdsIdle` and `maxFds` (the server's descriptors before and
 * at the peak), `alive` and `connectedDuring` (whether the server answered,
 * and its connected clients, during the flood), `acceptFailures` (logged
 * accept errors), `thirdId`, `joinMs`.
 */
export async function descriptorExhaustion(
  options: { fdLimit?: number; silent?: number; maxPending?: number; burst?: boolean } = {},
): Promise<Result> {
  const fdLimit = options.fdLimit ?? 256;
  const silent = options.silent ?? 300;
  const maxPending = options.maxPending ?? 32;
  const batch = options.burst ? 50 : 1;
  const { server, peers, clients } = await setup(
    { clients: 3, maxPendingHandshakes: maxPending },
    0,
    2,
    fdLimit,
  );
  const conns: Deno.Conn[] = [];
  let maxFds = countFds(server.pid) ?? 0;
  const fdsIdle = maxFds;
  const sampler = setInterval(() => {
    maxFds = Math.max(maxFds, countFds(server.pid) ?? 0);
    server.samplePeak();
  }, 10);
  try {
    const idle = await server.memory(true);
    const t0 = performance.now();
    let connectErrors = 0;
    for (let i = 0; i < silent; i += batch) {
      const settled = await Promise.allSettled(
        Array.from(
          { length: Math.min(batch, silent - i) },
          () => Deno.connect({ hostname: "127.0.0.1", port: server.port }),
        ),
      );
      for (const r of settled) {
        if (r.status === "fulfilled") conns.push(r.value);
        else connectErrors++;
      }
    }
    const first = await firstFrames(conns, 1_500);
    const during = await server.request({ cmd: "stats" }, 10_000);
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // Closed by the server.
      }
    }
    await Promise.all(first.reads);
    const ms = performance.now() - t0;
    // The third client: retried while the server still says busy (handshakes winding down).
    const tJoin = performance.now();
    let third: Client | undefined;
    let lastError = "";
    while (third === undefined && !server.exited && performance.now() - tJoin < 15_000) {
      try {
        third = await connect({ port: server.port, timeout: 5_000 });
      } catch (error) {
        lastError = String(error);
        await sleep(100);
      }
    }
    const joinMs = performance.now() - tJoin;
    if (server.exited) lastError = "the server process is gone";
    if (third !== undefined) clients.push(third);
    const { peak } = await server.memory();
    const round = third === undefined
      ? { ok: false, ms: 0, error: `third client could not join: ${lastError}` }
      : await legitRound(server, clients);
    clearInterval(sampler);
    const acceptFailures = server.lines.filter((l) =>
      l.t === "log" && /Accept failed/.test(l.message)
    ).length;
    const ended = await teardown(server, peers, clients);
    return {
      input: `${silent} silent connections ${
        options.burst ? "in bursts of 50" : "one after another"
      }, server under \`ulimit -n ${fdLimit}\`, maxPendingHandshakes ${maxPending}`,
      did: `${first.busy} got \`busy\`, ${first.open} held pending; ` +
        `peak ${maxFds} fds (${fdsIdle} idle); ${acceptFailures} accept errors; ` +
        (ended.panicked
          ? "**Deno panicked** (EMFILE in ext/signals)"
          : during.ok
          ? "kept serving"
          : "stopped answering"),
      idleRss: idle.rss,
      peakRss: peak,
      ms,
      round,
      details: {
        busy: first.busy,
        open: first.open,
        closed: first.closed,
        otherReject: first.otherReject,
        connectErrors,
        fdsIdle,
        maxFds,
        alive: during.ok === true,
        connectedDuring: during.connected,
        acceptFailures,
        thirdId: third?.id,
        joinMs,
        lastError,
      },
      ended,
    };
  } catch (error) {
    clearInterval(sampler);
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // Closed.
      }
    }
    await teardown(server, peers, clients);
    throw error;
  }
}

/**
 * Budget hostage: a joined peer announces a 200 MiB frame, sends 1 byte and
 * stalls; two clients then upload 1 MiB each through `uploads()`. Then
 * `handshakers` connections each announce a 64 KiB hello frame and send
 * nothing more, and the two upload again.
 *
 * @param handshakers How many stalled handshakes.
 * @returns The result; details: `uploadsMs` (the first uploads, while the
 * 200 MiB frame is held), `busy`/`open`/`closed` (the stalled handshakes),
 * `uploads2Ms` (the uploads while they are held), `uploadReplies`.
 */
export async function budgetHostage(handshakers = 200): Promise<Result> {
  const { server, peers, clients } = await setup({ clients: 3 }, 1, 2);
  const conns: Deno.Conn[] = [];
  try {
    const idle = await server.memory(true);
    const header = new Uint8Array(5);
    new DataView(header.buffer).setUint32(0, 200 * MiB);
    header[4] = 0x91;
    await peers[0].write(header);
    await sleep(200); // the server begins the frame and reserves its first step
    const upload = new Uint8Array(MiB).fill(7);
    const t0 = performance.now();
    const [first] = await Promise.all([
      server.request({ cmd: "uploads", ids: [1, 2], timeout: 10_000 }, 20_000),
      ...clients.map((c) => c.send(upload)),
    ]);
    const uploadsMs = performance.now() - t0;
    // Stalled handshakes: a 64 KiB hello announced, nothing more.
    for (let i = 0; i < handshakers; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      conns.push(conn);
      await writeAll(conn, new Uint8Array([0, 1, 0, 0]));
    }
    const stalled = await firstFrames(conns, 1_000);
    const t1 = performance.now();
    const [second] = await Promise.all([
      server.request({ cmd: "uploads", ids: [1, 2], timeout: 10_000 }, 20_000),
      ...clients.map((c) => c.send(upload)),
    ]);
    const uploads2Ms = performance.now() - t1;
    const { peak } = await server.memory();
    const round = await legitRound(server, clients);
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // Closed by the server.
      }
    }
    await Promise.all(stalled.reads);
    const ok = first.ok && second.ok;
    return {
      input: "Budget hostage: 200 MiB frame announced, 1 byte sent, stalled; " +
        `then ${handshakers} handshakes stalled in a 64 KiB hello`,
      did: `other clients' 1 MiB uploads ${ok ? "done" : "FAILED"} in ${
        uploadsMs.toFixed(0)
      } ms / ${
        uploads2Ms.toFixed(0)
      } ms; ${stalled.busy} of ${handshakers} handshakes got \`busy\``,
      idleRss: idle.rss,
      peakRss: peak,
      ms: Math.max(uploadsMs, uploads2Ms),
      round,
      details: {
        uploadsMs,
        uploads2Ms,
        uploadReplies: [first, second],
        busy: stalled.busy,
        open: stalled.open,
        closed: stalled.closed,
        otherReject: stalled.otherReject,
      },
      ended: await teardown(server, peers, clients),
    };
  } catch (error) {
    for (const conn of conns) {
      try {
        conn.close();
      } catch {
        // Closed.
      }
    }
    await teardown(server, peers, clients);
    throw error;
  }
}

/** A TCP proxy on 127.0.0.1 that records what the client sends, for one connection. */
class RecordingProxy implements AsyncDisposable {
  readonly listener: Deno.TcpListener;
  readonly fromClient: Uint8Array[] = [];
  readonly fromServer: Uint8Array[] = [];
  readonly #done: Promise<void>;
  #conns: Deno.Conn[] = [];

  constructor(target: number) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.listener = listener;
    this.#done = (async () => {
      const client = await listener.accept();
      listener.close();
      const server = await Deno.connect({ hostname: "127.0.0.1", port: target });
      this.#conns = [client, server];
      const pump = async (from: Deno.Conn, to: Deno.Conn, record: Uint8Array[]) => {
        const buf = new Uint8Array(64 * 1024);
        try {
          while (true) {
            const n = await from.read(buf);
            if (n === null) break;
            record.push(buf.slice(0, n));
            await writeAll(to, buf.subarray(0, n));
          }
        } catch {
          // One side closed.
        }
        for (const c of this.#conns) {
          try {
            c.close();
          } catch {
            // Closed.
          }
        }
      };
      await Promise.all([
        pump(client, server, this.fromClient),
        pump(server, client, this.fromServer),
      ]);
    })();
  }

  get port(): number {
    return (this.listener.addr as Deno.NetAddr).port;
  }

  /** The first `n` frames the client sent, each whole (header included). */
  clientFrames(n: number): Uint8Array[] {
    const all = new Uint8Array(this.fromClient.reduce((s, c) => s + c.byteLength, 0));
    let off = 0;
    for (const c of this.fromClient) {
      all.set(c, off);
      off += c.byteLength;
    }
    const frames: Uint8Array[] = [];
    let pos = 0;
    while (frames.length < n && pos + 4 <= all.byteLength) {
      const len = new DataView(all.buffer, pos).getUint32(0);
      frames.push(all.slice(pos, pos + 4 + len));
      pos += 4 + len;
    }
    return frames;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.listener.close();
    } catch {
      // Closed after the accept.
    }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // Closed.
      }
    }
    await this.#done.catch(() => {});
  }
}

/** Whether `needle` occurs in `haystack`. */
function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.byteLength <= haystack.byteLength; i++) {
    for (let j = 0; j < needle.byteLength; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/**
 * Unauthenticated peers against `listen({ clients: 2, auth: { secret } })`:
 * two hellos without a nonce, a raw peer with the wrong secret, a real
 * client with the wrong secret, then a real client through a recording
 * proxy, a replay of its hello + auth bytes, and a second real client.
 *
 * @returns The result; details: `noNonce` (the two rejects), `joinedAfterNoNonce`,
 * `wrongSecretRaw` (the reject), `wrongSecretClient` (connect()'s error),
 * `proxiedId`, `replayChallengeFresh`, `replay` (the reject), `secondId`,
 * `refusals` (refuse events), `secretInLogs`, `secretInEvents`, `secretOnWire`.
 */
export async function unauthenticated(): Promise<Result> {
  const secret = Array.from(
    crypto.getRandomValues(new Uint8Array(32)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const server = await ServerProcess.start({ clients: 2, auth: { secret } });
  const clients: Client[] = [];
  try {
    const idle = await server.memory(true);
    const t0 = performance.now();
    const noNonce: Record<string, unknown>[] = [];
    for (let i = 0; i < 2; i++) {
      await using peer = await RawPeer.connect(server.port);
      noNonce.push(await peer.handshake({ name: `intruder-${i}` }));
    }
    const joinedAfterNoNonce = (await server.request({ cmd: "stats" })).joined;
    // A raw peer that does the challenge with the wrong secret.
    let wrongSecretRaw: Record<string, unknown> | string;
    {
      await using peer = await RawPeer.connect(server.port);
      const clientNonce = crypto.getRandomValues(new Uint8Array(32));
      const challenge = await peer.handshake({ nonce: clientNonce });
      const wrong = importSecret(secretBytes("not the secret, but 32 bytes ...", "secret"));
      const proof = prove(wrong, "client", clientNonce, challenge.nonce as Uint8Array, "");
      await peer.sendHandshake({ fedcomm: 3, type: "auth", proof });
      const answer = await peer.recv();
      wrongSecretRaw = answer?.kind === "handshake" ? answer.value : String(answer?.kind);
    }
    let wrongSecretClient = "connected (!)";
    try {
      const c = await connect({ port: server.port, secret: "a wrong secret of 32 bytes......" });
      await c.close();
    } catch (error) {
      wrongSecretClient = `${(error as Error).name}: ${(error as Error).message}`;
    }
    // A real client through a recording proxy, then a replay of its bytes.
    let proxiedId: number | undefined;
    let replay: Record<string, unknown> | string = "none";
    let replayChallengeFresh = false;
    let secretOnWire = false;
    {
      await using proxy = new RecordingProxy(server.port);
      const a = await connect({ port: proxy.port, secret, name: "site-a" });
      clients.push(a);
      proxiedId = a.id;
      const [hello, auth] = proxy.clientFrames(2);
      const secretBytes = new TextEncoder().encode(secret);
      for (const chunk of [...proxy.fromClient, ...proxy.fromServer]) {
        if (containsBytes(chunk, secretBytes)) secretOnWire = true;
      }
      const fromServer = concat(proxy.fromServer);
      const recordedChallenge = parseFrame(
        fromServer.subarray(4, 4 + new DataView(fromServer.buffer).getUint32(0)),
      );
      await using peer = await RawPeer.connect(server.port);
      await peer.write(hello);
      const challenge = await peer.recv();
      if (challenge?.kind === "handshake" && recordedChallenge.kind === "handshake") {
        replayChallengeFresh = challenge.value.type === "challenge" &&
          !equalBytes(
            challenge.value.nonce as Uint8Array,
            recordedChallenge.value.nonce as Uint8Array,
          );
      }
      await peer.write(auth);
      const answer = await peer.recv();
      replay = answer?.kind === "handshake" ? answer.value : String(answer?.kind);
      // The proxied client must outlive the proxy scope: it keeps its connection
      // through the proxy's pumps until the end of this block, so run the round here.
      const b = await connect({ port: server.port, secret, name: "site-b" });
      clients.push(b);
      const ms = performance.now() - t0;
      const round = await legitRound(server, clients);
      const { peak } = await server.memory();
      await closeAll(clients);
      const refusals = server.lines.filter((l) => l.t === "refuse");
      const logs = server.lines.filter((l) => l.t === "log");
      const ended = await server.close();
      const authRefusals = refusals.filter((l) => l.reason === "auth").length;
      return {
        input: "Unauthenticated peers: 2 hellos without nonce, wrong secret (raw and real " +
          "client), replay of a recorded hello + auth",
        did: `all refused (${authRefusals} \`auth\` rejects), joined stayed 0; ` +
          `real clients got ids ${proxiedId} and ${b.id}`,
        idleRss: idle.rss,
        peakRss: peak,
        ms,
        round,
        details: {
          noNonce,
          joinedAfterNoNonce,
          wrongSecretRaw,
          wrongSecretClient,
          proxiedId,
          replayChallengeFresh,
          replay,
          secondId: b.id,
          refusals,
          logCount: logs.length,
          secretInLogs: JSON.stringify(logs).includes(secret),
          secretInEvents: JSON.stringify(refusals).includes(secret),
          secretInStderr: ended.stderr.includes(secret),
          secretOnWire,
        },
        ended,
      };
    }
  } catch (error) {
    await closeAll(clients);
    await server.close();
    throw error;
  }
}

function concat(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((s, c) => s + c.byteLength, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

/** A str of the given bytes: fixstr, or str8. */
function str(bytes: readonly number[]): number[] {
  return bytes.length < 32 ? [0xa0 | bytes.length, ...bytes] : [0xd9, bytes.length, ...bytes];
}

/** Invalid UTF-8 sequences, and the prefix lengths that take each decoding path. */
export const INVALID_UTF8: readonly (readonly number[])[] = [
  [0xff],
  [0xe2, 0x82], // a 3-byte sequence cut short
  [0xc0, 0x80], // overlong NUL
  [0xed, 0xa0, 0x80], // a UTF-16 surrogate
  [0xf4, 0x90, 0x80, 0x80], // beyond U+10FFFF
];
/** Short (≤ 8 bytes), medium (≤ 32) and long strings take different paths in `_codec/decoder.ts`. */
export const PREFIX_LENGTHS: readonly number[] = [1, 20, 40];

/** The body of an array holding, for each invalid sequence and prefix, the string then `0x42`. */
export function invalidUtf8Body(): Uint8Array {
  const items: number[] = [];
  let n = 0;
  for (const seq of INVALID_UTF8) {
    for (const prefix of PREFIX_LENGTHS) {
      items.push(...str([...new Array(prefix).fill(0x78), ...seq]), 0x42);
      n += 2;
    }
  }
  return new Uint8Array([0xdc, n >> 8, n & 0xff, ...items]);
}

/**
 * What {@linkcode invalidUtf8Body} must decode to: each string as the
 * WHATWG decoder reads its bytes alone (every invalid sequence a U+FFFD),
 * each followed by 66.
 */
export function expectedUtf8(): unknown[] {
  const out: unknown[] = [];
  for (const seq of INVALID_UTF8) {
    for (const prefix of PREFIX_LENGTHS) {
      out.push("x".repeat(prefix) + new TextDecoder().decode(new Uint8Array(seq)), 0x42);
    }
  }
  return out;
}

/** The smaller deviations: each a frame sent by a joined client. */
export const DEVIATIONS: Record<
  string,
  { input: string; frames: () => Uint8Array[]; expected?: () => unknown }
> = {
  proto: {
    input: 'Bin map key `"__proto__"`',
    frames: () => [
      frameOf(new Uint8Array([0x81, 0xc4, 9, ...new TextEncoder().encode("__proto__"), 0xc0])),
    ],
  },
  shapeStrings: {
    input: 'numpy `shape` of `["2", [1]]`',
    frames: () => [
      frameOf(
        encode({ nd: true, type: "<f4", kind: "", shape: ["2", [1]], data: new Uint8Array(8) }),
      ),
    ],
  },
  shapeBool: {
    input: "numpy `shape` of `[true, 2]`",
    frames: () => [
      frameOf(
        encode({ nd: true, type: "<f4", kind: "", shape: [true, 2], data: new Uint8Array(8) }),
      ),
    ],
  },
  utf8: {
    input: "Invalid UTF-8 in short, medium and long strings, each followed by `0x42`",
    frames: () => [frameOf(invalidUtf8Body())],
    expected: expectedUtf8,
  },
  duplicateHello: {
    input: "A second `c1 03` hello after the welcome",
    frames: () => [handshakeFrameOf({ fedcomm: 3, type: "hello" })],
  },
};

/**
 * One smaller deviation: a joined raw peer sends its frames; the server
 * gathers from it.
 *
 * @param key A key of {@linkcode DEVIATIONS}.
 * @returns The result; details: `gather` (the reply: `values` or `error`), `leave`.
 */
export async function deviation(key: string): Promise<Result> {
  const { input, frames, expected } = DEVIATIONS[key];
  const { server, peers, clients } = await setup({ clients: 3 }, 1, 2);
  try {
    const idle = await server.memory(true);
    const t0 = performance.now();
    for (const frame of frames()) await peers[0].write(frame);
    const gather = await server.request({ cmd: "gather", ids: [0], timeout: 5_000 });
    const ms = performance.now() - t0;
    const leave = await server.waitFor((l) => l.t === "leave" && l.id === 0, gather.ok ? 0 : 5_000);
    const { peak } = await server.memory();
    const round = await legitRound(server, clients);
    return {
      input,
      did: !gather.ok
        ? `failed only that client: ${short(gather.error)}`
        : expected === undefined
        ? "delivered it as a message"
        : JSON.stringify(gather.values?.[0]?.[1]) === JSON.stringify(expected())
        ? "delivered it: each invalid sequence a U+FFFD, the next byte intact, on every path"
        : `delivered it WRONG: ${JSON.stringify(gather.values?.[0]?.[1]).slice(0, 100)}`,
      idleRss: idle.rss,
      peakRss: peak,
      ms,
      round,
      details: { gather, leave },
      ended: await teardown(server, peers, clients),
    };
  } catch (error) {
    await teardown(server, peers, clients);
    throw error;
  }
}

/**
 * Silent peers, with `idleTimeout` and `heartbeatMs` on both sides: a
 * client process stopped with SIGSTOP, and one that trains for
 * 3 × `idleTimeout` before it answers (in a Worker, or with `mainThread`
 * on its event loop's thread).
 *
 * @param options The timings, and whether the training blocks the main thread.
 * @returns The result; details: `stoppedLeave` (the leave event of the
 * stopped client), `stoppedAfterMs` (from SIGSTOP to it), `trainReply` (the
 * round with the training client), `trainLeave` (a leave event for it, if any).
 */
export async function silentPeers(
  options: { idleTimeout?: number; heartbeatMs?: number; mainThread?: boolean } = {},
): Promise<Result> {
  const idleTimeout = options.idleTimeout ?? 1_500;
  const heartbeatMs = options.heartbeatMs ?? 300;
  const trainMs = 3 * idleTimeout;
  const server = await ServerProcess.start({ clients: 3, idleTimeout, heartbeatMs });
  const remote: ClientProcess[] = [];
  const clients: Client[] = [];
  let stopped: ClientProcess | undefined;
  try {
    const liveness = { port: server.port, heartbeatMs, idleTimeout };
    stopped = await ClientProcess.start(liveness);
    const trainer = await ClientProcess.start(liveness);
    remote.push(trainer);
    clients.push(await connect(liveness));
    const idle = await server.memory(true);
    const t0 = performance.now();
    stopped.kill("SIGSTOP");
    const trained = legitRound(server, [], [trainer], {
      round: 1,
      trainMs,
      mainThread: options.mainThread === true,
    }, trainMs + 10_000);
    const stoppedLeave = await server.waitFor(
      (l) => l.t === "leave" && l.id === stopped!.id,
      idleTimeout + 5_000,
    );
    const stoppedAfterMs = performance.now() - t0;
    const trainRound = await trained;
    const trainLeave = server.lines.find((l) => l.t === "leave" && l.id === trainer.id);
    const { peak } = await server.memory();
    const ms = performance.now() - t0;
    const live = trainLeave === undefined ? [trainer] : [];
    const round = await legitRound(server, clients, live);
    await stopped.close(true);
    await closeAll(clients);
    await closeAll(remote);
    const ended = await server.close();
    const what = options.mainThread ? "on its main thread" : "in a Worker";
    return {
      input: `Silent peers (idleTimeout ${idleTimeout} ms, heartbeat ${heartbeatMs} ms): ` +
        `one SIGSTOPped, one training ${trainMs} ms ${what}`,
      did: `stopped one declared dead after ${stoppedAfterMs.toFixed(0)} ms; training one ${
        trainLeave === undefined ? "kept" : "DECLARED DEAD"
      }`,
      idleRss: idle.rss,
      peakRss: peak,
      ms,
      round,
      details: { stoppedLeave, stoppedAfterMs, stoppedId: stopped.id, trainRound, trainLeave },
      ended,
    };
  } catch (error) {
    await stopped?.close(true);
    await closeAll(clients);
    await closeAll(remote);
    await server.close();
    throw error;
  }
}

// ---------------------------------------------------------------------------
// The table

/** The scenarios of the table, by key. */
export const SCENARIOS: Record<string, () => Promise<Result>> = {
  nesting: () => nestingBomb(),
  keys: () => millionKeyMap(),
  nils: () => bigArray(),
  fds: () => descriptorExhaustion(),
  fdsBurst: () => descriptorExhaustion({ burst: true }),
  fdsUncapped: () => descriptorExhaustion({ maxPending: 1_000, burst: true }),
  hostage: () => budgetHostage(),
  auth: () => unauthenticated(),
  ...Object.fromEntries(Object.keys(DEVIATIONS).map((k) => [k, () => deviation(k)])),
  silent: () => silentPeers(),
  silentMainThread: () => silentPeers({ mainThread: true }),
};

const mb = (bytes: number) => `${(bytes / MiB).toFixed(0)} MiB`;

/**
 * Formats results as a Markdown table.
 *
 * @param results The results.
 * @returns The table.
 */
export function table(results: readonly Result[]): string {
  const rows = [
    "| Hostile input | What the server did | Server RSS idle → peak | Time to handle | Legitimate round after |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const r of results) {
    const ended = r.ended === undefined
      ? ""
      : r.ended.panicked
      ? " (server **panicked**)"
      : r.ended.code !== 0
      ? ` (server exit ${r.ended.code})`
      : "";
    rows.push(
      `| ${r.input} | ${r.did.replaceAll("|", "\\|")}${ended} | ${
        r.peakRss > 0
          ? `${mb(r.idleRss)} → ${mb(r.peakRss)} (+${mb(r.peakRss - r.idleRss)})`
          : `${mb(r.idleRss)} → n/a`
      } | ${r.ms.toFixed(0)} ms | ${
        r.round.ok ? `OK (${r.round.ms.toFixed(0)} ms)` : `**failed**: ${r.round.error}`
      } |`,
    );
  }
  return rows.join("\n");
}

/** A descriptor-flood variant, run several times: how often it reached the limit or panicked. */
async function floodRuns(
  name: string,
  options: Parameters<typeof descriptorExhaustion>[0],
  runs: number,
): Promise<string> {
  let emfile = 0;
  let panicked = 0;
  let recovered = 0;
  let maxFds = 0;
  for (let i = 0; i < runs; i++) {
    const r = await descriptorExhaustion(options);
    if (r.details.acceptFailures > 0 || r.details.maxFds >= (options?.fdLimit ?? 256)) emfile++;
    if (r.ended?.panicked) panicked++;
    if (r.round.ok) recovered++;
    maxFds = Math.max(maxFds, r.details.maxFds);
  }
  return `| ${name} | ${runs} | ${emfile} | ${panicked} | ${recovered} | ${maxFds} |`;
}

if (import.meta.main) {
  const arg = Deno.args.find((a) => a.startsWith("--only="));
  const keys = arg === undefined ? Object.keys(SCENARIOS) : arg.slice(7).split(",");
  const runsArg = Deno.args.find((a) => a.startsWith("--flood-runs="));
  const floodRunCount = runsArg === undefined
    ? (arg === undefined ? 5 : 0)
    : Number(runsArg.slice(13));
  const results: Result[] = [];
  for (const key of keys) {
    const run = SCENARIOS[key];
    if (run === undefined) throw new Error(`Unknown scenario "${key}": ${Object.keys(SCENARIOS)}`);
    console.error(`running ${key} …`);
    const result = await run();
    results.push(result);
    console.error(`  ${result.did}`);
  }
  console.log(
    `Deno ${Deno.version.deno}, ${Deno.build.os}/${Deno.build.arch}, ` +
      `${navigator.hardwareConcurrency} CPUs\n`,
  );
  console.log(table(results));
  if (floodRunCount > 0) {
    console.error(`running the descriptor floods ${floodRunCount} times each …`);
    const rows = [
      "| Silent connections (server under `ulimit -n 256`) | Runs | Reached the limit (EMFILE) | Deno panicked | Third client joined, round OK | Peak fds |",
      "| --- | --- | --- | --- | --- | --- |",
      await floodRuns("180 one after another, cap 32", { silent: 180 }, floodRunCount),
      await floodRuns("300 one after another, cap 32", { silent: 300 }, floodRunCount),
      await floodRuns("300 in bursts of 50, cap 32", { silent: 300, burst: true }, floodRunCount),
      await floodRuns(
        "300 in bursts of 50, cap 1000",
        { silent: 300, burst: true, maxPending: 1_000 },
        floodRunCount,
      ),
    ];
    console.log(`\n${rows.join("\n")}`);
  }
}
