/**
 * fedcomm's command line: an echo server and client, a file transfer, the
 * federated-averaging demo, the benchmark, a probe that runs the
 * handshake against a server and reports what it learned, and `provision`,
 * which makes a CA, a server certificate and per-site secrets.
 *
 * ```sh
 * deno run -A cli.ts --help
 * deno run -A cli.ts echo server --port 5678 --clients 2
 * deno run -A cli.ts echo client --port 5678 --message hello
 * deno run -A cli.ts receive-file --port 8001 --out received/
 * deno run -A cli.ts send-file 127.0.0.1:8001 model.bin
 * deno run -A cli.ts probe 127.0.0.1:5678 --timeout 2000
 * deno run -A cli.ts provision --sites a,b,c --out pki/ --host coordinator.example.org
 * deno run -A cli.ts demo --clients 2 --rounds 3
 * deno run -A cli.ts bench --quick
 * ```
 *
 * Every command exits with 0 on success, 1 on failure (one line on stderr,
 * `error: …`) and 2 for a bad command line (`error: …` and a hint to run
 * `fedcomm <command> --help`). `demo` and `bench` run `examples/fedavg.ts`
 * and `bench/run.ts` from a checkout of the repository.
 *
 * @module
 */

import {
  CONSOLE,
  integerFlag,
  type Output,
  parseAddress,
  parseFlags,
  portFlag,
  reportFailure,
  secondsFlag,
  UsageError,
} from "./examples/command_line.ts";
import { echoClient, echoServer } from "./examples/echo.ts";
import { receiveFile, sendFile } from "./examples/file_transfer.ts";

export type { Output } from "./examples/command_line.ts";

import { AddressedError, PROBE_USAGE, PROGRAM, runProbe, withAddress } from "./_cli/probe.ts";
import { BENCH_USAGE, DEMO_USAGE, runBench, runDemo } from "./_cli/scripts.ts";
import { PROVISION_USAGE, runProvision } from "./_cli/provision_command.ts";

export { probe, type ProbeOptions, type ProbeResult } from "./_cli/probe.ts";
export {
  loadProvisioned,
  provision,
  type ProvisionedServer,
  type ProvisionOptions,
  type ProvisionResult,
} from "./_cli/provision.ts";

/** One subcommand. */
interface Command {
  /** One line for the top-level help. */
  readonly summary: string;
  /** The full help text. */
  readonly usage: string;
  /** Runs the command; throws {@linkcode UsageError} for a bad command line. */
  run(args: string[], output: Output): Promise<number>;
}

/** Whether the arguments ask for help (`--help` or `-h` before any `--`). */
function wantsHelp(args: readonly string[]): boolean {
  for (const arg of args) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

// ---------------------------------------------------------------- echo

const ECHO_USAGE = `Usage: ${PROGRAM} echo server --port P --clients N [--host H] [--timeout S]
       ${PROGRAM} echo client --port P [--host H] [--message TEXT] [--count K] [--timeout S]

A multi-connection echo server over fedcomm, and its client (examples/echo.ts).

server: waits for N clients, echoes each message back to its sender, exits when all
        have left.
  --port P        TCP port (0: any free port, printed on the first line)
  --clients N     how many clients to serve
  --host H        address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --timeout S     seconds to wait for the clients to join (default 60)

client: sends K messages, one at a time, and prints each echo.
  --port P        the server's port
  --host H        the server's address (default 127.0.0.1)
  --message TEXT  what to send (default "hello"; numbered "TEXT #i" when K > 1)
  --count K       how many messages (default 1; 0 joins and leaves at once)
  --timeout S     seconds to connect and to wait for each echo (default 10)

  -h, --help      show this help`;

async function runEcho(args: string[], output: Output): Promise<number> {
  const [mode, ...rest] = args;
  if (mode !== "server" && mode !== "client") {
    throw new UsageError(
      mode === undefined
        ? "Missing mode: server or client"
        : `Unknown mode: "${mode}" (expected server or client)`,
    );
  }
  const common = {
    port: { type: "string" },
    host: { type: "string" },
    timeout: { type: "string" },
    help: { type: "boolean", short: "h" },
  } as const;
  if (mode === "server") {
    const { values } = parseFlags({
      args: rest,
      options: { ...common, clients: { type: "string" } },
    });
    if (values.clients === undefined) throw new UsageError("Missing flag: --clients");
    const address = { hostname: values.host ?? "127.0.0.1", port: portFlag(values.port, 0) };
    const clients = integerFlag("clients", values.clients, 1, 1);
    const timeoutMs = secondsFlag("timeout", values.timeout, 60);
    return await withAddress(address, async () => {
      await echoServer({ ...address, clients, timeoutMs, output });
      return 0;
    });
  }
  const { values } = parseFlags({
    args: rest,
    options: { ...common, message: { type: "string" }, count: { type: "string" } },
  });
  const address = { hostname: values.host ?? "127.0.0.1", port: portFlag(values.port, 1) };
  const count = integerFlag("count", values.count, 1, 0);
  const timeoutMs = secondsFlag("timeout", values.timeout, 10);
  return await withAddress(address, async () => {
    await echoClient({ ...address, message: values.message, count, timeoutMs, output });
    return 0;
  });
}

// ---------------------------------------------------------------- files

const SEND_FILE_USAGE = `Usage: ${PROGRAM} send-file HOST:PORT FILE [--timeout S]

Sends FILE to a receiver ("${PROGRAM} receive-file") in 4 MiB chunks, with a progress bar on
stderr, after its name, size and SHA-256; the receiver verifies the checksum
(examples/file_transfer.ts).

  HOST:PORT     the receiver's address, e.g. 127.0.0.1:8001 or [::1]:8001
  --timeout S   seconds to connect and to wait for each answer of the receiver (default 60)
  -h, --help    show this help`;

async function runSendFile(args: string[], output: Output): Promise<number> {
  const { values, positionals } = parseFlags({
    args,
    allowPositionals: true,
    options: { timeout: { type: "string" }, help: { type: "boolean", short: "h" } },
  });
  if (positionals.length !== 2) {
    throw new UsageError(
      positionals.length < 2
        ? `Missing ${positionals.length === 0 ? "HOST:PORT and FILE" : "FILE"}`
        : `Unexpected argument: "${positionals[2]}"`,
    );
  }
  const address = parseAddress(positionals[0]);
  const timeoutMs = secondsFlag("timeout", values.timeout, 60);
  return await withAddress(address, async () => {
    await sendFile({ ...address, path: positionals[1], timeoutMs, output });
    return 0;
  });
}

const RECEIVE_FILE_USAGE =
  `Usage: ${PROGRAM} receive-file --port P --out DIR [--host H] [--timeout S]

Waits for one sender ("${PROGRAM} send-file"), writes its file into DIR chunk by chunk with
a progress bar on stderr, verifies its SHA-256, and exits (examples/file_transfer.ts).
Unsafe names (../x), existing files and files larger than the free space are refused.

  --port P      TCP port (0: any free port, printed on the first line)
  --out DIR     the directory to save into (created if missing)
  --host H      address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
  --timeout S   seconds to wait for the sender, and at most between two chunks (default 60)
  -h, --help    show this help`;

async function runReceiveFile(args: string[], output: Output): Promise<number> {
  const { values } = parseFlags({
    args,
    options: {
      port: { type: "string" },
      out: { type: "string" },
      host: { type: "string" },
      timeout: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.out === undefined) throw new UsageError("Missing flag: --out");
  const address = { hostname: values.host ?? "127.0.0.1", port: portFlag(values.port, 0) };
  const timeoutMs = secondsFlag("timeout", values.timeout, 60);
  return await withAddress(address, async () => {
    await receiveFile({ ...address, out: values.out!, timeoutMs, output });
    return 0;
  });
}

// ---------------------------------------------------------------- main

const COMMANDS: Readonly<Record<string, Command>> = {
  echo: {
    summary: "a multi-connection echo server (echo server) and its client (echo client)",
    usage: ECHO_USAGE,
    run: runEcho,
  },
  "send-file": {
    summary: "send a file in chunks with a progress bar and a SHA-256 check",
    usage: SEND_FILE_USAGE,
    run: runSendFile,
  },
  "receive-file": {
    summary: "receive one file into a directory, verify it, exit",
    usage: RECEIVE_FILE_USAGE,
    run: runReceiveFile,
  },
  demo: {
    summary: "federated averaging on the UCI digits: a server and N client processes",
    usage: DEMO_USAGE,
    run: runDemo,
  },
  bench: {
    summary: "the side-by-side benchmark against a raw baseline and Node.js/Python peers",
    usage: BENCH_USAGE,
    run: runBench,
  },
  probe: {
    summary: "run the handshake against a server and report what it answered",
    usage: PROBE_USAGE,
    run: runProbe,
  },
  provision: {
    summary: "make a CA, a server certificate and per-site secrets (with openssl)",
    usage: PROVISION_USAGE,
    run: runProvision,
  },
};

const USAGE = `Usage: ${PROGRAM} <command> [flags]

fedcomm's command line (deno run -A cli.ts, deno task cli, or jsr:@fedcomm/fedcomm/cli).

Commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(14)}${c.summary}`).join("\n")}

Run "${PROGRAM} <command> --help" for a command's flags.

  -h, --help    show this help`;

/**
 * Runs the command line.
 *
 * @param args The arguments, without the program name: `["echo", "server", "--port", "0", …]`.
 * @param output Where to write (default: the console).
 * @returns The exit code: 0 on success, 1 on failure, 2 for a bad command line.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { main } from "./cli.ts";
 *
 * const lines: string[] = [];
 * const code = await main(["probe", "--help"], { out: (l) => lines.push(l), err: () => {} });
 * assert.equal(code, 0);
 * assert.match(lines[0], /^Usage: fedcomm probe HOST:PORT/);
 * ```
 */
export async function main(args: string[], output: Output = CONSOLE): Promise<number> {
  const [name, ...rest] = args;
  const command = name === undefined ? undefined : COMMANDS[name];
  const help = command === undefined ? `${PROGRAM} --help` : `${PROGRAM} ${name} --help`;
  try {
    if (name === "--help" || name === "-h") {
      output.out(USAGE);
      return 0;
    }
    if (name === undefined) throw new UsageError("Missing command");
    if (command === undefined) {
      throw new UsageError(
        name.startsWith("-") ? `Unknown flag: ${name}` : `Unknown command: "${name}"`,
      );
    }
    if (wantsHelp(rest)) {
      output.out(command.usage);
      return 0;
    }
    return await command.run(rest, output);
  } catch (error) {
    if (error instanceof AddressedError) {
      return reportFailure(error.cause, output, help, error.address);
    }
    return reportFailure(error, output, help);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
