/**
 * The `demo` and `bench` commands of `cli.ts`: they run a script of the
 * repository as a child process.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { CONSOLE, type Output, parseFlags, toUsageError } from "../examples/command_line.ts";
import { PROGRAM } from "./probe.ts";

// ---------------------------------------------------------------- demo, bench

/**
 * A script of the repository, as a local path.
 *
 * @throws {Error} If this file does not run from a checkout (e.g. from JSR,
 * whose package does not include `examples/` and `bench/`).
 */
function scriptPath(relative: string, what: string): string {
  const url = new URL(relative, import.meta.url);
  if (url.protocol !== "file:") {
    throw new Error(
      `${what} needs a checkout of the repository: ${relative} is not in the published package`,
    );
  }
  return fileURLToPath(url);
}

/**
 * Runs a script of the repository with this Deno, its output passed through.
 * On the console the child inherits the terminal (so progress bars draw);
 * otherwise its lines are forwarded to `output`.
 */
async function runScript(script: string, args: string[], output: Output): Promise<number> {
  const inherit = output === CONSOLE;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdin: inherit ? "inherit" : "null",
    stdout: inherit ? "inherit" : "piped",
    stderr: inherit ? "inherit" : "piped",
  }).spawn();
  if (!inherit) {
    await Promise.all([
      forwardLines(child.stdout, output.out),
      forwardLines(child.stderr, output.err),
    ]);
  }
  const status = await child.status;
  return status.signal ? 128 + signalNumber(status.signal) : status.code;
}

function signalNumber(signal: Deno.Signal): number {
  return ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Partial<Record<Deno.Signal, number>>)[
    signal
  ] ?? 1;
}

async function forwardLines(
  stream: ReadableStream<Uint8Array>,
  write: (line: string) => void,
): Promise<void> {
  let pending = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (pending + text).split("\n");
    pending = lines.pop()!;
    for (const line of lines) write(line);
  }
  if (pending !== "") write(pending);
}

export const DEMO_USAGE = `Usage: ${PROGRAM} demo [flags of examples/fedavg.ts]

Federated averaging on the UCI handwritten digits: one server and N client processes on
127.0.0.1 (the same as "deno task demo"). Needs a checkout of the repository.

Common flags (run "${PROGRAM} demo --flags" for all of them):
  --clients N       client processes (default 4)
  --rounds R        rounds of federated averaging (default 10)
  --hidden H[,H…]   hidden layer widths (default: none, softmax regression)
  --partition P     iid or shards (default shards)
  --steps S         at most S local SGD steps per round (default 0: no limit)
  -h, --help        show this help`;

export async function runDemo(args: string[], output: Output): Promise<number> {
  const script = scriptPath("../examples/fedavg.ts", "demo");
  if (args.length === 1 && args[0] === "--flags") {
    return await runScript(script, ["--help"], output);
  }
  // Check the flags here, so a mistake reads like every other command's. The
  // import is by URL so that the published package, which has no examples/,
  // does not depend on it.
  const demo = new URL("../examples/fedavg.ts", import.meta.url);
  const { parseSettings } = await import(demo.href) as { parseSettings(args: string[]): unknown };
  try {
    parseSettings(args);
  } catch (error) {
    throw toUsageError(error);
  }
  return await runScript(script, args, output);
}

export const BENCH_USAGE = `Usage: ${PROGRAM} bench [--quick] [--no-peers]

Runs the side-by-side benchmark (bench/run.ts, the same as "deno task bench"): fedcomm,
a raw-bytes baseline and the Node.js and Python peers, each as a server process and a
client-host process on 127.0.0.1, then prints a table. A full run takes many minutes.
Needs a checkout of the repository.

  --quick       fewer rounds (a smoke test)
  --no-peers    skip the Node.js and Python peers
  -h, --help    show this help`;

export async function runBench(args: string[], output: Output): Promise<number> {
  const { values } = parseFlags({
    args,
    options: {
      quick: { type: "boolean" },
      "no-peers": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
  const script = scriptPath("../bench/run.ts", "bench");
  const flags = [
    ...(values.quick ? ["--quick"] : []),
    ...(values["no-peers"] ? ["--no-peers"] : []),
  ];
  return await runScript(script, flags, output);
}
