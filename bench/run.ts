/**
 * `deno task bench`: runs fedcomm, the raw-bytes limit and the peer
 * baselines (Node.js net + msgpackr, Python asyncio + pickle, where they can
 * run) side by side, interleaved, each as a server process and a client-host
 * process on loopback; then the small-message and memory benchmarks; and
 * prints a table.
 *
 * Options:
 * - `--quick` runs fewer rounds (for a smoke test);
 * - `--no-peers` skips the peers;
 * - `--only=NAMES` runs only the named implementations, from `raw`, `fedcomm`,
 *   `streams` (the same rounds through the web-streams pipeline of
 *   `framing.ts`, see `streams.ts`), `tls` (fedcomm over TLS, see
 *   `round_tls.ts`), `recycle` (fedcomm with `recycle()` on both sides, see
 *   `round_recycle.ts`), `raw-pool` (raw into pooled buffers, see
 *   `raw_pool.ts`), `node+msgpackr`, `python+pickle`, and the
 *   extra benchmarks `messages`, `memory`, `admission` (see `admission.ts`)
 *   `python` (the Python client against the Deno client, see
 *   `python.ts`), `huge` (a 6 GiB model as a long message, see
 *   `huge.ts`), `fl` (the FL coordinator's peak memory, see
 *   `fl_memory.ts`) and `scale` (10,000 clients on one server, see
 *   `scale.ts`), e.g. `--only=raw,fedcomm,streams`; and `nats` (hierarchical
 *   rounds over NATS against one flat server, see `nats.ts`; only when named)
 *   and `nats-huge` (a 4.5 GiB model through the NATS object store, see
 *   `nats_huge.ts`; only when named);
 * - `--scenarios=KEYS` runs only these round scenarios, from `1k`, `1m`,
 *   `100m` (N=4) and `n1000` (N=1000, 1 KiB), e.g. `--scenarios=1k,100m`.
 *
 * @module
 */

import { median } from "./common.ts";

const quick = Deno.args.includes("--quick");
/** The comma-separated values of `--NAME=a,b`, or `undefined` without it. */
function listOption(name: string): string[] | undefined {
  const arg = Deno.args.findLast((a) => a.startsWith(`--${name}=`));
  return arg?.slice(name.length + 3).split(",").map((v) => v.trim()).filter((v) => v !== "");
}
const only = listOption("only");
const selected = (name: string) => only === undefined || only.includes(name);
const scenarioKeys = listOption("scenarios");
const dir = new URL(".", import.meta.url).pathname;
let nextPort = 19_000 + Math.floor(Math.random() * 10_000);

/** How to start one implementation's processes: a program and its leading arguments. */
type Command = [program: string, ...args: string[]];

const deno = (script: string): Command => [Deno.execPath(), "run", "-A", `${dir}${script}`];

/** Runs `… server …` and `… client …` together; returns the server's JSON line. */
async function pair(
  command: Command,
  serverArgs: string[],
  clientArgs: string[],
): Promise<Record<string, number | string>> {
  const port = String(nextPort++);
  const [program, ...args] = command;
  const run = (more: string[]) =>
    new Deno.Command(program, { args: [...args, ...more], stdout: "piped", stderr: "piped" })
      .output();
  const [server, client] = await Promise.all([
    run(["server", port, ...serverArgs]),
    run(["client", port, ...clientArgs]),
  ]);
  const decoder = new TextDecoder();
  if (!server.success || !client.success) {
    throw new Error(
      `${command.join(" ")} failed:\n${decoder.decode(server.stderr)}\n${
        decoder.decode(client.stderr)
      }`,
    );
  }
  return JSON.parse(decoder.decode(server.stdout).trim().split("\n").at(-1)!);
}

/** Whether a command runs and exits 0. */
function works(program: string, args: string[], cwd?: string): boolean {
  try {
    return new Deno.Command(program, { args, cwd, stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

/** What {@linkcode peers} found, once looked for (it may run `npm ci`). */
let foundPeers: [string, Command][] | undefined;

/**
 * The peer baselines that can run here: Node.js `net` + msgpackr (installed
 * from bench/peers/package-lock.json with npm) and Python asyncio + pickle
 * (Debian's python3-numpy).
 */
function peers(): [string, Command][] {
  if (foundPeers !== undefined) return foundPeers;
  const found: [string, Command][] = foundPeers = [];
  const peerDir = `${dir}peers`;
  const hasModules = works("node", ["-e", "require.resolve('msgpackr')"], peerDir) ||
    (works("npm", ["ci", "--no-audit", "--no-fund", "--silent"], peerDir) &&
      works("node", ["-e", "require.resolve('msgpackr')"], peerDir));
  if (hasModules) found.push(["node+msgpackr", ["node", `${peerDir}/node_round.mjs`]]);
  else console.error("skipping the Node.js peer: node or msgpackr is not available");
  if (works("/usr/bin/python3", ["-c", "import numpy"])) {
    found.push(["python+pickle", ["/usr/bin/python3", `${peerDir}/python_round.py`]]);
  } else console.error("skipping the Python peer: /usr/bin/python3 with numpy is not available");
  return found;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const allScenarios = [
  { key: "1k", clients: 4, size: KiB, rounds: quick ? 50 : 5000, label: "N=4, 1 KiB" },
  { key: "1m", clients: 4, size: MiB, rounds: quick ? 10 : 100, label: "N=4, 1 MiB" },
  { key: "100m", clients: 4, size: 100 * MiB, rounds: quick ? 3 : 10, label: "N=4, 100 MiB" },
  { key: "n1000", clients: 1000, size: KiB, rounds: quick ? 5 : 150, label: "N=1000, 1 KiB" },
];
const scenarios = allScenarios.filter(({ key }) => scenarioKeys?.includes(key) ?? true);
const repeats = quick ? 1 : 3;

const candidates: [string, Command][] = [
  ["raw", deno("raw.ts")],
  ["fedcomm", deno("round.ts")],
  ["streams", deno("streams.ts")],
  ["tls", deno("round_tls.ts")],
  ["recycle", deno("round_recycle.ts")],
  ["raw-pool", deno("raw_pool.ts")],
];
const wantsPeers = !Deno.args.includes("--no-peers") &&
  (only === undefined || only.some((name) => name.includes("+")));
const impls = [...candidates, ...(wantsPeers ? peers() : [])]
  .filter(([name]) => selected(name));
const unknown = [
  ...(only ?? []).filter((name) =>
    !["messages", "memory", "admission", "python", "huge", "fl", "scale", "nats", "nats-huge"]
      .includes(name) &&
    !["node+msgpackr", "python+pickle"].includes(name) &&
    !candidates.some(([known]) => known === name)
  ),
  ...(scenarioKeys ?? []).filter((key) => !allScenarios.some((s) => s.key === key)),
];
if (unknown.length > 0) {
  console.error(`unknown --only names or --scenarios keys: ${unknown.join(", ")}`);
  Deno.exit(2);
}
const names = impls.map(([name]) => name);
const has = (name: string) => names.includes(name);
const rows: string[][] = [];
for (const { clients, size, rounds, label } of scenarios) {
  const times = new Map<string, number[]>(impls.map(([name]) => [name, []]));
  for (let r = 0; r < repeats; r++) {
    for (const [name, command] of impls) {
      const line = await pair(command, [String(clients), String(size), String(rounds)], [
        String(clients),
      ]);
      times.get(name)!.push(line.median_round_s as number);
      console.error(JSON.stringify(line));
    }
  }
  const medians = new Map(impls.map(([name]) => [name, median(times.get(name)!)]));
  const gbps = (t: number) => ((2 * clients * size) / t / 1e9).toFixed(3);
  const ms = (t: number) => `${(t * 1000).toFixed(3)} ms`;
  const row = [label, ...names.map((name) => ms(medians.get(name)!))];
  const ours = medians.get("fedcomm");
  if (ours !== undefined) {
    const raw = medians.get("raw");
    row.push(gbps(ours), raw === undefined ? "n/a" : (raw / ours).toFixed(2));
  }
  if (has("streams")) {
    row.push(ours === undefined ? "n/a" : (medians.get("streams")! / ours).toFixed(2));
  }
  if (has("tls")) {
    row.push(ours === undefined ? "n/a" : (medians.get("tls")! / ours).toFixed(2));
  }
  if (has("recycle")) row.push(gbps(medians.get("recycle")!));
  rows.push(row);
}

const header = [
  "scenario",
  ...names.map((name) => `${name} round`),
  ...(has("fedcomm") ? ["fedcomm GB/s", "fedcomm/raw"] : []),
  ...(has("streams") ? ["streams/fedcomm"] : []),
  ...(has("tls") ? ["tls/fedcomm"] : []),
  ...(has("recycle") ? ["recycle GB/s"] : []),
];
if (rows.length > 0) {
  const table = [header, header.map(() => "---"), ...rows];
  console.log(table.map((row) => `| ${row.join(" | ")} |`).join("\n"));
}

if (selected("messages")) {
  const messages = await pair(deno("messages.ts"), [String(quick ? 100_000 : 1_000_000)], [
    String(quick ? 100_000 : 1_000_000),
  ]);
  console.error(JSON.stringify(messages));
  console.log(
    `\nSmall messages (one client, uploads()): ${messages.messages_per_s} messages/s`,
  );
}
/** Floors a run must meet: each missed one is printed and makes the exit status 1. */
const missed: string[] = [];
if (selected("memory")) {
  // The promise of SECURITY.md: received messages not yet taken hold at most
  // twice the receive budget (the default, 128 MiB), whatever the number of
  // uploads; the peak also holds the upload being folded and garbage V8 has
  // not collected yet.
  const budget = 128 * MiB;
  const memory = await pair(deno("memory.ts"), ["16", String(64 * MiB)], [
    "16",
    String(64 * MiB),
  ]);
  console.error(JSON.stringify(memory));
  console.log(
    `Memory (16 uploads of 64 MiB folded through uploads()): peak ${memory.peak_above_idle_mib} MiB ` +
      `above idle = ${memory.peak_in_uploads} × 64 MiB`,
  );
  if (Number(memory.peak_above_idle_mib) * MiB > 2 * budget) {
    missed.push(
      `memory: peak ${memory.peak_above_idle_mib} MiB above idle exceeds twice the receive budget ` +
        `(${2 * budget / MiB} MiB)`,
    );
  }
}
if (selected("admission")) {
  // Join and resume latency under handshake floods (its own floors: see admission.ts).
  const args = ["run", "-A", `${dir}admission.ts`, ...(quick ? ["--quick"] : [])];
  const run = await new Deno.Command(Deno.execPath(), { args, stdout: "piped" }).output();
  const lines = new TextDecoder().decode(run.stdout).trim().split("\n");
  for (const line of lines.filter((l) => l.startsWith("{"))) console.error(line);
  console.log(
    `\nAdmission under a handshake flood:\n${lines.filter((l) => l.startsWith("|")).join("\n")}`,
  );
  if (!run.success) missed.push("admission: a join or a resume took over 500 ms (see above)");
}
/**
 * Runs a benchmark script with its own floors (`--quick` passed on): its JSON
 * lines go to stderr, the rest to stdout, and a non-zero exit is a miss.
 */
async function extra(script: string, miss: string, gc = false): Promise<void> {
  const args = [
    "run",
    "-A",
    ...(gc ? ["--v8-flags=--expose-gc"] : []),
    `${dir}${script}`,
    ...(quick ? ["--quick"] : []),
  ];
  const run = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "inherit" })
    .output();
  const lines = new TextDecoder().decode(run.stdout).trim().split("\n");
  for (const line of lines.filter((l) => l.startsWith("{"))) console.error(line);
  console.log(`\n${lines.filter((l) => !l.startsWith("{")).join("\n")}`);
  if (!run.success) missed.push(miss);
}
if (selected("python")) {
  // The Python client moves a 100 MiB model at ≥ 0.8 × the Deno client's rate (see python.ts).
  await extra("python.ts", "python: the Python client's rate is below 0.8 × the Deno client's");
}
if (selected("huge")) {
  // A model larger than a frame: ≥ 0.9 × raw, RSS ≤ 2 × the model on each side (see huge.ts).
  await extra("huge.ts", "huge: below 0.9 × raw, or a side's peak RSS above 2 × the model", true);
}
if (selected("fl")) {
  // A Coordinator's peak RSS ≤ 6.5 × a 256 MiB model, flat from round 2 (see fl_memory.ts).
  await extra("fl_memory.ts", "fl: the coordinator's peak RSS is above 6.5 × the model, or grows");
}
if (selected("scale")) {
  // 10,000 clients with auth on one server: round ≤ 300 ms, joins ≤ 2 s, ≤ 16 KiB per idle
  // connection (see scale.ts).
  await extra("scale.ts", "scale: a 10,000-client floor was missed (see above)", true);
  // The same 1 KiB round at this size without fedcomm, in the same sitting: what the
  // machine allows (raw Deno bytes, and Node + msgpackr when it is installed).
  const scaleClients = quick ? 1_000 : 10_000;
  const scalePeers: [string, Command][] = [
    ...candidates.filter(([name]) => name === "raw"),
    ...peers().filter(([name]) => name === "node+msgpackr"),
  ];
  const beside = [];
  for (const [name, command] of scalePeers) {
    const line = await pair(command, [String(scaleClients), String(KiB), "20"], [
      String(scaleClients),
    ]);
    console.error(JSON.stringify(line));
    beside.push(`${name} ${((line.median_round_s as number) * 1000).toFixed(1)} ms`);
  }
  console.log(`The same round at ${scaleClients} clients beside it: ${beside.join(", ")}`);
}
if (only?.includes("nats")) {
  // 4 edges x 2,500 sites over NATS against one flat server; equal aggregates (see nats.ts).
  await extra("nats.ts", "nats: the run failed, or its aggregate differs from flat");
}
if (only?.includes("nats-huge")) {
  // A 4.5 GiB model put and fetched through the object store, bytes equal (see nats_huge.ts).
  await extra("nats_huge.ts", "nats-huge: the run failed, or the model came back different");
}
console.log(
  `\nMachine: ${Deno.build.target}, ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}`,
);
if (missed.length > 0) {
  for (const line of missed) console.error(`Floor missed: ${line}`);
  Deno.exit(1);
}
