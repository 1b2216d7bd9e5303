/**
 * `deno task bench`: runs fedcomm and the raw-bytes limit side by side,
 * interleaved, each as a server process and a client-host process on
 * loopback, then the small-message and memory benchmarks, and prints a table.
 *
 * Options: `--quick` runs fewer rounds (for a smoke test).
 *
 * @module
 */

import { median } from "./common.ts";

const quick = Deno.args.includes("--quick");
const dir = new URL(".", import.meta.url).pathname;
let nextPort = 19_000 + Math.floor(Math.random() * 10_000);

/** Runs `script server …` and `script client …` together; returns the server's JSON line. */
async function pair(
  script: string,
  serverArgs: string[],
  clientArgs: string[],
): Promise<Record<string, number | string>> {
  const port = String(nextPort++);
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${dir}${script}`, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const [server, client] = await Promise.all([
    run(["server", port, ...serverArgs]),
    run(["client", port, ...clientArgs]),
  ]);
  const decoder = new TextDecoder();
  if (!server.success || !client.success) {
    throw new Error(
      `${script} failed:\n${decoder.decode(server.stderr)}\n${decoder.decode(client.stderr)}`,
    );
  }
  return JSON.parse(decoder.decode(server.stdout).trim().split("\n").at(-1)!);
}

const KiB = 1024;
const MiB = 1024 * KiB;
const scenarios = [
  { clients: 4, size: KiB, rounds: quick ? 50 : 2000, label: "N=4, 1 KiB" },
  { clients: 4, size: MiB, rounds: quick ? 10 : 100, label: "N=4, 1 MiB" },
  { clients: 4, size: 100 * MiB, rounds: quick ? 3 : 10, label: "N=4, 100 MiB" },
  { clients: 1000, size: KiB, rounds: quick ? 5 : 50, label: "N=1000, 1 KiB" },
];
const repeats = quick ? 1 : 3;

const rows: string[][] = [];
for (const { clients, size, rounds, label } of scenarios) {
  const times: Record<string, number[]> = { raw: [], fedcomm: [] };
  for (let r = 0; r < repeats; r++) {
    for (const [impl, script] of [["raw", "raw.ts"], ["fedcomm", "round.ts"]]) {
      const line = await pair(script, [String(clients), String(size), String(rounds)], [
        String(clients),
      ]);
      times[impl].push(line.median_round_s as number);
      console.error(JSON.stringify(line));
    }
  }
  const raw = median(times.raw);
  const ours = median(times.fedcomm);
  const gbps = (t: number) => ((2 * clients * size) / t / 1e9).toFixed(3);
  rows.push([
    label,
    `${(raw * 1000).toFixed(3)} ms`,
    `${(ours * 1000).toFixed(3)} ms`,
    gbps(raw),
    gbps(ours),
    (raw / ours).toFixed(2),
  ]);
}

const messages = await pair("messages.ts", [String(quick ? 100_000 : 1_000_000)], [
  String(quick ? 100_000 : 1_000_000),
]);
console.error(JSON.stringify(messages));
const memory = await pair("memory.ts", ["16", String(64 * MiB)], ["16", String(64 * MiB)]);
console.error(JSON.stringify(memory));

const header = [
  "scenario",
  "raw round",
  "fedcomm round",
  "raw GB/s",
  "fedcomm GB/s",
  "fedcomm/raw",
];
const table = [header, header.map(() => "---"), ...rows];
console.log(table.map((row) => `| ${row.join(" | ")} |`).join("\n"));
console.log(
  `\nSmall messages (one client, uploads()): ${messages.messages_per_s} messages/s`,
);
console.log(
  `Memory (16 uploads of 64 MiB folded through uploads()): peak ${memory.peak_above_idle_mib} MiB ` +
    `above idle = ${memory.peak_in_uploads} × 64 MiB`,
);
console.log(
  `\nMachine: ${Deno.build.target}, ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}`,
);
