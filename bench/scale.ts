/**
 * Many sites on one server: `deno task bench --only=scale`, or
 * `deno run -A --v8-flags=--expose-gc bench/scale.ts [--quick] [--clients=N]`.
 *
 * A server process with authentication (`auth: { secret }`) and a client
 * host process that connects N = 10,000 clients (`--quick`: 1,000), 200
 * handshakes at a time. Measured on the server:
 *
 * - `join_ms`: from the first join to the last (all N authenticated);
 * - `rss_per_conn_kib`: the server's RSS once all have joined and idled for
 *   18 s, past the heartbeat interval (after a GC), minus its RSS before it listened, over N (the floor
 *   applies to it); `rss_per_conn_compacted_kib`: the same after V8's
 *   last-resort GC, which compacts the heap (what the connections hold,
 *   without the holes the handshakes' garbage left);
 *   `rss_per_conn_steady_kib`: the highest RSS over one more heartbeat
 *   interval, sampled every 250 ms from 33 s to 48 s after the joins with no
 *   GC forced (once V8's memory reducer gave the joins' young generation
 *   back; a heartbeat's burst of pings falls in it), minus the same start;
 * - `round_ms`: the median of 20 rounds (after 5 untimed) of the seed's
 *   round, `{ round, weights: 1 KiB }` broadcast, every client replies with
 *   it, `gather()`; `broadcast_ms`: the median time its broadcast took to
 *   resolve (the rest of the round is the replies arriving).
 *
 * Prints one JSON line (`impl`, `bench`, `clients`, `round_ms`, `broadcast_ms`, `join_ms`,
 * `rss_per_conn_kib`, `rss_per_conn_compacted_kib`, `rss_per_conn_steady_kib`) and a human
 * line; exits 1 when a floor is missed
 * (round ≤ 300 ms, joins ≤ 2 s, ≤ 16 KiB per idle connection; not with
 * `--quick`). Needs a file descriptor limit above N + 100 in each process.
 *
 * ```sh
 * deno run -A --v8-flags=--expose-gc bench/scale.ts server PORT N   # prints one JSON line
 * deno run -A bench/scale.ts client PORT N
 * ```
 *
 * @module
 */

import { type Client, connect, listen } from "../mod.ts";
import { median } from "./common.ts";

const FLOORS = { round_ms: 300, join_ms: 2_000, rss_per_conn_kib: 16 };
const SECRET = "scale-benchmark-secret";
const WARMUP = 5;
const ROUNDS = Number(Deno.env.get("SCALE_ROUNDS") ?? 20);
const CONCURRENT_JOINS = 200;
/** How long the joined clients idle before the memory is measured. */
const IDLE_MS = 18_000;
/** The steady figure: the highest RSS between these times after the joins (one heartbeat interval). */
const STEADY_FROM_MS = 33_000;
const STEADY_TO_MS = 48_000;
const SAMPLE_MS = 250;
const quick = Deno.args.includes("--quick");
const clientsArg = Deno.args.find((a) => a.startsWith("--clients="));
const N = clientsArg !== undefined ? Number(clientsArg.slice(10)) : quick ? 1_000 : 10_000;

/** The process's resident set, in bytes. */
function rss(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]) * 1024;
}

/** A full GC; `compact`: V8's last-resort GC, which also compacts the heap's pages. */
function collect(compact = false): void {
  const gc = (globalThis as { gc?: (options?: Record<string, string>) => void }).gc;
  gc?.(compact ? { type: "major", execution: "sync", flavor: "last-resort" } : undefined);
}

async function server(port: number, n: number): Promise<void> {
  collect();
  const before = rss();
  await using server = listen({
    port,
    clients: n,
    auth: { secret: SECRET },
    maxPendingHandshakes: 4 * CONCURRENT_JOINS,
  });
  let first = 0;
  let last = 0;
  server.addEventListener("join", () => {
    last = performance.now();
    if (first === 0) first = last;
  });
  await server.ready({ timeout: 300_000 });
  const joinMs = last - first;
  const readyAt = performance.now();
  // Idle past the heartbeat interval (15 s by default): an idle connection has
  // pinged once and given back its write memory.
  await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
  collect();
  const perConn = (rss() - before) / n / 1024;
  // Idle on, sampling, with no GC forced: what the server holds once V8 gave
  // the joins' memory back, with a heartbeat's burst of pings.
  let steady = 0;
  while (performance.now() - readyAt < STEADY_TO_MS) {
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
    if (performance.now() - readyAt >= STEADY_FROM_MS) steady = Math.max(steady, rss());
  }
  const perConnSteady = (steady - before) / n / 1024;
  // The same after compaction: what the connections hold, without the holes
  // the handshakes' garbage left in the heap's pages.
  collect(true);
  const perConnCompacted = (rss() - before) / n / 1024;
  const weights = new Float32Array(256).fill(0.5);
  const times: number[] = [];
  const broadcasts: number[] = [];
  for (let round = -WARMUP; round < ROUNDS; round++) {
    const start = performance.now();
    await server.broadcast({ round, weights });
    if (round >= 0) broadcasts.push(performance.now() - start);
    const replies = await server.gather({ timeout: 120_000 });
    if (replies.size !== n) throw new Error(`Round ${round}: ${replies.size} of ${n} replies`);
    for (const reply of replies.values()) {
      if ((reply as { round: number }).round !== round) throw new Error("Bad reply");
    }
    if (round >= 0) times.push(performance.now() - start);
  }
  await server.broadcast("stop");
  const round3 = (x: number) => Number(x.toFixed(3));
  console.log(JSON.stringify({
    impl: "fedcomm",
    bench: "scale",
    clients: n,
    round_ms: round3(median(times)),
    broadcast_ms: round3(median(broadcasts)),
    join_ms: round3(joinMs),
    rss_per_conn_kib: round3(perConn),
    rss_per_conn_compacted_kib: round3(perConnCompacted),
    rss_per_conn_steady_kib: round3(perConnSteady),
  }));
}

async function clientHost(port: number, n: number): Promise<void> {
  const clients: Client[] = [];
  let next = 0;
  // A few handshakes at a time, as sites starting at once would.
  await Promise.all(Array.from({ length: CONCURRENT_JOINS }, async () => {
    while (next < n) {
      next++;
      clients.push(
        await connect({ port, secret: SECRET, timeout: 120_000, waitForServer: true }),
      );
    }
  }));
  await Promise.all(clients.map(async (client) => {
    for await (const message of client) {
      if (message === "stop") break;
      await client.reply(message);
    }
    await client.close();
  }));
}

const [role, portArg, nArg] = Deno.args;
if (role === "server") await server(Number(portArg), Number(nArg));
else if (role === "client") await clientHost(Number(portArg), Number(nArg));
else {
  const port = 49_000 + Math.floor(Math.random() * 10_000);
  const self = new URL(import.meta.url).pathname;
  const run = (args: string[], gc: boolean) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", ...(gc ? ["--v8-flags=--expose-gc"] : []), self, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const [s, c] = await Promise.all([
    run(["server", String(port), String(N)], true),
    run(["client", String(port), String(N)], false),
  ]);
  const text = (b: Uint8Array) => new TextDecoder().decode(b).trim();
  if (!s.success || !c.success) {
    console.error(`scale failed:\n${text(s.stderr)}\n${text(c.stderr)}`);
    Deno.exit(1);
  }
  const line = text(s.stdout).split("\n").at(-1)!;
  console.log(line);
  const result = JSON.parse(line) as Record<keyof typeof FLOORS, number> & Record<string, number>;
  const missed = (Object.keys(FLOORS) as (keyof typeof FLOORS)[])
    .filter((key) => result[key] > FLOORS[key]);
  console.log(
    `Scale (${N} clients with auth on one server): 1 KiB round ${result.round_ms} ms, ` +
      `${N} joins in ${result.join_ms} ms, ${result.rss_per_conn_kib} KiB RSS per idle ` +
      `connection (${result.rss_per_conn_compacted_kib} KiB compacted, ` +
      `${result.rss_per_conn_steady_kib} KiB at most over a heartbeat interval once settled) ` +
      (quick
        ? "(--quick: floors not checked)"
        : `(floors ${FLOORS.round_ms} ms, ${FLOORS.join_ms} ms, ${FLOORS.rss_per_conn_kib} KiB)`),
  );
  if (!quick && missed.length > 0) {
    console.error(`missed: ${missed.join(", ")}`);
    Deno.exit(1);
  }
}
