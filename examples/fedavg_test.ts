import { fileURLToPath } from "node:url";
import { parseSettings, UsageError } from "./fedavg.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const SCRIPT = fileURLToPath(new URL("./fedavg.ts", import.meta.url));

/** Runs the demo as `deno task demo` would, with a time limit. */
async function runDemo(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", SCRIPT, ...args],
    stdin: "null",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** A per-round line: round, train loss, test loss, test accuracy, bytes moved, time. */
const ROUND_LINE = /^\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)%\s+([\d.]+ k?B)\s+([\d.]+) s$/gm;

Deno.test("the demo trains 2 client processes for 3 rounds and exits cleanly", async () => {
  const { code, stdout, stderr } = await runDemo([
    "--clients",
    "2",
    "--rounds",
    "3",
    "--partition",
    "iid",
  ]);
  assert(code === 0, `exit code ${code}\n${stdout}\n${stderr}`);
  const rounds = [...stdout.matchAll(ROUND_LINE)].map((m) => ({
    round: Number(m[1]),
    trainLoss: Number(m[2]),
    accuracy: Number(m[4]) / 100,
    moved: m[5],
  }));
  assert(rounds.map((r) => r.round).join(",") === "1,2,3", `round lines:\n${stdout}`);
  const initial = stdout.match(/^\s+0\s+-\s+[\d.]+\s+([\d.]+)%/m);
  assert(initial !== null, `no initial evaluation:\n${stdout}`);
  const last = rounds[rounds.length - 1];
  assert(last.accuracy > 0.85, `final accuracy ${last.accuracy}\n${stdout}`);
  assert(last.accuracy > Number(initial[1]) / 100, `accuracy did not improve\n${stdout}`);
  assert(rounds.every((r) => r.trainLoss > 0), `train losses\n${stdout}`);
  // Two clients × (broadcast + upload) of 650 float32 weights is over 10 kB.
  assert(rounds.every((r) => r.moved.endsWith("kB") && parseFloat(r.moved) > 10), "bytes moved");
  const summary = stdout.trim().split("\n").at(-1)!;
  assert(
    /^done: final test accuracy [\d.]+% after 3 rounds, [\d.]+ [kMG]?B moved, [\d.]+ s total$/
      .test(summary),
    `summary line: ${summary}`,
  );
  assert(!stderr.includes("error"), `stderr:\n${stderr}`);
});

Deno.test("the demo names a crashed client and exits non-zero", async () => {
  const { code, stdout, stderr } = await runDemo([
    "--clients",
    "3",
    "--rounds",
    "4",
    "--crash-client",
    "1",
    "--crash-round",
    "2",
  ]);
  assert(code === 1, `exit code ${code}\n${stdout}\n${stderr}`);
  assert(
    /error: client 1 \(process \d+, pid \d+\) failed in round 2: .*exited with code 3/.test(stderr),
    `stderr:\n${stderr}`,
  );
  assert(/^\s+1\s+[\d.]+/m.test(stdout) && !/^\s+2\s+[\d.]+/m.test(stdout), `stdout:\n${stdout}`);
});

Deno.test("parseSettings reads flags and rejects bad ones", () => {
  const settings = parseSettings(["--clients", "3", "--hidden", "32,16", "--port=4000"]);
  assert(settings !== undefined, "settings");
  assert(settings.clients === 3 && settings.rounds === 10, "counts");
  assert(settings.hidden.join(",") === "32,16" && settings.port === 4000, "hidden and port");
  assert(settings.learningRate === 0.02, "a smaller default step for two hidden layers");
  assert(parseSettings(["--help"]) === undefined, "help");
  for (const bad of [["--clients", "0"], ["--partition", "x"], ["--lr", "-1"], ["--nope"]]) {
    let error: unknown;
    try {
      parseSettings(bad);
    } catch (caught) {
      error = caught;
    }
    assert(error instanceof UsageError, `${bad.join(" ")} should be rejected`);
  }
});
