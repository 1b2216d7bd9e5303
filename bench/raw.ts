/**
 * The round benchmark with raw bytes: the limit fedcomm is measured against.
 * The same scenario as `round.ts`, but each message is a 4-byte length and a
 * payload (the round number, then zeros), moved with `conn.read`/`conn.write`
 * into a fresh buffer per received frame, with no serialization.
 *
 * ```sh
 * deno run -A bench/raw.ts server PORT N SIZE ROUNDS
 * deno run -A bench/raw.ts client PORT N
 * ```
 *
 * @module
 */

import { median, parseArgs, report, retryRefused } from "./common.ts";

const { role, port, clients, size, rounds } = parseArgs(Deno.args);
// Untimed warm-up rounds, the same for every implementation, so the JIT has
// compiled the hot paths: as many as the timed rounds for small payloads.
const WARMUP = size >= 1 << 20 ? 2 : rounds;

async function readExactly(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const n = await conn.read(buf.subarray(off));
    if (n === null) throw new Error("Peer closed");
    off += n;
  }
}

async function writeAll(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  let off = 0;
  while (off < buf.length) off += await conn.write(buf.subarray(off));
}

/** With `RAW_POOL=1`: each connection's last body, read into again when the size matches. */
const pooled = Deno.env.get("RAW_POOL") === "1" ? new WeakMap<Deno.Conn, Uint8Array>() : undefined;

async function readFrame(conn: Deno.Conn): Promise<Uint8Array | null> {
  const header = new Uint8Array(4);
  try {
    await readExactly(conn, header);
  } catch {
    return null;
  }
  const length = new DataView(header.buffer).getUint32(0);
  let body = pooled?.get(conn);
  if (body?.length !== length) {
    body = new Uint8Array(length);
    pooled?.set(conn, body);
  }
  await readExactly(conn, body);
  return body;
}

async function writeFrame(conn: Deno.Conn, body: Uint8Array): Promise<void> {
  const header = new Uint8Array(4);
  new DataView(header.buffer).setUint32(0, body.length);
  if (body.length < 65536) {
    const frame = new Uint8Array(4 + body.length);
    frame.set(header);
    frame.set(body, 4);
    await writeAll(conn, frame);
  } else {
    await writeAll(conn, header);
    await writeAll(conn, body);
  }
}

if (role === "server") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const conns: Deno.TcpConn[] = [];
  while (conns.length < clients) {
    const conn = await listener.accept();
    conn.setNoDelay(true);
    conns.push(conn);
  }
  const payload = new Uint8Array(size);
  const view = new DataView(payload.buffer);
  const times: number[] = [];
  for (let round = -WARMUP; round < rounds; round++) {
    view.setInt32(0, round);
    const start = performance.now();
    await Promise.all(conns.map((conn) => writeFrame(conn, payload)));
    await Promise.all(conns.map(async (conn) => {
      const reply = await readFrame(conn);
      if (reply === null || reply.length !== size) throw new Error("Bad reply");
      if (new DataView(reply.buffer).getInt32(0) !== round) throw new Error("Bad round");
    }));
    if (round >= 0) times.push((performance.now() - start) / 1000);
  }
  for (const conn of conns) conn.close();
  listener.close();
  report(pooled ? "raw-pool" : "raw", clients, size, rounds, median(times));
} else {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < clients; i++) {
    const conn = await retryRefused(() => Deno.connect({ hostname: "127.0.0.1", port }));
    conn.setNoDelay(true);
    conns.push(conn);
  }
  await Promise.all(conns.map(async (conn) => {
    while (true) {
      const frame = await readFrame(conn);
      if (frame === null) break;
      await writeFrame(conn, frame);
    }
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }));
}
