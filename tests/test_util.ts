/**
 * Helpers shared by the tests (not published).
 *
 * @module
 */

import assert from "node:assert/strict";
import { type Client, connect } from "../client.ts";
import { decode, encode } from "../codec.ts";
import { listen, type Server } from "../server.ts";
import { FrameReader } from "../framing.ts";
import type { ListenOptions } from "../types.ts";

/** The Python interpreter the interoperability tests run (Debian's, with its packages). */
export const PYTHON = "/usr/bin/python3";
/** The `python/` folder, the `fedcomm` package's parent: the first argument of every script. */
export const PYTHON_DIR = decodeURIComponent(new URL("../python/", import.meta.url).pathname);

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

/** The "c4-02-00-ff" notation of some bytes, for readable failures. */
export function toHex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("-");
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Whether a promise has settled after a turn of the event loop. */
export async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  promise.then(() => done = true, () => done = true);
  await delay(0);
  return done;
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

/** Sends from a client and waits until the server has read every byte of it. */
export async function sendAndLand(server: Server, client: Client, value: unknown): Promise<void> {
  const before = server.bytesReceived;
  const size = 4 + encode(value).byteLength;
  await client.send(value);
  await client.flush();
  await until(() => server.bytesReceived >= before + size, "the server to read the message");
}

/**
 * Whether {@linkcode PYTHON} can import every one of `modules`: checked
 * once, at load time, by the tests it gates.
 *
 * @param modules The Python modules the tests need.
 * @returns `false` without the interpreter, a module, or `--allow-run`.
 */
export function pythonReady(...modules: string[]): boolean {
  try {
    return new Deno.Command(PYTHON, {
      args: ["-c", `import ${modules.join(", ")}`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false; // no such interpreter, or no --allow-run
  }
}

/**
 * Starts {@linkcode PYTHON} on a script with {@linkcode PYTHON_DIR} as its
 * first argument, its output piped, and no `__pycache__` written in `python/`.
 *
 * @param script The script: its source (run with `-c`), or the URL of its file.
 * @param args The arguments after {@linkcode PYTHON_DIR}.
 * @param stdin `"piped"` to write to its standard input.
 * @returns The running process.
 */
export function spawnPython(
  script: string | URL,
  args: string[],
  stdin: "null" | "piped" = "null",
): Deno.ChildProcess {
  const program = script instanceof URL ? [decodeURIComponent(script.pathname)] : ["-c", script];
  return new Deno.Command(PYTHON, {
    args: [...program, PYTHON_DIR, ...args],
    env: { PYTHONDONTWRITEBYTECODE: "1" },
    stdin,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * Runs a Python script to completion (see {@linkcode spawnPython}), feeding
 * `input` on its standard input.
 *
 * @returns What it wrote on its standard output.
 * @throws {assert.AssertionError} With its standard error, if it failed.
 */
export async function runPython(
  script: string,
  args: string[],
  input?: Uint8Array,
): Promise<Uint8Array> {
  const child = spawnPython(script, args, input === undefined ? "null" : "piped");
  if (input !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(input);
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, `python exited with ${code}:\n${new TextDecoder().decode(stderr)}`);
  return stdout;
}
