/**
 * A model larger than any frame: `deno task bench --only=huge`, or
 * `deno run -A --v8-flags=--expose-gc bench/huge.ts [--quick] [--size=BYTES]`.
 *
 * Round trips of a `Float32Array` of 6 GiB (`--quick`: 1 GiB) between a
 * server process and a client process on loopback, 3 of fedcomm and 3 of the
 * raw baseline, interleaved (`--quick`: 1 each; medians reported): the server broadcasts
 * `{ round, weights }`, the client replies with the weights it received,
 * and the server gathers them and checks them at a few places. fedcomm
 * sends it as a long message (PROTOCOL.md §8.8: a header, then parts of
 * 64 MiB, each read straight into the array being received); the raw
 * baseline moves the same bytes with `conn.write`/`conn.read` (16 MiB at a
 * time) behind an 8-byte length, into fresh memory on each receiving side. Each side reports its peak
 * RSS (`VmHWM`) above the RSS it had before the model existed. The server
 * lets go of its model once the client acknowledged it (as a server that
 * folds uploads into an aggregate would), and keeps the reply.
 *
 * Prints one JSON line (`impl`, `bench`, `bytes`, `gbps`, `raw_gbps`,
 * `ratio`, `peak_rss_ratio`, the peaks of each side in MiB) and a human line;
 * exits 1 when fedcomm is below 0.9 × raw or either side's peak exceeds
 * 2 × the model (not with `--quick`, a smoke test).
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc bench/huge.ts fedcomm server PORT BYTES
 * deno run -A --v8-flags=--expose-gc bench/huge.ts fedcomm client PORT
 * ```
 *
 * @module
 */

import { connect, listen } from "../mod.ts";

const SPEED_FLOOR = 0.9;
const RSS_FLOOR = 2;
const GiB = 2 ** 30;
const MiB = 2 ** 20;
const quick = Deno.args.includes("--quick");
const sizeArg = Deno.args.find((a) => a.startsWith("--size="));
const REPEATS = quick ? 1 : 3;
const BYTES = sizeArg !== undefined ? Number(sizeArg.slice(7)) : quick ? GiB : 6 * GiB;

/** The process's resident set now and at its peak (`/proc/self/status`), in bytes. */
function rss(): { now: number; peak: number } {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)![1]);
  return { now: kib("VmRSS") * 1024, peak: kib("VmHWM") * 1024 };
}

/** Collects garbage, where `--expose-gc` allows. */
function collect(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

/** What each side prints on its last line. */
interface Side {
  seconds?: number;
  peak_mib: number;
}

/** Prints a side's last line: its peak RSS above `base`, and the round trip time. */
function finish(base: number, seconds?: number): void {
  const side: Side = { peak_mib: Math.round((rss().peak - base) / MiB), seconds };
  console.log(JSON.stringify(side));
}

/** The places the server checks in the reply. */
function marks(n: number): number[] {
  return [0, 1, n >> 1, n - 2, n - 1];
}

async function fedcommServer(port: number, bytes: number): Promise<void> {
  const base = rss().now;
  await using server = listen({ port, clients: 1, idleTimeout: 600_000 });
  await server.ready({ timeout: 120_000 });
  let weights: Float32Array | undefined = new Float32Array(bytes / 4).fill(0.5);
  const n = weights.length;
  for (const [k, i] of marks(n).entries()) weights[i] = k + 1;
  const start = performance.now();
  await server.broadcast({ round: 1, weights }, { timeout: 600_000 });
  // Acknowledged: the client has it. The server keeps only what it needs.
  weights = undefined;
  collect();
  const reply = (await server.gather({ timeout: 600_000 })).get(0) as { weights: Float32Array };
  const seconds = (performance.now() - start) / 1000;
  const got = reply.weights;
  if (got.length !== n || marks(n).some((i, k) => got[i] !== k + 1) || got[2] !== 0.5) {
    throw new Error("Bad reply: the weights came back changed");
  }
  await server.broadcast("stop");
  finish(base, seconds);
}

async function fedcommClient(port: number): Promise<void> {
  const base = rss().now;
  await using client = await connect({
    port,
    timeout: 120_000,
    waitForServer: true,
    idleTimeout: 600_000,
  });
  for await (const message of client) {
    if (message === "stop") break;
    const { round, weights } = message as { round: number; weights: Float32Array };
    await client.reply({ round, weights }, { timeout: 600_000 });
  }
  finish(base);
}

/**
 * Reads and writes go in slices of at most this many bytes: Deno's cost per
 * call grows with the buffer it is given, not with the bytes moved.
 */
const SLICE = 16 * MiB;

async function readFull(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  for (let off = 0; off < buf.byteLength;) {
    const n = await conn.read(buf.subarray(off, off + SLICE));
    if (n === null) throw new Error("Peer closed");
    off += n;
  }
}

async function writeAll(conn: Deno.Conn, buf: Uint8Array): Promise<void> {
  for (let off = 0; off < buf.byteLength;) off += await conn.write(buf.subarray(off, off + SLICE));
}

/**
 * The raw baseline: an 8-byte length, then the bytes, each way; the server
 * receives the reply into fresh memory, as the fedcomm server does.
 */
async function rawServer(port: number, bytes: number): Promise<void> {
  const base = rss().now;
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  const conn = await listener.accept();
  conn.setNoDelay(true);
  let buf: Uint8Array | undefined = new Uint8Array(bytes).fill(7);
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(bytes));
  const start = performance.now();
  await writeAll(conn, head);
  await writeAll(conn, buf);
  // As the fedcomm server: the model goes once sent, the reply comes into fresh memory.
  buf = undefined;
  collect();
  await readFull(conn, head);
  const reply = new Uint8Array(bytes);
  await readFull(conn, reply);
  const seconds = (performance.now() - start) / 1000;
  conn.close();
  listener.close();
  finish(base, seconds);
}

async function rawClient(port: number): Promise<void> {
  const base = rss().now;
  let conn: Deno.TcpConn | undefined;
  for (let i = 0; conn === undefined; i++) {
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
    } catch (error) {
      if (i > 200) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  conn.setNoDelay(true);
  const head = new Uint8Array(8);
  await readFull(conn, head);
  const buf = new Uint8Array(Number(new DataView(head.buffer).getBigUint64(0)));
  await readFull(conn, buf);
  await writeAll(conn, head);
  await writeAll(conn, buf);
  conn.close();
  finish(base);
}

/** Runs one implementation's server and client processes; returns their last lines. */
async function pair(impl: string, port: number): Promise<{ server: Side; client: Side }> {
  const self = new URL(import.meta.url).pathname;
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--v8-flags=--expose-gc", self, impl, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const [server, client] = await Promise.all([
    run(["server", String(port), String(BYTES)]),
    run(["client", String(port)]),
  ]);
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  if (!server.success || !client.success) {
    throw new Error(`${impl} failed:\n${text(server.stderr)}\n${text(client.stderr)}`);
  }
  const last = (out: Uint8Array) => JSON.parse(text(out).split("\n").at(-1)!) as Side;
  return { server: last(server.stdout), client: last(client.stdout) };
}

const [impl, role, portArg, bytesArg] = Deno.args;
if (role === "server" || role === "client") {
  const port = Number(portArg);
  if (impl === "raw") {
    await (role === "server" ? rawServer(port, Number(bytesArg)) : rawClient(port));
  } else await (role === "server" ? fedcommServer(port, Number(bytesArg)) : fedcommClient(port));
} else {
  const port = 39_000 + Math.floor(Math.random() * 10_000);
  // Interleaved repetitions; the medians are reported (page faults on fresh
  // memory make single runs vary by up to 2x on this machine).
  const runs = { raw: [] as Side[][], fedcomm: [] as Side[][] };
  for (let r = 0; r < REPEATS; r++) {
    const a = await pair("raw", port + 2 * r);
    const b = await pair("fedcomm", port + 2 * r + 1);
    runs.raw.push([a.server, a.client]);
    runs.fedcomm.push([b.server, b.client]);
  }
  const mid = (sides: Side[][]) => {
    const sorted = [...sides].sort((x, y) => x[0].seconds! - y[0].seconds!);
    const [server, client] = sorted[sorted.length >> 1];
    return { server, client };
  };
  const raw = mid(runs.raw);
  const ours = mid(runs.fedcomm);
  const gbps = (s: Side) => 2 * BYTES / s.seconds! / 1e9;
  const ratio = gbps(ours.server) / gbps(raw.server);
  // The worst peak of any fedcomm run, either side.
  const peakMib = Math.max(...runs.fedcomm.flat().map((side) => side.peak_mib));
  const peak = peakMib * MiB / BYTES;
  const round3 = (x: number) => Number(x.toFixed(3));
  console.log(JSON.stringify({
    impl: "fedcomm",
    bench: "huge",
    bytes: BYTES,
    gbps: round3(gbps(ours.server)),
    raw_gbps: round3(gbps(raw.server)),
    ratio: round3(ratio),
    peak_rss_ratio: round3(peak),
    repeats: REPEATS,
    server_peak_mib: ours.server.peak_mib,
    client_peak_mib: ours.client.peak_mib,
    raw_server_peak_mib: raw.server.peak_mib,
    raw_client_peak_mib: raw.client.peak_mib,
  }));
  console.log(
    `Huge model (${(BYTES / GiB).toFixed(1)} GiB round trip, one client): ` +
      `${gbps(ours.server).toFixed(3)} GB/s = ${ratio.toFixed(2)} × raw ${
        gbps(raw.server).toFixed(3)
      } GB/s; peak RSS above idle ${peak.toFixed(2)} × the model (server ` +
      `${ours.server.peak_mib} MiB, client ${ours.client.peak_mib} MiB) ` +
      (quick
        ? "(--quick: floors not checked)"
        : `(floors ${SPEED_FLOOR} × raw, ${RSS_FLOOR} × model)`),
  );
  if (!quick && (ratio < SPEED_FLOOR || peak > RSS_FLOOR)) Deno.exit(1);
}
