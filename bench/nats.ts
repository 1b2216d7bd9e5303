/**
 * Hierarchical rounds over NATS against one flat server:
 * `deno task bench --only=nats`, or `deno run -A bench/nats.ts [--quick]
 * [--edges=4] [--clients=10000] [--rounds=5] [--size=1024]`.
 *
 * Starts `nats-server -js` (a free port, JetStream in a temporary
 * directory), E edge processes (`edge()`), and one site-host process holding
 * all N sites (N / E per edge), each a fedcomm client answering FL train
 * tasks (fl version 1) with a deterministic update; the root runs in this
 * process. Then the same N sites against one flat server process running the
 * same rounds on `listen()` (the edges' round code, on one server). Every
 * round's model is new (so each edge fetches it from the object store once),
 * and every round of both is the same computation, so the aggregates are
 * compared bit for bit (`equal`).
 *
 * Measured: `round_ms` (median root round, after one untimed), `flat_round_ms`
 * (the same on the flat server), the edges' local rounds (`edge_round_ms`,
 * median over edges and rounds), peak RSS of each process (`edge_rss_mib`,
 * the largest edge; `flat_rss_mib`; `root_rss_mib`), and NATS's object store
 * rate for a 64 MiB object (`nats_put_mb_s`, `nats_get_mb_s`; 16 MiB with
 * `--quick`) and the latency of a 4 KiB get (`nats_small_get_ms`). Prints one JSON line and a small table. Bounded: everything is
 * killed and the run fails after 15 minutes. Needs `nats-server`
 * (`apt-get install nats-server`) and a descriptor limit above N + 100.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { createHash } from "node:crypto";
import { type Client, connect, listen } from "../mod.ts";
import { edge, root } from "../nats.ts";
import { runLocalRound, siteNames } from "../_nats/edge_round.ts";
import type { Weights } from "../_fl/weights.ts";
import { median } from "./common.ts";
import { NatsServer } from "../tests/nats_server.ts";
import { connect as natsConnect } from "@nats-io/transport-node";
import { Objm, setSha256Backend } from "@nats-io/obj";

const SECRET = "nats-bench-secret-0123456789";
const LIMIT_MS = 15 * 60_000;
const JOINS_AT_ONCE = 200;

/** Round `round`'s model: `size` bytes of float32, different each round. */
function modelOf(size: number, round: number): Weights {
  return { w: new Float32Array(size / 4).map((_, i) => Math.sin(i + round) * 0.1) };
}

/** Site `site`'s update of `weights` for `round`. */
function updateOf(weights: Weights, site: number, round: number): Weights {
  const w = weights.w as Float32Array;
  return { w: w.map((x, i) => x + Math.sin(site * 131 + i * 7 + round) / 64) };
}

/** The SHA-256 of an aggregate's bytes, to compare two runs. */
function digest(weights: Weights | undefined): string {
  const w = weights?.w as Float32Array | undefined;
  if (w === undefined) return "none";
  return createHash("sha256").update(new Uint8Array(w.buffer, w.byteOffset, w.byteLength))
    .digest("hex");
}

/** The process's peak resident set, in MiB. */
function peakRssMib(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  return Number(/^VmHWM:\s+(\d+) kB/m.exec(status)![1]) / 1024;
}

/** Starts `bench/nats.ts MODE ARGS…`; resolves with the process once it printed `ready`. */
async function child(mode: string, args: string[]): Promise<{
  process: Deno.ChildProcess;
  output: Promise<string>;
  port: number;
}> {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, mode, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = process.stdout.pipeThrough(new TextDecoderStream());
  let text = "";
  let ready!: () => void;
  const isReady = new Promise<void>((resolve) => ready = resolve);
  const output = (async () => {
    for await (const chunk of lines) {
      text += chunk;
      if (text.includes("ready\n")) ready();
    }
    return text;
  })();
  await Promise.race([
    isReady,
    process.status.then((s) => {
      throw new Error(`bench/nats.ts ${mode} exited with ${s.code} before it was ready`);
    }),
  ]);
  const port = Number(/^port (\d+)$/m.exec(text)?.[1] ?? 0);
  return { process, output, port };
}

/** The site host: `sites PORT[,PORT…] PER_PORT`; site numbers run across the ports in order. */
async function sites(ports: number[], perPort: number): Promise<void> {
  const clients: Client[] = [];
  const all = ports.flatMap((port, p) =>
    Array.from({ length: perPort }, (_, i) => ({ port, site: p * perPort + i }))
  );
  for (let at = 0; at < all.length; at += JOINS_AT_ONCE) {
    const batch = all.slice(at, at + JOINS_AT_ONCE);
    clients.push(
      ...await Promise.all(
        batch.map(({ port, site }) =>
          connect({ port, name: `s${site}`, timeout: 120_000, waitForServer: true })
        ),
      ),
    );
  }
  console.log("ready");
  await Promise.all(clients.map(async (client, i) => {
    for await (const message of client) {
      const m = message as Record<string, unknown>;
      if (m.type === "stop") break;
      if (m.type !== "task") continue;
      const round = m.round as number;
      await client.reply({
        fl: 1,
        type: "result",
        task: m.task,
        round,
        samples: 10 + (all[i].site % 97),
        metrics: { loss: 1 / (1 + round) },
        weights: updateOf(m.weights as Weights, all[i].site, round),
      });
    }
    await client.close();
  }));
}

/** An edge process: `edge NAME SERVERS`; prints its port, then `ready`; at the stop, its figures. */
async function edgeProcess(name: string, servers: string): Promise<void> {
  const e = await edge({
    nats: { servers },
    job: "bench",
    name,
    secret: SECRET,
    listen: { maxPendingHandshakes: 512, receiveBufferBytes: 256 * 1024 * 1024 },
  });
  const times: number[] = [];
  let rounds = 0;
  const timer = setInterval(() => {
    const stats = e.stats();
    if (stats.rounds > rounds && stats.lastRoundMs !== undefined) times.push(stats.lastRoundMs);
    rounds = stats.rounds;
  }, 5);
  console.log(`port ${e.server.port}\nready`);
  await e.run();
  clearInterval(timer);
  console.log(JSON.stringify({ rss_mib: peakRssMib(), round_ms: times, ...e.stats() }));
  await e.close();
}

/** Puts and gets one object of `bytes` in a bucket of its own; MB/s each way. */
async function measureObjectStore(servers: string, bytes: number) {
  setSha256Backend("native");
  const nc = await natsConnect({ servers });
  try {
    const store = await new Objm(nc).create("bench-rate");
    const data = new Uint8Array(bytes).map((_, i) => i * 7);
    let start = performance.now();
    await store.putBlob({ name: "x", options: { max_chunk_size: 256 * 1024 } }, data);
    const put = performance.now() - start;
    start = performance.now();
    const back = await store.getBlob("x");
    const get = performance.now() - start;
    if (back?.byteLength !== bytes) throw new Error("The object store gave back another object");
    // Small objects (a partial aggregate of a small model): the latency of one get.
    const small = new Uint8Array(4096);
    const gets: number[] = [];
    for (let i = 0; i < 50; i++) {
      await store.putBlob({ name: `small${i}` }, small);
      const start = performance.now();
      await store.getBlob(`small${i}`);
      gets.push(performance.now() - start);
    }
    await store.destroy();
    const rate = (ms: number) => Number((bytes / ms / 1e3).toFixed(1));
    return {
      put_mb_s: rate(put),
      get_mb_s: rate(get),
      small_get_ms: Number(median(gets).toFixed(2)),
    };
  } finally {
    await nc.close();
  }
}

/** The flat server: `flat N ROUNDS SIZE`: prints its port, `ready`, then its figures. */
async function flat(n: number, rounds: number, size: number): Promise<void> {
  await using server = listen({ clients: n, open: true, maxPendingHandshakes: 512 });
  console.log(`port ${server.port}\nready`);
  await server.ready({ clients: n, timeout: 600_000 });
  const times: number[] = [];
  const digests: string[] = [];
  for (let round = 1; round <= rounds; round++) {
    const start = performance.now();
    const weights = modelOf(size, round);
    const task = {
      v: 1 as const,
      type: "task" as const,
      job: "bench",
      run: "flat",
      task: round,
      round,
      kind: "train" as const,
      config: {},
      model: "",
      timeout: 600_000,
      expires: 600_000,
      issued: Date.now(),
    };
    const result = await runLocalRound(server, task, weights, {
      sites: siteNames(server, "flat"),
      deadline: { end: performance.now() + 600_000 },
    });
    if (result.answered.length !== n) throw new Error(`Flat round ${round}: ${result.missing[0]}`);
    digests.push(digest(result.sum!.mean()));
    times.push(performance.now() - start);
  }
  await server.broadcast({ fl: 1, type: "stop", reason: "done" });
  console.log(JSON.stringify({ round_ms: times, digests, rss_mib: peakRssMib() }));
}

/** Runs the hierarchical rounds; returns their times and digests. */
async function hierarchical(nats: NatsServer, e: number, n: number, rounds: number, size: number) {
  const names = Array.from({ length: e }, (_, i) => `e${i}`);
  await using r = await root({
    nats: { servers: nats.url },
    job: "bench",
    edges: Object.fromEntries(names.map((name) => [name, SECRET])),
  });
  const edges = await Promise.all(names.map((name) => child("edge", [name, nats.url])));
  const edgePorts = edges.map(({ port }) => port);
  const started = performance.now();
  const host = await child("sites", [edgePorts.join(","), String(n / e)]);
  const joinMs = performance.now() - started;
  const times: number[] = [];
  const digests: string[] = [];
  for (let round = 1; round <= rounds; round++) {
    const start = performance.now();
    const result = await r.round({ round, weights: modelOf(size, round), timeout: 600_000 });
    if (result.sites.size !== n) {
      throw new Error(
        `Round ${round}: ${result.sites.size} of ${n} sites; ${[...result.missing][0]}`,
      );
    }
    times.push(performance.now() - start);
    digests.push(digest(result.weights));
  }
  await r.stop("done");
  const figures = await Promise.all(edges.map(async ({ output }) => lastJson(await output)));
  await host.process.status;
  return { times, digests, figures, joinMs, rootRss: peakRssMib() };
}

function lastJson(text: string): Record<string, unknown> {
  return JSON.parse(text.trim().split("\n").at(-1)!);
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  if (mode === "sites") await sites(rest[0].split(",").map(Number), Number(rest[1]));
  else if (mode === "edge") await edgeProcess(rest[0], rest[1]);
  else if (mode === "flat") await flat(Number(rest[0]), Number(rest[1]), Number(rest[2]));
  else await main();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      quick: { type: "boolean" },
      edges: { type: "string" },
      clients: { type: "string" },
      rounds: { type: "string" },
      size: { type: "string" },
    },
  });
  const quick = values.quick ?? false;
  const e = Number(values.edges ?? 4);
  const n = Number(values.clients ?? (quick ? 1_000 : 10_000));
  const rounds = Number(values.rounds ?? (quick ? 3 : 6));
  const size = Number(values.size ?? 1024);
  if (n % e !== 0) throw new RangeError(`--clients "${n}" is not a multiple of --edges "${e}"`);
  const limit = setTimeout(() => {
    console.error(`bench/nats.ts: stopped after ${LIMIT_MS} ms`);
    Deno.exit(1);
  }, LIMIT_MS);
  await using nats = await NatsServer.start();
  const hier = await hierarchical(nats, e, n, rounds, size); // first: the root's RSS is its own
  const store = await measureObjectStore(nats.url, (quick ? 16 : 64) * 1024 * 1024);
  const flatRun = await child("flat", [String(n), String(rounds), String(size)]);
  const host = await child("sites", [String(flatRun.port), String(n)]);
  const flatFigures = lastJson(await flatRun.output);
  await host.process.status;
  clearTimeout(limit);
  report({ e, n, size, hier, flatFigures, store });
}

function report(
  { e, n, size, hier, flatFigures, store }: {
    e: number;
    n: number;
    size: number;
    hier: Awaited<ReturnType<typeof hierarchical>>;
    flatFigures: Record<string, unknown>;
    store: { put_mb_s: number; get_mb_s: number; small_get_ms: number };
  },
): void {
  const timed = (t: number[]) => median(t.slice(1));
  const flatDigests = flatFigures.digests as string[];
  const equal = hier.digests.length === flatDigests.length &&
    hier.digests.every((d, i) => d === flatDigests[i]);
  const edgeTimes = hier.figures.flatMap((f) => (f.round_ms as number[]).slice(1));
  const line = {
    impl: "fedcomm+nats",
    bench: "nats",
    edges: e,
    clients: n,
    model_bytes: size,
    round_ms: Number(timed(hier.times).toFixed(1)),
    flat_round_ms: Number(timed(flatFigures.round_ms as number[]).toFixed(1)),
    edge_round_ms: Number(median(edgeTimes).toFixed(1)),
    equal,
    join_ms: Math.round(hier.joinMs),
    edge_rss_mib: Number(Math.max(...hier.figures.map((f) => f.rss_mib as number)).toFixed(1)),
    flat_rss_mib: Number((flatFigures.rss_mib as number).toFixed(1)),
    root_rss_mib: Number(hier.rootRss.toFixed(1)),
    nats_put_mb_s: store.put_mb_s,
    nats_get_mb_s: store.get_mb_s,
    nats_small_get_ms: store.small_get_ms,
  };
  console.log(JSON.stringify(line));
  console.log(
    [
      "| setup | sites | round (median) | peak RSS |",
      "| --- | --- | --- | --- |",
      `| ${e} edges over NATS | ${n} (${n / e} per edge) | ${line.round_ms} ms ` +
      `(edges' local ${line.edge_round_ms} ms) | ${line.edge_rss_mib} MiB per edge, root ${line.root_rss_mib} MiB |`,
      `| one flat server | ${n} | ${line.flat_round_ms} ms | ${line.flat_rss_mib} MiB |`,
    ].join("\n"),
  );
  console.log(
    `aggregates equal bit for bit: ${equal}; object store ${store.put_mb_s} MB/s put, ` +
      `${store.get_mb_s} MB/s get, ${store.small_get_ms} ms per 4 KiB get`,
  );
  if (!equal) Deno.exit(1);
}
