/**
 * Framing against "sticky packets" (粘包), with web streams.
 *
 * ```sh
 * deno run -A examples/sticky_packets.ts
 * ```
 *
 * TCP delivers a stream of bytes, not messages. Seed 002 §3 shows it: the
 * client calls `sendall("kinght love ")` and `sendall("aym")`, and the
 * server's one `recv(1024)` returns both, stuck together. The seed's cure is
 * a 4-byte length before each message (`struct.pack('i', len)`), and its
 * receiver loops on `recv()` until it has that many bytes; seed 003 ends on
 * the same idea ("custom header and content", a section it never wrote).
 *
 * This example opens a raw `Deno.listen`/`Deno.connect` pair on 127.0.0.1
 * and sends three messages the hard way: the first two in one write, the
 * third two bytes at a time with a pause between the writes. It does it
 * twice:
 *
 * 1. **Raw**: the client writes the UTF-8 bytes; the server prints the chunks
 *    `conn.readable` delivers. Two messages arrive in one chunk, the third in
 *    many, and a chunk can end inside a UTF-8 character: the chunks say
 *    nothing about where messages begin or end, and only the end of the
 *    connection (EOF) tells the reader that the last one is complete.
 * 2. **Framed**: the client pipes the same values through
 *    `MessagePackEncoderStream` and `FrameEncoderStream` into `conn.writable`
 *    (through the same uneven writes); the server pipes `conn.readable`
 *    through `FrameDecoderStream` and `MessagePackDecoderStream` and gets
 *    exactly the three values, whatever the chunks were, then echoes each
 *    one back framed on the same connection.
 *
 * **What fedcomm does better than the seed.** The seed's length prefix is
 * `struct.pack('i')`: native byte order and a signed int, so a big-endian
 * peer or a message over 2 GiB breaks it; its first version sends the length
 * as decimal text (`str(len)`) and reads it with `recv(4)`, which works only
 * for lengths of exactly four digits, and only when the length and the data
 * do not stick together themselves. Its receiver trusts the announced length (a hostile 2 GiB
 * header makes it try to read 2 GiB), and `recv(4)` may return fewer than 4
 * header bytes. fedcomm's frame is a 4-byte big-endian unsigned length
 * (PROTOCOL.md), checked against `maxFrameBytes` before any of the body is
 * buffered; the decoder handles a header split across chunks and many frames
 * in one chunk; the body is one MessagePack value, so a message is a typed
 * value (a map, a `Float32Array`), not bytes to re-parse.
 *
 * **A Deno detail** (denoland/deno#22258): when `conn.readable` reaches EOF,
 * Deno closes the whole connection, the writing half too, and closing
 * `conn.writable` closes it as well. So the client pipes into
 * `conn.writable` with `preventClose: true`, and it closes its writing side
 * (`conn.closeWrite()`) only after its reader has received the three echoes;
 * the server's read then reaches EOF after its last echo is written, and
 * neither side calls `close()` on a connection Deno has already closed.
 *
 * @module
 */

import {
  FrameDecoderStream,
  FrameEncoderStream,
  MessagePackDecoderStream,
  MessagePackEncoderStream,
} from "../framing.ts";
import { CONSOLE, integerFlag, type Output, parseFlags, reportFailure } from "./command_line.ts";

/** The messages of seed 002 §3: its two "sticky" sends, then its `'xin正在学习'`. */
export const MESSAGES: readonly string[] = ["kinght love ", "aym", "xin正在学习"];

/** What {@linkcode demonstrate} observed. */
export interface StickyReport {
  /** The raw run: the chunks `conn.readable` delivered to the server. */
  readonly raw: readonly Uint8Array[];
  /** The framed run: the chunks `conn.readable` delivered to the server. */
  readonly framedChunks: readonly Uint8Array[];
  /** The framed run: the values the server decoded. */
  readonly values: readonly unknown[];
  /** The framed run: the values the client decoded from the server's echoes. */
  readonly echoes: readonly unknown[];
}

/** Options for {@linkcode demonstrate}. */
export interface StickyOptions {
  /** Milliseconds between the tiny writes of the last message (default 2). */
  readonly pauseMs?: number;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The uneven writes: joins the first two chunks into one, and cuts every later
 * chunk into 2-byte pieces written `pauseMs` apart.
 */
class UnevenWrites extends TransformStream<Uint8Array, Uint8Array> {
  constructor(pauseMs: number) {
    let index = 0;
    let first: Uint8Array | undefined;
    super({
      async transform(chunk, controller) {
        const i = index++;
        if (i === 0) {
          first = chunk;
        } else if (i === 1) {
          const joined = new Uint8Array(first!.byteLength + chunk.byteLength);
          joined.set(first!);
          joined.set(chunk, first!.byteLength);
          first = undefined;
          controller.enqueue(joined);
        } else {
          for (let p = 0; p < chunk.byteLength; p += 2) {
            await delay(pauseMs);
            controller.enqueue(chunk.slice(p, p + 2));
          }
        }
      },
      flush(controller) {
        if (first !== undefined) controller.enqueue(first);
      },
    });
  }
}

/** Records every chunk that passes through. */
function tap(chunks: Uint8Array[]): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream({
    transform(chunk, controller) {
      chunks.push(chunk.slice());
      controller.enqueue(chunk);
    },
  });
}

/** Reads a stream to its end, discarding what is left. */
async function drain(stream: ReadableStream<unknown>): Promise<void> {
  for await (const _ of stream) {
    // Nothing more is expected; reading to EOF lets Deno close the connection.
  }
}

/** A connected pair on 127.0.0.1, with Nagle's algorithm off so small writes go out at once. */
async function connectedPair(): Promise<{ client: Deno.TcpConn; server: Deno.TcpConn }> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = listener.accept();
  const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const server = await accepting;
  client.setNoDelay(true);
  server.setNoDelay(true);
  return { client, server };
}

/** The raw run: UTF-8 bytes in, whatever chunks come out. */
async function rawRun(pauseMs: number): Promise<Uint8Array[]> {
  const { client, server } = await connectedPair();
  const receiving = Array.fromAsync(server.readable); // to EOF: Deno then closes `server`
  await ReadableStream.from(MESSAGES)
    .pipeThrough(new TextEncoderStream())
    .pipeThrough(new UnevenWrites(pauseMs))
    .pipeTo(client.writable, { preventClose: true });
  await client.closeWrite(); // the end of the stream is the only end-of-message a raw reader sees
  const chunks = await receiving;
  await drain(client.readable); // EOF once the server's side is closed: Deno closes `client`
  return chunks;
}

/** The framed run: values in, values out, and values echoed back on the same connection. */
async function framedRun(pauseMs: number): Promise<Omit<StickyReport, "raw">> {
  const { client, server } = await connectedPair();
  const framedChunks: Uint8Array[] = [];
  const values: unknown[] = [];

  const serving = (async () => {
    const echo = new MessagePackEncoderStream();
    const echoing = echo.readable
      .pipeThrough(new FrameEncoderStream())
      .pipeTo(server.writable, { preventClose: true });
    const echoWriter = echo.writable.getWriter();
    const decoded = server.readable
      .pipeThrough(tap(framedChunks))
      .pipeThrough(new FrameDecoderStream())
      .pipeThrough(new MessagePackDecoderStream());
    for await (const value of decoded) {
      values.push(value);
      await echoWriter.write(value);
    }
    // EOF: the client closed its writing side, and Deno closed `server` (#22258).
    await echoWriter.close();
    await echoing;
  })();

  await ReadableStream.from(MESSAGES)
    .pipeThrough(new MessagePackEncoderStream())
    .pipeThrough(new FrameEncoderStream())
    .pipeThrough(new UnevenWrites(pauseMs))
    .pipeTo(client.writable, { preventClose: true });
  // The frames say where each echo ends: read exactly as many as were sent,
  // on a connection that is still open both ways.
  const replies = client.readable
    .pipeThrough(new FrameDecoderStream())
    .pipeThrough(new MessagePackDecoderStream());
  const reader = replies.getReader();
  const echoes: unknown[] = [];
  while (echoes.length < MESSAGES.length) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`Connection closed after ${echoes.length} echoes`);
    echoes.push(value);
  }
  // Only now, with the reader done, close the writing side.
  await client.closeWrite();
  reader.releaseLock();
  await drain(replies);
  await serving;
  return { framedChunks, values, echoes };
}

/**
 * Sends {@linkcode MESSAGES} over a raw TCP pair on 127.0.0.1, first as raw
 * bytes, then framed, through the same uneven writes.
 *
 * @param options The pause between the tiny writes.
 * @returns The chunks each run delivered and the values the framed run decoded.
 */
export async function demonstrate(options: StickyOptions = {}): Promise<StickyReport> {
  const pauseMs = options.pauseMs ?? 2;
  const raw = await rawRun(pauseMs);
  return { raw, ...await framedRun(pauseMs) };
}

function hex(bytes: Uint8Array, max = 12): string {
  const shown = [...bytes.subarray(0, max)].map((b) => b.toString(16).padStart(2, "0"));
  return shown.join(" ") + (bytes.byteLength > max ? " …" : "");
}

/**
 * Prints both views of a {@linkcode StickyReport}.
 *
 * @param report What {@linkcode demonstrate} observed.
 * @param output Where to print (default: the console).
 */
export function printReport(report: StickyReport, output: Output = CONSOLE): void {
  const decoder = new TextDecoder();
  const n = MESSAGES.length;
  const width = String(Math.max(report.raw.length, report.framedChunks.length)).length;
  const label = (i: number, bytes: Uint8Array) =>
    `  chunk ${String(i + 1).padStart(width)}: ${String(bytes.byteLength).padStart(2)} ` +
    (bytes.byteLength === 1 ? "byte " : "bytes");
  output.out(`${n} messages: ${MESSAGES.map((m) => JSON.stringify(m)).join(", ")}`);
  output.out(
    "sent in the same uneven writes twice: the first two in one write, the last two bytes",
  );
  output.out("at a time.");
  output.out("");
  output.out("1. Raw: the chunks conn.readable delivered");
  report.raw.forEach((chunk, i) =>
    output.out(`${label(i, chunk)}  ${JSON.stringify(decoder.decode(chunk))}`)
  );
  output.out(
    `  ${n} messages arrived as ${report.raw.length} chunks: chunk boundaries are not message ` +
      `boundaries (粘包),`,
  );
  output.out("  and a chunk can end inside a UTF-8 character (shown as \ufffd).");
  output.out("");
  output.out("2. Framed: conn.readable → FrameDecoderStream → MessagePackDecoderStream");
  report.framedChunks.forEach((chunk, i) => output.out(`${label(i, chunk)}  ${hex(chunk)}`));
  output.out(
    `  the frames arrived as ${report.framedChunks.length} chunks (a frame: a 4-byte length, ` +
      `then one MessagePack value);`,
  );
  output.out(`  the decoders give exactly ${report.values.length} messages:`);
  report.values.forEach((value, i) => output.out(`  message ${i + 1}: ${JSON.stringify(value)}`));
  output.out(
    `  and the client read exactly ${report.echoes.length} echoes back on the same connection:`,
  );
  output.out(`  ${report.echoes.map((value) => JSON.stringify(value)).join(", ")}`);
}

const USAGE = `Usage: deno run -A examples/sticky_packets.ts [--pause MS]

Sends three messages over a TCP pair on 127.0.0.1, the first two in one write and
the third two bytes at a time, first as raw bytes and then framed, and prints the
chunks the reader got and the messages the framing streams recovered.

  --pause MS   milliseconds between the tiny writes (default 2)
  -h, --help   show this help`;

/**
 * The example's command line.
 *
 * @param args The arguments, without the program name.
 * @param output Where to write (default: the console).
 * @returns The exit code: 0 on success, 1 on failure, 2 for a bad command line.
 */
export async function main(args: string[], output: Output = CONSOLE): Promise<number> {
  try {
    const { values } = parseFlags({
      args,
      options: { pause: { type: "string" }, help: { type: "boolean", short: "h" } },
    });
    if (values.help) {
      output.out(USAGE);
      return 0;
    }
    const pauseMs = integerFlag("pause", values.pause, 2, 0, 1000);
    printReport(await demonstrate({ pauseMs }), output);
    return 0;
  } catch (error) {
    return reportFailure(error, output, "deno run -A examples/sticky_packets.ts --help");
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
