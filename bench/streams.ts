/**
 * The round benchmark through the web-streams pipeline: the same rounds as
 * `round.ts`, but with no `listen`/`connect`/`Server`/`Client`. Each
 * connection is `Deno.listen`/`Deno.connect` plus the four streams of
 * `framing.ts`:
 *
 * - reading: `conn.readable` → `FrameDecoderStream` → `MessagePackDecoderStream`,
 *   one default reader per connection;
 * - writing: values into a `MessagePackEncoderStream` → `FrameEncoderStream` →
 *   `conn.writable`.
 *
 * There is no handshake: the server sends each client `{ id }` as its first
 * message, in the order it accepted them. Each round the server broadcasts
 * `{ round, weights: Float32Array(SIZE / 4) }` (written to every
 * connection's encoder, so it is encoded once per connection, not once per
 * broadcast), every client replies `{ id, round, weights }` with the weights
 * it received, and the server reads one reply from each and checks it.
 *
 * ```sh
 * deno run -A bench/streams.ts server PORT N SIZE ROUNDS   # prints one JSON line
 * deno run -A bench/streams.ts client PORT N               # one process, N connections
 * ```
 *
 * @module
 */

import {
  FrameDecoderStream,
  FrameEncoderStream,
  MessagePackDecoderStream,
  MessagePackEncoderStream,
} from "../framing.ts";
import { median, parseArgs, report, retryRefused } from "./common.ts";

const { role, port, clients, size, rounds } = parseArgs(Deno.args);
// Untimed warm-up rounds, the same for every implementation, so the JIT has
// compiled the hot paths: as many as the timed rounds for small payloads.
const WARMUP = size >= 1 << 20 ? 2 : rounds;
/** The largest body the 4-byte length allows: a 100 MiB model must pass. */
const MAX_FRAME_BYTES = 2 ** 32 - 1;

/** One connection as a value reader and a value writer. */
interface Peer {
  conn: Deno.TcpConn;
  reader: ReadableStreamDefaultReader<unknown>;
  writer: WritableStreamDefaultWriter<unknown>;
  /** Settles when the write pipe into `conn.writable` ends: `undefined`, or its error. */
  piped: Promise<unknown>;
}

/** Wraps a connection in the two stream pipelines. */
function open(conn: Deno.TcpConn): Peer {
  conn.setNoDelay(true);
  const reader = conn.readable
    .pipeThrough(new FrameDecoderStream({ maxFrameBytes: MAX_FRAME_BYTES }))
    .pipeThrough(new MessagePackDecoderStream())
    .getReader();
  const encoder = new MessagePackEncoderStream();
  const piped = encoder.readable
    .pipeThrough(new FrameEncoderStream({ maxFrameBytes: MAX_FRAME_BYTES }))
    .pipeTo(conn.writable)
    // A failed pipe also errors the writer, so its writes reject: keep the
    // error here only for close(), with no unhandled rejection.
    .then(() => undefined, (error) => error);
  return { conn, reader, writer: encoder.writable.getWriter(), piped };
}

/** Reads the next value; throws if the connection ended. */
async function next(peer: Peer): Promise<unknown> {
  const { value, done } = await peer.reader.read();
  if (done) throw new Error("Peer closed");
  return value;
}

/**
 * Ends a connection: cancels the read side (which closes the conn, see
 * denoland/deno#22258), then closes the write side, which flushes nothing
 * here since every write has already gone through.
 */
async function close(peer: Peer): Promise<void> {
  await peer.reader.cancel().catch(() => {});
  await peer.writer.close().catch(() => {});
  await peer.piped;
  try {
    peer.conn.close();
  } catch {
    // Closed already by the streams.
  }
}

if (role === "server") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const peers: Peer[] = [];
  while (peers.length < clients) {
    const peer = open(await listener.accept());
    await peer.writer.write({ id: peers.length });
    peers.push(peer);
  }
  const weights = new Float32Array(size / 4).fill(0.5);
  const times: number[] = [];
  for (let round = -WARMUP; round < rounds; round++) {
    const start = performance.now();
    const message = { round, weights };
    await Promise.all(peers.map((peer) => peer.writer.write(message)));
    await Promise.all(peers.map(async (peer, id) => {
      const r = await next(peer) as { id: number; round: number; weights: Float32Array };
      if (r.round !== round || r.id !== id || r.weights.length !== weights.length) {
        throw new Error(`Bad reply from client "${id}" in round ${round}`);
      }
    }));
    if (round >= 0) times.push((performance.now() - start) / 1000);
  }
  await Promise.all(peers.map(close));
  listener.close();
  report("streams", clients, size, rounds, median(times));
} else {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < clients; i++) {
    conns.push(await retryRefused(() => Deno.connect({ hostname: "127.0.0.1", port })));
  }
  await Promise.all(conns.map(async (conn) => {
    const peer = open(conn);
    const { id } = await next(peer) as { id: number };
    while (true) {
      // The server's close ends the readable (and, #22258, closes the conn).
      const { value, done } = await peer.reader.read();
      if (done) break;
      const { round, weights } = value as { round: number; weights: Float32Array };
      await peer.writer.write({ id, round, weights });
    }
    await close(peer);
  }));
}
