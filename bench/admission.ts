/**
 * Admission under a handshake flood: `deno task bench --only=admission`, or
 * `deno run -A bench/admission.ts [--quick]`.
 *
 * A server with authentication listens on 127.0.0.1; `_flood.py` (Python,
 * so that it can bind source addresses 127.0.0.2, 127.0.0.3, …) keeps
 * hostile connections open to it, silent or dripping a hello a byte a
 * second, renewing each one every 10 s and reconnecting at once whenever the
 * server closes one. Meanwhile a legitimate client (from 127.0.0.1) joins
 * again and again, and another one, behind the fault proxy, has its
 * connection cut again and again and resumes. Prints one JSON line per case
 * (`impl`, `bench`, `mode`, `hostile`, `addresses`, `join_ms_p50`,
 * `join_ms_max`, `resume_ms_p50`, `resume_ms_max`, the flood's connections
 * and `busy` rejects, the server's descriptors and RSS), then a table; exits
 * 1 when, under a flood from one address (one hostile peer, however many
 * connections), a join or a resume took more than 500 ms. Floods from many
 * addresses are reported beside them: renewed as fast as the server turns
 * them away, they overflow the kernel's accept backlog, and a client whose
 * SYN is dropped then waits for its retransmission (1 s), which no server
 * code can prevent.
 *
 * @module
 */

import { FaultProxy } from "./_fault_proxy.ts";
import { connect } from "../client.ts";
import { listen } from "../server.ts";

const FLOOR_MS = 500;
const quick = Deno.args.includes("--quick");
const secret = "admission bench secret, 32 bytes";
const python = "/usr/bin/python3";

interface Case {
  mode: "idle" | "drip";
  hostile: number;
  addresses: number;
}

const cases: Case[] = [
  { mode: "idle", hostile: 64, addresses: 1 },
  { mode: "idle", hostile: 2_000, addresses: 1 },
  { mode: "drip", hostile: 256, addresses: 1 },
  { mode: "idle", hostile: 2_000, addresses: 16 },
  { mode: "drip", hostile: 256, addresses: 16 },
];

/** The median and the largest of some numbers. */
function spread(values: number[]): { p50: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: sorted[Math.floor(sorted.length / 2)], max: sorted[sorted.length - 1] };
}

function rssMib(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  return Math.round(Number(status.match(/^VmRSS:\s+(\d+)/m)![1]) / 1024);
}

function fds(): number {
  return [...Deno.readDirSync("/proc/self/fd")].length;
}

async function runCase(c: Case): Promise<Record<string, number | string>> {
  await using server = listen({ clients: 64, open: true, auth: { secret }, heartbeatMs: 0 });
  await using proxy = new FaultProxy({ targetPort: server.port, seed: 5 });
  const seconds = quick ? 6 : 12;
  const flood = new Deno.Command(python, {
    args: [
      new URL("./_flood.py", import.meta.url).pathname,
      String(server.port),
      c.mode,
      String(c.hostile),
      String(c.addresses),
      "10",
      String(seconds),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // The resuming client, joined before the flood saturates admission.
  await using resumer = await connect({
    port: proxy.port,
    secret,
    heartbeatMs: 0,
    timeout: 10_000,
  });
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  const joins: number[] = [];
  const resumes: number[] = [];
  let peakFds = 0;
  const until = performance.now() + (seconds - 2.5) * 1000;
  while (performance.now() < until) {
    const started = performance.now();
    const client = await connect({ port: server.port, secret, heartbeatMs: 0, timeout: 10_000 });
    joins.push(performance.now() - started);
    await client.close();
    const resumed = new Promise<number>((resolve) =>
      resumer.addEventListener("resume", () => resolve(performance.now()), { once: true })
    );
    // The cut lands inside the header of the resumer's next message.
    const cutting = proxy.cut({ kind: "header", direction: "up" });
    const cut = performance.now();
    await resumer.send("cut here", { timeout: 10_000 });
    await cutting;
    resumes.push(await resumed - cut);
    peakFds = Math.max(peakFds, fds());
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const output = await flood.output();
  const attack = JSON.parse(new TextDecoder().decode(output.stdout).trim().split("\n").at(-1)!);
  const join = spread(joins);
  const resume = spread(resumes);
  return {
    impl: "fedcomm",
    bench: "admission",
    mode: c.mode,
    hostile: c.hostile,
    addresses: c.addresses,
    joins: joins.length,
    join_ms_p50: Number(join.p50.toFixed(1)),
    join_ms_max: Number(join.max.toFixed(1)),
    resumes: resumes.length,
    resume_ms_p50: Number(resume.p50.toFixed(1)),
    resume_ms_max: Number(resume.max.toFixed(1)),
    flood_connections: attack.made,
    flood_busy: attack.busy,
    server_fds_peak: peakFds,
    server_rss_mib: rssMib(),
  };
}

const rows: Record<string, number | string>[] = [];
for (const c of cases) {
  const row = await runCase(c);
  console.log(JSON.stringify(row));
  rows.push(row);
}
console.log(
  "\n| flood | sources | joins: p50 / max | resumes: p50 / max | flood connections (busy) | peak fds |",
);
console.log("| --- | --- | --- | --- | --- | --- |");
for (const r of rows) {
  console.log(
    `| ${r.hostile} ${r.mode} | ${r.addresses} | ${r.join_ms_p50} / ${r.join_ms_max} ms | ` +
      `${r.resume_ms_p50} / ${r.resume_ms_max} ms | ${r.flood_connections} (${r.flood_busy}) | ` +
      `${r.server_fds_peak} |`,
  );
}
console.log(
  `\nMachine: ${Deno.build.target}, ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}`,
);
const missed = rows.filter((r) =>
  r.addresses === 1 && (Number(r.join_ms_max) > FLOOR_MS || Number(r.resume_ms_max) > FLOOR_MS)
);
for (const r of missed) {
  console.error(
    `Floor missed: ${r.hostile} ${r.mode} from ${r.addresses} addresses: join max ` +
      `${r.join_ms_max} ms, resume max ${r.resume_ms_max} ms (floor ${FLOOR_MS} ms)`,
  );
}
if (missed.length > 0) Deno.exit(1);
